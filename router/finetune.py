"""Adapt the encoder to the installed specialists' examples (contrastive few-shot, SetFit-style).

Frozen MiniLM puts questions of neighbouring domains close together. Fine-tuning it on the
specialists' own examples, so that examples of one specialist move together and those of
different specialists apart, sharpens every scoring method. The loss is SetFit's cosine loss
(cosine similarity regressed to 1 for same-specialist pairs, 0 otherwise), applied to every pair
of a P x K batch (P specialists, K examples each) so that one forward pass yields many pairs.
Minutes on two CPU cores for a few hundred examples.

The result is an artifact folder: `model/` (a sentence-transformers folder) and
`router-encoder.json` (format version, base model, a digest of the examples it was fitted on,
training settings and, once `save_calibration` ran, the thresholds fitted with this encoder:
fine-tuning moves every score up, so thresholds of the frozen encoder do not carry over).
`load_encoder` refuses a format version it does not know.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from registry.router_artifacts import RouterArtifactError
from router.encoder import SentenceTransformerEncoder, minilm_path
from router.router import FitReport, Router

FORMAT_VERSION = 1
META_FILE = "router-encoder.json"
MODEL_DIR = "model"


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(150, ge=1, description="Optimiser steps (one P x K batch each).")
    per_specialist: int = Field(4, ge=2, description="K: examples of one specialist per batch.")
    batch_size: int = Field(32, ge=4, description="P x K texts per step.")
    learning_rate: float = Field(2e-5, gt=0)
    warmup: float = Field(0.1, ge=0, le=1, description="Share of steps with a rising rate.")
    max_seq_length: int = Field(64, ge=8, description="Tokens per text while training.")
    seed: int = 0


class EncoderArtifact(BaseModel):
    """The metadata file of a fine-tuned encoder artifact."""

    model_config = ConfigDict(extra="forbid")
    format_version: int
    base: str = Field(description="The encoder it was fine-tuned from.")
    examples_digest: str = Field(description="sha256 of the examples: refit when it changes.")
    specialists: list[str]
    n_examples: int
    settings: FinetuneSettings
    final_loss: float
    train_seconds: float
    created_at: str
    calibration: FitReport | None = Field(
        None, description="Thresholds fitted on labelled data with this encoder."
    )


def examples_digest(examples: dict[str, list[str]]) -> str:
    """Order-independent digest of {specialist: examples}; equal digests need no refit."""
    canonical = json.dumps({k: sorted(v) for k, v in sorted(examples.items())}, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def finetune_encoder(
    examples: dict[str, list[str]],
    out_dir: Path,
    *,
    base: Path | None = None,
    settings: FinetuneSettings | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> EncoderArtifact:
    """Fine-tune `base` (default: the offline MiniLM) on `examples`; save to `out_dir`."""
    import torch
    from sentence_transformers import SentenceTransformer

    settings = settings or FinetuneSettings()
    names = sorted(name for name, texts in examples.items() if texts)
    if len(names) < 2:
        raise ValueError("fine-tuning needs at least two specialists with examples")
    base = base or minilm_path()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model: Any = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    inference_length = model.max_seq_length
    model.max_seq_length = settings.max_seq_length
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    warmup = max(1, int(settings.warmup * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / warmup, (settings.steps - step) / (settings.steps - warmup + 1)
        ),
    )
    model.train()
    start, loss_value = time.perf_counter(), float("nan")
    for step in range(settings.steps):
        texts, labels = _batch(examples, names, settings, rng)
        loss = _pair_loss(model, texts, torch.tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
        if progress:
            progress(step + 1, loss_value)
    model.eval()
    model.max_seq_length = inference_length
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir / MODEL_DIR))
    artifact = EncoderArtifact(
        format_version=FORMAT_VERSION,
        base=str(base),
        examples_digest=examples_digest({n: examples[n] for n in names}),
        specialists=names,
        n_examples=sum(len(examples[n]) for n in names),
        settings=settings,
        final_loss=round(loss_value, 5),
        train_seconds=round(time.perf_counter() - start, 1),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (out_dir / META_FILE).write_text(artifact.model_dump_json(indent=2) + "\n")
    return artifact


def _batch(
    examples: dict[str, list[str]], names: list[str], settings: FinetuneSettings, rng: random.Random
) -> tuple[list[str], list[int]]:
    """P specialists x K examples; a specialist with fewer than K examples repeats some."""
    per = settings.per_specialist
    chosen = rng.sample(range(len(names)), min(len(names), max(2, settings.batch_size // per)))
    texts: list[str] = []
    labels: list[int] = []
    for i in chosen:
        pool = examples[names[i]]
        picks = rng.sample(pool, per) if len(pool) >= per else rng.choices(pool, k=per)
        texts += picks
        labels += [i] * per
    return texts, labels


def _pair_loss(model: Any, texts: list[str], labels: Any) -> Any:
    """SetFit's cosine loss over all pairs: same specialist -> 1, different -> 0 (each class of
    pair weighted equally, since negatives far outnumber positives)."""
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 5
    features = prepare(texts)
    embeddings = model(features)["sentence_embedding"]
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    similarity = embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(texts), dtype=torch.bool)
    positive = similarity[same & off_diagonal]
    negative = similarity[~same]
    return ((positive - 1) ** 2).mean() + (negative**2).mean()


def read_artifact(path: Path) -> EncoderArtifact:
    """The artifact's metadata; raises `RouterArtifactError` unless this version can load it."""
    meta = path / META_FILE
    if not meta.is_file() or not (path / MODEL_DIR).is_dir():
        raise RouterArtifactError(
            f"{path} is not a router encoder artifact (expected {META_FILE} and {MODEL_DIR}/); "
            "create one with 'mesh router fit'"
        )
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as error:
        raise RouterArtifactError(f"{meta}: not JSON ({error.msg})") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise RouterArtifactError(
            f"{meta}: format version {version!r}, this router reads {FORMAT_VERSION}; "
            "refit the encoder with 'mesh router fit'"
        )
    return EncoderArtifact.model_validate(data)


def load_encoder(path: Path) -> SentenceTransformerEncoder:
    """Load a fine-tuned encoder artifact written by `finetune_encoder`."""
    read_artifact(path)
    return SentenceTransformerEncoder(path / MODEL_DIR)


def save_calibration(path: Path, report: FitReport) -> EncoderArtifact:
    """Store the thresholds `Router.fit` found with this encoder in the artifact."""
    artifact = read_artifact(path).model_copy(update={"calibration": report})
    (path / META_FILE).write_text(artifact.model_dump_json(indent=2) + "\n")
    return artifact


def apply_calibration(router: Router, artifact: EncoderArtifact) -> bool:
    """Give `router` the artifact's thresholds when they were fitted for its method."""
    report = artifact.calibration
    if report is None or report.method != router.method:
        return False
    router.threshold = report.global_threshold
    router.thresholds = report.thresholds
    return True


def is_artifact(path: Path) -> bool:
    return (path / META_FILE).is_file()
