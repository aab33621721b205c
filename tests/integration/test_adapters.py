"""LoRA adapters on the tiny safetensors model: dedicated (merged) loading, the checks that refuse
a bad adapter, the shared-base pool engine (mixed-adapter batches), and the pool on Ray Serve."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import ManifestError, SpecialistManifest, parse_manifest
from specialists.engine import ChatMessage, EngineRequest, GenerationParams, collect_stream
from specialists.sources import SourceOptions
from specialists.transformers_engine import TransformersEngine
from tests.conftest import manifest_data
from tests.integration.conftest import upload

pytestmark = pytest.mark.slow
QUESTION = [ChatMessage(role="user", content="Name three colours.")]
GREEDY = GenerationParams(max_tokens=10, temperature=0.0, repetition_penalty=1.0)


def save_random_lora(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA with random (non-zero) B matrices, so it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, options: SourceOptions) -> str:
    return upload(options, tiny_model_dir)


@pytest.fixture(scope="module")
def loras(lora_dirs: dict[str, Path], options: SourceOptions) -> dict[str, str]:
    return {key: upload(options, folder) for key, folder in lora_dirs.items()}


@pytest.fixture(scope="module")
def lora_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two adapters for the tiny model, and one made for a wider model of the same family."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("loras")
    wide = root / "wide-base"
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    LlamaForCausalLM(config).save_pretrained(wide)
    return {
        "a": save_random_lora(tiny_model_dir, root / "a", seed=1),
        "b": save_random_lora(tiny_model_dir, root / "b", seed=2),
        "wide": save_random_lora(wide, root / "wide", seed=3),
    }


def adapter_manifest(
    base: str, adapter: str | None, name: str = "demo", **model: object
) -> SpecialistManifest:
    spec = {"source": base, **model}
    if adapter is not None:
        spec["adapter"] = adapter
    return parse_manifest(manifest_data(name=name, model=spec))


@pytest.fixture(scope="module")
def load(options: SourceOptions):  # type: ignore[no-untyped-def]
    """Load a manifest's engine as a replica would, with the operator's `SourceOptions`."""

    def loaded(manifest: SpecialistManifest, sources: SourceOptions = options):  # type: ignore[no-untyped-def]
        engine = TransformersEngine(manifest, sources)
        engine.load()
        return engine

    return loaded


def test_adapter_changes_the_answer_and_matches_peft(  # type: ignore[no-untyped-def]
    tiny_model_dir: Path, tiny: str, loras: dict, lora_dirs: dict, load
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = load(adapter_manifest(tiny, None))
    adapted = load(adapter_manifest(tiny, loras["a"]))
    assert "PeftModel" not in type(adapted.model).__name__, "a dedicated replica merges it"
    base_text = base.generate(QUESTION, GREEDY).text
    adapted_text = adapted.generate(QUESTION, GREEDY).text
    assert adapted_text != base_text

    prompt = adapted.prepare(QUESTION, GREEDY)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(lora_dirs["a"])
    ).eval()
    with torch.inference_mode():
        out = reference.generate(
            input_ids=torch.tensor([prompt.ids]),
            attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long),
            max_new_tokens=GREEDY.max_tokens,
            do_sample=False,
            eos_token_id=sorted(adapted.eos_ids),
            pad_token_id=adapted.tokenizer.pad_token_id,
        )
    expected = adapted.tokenizer.decode(out[0, len(prompt.ids) :], skip_special_tokens=True)
    assert adapted_text == expected


def test_pickle_adapter_loads_only_when_the_operator_allows(  # type: ignore[no-untyped-def]
    tiny: str, loras: dict, lora_dirs: dict, tmp_path: Path, options: SourceOptions, load
) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = shutil.copytree(lora_dirs["a"], tmp_path / "pickled")
    weights = pickled / "adapter_model.safetensors"
    torch.save(load_file(weights), pickled / "adapter_model.bin")
    weights.unlink()
    source = upload(options, pickled)
    with pytest.raises(ManifestError, match=r"model\.adapter: holds pickle weights"):
        load(adapter_manifest(tiny, source))
    operator = options.model_copy(update={"allow_pickle": True})
    allowed = load(adapter_manifest(tiny, source), operator)
    reference = load(adapter_manifest(tiny, loras["a"]))
    assert allowed.generate(QUESTION, GREEDY).text == reference.generate(QUESTION, GREEDY).text


def test_adapter_sha256_mismatch_is_refused_before_loading(  # type: ignore[no-untyped-def]
    tiny: str, loras: dict, options: SourceOptions, load
) -> None:
    from registry.artifacts import pin_artifacts

    manifest = pin_artifacts(adapter_manifest(tiny, loras["a"]), options.store())
    assert "adapter/adapter_model.safetensors" in manifest.model.sha256
    wrong = {**manifest.model.sha256, "adapter/adapter_model.safetensors": "0" * 64}
    with pytest.raises(ManifestError) as error:
        load(adapter_manifest(tiny, loras["a"], sha256=wrong))
    assert error.value.message == (
        "model.sha256: 'adapter/adapter_model.safetensors' does not match the published artifact"
    )


def test_missing_broken_or_mismatched_adapters_fail_clearly(  # type: ignore[no-untyped-def]
    tiny: str, loras: dict, lora_dirs: dict, tmp_path: Path, options: SourceOptions, load
) -> None:
    with pytest.raises(ManifestError, match=r"^model\.adapter: artifact not found in the store$"):
        load(adapter_manifest(tiny, "artifact:" + "2" * 64))
    broken = shutil.copytree(lora_dirs["a"], tmp_path / "broken")
    (broken / "adapter_config.json").unlink()
    with pytest.raises(ManifestError, match=r"no adapter_config\.json"):
        load(adapter_manifest(tiny, upload(options, broken)))
    with pytest.raises(ManifestError, match="does not fit the base model"):
        load(adapter_manifest(tiny, loras["wide"]))


@pytest.fixture(scope="module")
def pool(tiny: str, options: SourceOptions):  # type: ignore[no-untyped-def]
    from specialists.adapter_pool import AdapterPoolEngine, base_spec, pool_manifest

    engine = AdapterPoolEngine(pool_manifest(base_spec(adapter_manifest(tiny, None))), options)
    engine.load()
    return engine


def test_pool_decodes_each_row_with_its_own_adapter(  # type: ignore[no-untyped-def]
    pool, tiny: str, loras: dict, load
) -> None:
    """One base, two adapters, one batch: each row answers as its dedicated (merged) engine."""
    manifests = [adapter_manifest(tiny, loras[k], name=f"sp-{k}") for k in "ab"]
    names = [pool.add_adapter(manifest) for manifest in manifests]
    assert pool.adapters == names == ["sp-a@1_0_0", "sp-b@1_0_0"]
    alone = [load(m).generate(QUESTION, GREEDY).text for m in manifests]
    assert alone[0] != alone[1]

    async def together() -> list[str]:
        requests = [EngineRequest(messages=QUESTION, params=GREEDY, adapter=n) for n in names]
        results = await asyncio.gather(*(collect_stream(pool.stream(r)) for r in requests))
        return [result.text for result in results]

    assert asyncio.run(together()) == alone
    assert pool.stats()["largest_batch"] == 2, "both rows decoded in one batch"


def test_pool_defers_deleting_an_adapter_in_use(pool, tiny: str, loras: dict) -> None:  # type: ignore[no-untyped-def]
    manifest = adapter_manifest(tiny, loras["a"], name="sp-c")
    name = pool.add_adapter(manifest)
    pool.acquire(name)
    pool.retire_adapter(name)
    assert name in pool.adapters, "rows still decode with it"
    pool.release(name)
    assert name not in pool.adapters
    with pytest.raises(ManifestError, match="does not fit"):
        pool.add_adapter(adapter_manifest(tiny, loras["wide"], name="sp-wide"))
    assert "sp-wide@1_0_0" not in pool.adapters


@pytest.fixture
def serve_session() -> Iterator[None]:
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.timeout(300)
def test_one_pool_replica_serves_two_adapter_specialists(  # type: ignore[no-untyped-def]
    serve_session: None, tiny: str, loras: dict, options: SourceOptions, load
) -> None:
    from ray import serve

    from specialists.adapter_pool import build_pool_app, pool_configs
    from specialists.deployment import SpecialistRequest, app_name, build_specialist_app

    manifests = [adapter_manifest(tiny, loras[k], name=f"sp-{k}", share_base=True) for k in "ab"]
    (pool_name, config), *others = pool_configs(manifests).items()
    assert not others, "both specialists share one pool"
    serve.run(build_pool_app(config, options), name=pool_name, route_prefix=None)
    for manifest in manifests:
        serve.run(
            build_specialist_app(manifest, options), name=app_name(manifest.name), route_prefix=None
        )

    expected = {m.name: load(m).generate(QUESTION, GREEDY).text for m in manifests}
    request = SpecialistRequest(messages=QUESTION, params=GREEDY)
    for name in ["sp-a", "sp-b", "sp-a"]:
        handle = serve.get_app_handle(app_name(name))
        result = handle.chat.remote(request).result(timeout_s=120)
        assert result.text.strip() == expected[name].strip(), name  # chat() trims the answer

    pool_handle = serve.get_app_handle(pool_name)
    assert pool_handle.adapters.remote().result() == ["sp-a@1_0_0", "sp-b@1_0_0"]
    assert len(serve.status().applications[pool_name].deployments["pool"].replica_states) == 1
