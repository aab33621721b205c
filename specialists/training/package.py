"""Turn a finished fine-tune into a folder `mesh register DIR` publishes as it is.

DIR holds `adapter/` (safetensors), `manifest.yaml` (the adapter as a local path with its sha256
pins: `mesh register` uploads it and checks the pins), `card.md` and `training.json` (the same
provenance, for people and for scripts). The card says where every number came from: the base
and data hashes, the hyperparameters, the time, the loss curve, and the evaluation against the
base with the same prompt.
"""

from __future__ import annotations

import json
import platform
import random
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from registry.manifest import MAX_EXAMPLE_CHARS, parse_manifest
from specialists.training.config import FinetuneConfig
from specialists.training.records import ChatRecord, DataError, file_sha256
from specialists.training.trainer import ADAPTER, TrainOutcome

MANIFEST = "manifest.yaml"
CARD = "card.md"
PROVENANCE = "training.json"
EXAMPLES = 12
CURVE_POINTS = 40


class EvalSummary(BaseModel):
    """A metric on the held-out file for the fine-tune and for its base with the same prompt."""

    metric: str
    n: int
    finetuned: float
    base: float
    data_sha256: str


class SpecialistIdentity(BaseModel):
    name: str
    version: str = "0.1.0"
    owner: str
    description: str = Field(min_length=1, max_length=2000)
    tags: list[str] = Field(default_factory=lambda: ["fine-tuned", "lora"])


class Provenance(BaseModel):
    """`training.json`: what made this adapter, enough to reproduce and to audit it."""

    base: str
    base_sha256: dict[str, str]
    data: str
    data_sha256: str
    records: int
    config: dict[str, Any]
    outcome: dict[str, Any]
    evaluation: EvalSummary | None = None
    software: dict[str, str]


def adapter_pins(folder: Path) -> dict[str, str]:
    """`model.sha256` entries for the adapter's files (swapped weights never load)."""
    return {
        f"{ADAPTER}/{file.name}": file_sha256(file)
        for file in sorted(folder.iterdir())
        if file.is_file()
    }


def router_examples(records: list[ChatRecord], seed: int, count: int = EXAMPLES) -> list[str]:
    """Distinct user prompts from the training data (the router learns the niche from them)."""
    texts = sorted({r.user_text().strip()[:MAX_EXAMPLE_CHARS] for r in records} - {""})
    random.Random(seed).shuffle(texts)
    if len(texts) < 3:
        raise DataError("the data needs at least 3 distinct user prompts (the router's examples)")
    return texts[:count]


def shared_system_prompt(records: list[ChatRecord]) -> str:
    """The system prompt every record starts with (served as the manifest's), else none."""
    prompts = {r.messages[0].content if r.messages[0].role == "system" else "" for r in records}
    return prompts.pop() if len(prompts) == 1 else ""


def answer_budget(tokenizer: Any, records: list[ChatRecord]) -> int:
    """`generation.max_tokens`: room for the longest training answer, with a margin."""
    longest = max(len(tokenizer(r.answer)["input_ids"]) for r in records[:2000])
    return min(8192, max(64, int(longest * 1.5) + 16))


def write_specialist_dir(
    config: FinetuneConfig,
    identity: SpecialistIdentity,
    records: list[ChatRecord],
    outcome: TrainOutcome,
    tokenizer: Any,
    base_pins: dict[str, str],
    evaluation: EvalSummary | None = None,
) -> Path:
    """Write manifest, card and provenance beside the adapter; returns the manifest path."""
    _portable_adapter_config(outcome.adapter_dir, config.base)
    provenance = Provenance(
        base=config.base,
        base_sha256=base_pins,
        data=config.data.name,
        data_sha256=file_sha256(config.data),
        records=len(records),
        config=config.model_dump(mode="json", exclude={"out", "data", "eval_data", "resume"}),
        outcome=outcome.model_dump(mode="json", exclude={"adapter_dir", "loss_curve"}),
        evaluation=evaluation,
        software=_versions(),
    )
    card = render_card(identity, provenance, outcome)
    manifest = draft_manifest(
        config,
        identity,
        records,
        {**base_pins, **adapter_pins(outcome.adapter_dir)},
        max_tokens=answer_budget(tokenizer, records),
        card=card,
    )
    out = config.out
    (out / CARD).write_text(card, encoding="utf-8")
    (out / PROVENANCE).write_text(provenance.model_dump_json(indent=2) + "\n", encoding="utf-8")
    curve = [p.model_dump() for p in outcome.loss_curve]
    (out / "loss.json").write_text(json.dumps(curve) + "\n", encoding="utf-8")
    path = out / MANIFEST
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, width=100), encoding="utf-8")
    return path


