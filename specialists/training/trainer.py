"""LoRA fine-tuning with peft on a base's own weights: a plain, deterministic training loop.

Not `transformers.Trainer`: the loop is forty lines, and owning it keeps what matters here
exact and testable: one seed decides the data order, the LoRA initialisation and dropout (same
seed, same adapter); a checkpoint holds the adapter, the optimizer and the step, so `--resume`
continues the same run instead of restarting it; the loss curve lands in the card. The GGUF
base is dequantized to fp32 on load, so it trains like any other checkpoint. CUDA is used when
there is one (bf16 autocast), the CPU otherwise.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry.errors import InvalidRequestError
from specialists.training.config import FinetuneConfig
from specialists.training.records import ChatRecord, DataError, file_sha256, read_records
from specialists.training.tokenize import EncodedExample, encode_record, pad_batch
from specialists.weights import base_location, load_causal_lm

CHECKPOINT = "checkpoint"
ADAPTER = "adapter"


class LossPoint(BaseModel):
    step: int
    loss: float


class TrainOutcome(BaseModel):
    """What the run did, for the card (the adapter itself is in `adapter_dir`)."""

    adapter_dir: Path
    steps: int
    examples: int
    skipped_too_long: int
    target_tokens: int
    trainable_parameters: int
    seconds: float
    device: str
    resumed_from: int = 0
    loss_curve: list[LossPoint]


@dataclass
class Progress:
    """Called after each step; the CLI draws a bar from it, tests record it."""

    on_step: Callable[[int, int, float], None] = lambda step, total, loss: None
    on_message: Callable[[str], None] = print
    losses: list[float] = field(default_factory=list)


def load_training_model(config: FinetuneConfig) -> tuple[Any, Any, str]:
    """The base (fp32) with fresh LoRA layers from `config.lora`; model, tokenizer, device."""
    import torch
    from peft import LoraConfig, get_peft_model

    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer, device = load_causal_lm(
        base_location(config.base), dtype="float32", label=f"base {config.base}"
    )
    torch.manual_seed(config.seed)  # the LoRA initialisation
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.targets),
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as error:  # e.g. a target module the base does not have
        raise InvalidRequestError(f"--lora-targets: {error}") from None
    return model, tokenizer, device


def encode_all(
    tokenizer: Any, records: list[ChatRecord], max_length: int, where: Path
) -> tuple[list[EncodedExample], int]:
    """Encoded examples that fit `max_length`, and how many were skipped as too long."""
    encoded = []
    for number, record in enumerate(records, start=1):
        try:
            encoded.append(encode_record(tokenizer, record))
        except ValueError as error:
            raise DataError(f"{where}: record {number}: {error}") from None
    kept = [e for e in encoded if len(e.ids) <= max_length]
    if not kept:
        raise DataError(f"{where}: every record is longer than --max-length {max_length} tokens")
    return kept, len(records) - len(kept)


def batch_order(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Which examples each step trains on: seeded reshuffles per epoch, recomputable on resume."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        order = list(range(count))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for start in range(0, count, batch_size):
            batches.append(order[start : start + batch_size])
        epoch += 1
    return batches[:steps]


def train(
    config: FinetuneConfig,
    progress: Progress | None = None,
    records: list[ChatRecord] | None = None,
) -> tuple[TrainOutcome, Any, Any]:
    """Run the fine-tune; returns the outcome and the trained (peft) model with its tokenizer,
    so the caller can evaluate it without loading it again."""
    import torch

    progress = progress or Progress()
    records = records if records is not None else read_records(config.data)
    if config.eval_data is not None:
        read_records(config.eval_data)  # a broken eval file fails before an hour of training
    progress.on_message(f"loading base {config.base}")
    model, tokenizer, device = load_training_model(config)
    examples, skipped = encode_all(tokenizer, records, config.max_length, config.data)
    total = config.total_steps(len(examples))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.warmup_steps, total)
    )
    checkpoint = config.out / CHECKPOINT
    fingerprint = config.fingerprint(file_sha256(config.data))
    start, curve, earlier_s = 0, list[LossPoint](), 0.0
    if config.resume and (checkpoint / "state.pt").is_file():
        start, curve, earlier_s = _restore(
            checkpoint, model, optimizer, schedule, total, fingerprint
        )
        progress.on_message(f"resuming at step {start} of {total}")
    elif config.resume:
        progress.on_message(f"--resume: no checkpoint in {checkpoint}; starting at step 0")
    order = batch_order(len(examples), config.batch_size, total, config.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    model.train()
    began = time.monotonic()
    for step in range(start, total):
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout draws: same on resume
        batch = pad_batch([examples[i] for i in order[step]], tokenizer.pad_token_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        with autocast:
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise InvalidRequestError(
                f"training diverged at step {step + 1} (loss {loss.item()}): lower --lr"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.item())
        curve.append(LossPoint(step=step + 1, loss=round(value, 4)))
        progress.losses.append(value)
        progress.on_step(step + 1, total, value)
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < total:
            spent = earlier_s + time.monotonic() - began
            state = {"step": step + 1, "fingerprint": fingerprint, "seconds": spent}
            _save_checkpoint(checkpoint, model, optimizer, schedule, state, curve)
    model.eval()
    adapter_dir = config.out / ADAPTER
    model.save_pretrained(str(adapter_dir))
    _clean_adapter_dir(adapter_dir)
    shutil.rmtree(checkpoint, ignore_errors=True)  # done: a later --resume starts afresh
    outcome = TrainOutcome(
        adapter_dir=adapter_dir,
        steps=total,
        examples=len(examples),
        skipped_too_long=skipped,
        target_tokens=sum(e.target_tokens for e in examples),
        trainable_parameters=sum(p.numel() for p in trainable),
        seconds=round(earlier_s + time.monotonic() - began, 1),
        device=device,
        resumed_from=start,
        loss_curve=curve,
    )
    return outcome, model, tokenizer


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_checkpoint(
    folder: Path,
    model: Any,
    optimizer: Any,
    schedule: Any,
    state: dict[str, Any],
    curve: list[LossPoint],
) -> None:
    """Adapter plus optimizer state, written beside and then swapped in, so a crash mid-save
    leaves a whole checkpoint (the previous one is moved aside before the new one moves in)."""
    import torch

    staging = folder.with_name(folder.name + ".tmp")
    previous = folder.with_name(folder.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(str(staging / ADAPTER))
    torch.save(
        {
            **state,
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "curve": [[p.step, p.loss] for p in curve],
        },
        staging / "state.pt",
    )
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


def _restore(
    folder: Path,
    model: Any,
    optimizer: Any,
    schedule: Any,
    total: int,
    fingerprint: str,
) -> tuple[int, list[LossPoint], float]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    # weights_only: a checkpoint is data; unpickling arbitrary objects could run code.
    state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    if state.get("fingerprint") != fingerprint:
        raise InvalidRequestError(
            f"--resume: the checkpoint in {folder} was made with other data or settings; "
            "resume with the same ones, or start afresh without --resume"
        )
    step = int(state["step"])
    if step >= total:
        raise InvalidRequestError(
            f"--resume: the checkpoint is at step {step}, the run has {total} steps"
        )
    weights = load_file(str(folder / ADAPTER / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    curve = [LossPoint(step=int(s), loss=float(v)) for s, v in state["curve"]]
    return step, curve, float(state.get("seconds", 0.0))


def _clean_adapter_dir(folder: Path) -> None:
    """peft writes a README stub; the card is written by the caller instead."""
    (folder / "README.md").unlink(missing_ok=True)
