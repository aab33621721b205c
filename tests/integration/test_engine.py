"""TransformersEngine on real weights: the offline SmolLM2 GGUF and a tiny safetensors model."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import InvalidRequestError, parse_manifest
from specialists.catalog import SMOLLM2_SOURCE
from specialists.engine import ChatMessage, GenerationParams, engine_class
from tests.conftest import manifest_data

pytestmark = pytest.mark.slow
HELLO = [ChatMessage(role="user", content="Say hello in one short sentence.")]


def _engine(source: str):  # type: ignore[no-untyped-def]
    manifest = parse_manifest(manifest_data(model={"source": source}, system_prompt="Be kind."))
    engine = engine_class("transformers")(manifest)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path) -> dict:
    return {"gguf": _engine(SMOLLM2_SOURCE), "safetensors": _engine(str(tiny_model_dir))}


@pytest.mark.parametrize("kind", ["gguf", "safetensors"])
def test_generate_and_stream_agree_on_contract(engines: dict, kind: str) -> None:
    engine = engines[kind]
    params = GenerationParams(max_tokens=12, temperature=0.0)
    result = engine.generate(HELLO, params)
    assert result.text.strip()
    assert result.prompt_tokens > 5
    assert 0 < result.completion_tokens <= 12
    assert result.finish_reason in ("stop", "length")

    deltas = list(engine.stream(HELLO, params))
    assert deltas[-1].finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in deltas[:-1])
    streamed = "".join(d.text for d in deltas)
    assert streamed == result.text, "greedy stream and generate produce the same text"


def test_smollm2_answers_in_words(engines: dict) -> None:
    result = engines["gguf"].generate(HELLO, GenerationParams(max_tokens=24, temperature=0.0))
    assert any(ch.isalpha() for ch in result.text)


def test_stop_sequence_cuts_the_answer(engines: dict) -> None:
    engine = engines["gguf"]
    full = engine.generate(HELLO, GenerationParams(max_tokens=16, temperature=0.0)).text
    word = full.split()[1]
    cut = engine.generate(HELLO, GenerationParams(max_tokens=16, temperature=0.0, stop=[word]))
    assert word not in cut.text
    assert cut.finish_reason == "stop"


def test_prompt_longer_than_context_is_a_400(engines: dict) -> None:
    engine = engines["safetensors"]  # 256-token context
    long = [ChatMessage(role="user", content="word " * 400)]
    with pytest.raises(InvalidRequestError, match="256-token context") as error:
        engine.generate(long, GenerationParams(max_tokens=8))
    assert error.value.status_code == 400


def test_missing_weights_fail_clearly(tmp_path: Path) -> None:
    from registry import ManifestError

    manifest = parse_manifest(manifest_data(model={"source": str(tmp_path / "nowhere")}))
    with pytest.raises(ManifestError, match="does not exist"):
        engine_class("transformers")(manifest).load()


def test_pickle_weights_are_refused_unless_allowed(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    from registry import ManifestError

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    weights = pickled / "model.safetensors"
    torch.save(load_file(weights), pickled / "pytorch_model.bin")  # same weights, as a pickle
    weights.unlink()
    assert list(pickled.glob("*.bin")) and not list(pickled.glob("*.safetensors"))

    manifest = parse_manifest(manifest_data(model={"source": str(pickled)}))
    with pytest.raises(ManifestError, match="pickle weights"):
        engine_class("transformers")(manifest).load()
    allowed = parse_manifest(manifest_data(model={"source": str(pickled), "allow_pickle": True}))
    engine = engine_class("transformers")(allowed)
    engine.load()
    assert engine.generate(HELLO, GenerationParams(max_tokens=2)).completion_tokens >= 1


def test_swapped_weights_fail_the_checksum_before_loading(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from registry import ManifestError
    from registry.artifacts import pin_artifacts

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    manifest = pin_artifacts(parse_manifest(manifest_data(model={"source": str(copy)})))
    (copy / "model.safetensors").write_bytes(
        (copy / "model.safetensors").read_bytes()[:-8] + b"\0" * 8
    )
    with pytest.raises(ManifestError, match=r"model\.safetensors has sha256"):
        engine_class("transformers")(manifest).load()
