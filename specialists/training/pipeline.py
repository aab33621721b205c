"""`finetune`: data in, a publishable specialist folder out (train, evaluate, package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from registry.artifact_store import is_local_path
from registry.artifacts import source_hashes
from registry.errors import InvalidRequestError
from registry.manifest import source_kind
from specialists.training.config import FinetuneConfig
from specialists.training.package import (
    EvalSummary,
    SpecialistIdentity,
    draft_manifest,
    write_specialist_dir,
)
from specialists.training.records import file_sha256, read_records
from specialists.training.trainer import Progress, train
from specialists.weights import base_location


class EvalRequest(BaseModel):
    """What `--eval` scores with: a named metric on the held-out file, up to `limit` records."""

    metric: str
    limit: int | None = Field(None, ge=1)
    max_tokens: int = Field(256, ge=1, le=8192)


def base_pins(base: str) -> dict[str, str]:
    """The base's file hashes as `model.sha256` keys them (none for a hub id)."""
    location = base_location(base)
    if not location.local:
        return {}
    if not is_local_path(base) and source_kind(base) == "package":
        return source_hashes(base)
    folder = Path(location.location)
    files = [folder / location.gguf_file] if location.gguf_file else sorted(folder.rglob("*"))
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in files if f.is_file()}


def finetune(
    config: FinetuneConfig,
    identity: SpecialistIdentity,
    evaluation: EvalRequest | None = None,
    progress: Progress | None = None,
) -> Path:
    """Train, evaluate against the base with the same prompt, write DIR; the manifest path."""
    progress = progress or Progress()
    if evaluation is not None and config.eval_data is None:
        raise InvalidRequestError("--metric scores the --eval file: give --eval FILE")
    if evaluation is not None:
        from specialists.evaluation.metrics import get_metric

        get_metric(evaluation.metric)  # an unknown metric fails before training
    records = read_records(config.data)
    pins = base_pins(config.base)
    prepare_out(config.out)
    draft_manifest(config, identity, records, pins)  # a bad name or version fails now
    outcome, model, tokenizer = train(config, progress, records)
    summary = None
    if evaluation is not None and config.eval_data is not None:
        progress.on_message(f"evaluating on {config.eval_data} ({evaluation.metric})")
        summary = evaluate_against_base(model, tokenizer, config.eval_data, evaluation)
        progress.on_message(
            f"{evaluation.metric}: fine-tuned {summary.finetuned:.3f}, base {summary.base:.3f} "
            f"(n={summary.n})"
        )
    return write_specialist_dir(config, identity, records, outcome, tokenizer, pins, summary)


def prepare_out(folder: Path) -> None:
    """Create the output folder and prove it is writable before an hour of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise InvalidRequestError(
            f"--out {folder}: cannot write there ({error.strerror})"
        ) from None


def evaluate_against_base(
    model: Any, tokenizer: Any, data: Path, request: EvalRequest
) -> EvalSummary:
    """Score the in-memory peft model with and without its adapter on the same prompts."""
    from specialists.evaluation.runner import LocalGenerator, evaluate

    records = read_records(data)[: request.limit]
    tuned = LocalGenerator.from_loaded(model, tokenizer)
    finetuned = evaluate(records, tuned, request.metric, max_tokens=request.max_tokens)
    with model.disable_adapter():
        base = evaluate(records, tuned, request.metric, max_tokens=request.max_tokens)
    return EvalSummary(
        metric=request.metric,
        n=len(records),
        finetuned=finetuned.score,
        base=base.score,
        data_sha256=file_sha256(data),
    )