def draft_manifest(
    config: FinetuneConfig,
    identity: SpecialistIdentity,
    records: list[ChatRecord],
    pins: dict[str, str],
    *,
    max_tokens: int = 64,
    card: str = "",
) -> dict[str, Any]:
    """The manifest `mesh register DIR` publishes, checked as the store will check it (so a
    bad name or version fails before training when called with a draft, not after)."""
    system_prompt = shared_system_prompt(records)
    manifest: dict[str, Any] = {
        "schema_version": 1,
        **identity.model_dump(),
        "examples": router_examples(records, config.seed),
        "model": {
            "engine": config.engine,
            "source": config.base,
            "adapter": f"./{ADAPTER}",
            "sha256": pins,
        },
        "system_prompt": system_prompt,
        "generation": {
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "repetition_penalty": 1.0,
        },
        "card": card or None,
    }
    if not system_prompt:
        del manifest["system_prompt"]
    if not card:
        del manifest["card"]
    _check_manifest(manifest, config.out)
    return manifest


def render_card(identity: SpecialistIdentity, provenance: Provenance, outcome: TrainOutcome) -> str:
    config, lora = provenance.config, provenance.config["lora"]
    lines = [
        f"# {identity.name}",
        "",
        identity.description,
        "",
        "A LoRA fine-tune (not a prompt): the adapter's weights were trained on the data below.",
        "",
        "## Provenance",
        f"- base: `{provenance.base}`" + _pin_lines(provenance.base_sha256),
        f"- data: `{provenance.data}` ({provenance.records} records), "
        f"sha256 `{provenance.data_sha256}`",
        f"- LoRA: rank {lora['rank']}, alpha {lora['alpha']}, dropout {lora['dropout']}, "
        f"targets {', '.join(lora['targets'])}; {outcome.trainable_parameters:,} trainable "
        "parameters",
        f"- training: {outcome.steps} steps, batch {config['batch_size']}, learning rate "
        f"{config['learning_rate']}, max length {config['max_length']}, seed {config['seed']}; "
        f"{outcome.examples} examples ({outcome.skipped_too_long} skipped as too long), "
        f"{outcome.target_tokens:,} answer tokens",
        f"- time: {outcome.seconds:.0f} s on {outcome.device}"
        + (f" (resumed at step {outcome.resumed_from})" if outcome.resumed_from else ""),
        f"- software: {', '.join(f'{k} {v}' for k, v in provenance.software.items())}",
        "",
        "## Loss",
        "| step | loss |",
        "|---|---|",
        *(f"| {p.step} | {p.loss:.4f} |" for p in _thin(outcome)),
    ]
    if provenance.evaluation is not None:
        e = provenance.evaluation
        lines += [
            "",
            "## Evaluation (held-out file, same prompt for both)",
            f"- metric `{e.metric}`, n = {e.n}, data sha256 `{e.data_sha256}`",
            f"- fine-tuned: **{e.finetuned:.3f}**; base: {e.base:.3f} "
            f"({100 * (e.finetuned - e.base):+.1f} points)",
        ]
    return "\n".join(lines) + "\n"


def _pin_lines(pins: dict[str, str], shown: int = 8) -> str:
    """The base's pins for the card (all of them are in the manifest and training.json)."""
    lines = [f"\n  - `{name}` sha256 `{digest}`" for name, digest in list(pins.items())[:shown]]
    if len(pins) > shown:
        lines.append(f"\n  - and {len(pins) - shown} more files (see training.json)")
    return "".join(lines)


def _thin(outcome: TrainOutcome) -> list[Any]:
    """At most CURVE_POINTS evenly spaced points, the last one always included."""
    curve = outcome.loss_curve
    stride = max(1, -(-len(curve) // CURVE_POINTS))
    points = curve[::stride]
    if curve and points[-1] is not curve[-1]:
        points.append(curve[-1])
    return points


def _portable_adapter_config(folder: Path, base: str) -> None:
    """peft records the base as this machine's path; record the source people can resolve."""
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_manifest(manifest: dict[str, Any], folder: Path) -> None:
    """Validate as the store will: local paths as upload placeholders (the adapter may not be
    written yet, so it stands in as the folder itself)."""
    from registry.artifact_store import upload_local_sources
    from specialists.engine_registry import check_publishable

    probe = upload_local_sources(
        {**manifest, "model": {**manifest["model"], "adapter": str(folder)}}, folder, None
    )
    check_publishable(parse_manifest(probe, source=str(folder / MANIFEST)))


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
