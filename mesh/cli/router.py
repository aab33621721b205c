"""Offline router commands: `mesh router eval` (measure) and `mesh router fit` (adapt encoder).

Wired into the main app with `app.add_typer(router_app, name="router")`. Both run in this
process on labelled JSONL, without a running mesh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mesh.cli.app import JsonFlag, command_group
from registry.errors import InvalidRequestError

if TYPE_CHECKING:
    from router import Encoder

router_app = command_group(
    "router", "Evaluate the router on labelled queries, or adapt its encoder, offline."
)

ExamplesOption = Annotated[
    Path,
    typer.Option(
        "--examples", exists=True, dir_okay=False, help='JSONL lines {"specialist", "text"}.'
    ),
]
EncoderOption = Annotated[
    Path | None,
    typer.Option(
        "--encoder",
        exists=True,
        file_okay=False,
        help="Encoder: an artifact from 'mesh router fit' or a sentence-transformers folder "
        "(default: the offline MiniLM).",
    ),
]


def load_encoder(path: Path | None) -> Encoder:
    """The default MiniLM, a fine-tuned artifact, or a plain sentence-transformers folder."""
    from router import SentenceTransformerEncoder
    from router.finetune import is_artifact
    from router.finetune import load_encoder as load_artifact

    if path is None:
        return SentenceTransformerEncoder()
    return load_artifact(path) if is_artifact(path) else SentenceTransformerEncoder(path)


@router_app.command("eval")
def eval_command(
    examples: ExamplesOption,
    test: Annotated[
        Path,
        typer.Option(
            "--test", exists=True, dir_okay=False, help='JSONL lines {"text", "label"|null}.'
        ),
    ],
    val: Annotated[
        Path | None,
        typer.Option(
            "--val", exists=True, dir_okay=False, help="Labelled JSONL to fit thresholds on first."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="centroid, knn, knn-max or linear.")
    ] = "knn",
    encoder: EncoderOption = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Global threshold (default per method).")
    ] = None,
    latency_samples: Annotated[
        int, typer.Option("--latency-samples", min=0, help="Queries timed one by one.")
    ] = 200,
    conversations: Annotated[
        bool,
        typer.Option(
            "--follow-ups", help="Also measure follow-up stickiness on two-turn conversations."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Route labelled test queries and report accuracy, out-of-scope detection and latency."""
    from router import METHOD_DEFAULTS, Router
    from router.evaluate import evaluate, read_examples, read_labelled
    from router.finetune import apply_calibration, is_artifact, read_artifact

    if method not in METHOD_DEFAULTS:
        raise InvalidRequestError(
            f"unknown method {method!r}: choose one of {', '.join(METHOD_DEFAULTS)}"
        )
    known = read_examples(examples)
    texts, labels = read_labelled(test, set(known))
    router = Router.from_examples(
        known,
        method=method,  # type: ignore[arg-type]
        encoder=load_encoder(encoder),
        threshold=threshold,
    )
    calibrated = False
    if val is not None:
        router.fit(*read_labelled(val, set(known)))
    elif encoder is not None and is_artifact(encoder) and threshold is None:
        calibrated = apply_calibration(router, read_artifact(encoder))
    report = evaluate(
        router,
        texts,
        labels,
        fitted=val is not None or calibrated,
        latency_samples=latency_samples,
        conversations=conversations,
    )
    if as_json:
        typer.echo(report.model_dump_json())
        return
    source = f"fitted on {val}" if val else "from the artifact" if calibrated else "default"
    oos_auroc = "n/a" if report.oos_auroc is None else f"{report.oos_auroc:.3f}"
    oos_acc = "n/a" if report.oos_accuracy is None else f"{report.oos_accuracy:.3f}"
    typer.echo(
        f"{report.method} on {report.n_test} queries ({report.n_out_of_scope} out of scope), "
        f"thresholds {source}:\n"
        f"  accuracy (in scope) {report.accuracy:.3f}   macro F1 {report.macro_f1:.3f}\n"
        f"  out of scope: AUROC {oos_auroc}, fell back {oos_acc}\n"
        f"  latency p50 {report.p50_ms:.1f} ms, p95 {report.p95_ms:.1f} ms"
    )
    if report.follow_ups:
        f = report.follow_ups
        typer.echo(
            f"  follow-ups stay {f.stay_rate:.3f}; new topics switch {f.switch_accuracy:.3f} "
            f"(alone {f.switch_accuracy_without_history:.3f})"
        )
    typer.echo("Add --json for the confusion matrix.")


@router_app.command("fit")
def fit_command(
    examples: ExamplesOption,
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Artifact folder to write.")],
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            exists=True,
            dir_okay=False,
            help="Labelled JSONL: fit thresholds with the new encoder and store them too.",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="Method the stored thresholds are for.")
    ] = "knn",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 150,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Fine-tune the encoder on the examples (contrastive, SetFit-style); save an artifact."""
    from router import METHOD_DEFAULTS, Router
    from router.evaluate import read_examples, read_labelled
    from router.finetune import (
        FinetuneSettings,
        finetune_encoder,
        load_encoder,
        save_calibration,
    )

    if method not in METHOD_DEFAULTS:
        raise InvalidRequestError(
            f"unknown method {method!r}: choose one of {', '.join(METHOD_DEFAULTS)}"
        )
    known = read_examples(examples)
    labelled = read_labelled(val, set(known)) if val is not None else None

    def progress(step: int, loss: float) -> None:
        if not as_json and (step % 10 == 0 or step == steps):
            typer.echo(f"step {step}/{steps}  loss {loss:.4f}", err=True)

    artifact = finetune_encoder(
        known, out, settings=FinetuneSettings(steps=steps, seed=seed), progress=progress
    )
    if labelled is not None:
        router = Router.from_examples(
            known,
            method=method,  # type: ignore[arg-type]
            encoder=load_encoder(out),
        )
        artifact = save_calibration(out, router.fit(*labelled))
    if as_json:
        typer.echo(json.dumps({"path": str(out), **artifact.model_dump(mode="json")}))
        return
    typer.echo(
        f"saved {out} ({len(artifact.specialists)} specialists, {artifact.n_examples} examples, "
        f"{artifact.train_seconds:.0f} s); evaluate it with "
        f"'mesh router eval --encoder {out} --examples ... --test ...'"
    )
