"""`FinetuneConfig`: everything that decides a fine-tune, so the card can record it whole."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from registry.artifact_store import is_local_path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
SCHEMES = ("package:", "artifact:")


class LoraSettings(BaseModel):
    """LoRA shape. The default (rank 8 on the attention projections) keeps a SmolLM2-135M
    adapter under 4 MB, small enough to commit and to pool many per base replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: tuple[str, ...] = Field(DEFAULT_TARGETS, min_length=1, max_length=16)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        description="Base weights: a manifest source ('package:...', 'artifact:...', a hub id "
        "in the local cache) or a local folder / .gguf file."
    )
    engine: str = Field(
        "onnx",
        description="The engine the drafted manifest serves with (`model.engine`): training "
        "runs on transformers either way.",
    )
    data: Path
    eval_data: Path | None = None
    out: Path
    steps: int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps.")
    epochs: float | None = Field(None, gt=0, le=1000, description="Passes over the data.")
    batch_size: int = Field(8, ge=1, le=1024)
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    warmup_steps: int = Field(10, ge=0)
    max_length: int = Field(512, ge=16, le=32_768, description="Longer records are skipped.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads (default: torch's).")
    checkpoint_every: int = Field(50, ge=1)
    resume: bool = False

    @field_validator("base")
    @classmethod
    def _absolute_local_base(cls, value: str) -> str:
        """A local base is recorded absolute: the manifest is read from another folder."""
        path = Path(value).expanduser()
        if is_local_path(value) or (not value.startswith(SCHEMES) and path.exists()):
            return str(path.resolve())
        return value

    @model_validator(mode="after")
    def _one_length(self) -> FinetuneConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        return self

    def fingerprint(self, data_sha256: str) -> str:
        """What a checkpoint must match to be resumed: the data and every setting that shapes
        the run (not where it is written, nor the thread count)."""
        import hashlib

        shaping = self.model_dump(
            mode="json", exclude={"out", "eval_data", "resume", "threads", "checkpoint_every"}
        )
        shaping["data"] = data_sha256
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()

    def total_steps(self, records: int) -> int:
        """Steps to run: `steps`, else `epochs` (default 1) over `records` in batches."""
        if self.steps is not None:
            return self.steps
        per_epoch = -(-records // self.batch_size)
        return max(1, round(per_epoch * (self.epochs or 1.0)))
