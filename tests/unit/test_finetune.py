"""`mesh finetune`: chat JSONL, assistant-only labels, a deterministic resumable LoRA loop, and
the specialist folder it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from registry.errors import InvalidRequestError
from specialists.training.config import FinetuneConfig, LoraSettings
from specialists.training.records import DataError, read_records
from specialists.training.trainer import batch_order

SYSTEM = "Answer like a pirate."


def _record(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pirate_data(path: Path, n: int = 16) -> Path:
    rows = [
        _record(f"Tell me about ship number {i}.", f"Arr, ship {i} be a fine vessel!")
        for i in range(n)
    ]
    return write_jsonl(path, rows)


# -- data errors name the line ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"messages": []}', "messages"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}',
            "last message must be the assistant",
        ),
        (
            '{"messages": [{"role": "robot", "content": "hi"}, '
            '{"role": "assistant", "content": "x"}]}',
            "role",
        ),
        ('{"msgs": 1}', "messages: Field required"),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(_record("q", "a"))
    path.write_text(f"{good}\n\n{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_records(path)
    assert f"{path}:4" in str(error.value)
    assert message in str(error.value)


def test_empty_missing_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no records"):
        read_records(write_jsonl(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError, match="cannot read"):
        read_records(tmp_path / "missing.jsonl")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        read_records(binary)


def test_steps_and_epochs_are_exclusive_and_epochs_count_batches() -> None:
    with pytest.raises(ValueError, match="not both"):
        FinetuneConfig(base="x", data=Path("d"), out=Path("o"), steps=3, epochs=1)
    config = FinetuneConfig(base="x", data=Path("d"), out=Path("o"), epochs=2, batch_size=4)
    assert config.total_steps(10) == 6


def test_batch_order_is_seeded_and_covers_every_example_each_epoch() -> None:
    order = batch_order(10, 4, 6, seed=3)
    assert order == batch_order(10, 4, 6, seed=3)
    assert order != batch_order(10, 4, 6, seed=4)
    assert sorted(i for batch in order[:3] for i in batch) == list(range(10))
    assert order[:2] == batch_order(10, 4, 2, seed=3)  # a resumed run sees the same batches


# -- labels: the loss falls on the assistant's answer only ------------------------------------
@pytest.mark.slow
def test_labels_cover_exactly_the_answer_and_its_end_token(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from specialists.training.records import ChatRecord
    from specialists.training.tokenize import IGNORE, encode_record

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    record = ChatRecord.model_validate(_record("Where be the treasure?", "Under the palm, matey."))
    example = encode_record(tokenizer, record)
    labelled = [i for i, label in zip(example.ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(labelled) == "Under the palm, matey." + tokenizer.eos_token

    two_turns = ChatRecord.model_validate(
        {
            "messages": [
                {"role": "user", "content": "Ahoy?"},
                {"role": "assistant", "content": "Ahoy!"},
                {"role": "user", "content": "Treasure?"},
                {"role": "assistant", "content": "Buried."},
            ]
        }
    )
    example = encode_record(tokenizer, two_turns)
    labelled = [i for i, label in zip(example.ids, example.labels, strict=True) if label != IGNORE]
    eos = tokenizer.eos_token
    assert tokenizer.decode(labelled) == f"Ahoy!{eos}Buried.{eos}"


# -- the loop: deterministic, resumable, writes a publishable folder --------------------------
def _config(base: Path, data: Path, out: Path, **overrides: object) -> FinetuneConfig:
    values: dict = dict(
        base=str(base),
        data=data,
        out=out,
        steps=4,
        batch_size=4,
        learning_rate=5e-3,
        warmup_steps=1,
        checkpoint_every=2,
        threads=1,
        lora=LoraSettings(rank=4, alpha=8),
    )
    values.update(overrides)
    return FinetuneConfig(**values)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


class Crash(Exception):
    pass


def _crash_after(step_limit: int):  # type: ignore[no-untyped-def]
    from specialists.training.trainer import Progress

    def on_step(step: int, total: int, loss: float) -> None:
        if step == step_limit:
            raise Crash

    return Progress(on_step=on_step, on_message=lambda text: None)


@pytest.mark.slow
def test_same_seed_same_adapter_and_resume_continues_the_same_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    from specialists.training.trainer import CHECKPOINT, train

    data = pirate_data(tmp_path / "train.jsonl")
    dropout = LoraSettings(rank=4, alpha=8, dropout=0.1)  # the resumed run must redraw the same
    first, _, _ = train(_config(tiny_model_dir, data, tmp_path / "a", lora=dropout))
    second, _, _ = train(_config(tiny_model_dir, data, tmp_path / "b", lora=dropout))
    a, b = _weights(first.adapter_dir), _weights(second.adapter_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.loss for p in first.loss_curve] == [p.loss for p in second.loss_curve]
    assert not (tmp_path / "a" / CHECKPOINT).exists(), "a finished run leaves no checkpoint"

    interrupted = _config(tiny_model_dir, data, tmp_path / "c", lora=dropout)
    with pytest.raises(Crash):
        train(interrupted, _crash_after(3))  # dies during step 3; the checkpoint holds step 2
    assert (tmp_path / "c" / CHECKPOINT / "state.pt").is_file()
    resumed, _, _ = train(interrupted.model_copy(update={"resume": True}))
    assert resumed.resumed_from == 2
    c = _weights(resumed.adapter_dir)
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    assert [p.step for p in resumed.loss_curve] == [1, 2, 3, 4]
    assert [p.loss for p in resumed.loss_curve] == pytest.approx(
        [p.loss for p in first.loss_curve], abs=1e-4
    )

    with pytest.raises(Crash):
        train(interrupted, _crash_after(3))
    changed = interrupted.model_copy(update={"resume": True, "learning_rate": 1e-2})
    with pytest.raises(InvalidRequestError, match="other data or settings"):
        train(changed)


@pytest.mark.slow
def test_bad_targets_and_overlong_data_are_clear_errors(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from specialists.training.trainer import train

    data = pirate_data(tmp_path / "train.jsonl", n=4)
    with pytest.raises(InvalidRequestError, match="--lora-targets"):
        train(_config(tiny_model_dir, data, tmp_path / "x", lora=LoraSettings(targets=("nope",))))
    with pytest.raises(DataError, match="longer than --max-length 16"):
        train(_config(tiny_model_dir, data, tmp_path / "y", max_length=16))


@pytest.mark.slow
def test_finetune_writes_a_manifest_the_store_accepts_with_card_and_pins(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from registry import parse_manifest
    from registry.artifact_store import upload_local_sources
    from specialists.training.package import SpecialistIdentity
    from specialists.training.pipeline import finetune
    from specialists.training.records import file_sha256

    data = pirate_data(tmp_path / "train.jsonl")
    out = tmp_path / "pirate"
    identity = SpecialistIdentity(name="pirate", owner="alice", description="Talks like a pirate.")
    path = finetune(_config(tiny_model_dir, data, out), identity)

    manifest = yaml.safe_load(path.read_text())
    assert manifest["model"]["adapter"] == "./adapter"
    assert manifest["model"]["engine"] == "onnx"  # served by the fast engine; trained on torch
    pins = manifest["model"]["sha256"]
    assert pins["adapter/adapter_model.safetensors"] == file_sha256(
        out / "adapter" / "adapter_model.safetensors"
    )
    assert "config.json" in pins  # the base's own files are pinned too
    assert manifest["system_prompt"] == SYSTEM
    assert set(manifest["examples"]) <= {f"Tell me about ship number {i}." for i in range(16)}
    parse_manifest(upload_local_sources(manifest, out, None))  # what `mesh register` checks

    provenance = json.loads((out / "training.json").read_text())
    assert provenance["data_sha256"] == file_sha256(data)
    assert provenance["config"]["lora"]["rank"] == 4
    assert len(json.loads((out / "loss.json").read_text())) == 4
    card = (out / "card.md").read_text()
    assert file_sha256(data) in card and "LoRA fine-tune" in card and "| 4 |" in card
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)


# -- the CLI refuses bad input before any training, with one clear line ------------------------
def _cli(*args: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from mesh.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.slow
def test_finetune_cli_refuses_bad_options_before_training(tmp_path: Path) -> None:
    data = pirate_data(tmp_path / "train.jsonl")
    out = str(tmp_path / "out")
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = [
        (["--data", str(data), "--out", out, "--eval", str(data)], "go together"),
        (["--data", str(data), "--out", out, "--batch-size", "0"], "batch_size"),
        (["--data", str(data), "--out", out, "--steps", "2", "--epochs", "1"], "not both"),
        (["--data", str(tmp_path / "missing.jsonl"), "--out", out], "cannot read"),
        (["--data", str(data), "--out", str(a_file / "x")], "cannot write there"),
        (["--data", str(data), "--out", out, "--name", "My_Model"], "name"),
        (["--data", str(data), "--out", out, "--version", "1.0"], "semantic version"),
        (["--data", str(data), "--out", out, "--engine", "no-such-engine"], "no-such-engine"),
    ]
    for args, message in cases:
        result = _cli("finetune", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "out" / "adapter").exists()


def test_eval_cli_names_a_folder_without_a_manifest(tmp_path: Path) -> None:
    data = pirate_data(tmp_path / "eval.jsonl")
    result = _cli("eval", str(tmp_path), "--data", str(data), "--metric", "exact")
    assert result.exit_code == 1 and "cannot read it" in result.output, result.output
    result = _cli("eval", "./nope", "--data", str(data), "--metric", "nope")
    assert result.exit_code == 1 and "unknown metric" in result.output, result.output
