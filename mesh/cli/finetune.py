"""`mesh finetune` and `mesh eval`: make a specialist from your data, and score one."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.cli.app import (
    JsonFlag,
    UrlOption,
    app,
    echo_json,
    load_settings,
    open_store,
)
from specialists.catalog import SMOLLM2_SOURCE

DEFAULT_BASE = SMOLLM2_SOURCE


@app.command()
def finetune(
    data: Annotated[Path, typer.Option("--data", help="Training chat JSONL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for adapter, manifest and card.")],
    base: Annotated[str, typer.Option("--base", help="Base weights (source or local path).")] = (
        DEFAULT_BASE
    ),
    engine: Annotated[
        str, typer.Option("--engine", help="The engine the manifest serves with.")
    ] = "onnx",
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Held-out chat JSONL scored after training.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="With --eval: exact, json_fields, sql_execution, unit_tests."
        ),
    ] = None,
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
    from registry.errors import InvalidRequestError
    from specialists.training.config import FinetuneConfig, LoraSettings
    from specialists.training.package import SpecialistIdentity
    from specialists.training.pipeline import EvalRequest
    from specialists.training.pipeline import finetune as run_finetune

    if (eval_data is None) != (metric is None):
        raise InvalidRequestError("--eval FILE and --metric NAME go together")
    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
    config = FinetuneConfig(
        base=base,
        engine=engine,
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
    evaluation = EvalRequest(metric=metric, limit=eval_limit) if metric else None
    with _ProgressBar() as progress:
        manifest = run_finetune(config, identity, evaluation, progress.progress)
    typer.echo(f"wrote {manifest}; publish it with: mesh register {manifest.parent}")


@app.command("eval")
def eval_specialist(
    target: Annotated[
        str,
        typer.Argument(
            help="A folder written by `mesh finetune` (or its manifest file): scored offline. "
            "Or a published specialist's name: scored through the running mesh."
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="Labelled chat JSONL.")],
    metric: Annotated[
        str, typer.Option("--metric", help="exact, json_fields, sql_execution or unit_tests.")
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="First N records only.")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 256,
    base_prompt: Annotated[
        str | None,
        typer.Option("--base-prompt", help="System prompt for the base (default: the same)."),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads (offline).")] = 2,
    url: UrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Score a specialist on a labelled set, with its base model's score beside it.

    The base runs offline in this process, without the adapter, with the specialist's own
    system prompt (or --base-prompt), so the difference is what the fine-tune adds."""
    from registry.artifact_store import is_local_path
    from specialists.evaluation.metrics import get_metric
    from specialists.evaluation.runner import LocalGenerator, MeshGenerator, evaluate
    from specialists.training.records import read_records
    from specialists.transformers_engine import attach_adapter, check_adapter_folder

    get_metric(metric)
    records = read_records(data)[:limit]
    path = Path(target)
    if is_local_path(target) or "/" in target or path.exists():
        manifest, base, adapter = _offline_target(path)
        tuned: Any = None
    else:
        manifest, base = _published_target(target)
        adapter = None
        settings = load_settings()
        key = (settings.api_keys or [None])[0]
        tuned = MeshGenerator(url or settings.base_url, target, key)
    system = manifest.system_prompt or None
    base_model = LocalGenerator(base, threads=threads)
    plain = evaluate(
        records,
        base_model,
        metric,
        max_tokens=max_tokens,
        system_prompt=base_prompt if base_prompt is not None else system,
    )
    if tuned is None:
        folder = check_adapter_folder(adapter) if adapter else None
        model = (
            attach_adapter(base_model.model, folder, "specialist") if folder else base_model.model
        )
        tuned = LocalGenerator.from_loaded(model, base_model.tokenizer)
    scored = evaluate(records, tuned, metric, max_tokens=max_tokens, system_prompt=system)
    result = {
        "specialist": manifest.name,
        "metric": metric,
        "n": len(records),
        "specialist_score": scored.score,
        "base": plain.score,
        "gain_points": round(100 * (scored.score - plain.score), 1),
    }
    if as_json:
        echo_json(result)
        return
    typer.echo(
        f"{manifest.name} on {data.name} ({metric}, n={len(records)}): {scored.score:.3f}; "
        f"base {plain.score:.3f} ({result['gain_points']:+.1f} points)"
    )


def _offline_target(path: Path) -> tuple[Any, str, Path | None]:
    """The manifest of a finetune folder, its base and its adapter as local paths."""
    from registry import parse_manifest
    from registry.artifact_store import is_local_path, upload_local_sources
    from registry.errors import InvalidRequestError
    from registry.manifest import read_manifest_data
    from specialists.sources import adapter_folder, local_path

    file = path / "manifest.yaml" if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError(
            f"{file}: cannot read it ({error.strerror}); give a folder written by `mesh "
            "finetune` or its manifest, or a published specialist's name"
        ) from None
    data = read_manifest_data(text, source=str(file))
    manifest = parse_manifest(upload_local_sources(data, file.parent, None), source=str(file))
    model = data["model"]

    def local(value: str) -> Path:
        return (file.parent / Path(value).expanduser()).resolve()

    source = model["source"]
    base = str(local(source)) if is_local_path(source) else str(local_path(source, _options()))
    adapter = model.get("adapter")
    if adapter and not is_local_path(adapter):
        return manifest, base, adapter_folder(adapter, _options())
    return manifest, base, local(adapter) if adapter else None


def _published_target(name: str) -> tuple[Any, str]:
    """The installed version's manifest and its base as a local path, its pins verified (the
    mesh serves that version; the base scored beside it must be the same weights)."""
    from registry.errors import InvalidRequestError
    from specialists.sources import local_path, verify_sources

    with open_store() as (registry, _):
        state = registry.install_states().get(name)
        if state is None:
            raise InvalidRequestError(f"{name} is not installed in this mesh", param="target")
        manifest = registry.get(name, state.version)
        if manifest.model.engine == "tool":
            raise InvalidRequestError(f"{name} runs no model (it is a tool)")
        options = _options(registry.url)
        path = local_path(manifest.model.source, options)
        verify_sources(manifest, options)
    return manifest, str(path) if path else manifest.model.source


def _options(redis_url: str | None = None) -> Any:
    """How this machine's mesh loads weights (artifacts fetched from `redis_url`)."""
    from mesh.controller import source_options

    settings = load_settings()
    return source_options(redis_url or settings.redis_url or "", settings)


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
