"""Router commands: `mesh router eval` (measure) and `mesh router fit` (adapt the router).

Wired into the main app with `app.add_typer(router_app, name="router")`. Both run in this
process, without a running mesh: `eval` and offline `fit` on JSONL files, store-mode `fit` on
the specialists installed in the store (Redis), saving a router artifact the mesh loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mesh.cli.app import JsonFlag, TokenOption, command_group
from registry.errors import InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import Callable

    from registry.router_artifacts import (
        OperatingPoint,
        RouterArtifactRecord,
        RouterArtifactStore,
    )
    from router import Encoder
    from router.finetune import FinetuneSettings
    from router.router import Method

router_app = command_group(
    "router", "Evaluate the router on labelled queries, or fit it to the installed specialists."
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

LexicalOption = Annotated[
    float | None,
    typer.Option(
        "--lexical-weight",
        min=0,
        max=4,
        help="linear only: weight of hashed word features beside the embedding (0: off; "
        "default $MESH_ROUTER_LEXICAL_WEIGHT, 0.7). Not for store mode: the running mesh "
        "uses its setting, so a fit here must match it.",
    ),
]
OosRecallOption = Annotated[
    float | None,
    typer.Option(
        "--oos-recall",
        help="Operating point: fit thresholds that reject at least this share of the labelled "
        "out-of-scope queries, with the best in-scope accuracy: one global cut at that "
        "recall, beside the curve (default: balanced).",
    ),
]
PrecisionOption = Annotated[
    float | None,
    typer.Option(
        "--precision",
        help="Operating point: of the labelled queries not falling back, at least this share "
        "routed right.",
    ),
]


def _target(
    oos_recall: float | None, precision: float | None, balanced: bool = False
) -> OperatingPoint | None:
    """The operating point asked for on the command line (None: keep the default or stored)."""
    from pydantic import ValidationError

    from registry.router_artifacts import OperatingPoint

    if balanced:
        if oos_recall is not None or precision is not None:
            raise InvalidRequestError("--balanced goes without --oos-recall and --precision")
        return OperatingPoint()
    if oos_recall is None and precision is None:
        return None
    try:
        return OperatingPoint(oos_recall=oos_recall, precision=precision)
    except ValidationError as error:
        problem = error.errors()[0]
        raise InvalidRequestError(
            f"invalid operating point: {problem['msg']} (--oos-recall and --precision take one "
            "number in (0, 1], and only one of them)"
        ) from None


def load_encoder(path: Path | None) -> Encoder:
    """The default MiniLM, a fine-tuned artifact, or a plain sentence-transformers folder."""
    from router import SentenceTransformerEncoder
    from router.finetune import is_artifact
    from router.finetune import load_encoder as load_artifact

    if path is None:
        return SentenceTransformerEncoder()
    return load_artifact(path) if is_artifact(path) else SentenceTransformerEncoder(path)


def routing_encoder(encoder: Encoder, method: str, lexical_weight: float | None) -> Encoder:
    """`encoder` as the router reads with it: lexical features added for the linear head
    (`lexical_weight` None: the setting, as the running mesh uses)."""
    from mesh.cli.app import load_settings
    from router.lexical import for_method, lexical_spec, with_lexical

    if lexical_weight is None:
        lexical_weight = load_settings().router_lexical_weight
    return with_lexical(encoder, for_method(method, lexical_spec(lexical_weight)))


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
    oos_recall: OosRecallOption = None,
    precision: PrecisionOption = None,
    lexical_weight: LexicalOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Route labelled test queries and report accuracy, out-of-scope detection and latency."""
    from router import METHOD_DEFAULTS, Router
    from router.calibrate import trade_off_table
    from router.evaluate import evaluate, read_examples, read_labelled
    from router.finetune import apply_calibration, is_artifact, read_artifact

    if method not in METHOD_DEFAULTS:
        raise InvalidRequestError(
            f"unknown method {method!r}: choose one of {', '.join(METHOD_DEFAULTS)}"
        )
    target = _target(oos_recall, precision)
    known = read_examples(examples)
    texts, labels = read_labelled(test, set(known))
    router = Router.from_examples(
        known,
        method=method,  # type: ignore[arg-type]
        encoder=routing_encoder(load_encoder(encoder), method, lexical_weight),
        threshold=threshold,
    )
    calibrated = False
    fit_report = None
    if val is not None:
        fit_report = router.fit(*read_labelled(val, set(known)), target)
    elif encoder is not None and is_artifact(encoder) and threshold is None:
        calibrated = apply_calibration(router, read_artifact(encoder))
    report = evaluate(
        router,
        texts,
        labels,
        fitted=val is not None or calibrated,
        latency_samples=latency_samples,
        conversations=conversations,
    ).model_copy(update={"calibration": fit_report})
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
    if fit_report is not None and fit_report.trade_off:
        typer.echo(
            "\nTrade-off on the validation set (out of fold for linear; choose a row with "
            "--oos-recall or --precision):\n"
            + trade_off_table(fit_report.trade_off, fit_report.chosen)
        )
    typer.echo("Add --json for the confusion matrix.")


@router_app.command("fit")
def fit_command(
    examples: Annotated[
        Path | None,
        typer.Option(
            "--examples",
            exists=True,
            dir_okay=False,
            help='Offline mode: JSONL lines {"specialist", "text"}, with --out. '
            "Default: the specialists installed in the store.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, help="Offline mode: artifact folder to write."),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            exists=True,
            dir_okay=False,
            help="Labelled JSONL: fit thresholds with the new encoder and store them too "
            "(store mode default: the labelled queries of the current artifact).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Method the stored thresholds are for (default: knn, or "
            "$MESH_ROUTER_METHOD in store mode).",
        ),
    ] = None,
    finetune: Annotated[
        bool,
        typer.Option(
            "--finetune/--no-finetune",
            help="Fine-tune the encoder (minutes); --no-finetune keeps the current encoder and "
            "fits thresholds and head only (store mode).",
        ),
    ] = True,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 150,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    oos_recall: OosRecallOption = None,
    precision: PrecisionOption = None,
    balanced: Annotated[
        bool,
        typer.Option(
            "--balanced",
            help="Operating point: balanced again (clears a target stored by an earlier fit).",
        ),
    ] = False,
    lexical_weight: LexicalOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit the router: fine-tune its encoder (contrastive, SetFit-style) and its thresholds.

    Store mode (no --examples): for the installed specialists, saved under
    $MESH_HOME/router/<version>/ and recorded in Redis as the current router artifact, which a
    running mesh loads within seconds. Offline mode (--examples, --out): an encoder artifact
    folder for 'mesh router eval --encoder'.
    """
    from router.finetune import FinetuneSettings

    if examples is None and out is not None:
        raise InvalidRequestError("--out is for offline mode: give --examples too")
    if examples is not None and out is None:
        raise InvalidRequestError(
            "offline mode needs --out; drop --examples to fit for the installed specialists"
        )
    if examples is not None and not finetune:
        raise InvalidRequestError("--no-finetune is for store mode: drop --examples and --out")
    settings = FinetuneSettings(steps=steps, seed=seed)
    target = _target(oos_recall, precision, balanced)

    def progress(step: int, loss: float) -> None:
        if not as_json and (step % 10 == 0 or step == steps):
            typer.echo(f"step {step}/{steps}  loss {loss:.4f}", err=True)

    if examples is None:
        if lexical_weight is not None:
            raise InvalidRequestError(
                "--lexical-weight is for offline mode: in store mode the router uses "
                "$MESH_ROUTER_LEXICAL_WEIGHT, as the running mesh does"
            )
        _fit_store(val, method, settings if finetune else None, target, progress, as_json)
        return
    assert out is not None
    _fit_offline(
        examples,
        out,
        val,
        _method(method or "knn"),
        settings,
        target,
        progress,
        as_json,
        lexical_weight,
    )


def _method(method: str) -> Method:
    from router import METHOD_DEFAULTS

    if method not in METHOD_DEFAULTS:
        raise InvalidRequestError(
            f"unknown method {method!r}: choose one of {', '.join(METHOD_DEFAULTS)}"
        )
    return method  # type: ignore[return-value]


def _fit_offline(
    examples: Path,
    out: Path,
    val: Path | None,
    method: Method,
    settings: FinetuneSettings,
    target: OperatingPoint | None,
    progress: Callable[[int, float], None],
    as_json: bool,
    lexical_weight: float | None = None,
) -> None:
    from router import Router
    from router.evaluate import read_examples, read_labelled
    from router.finetune import finetune_encoder, load_encoder, save_calibration

    known = read_examples(examples)
    labelled = read_labelled(val, set(known)) if val is not None else None
    artifact = finetune_encoder(known, out, settings=settings, progress=progress)
    if labelled is not None:
        encoder = routing_encoder(load_encoder(out), method, lexical_weight)
        router = Router.from_examples(known, method=method, encoder=encoder)
        artifact = save_calibration(out, router.fit(*labelled, target))
    if as_json:
        typer.echo(json.dumps({"path": str(out), **artifact.model_dump(mode="json")}))
        return
    typer.echo(
        f"saved {out} ({len(artifact.specialists)} specialists, {artifact.n_examples} examples, "
        f"{artifact.train_seconds:.0f} s); evaluate it with "
        f"'mesh router eval --encoder {out} --examples ... --test ...'"
    )


def _fit_store(
    val: Path | None,
    method: str | None,
    finetune: FinetuneSettings | None,
    target: OperatingPoint | None,
    progress: Callable[[int, float], None],
    as_json: bool,
) -> None:
    """Fit for the installed specialists; save the folder and make the record current. The
    operating point is `target`, else the current artifact's."""
    from mesh.cli.app import load_settings, open_store
    from registry.router_artifacts import LabelledQuery, RouterArtifactStore
    from router.artifact import artifact_dir, fit_artifact
    from router.artifact import load_encoder as load_verified
    from router.evaluate import read_labelled
    from router.index import index_examples
    from router.lexical import lexical_spec

    settings = load_settings()
    chosen = _method(method or settings.router_method)
    with open_store() as (registry, principal):
        principal.require_operator("fitting the mesh's router")
        manifests = registry.installed()
        if not manifests:
            raise InvalidRequestError(
                "no specialist is installed, so there is nothing to fit; install one with "
                "'mesh install NAME'"
            )
        examples = index_examples(manifests, tags=settings.router_index_tags)
        store = RouterArtifactStore(registry.client, registry.url)
        base = _current_or_none(store)
        if val is not None:
            texts, labels = read_labelled(val, set(examples))
            labelled = [
                LabelledQuery(text=t, label=lab) for t, lab in zip(texts, labels, strict=True)
            ]
        else:
            labelled = list(base.labelled) if base else []
        encoder_files = base.encoder if base and finetune is None else None
        encoder = (
            load_verified(encoder_files, settings.data_dir, load_encoder) if encoder_files else None
        )
        _router, record = fit_artifact(
            examples,
            {name: m.version for name, m in manifests.items()},
            home=settings.data_dir,
            encoder=encoder or load_encoder(None),
            encoder_files=encoder_files,
            method=chosen,
            fallback=settings.fallback,
            threshold=settings.router_threshold,
            labelled=labelled,
            lessons=registry.lessons.accepted(),
            target=target or (base.operating_point if base else None),
            finetune=finetune,
            lexical=lexical_spec(settings.router_lexical_weight),
            parent=base.version if base else None,
            load=load_encoder,
            progress=progress,
        )
        store.save(record)
    folder = artifact_dir(settings.data_dir, record.version)
    if as_json:
        summary = record.model_dump(mode="json", exclude={"labelled", "head"})
        typer.echo(json.dumps({"path": str(folder), "n_labelled": len(labelled), **summary}))
        return
    if record.encoder is None:
        encoder_note = "frozen encoder"
    elif finetune is not None:
        encoder_note = f"encoder fine-tuned in {record.encoder.train_seconds:.0f} s"
    else:
        encoder_note = "fine-tuned encoder kept"
    fitted = f"fitted on {len(labelled)} labelled queries" if labelled else "defaults"
    if record.n_lessons:
        fitted += f" and {record.n_lessons} accepted lessons"
    typer.echo(
        f"saved router artifact {record.version} for {len(examples)} specialists "
        f"({record.method}, {encoder_note}, thresholds {fitted}) in {folder}; it is current "
        "now, and a running mesh loads it within seconds"
    )
    if finetune is not None and not labelled:
        typer.echo(
            "Warning: no labelled queries, so the default thresholds apply, and with a "
            "fine-tuned encoder almost nothing falls back; add --val VAL.jsonl",
            err=True,
        )


def _current_or_none(store: RouterArtifactStore) -> RouterArtifactRecord | None:
    """The current record; a damaged one is reported and ignored (this fit replaces it)."""
    from registry.errors import MeshError

    try:
        return store.current()
    except MeshError as error:
        typer.echo(f"Warning: ignoring the current router artifact: {error.message}", err=True)
        return None


@router_app.command("review")
def review_command(
    accept: Annotated[
        list[str] | None, typer.Option("--accept", help="Accept a lesson by id (repeatable).")
    ] = None,
    reject: Annotated[
        list[str] | None, typer.Option("--reject", help="Reject a lesson by id (repeatable).")
    ] = None,
    relabel: Annotated[
        list[str] | None,
        typer.Option(
            "--relabel",
            help="ID=NAME (or ID=none: out of scope): accept the lesson's text with another "
            "label and reject the proposal (repeatable).",
        ),
    ] = None,
    add: Annotated[
        str | None, typer.Option("--add", help="A correction of your own: the query text.")
    ] = None,
    label: Annotated[
        str | None,
        typer.Option("--as", help="With --add: the specialist that should answer, or 'none'."),
    ] = None,
    status: Annotated[
        str,
        typer.Option("--status", help="Which lessons to list: pending, accepted, rejected, all."),
    ] = "pending",
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Review what traffic taught the router: thumbs-ups on routed answers and pinned requests
    are proposed as labelled queries; accepted ones are fitted on by the running mesh's next
    background refit (within seconds) and by 'mesh router fit'. Operator only."""
    from mesh.cli.app import echo_json, open_store

    if status not in ("pending", "accepted", "rejected", "all"):
        raise InvalidRequestError(f"unknown --status {status!r}: pending, accepted, rejected, all")
    if (add is None) != (label is None):
        raise InvalidRequestError("--add TEXT and --as NAME|none go together")
    with open_store(token) as (registry, principal):
        principal.require_operator("reviewing router lessons")
        lessons = registry.lessons
        installed = set(registry.installed())
        changed = 0
        if accept:
            changed += len(lessons.decide(list(accept), "accepted"))
        if reject:
            changed += len(lessons.decide(list(reject), "rejected"))
        known = {lesson.id: lesson for lesson in lessons.lessons()} if relabel else {}
        for item in relabel or []:
            lesson_id, _, name = item.partition("=")
            if lesson_id not in known:
                raise InvalidRequestError(f"no lesson with id {lesson_id!r}", param="relabel")
            lessons.correct(known[lesson_id].text, _label(name, installed), replaces=lesson_id)
            changed += 1
        if add is not None:
            lessons.correct(add, _label(label or "", installed))
            changed += 1
        shown = lessons.lessons(None if status == "all" else status)  # type: ignore[arg-type]
        version = lessons.version()
    if as_json:
        echo_json(
            {"changed": changed, "version": version, "lessons": [x.model_dump() for x in shown]}
        )
        return
    if changed:
        typer.echo(
            f"{changed} lesson(s) updated; accepted lessons at version {version}: a running "
            "mesh with the linear router refits within seconds (unless MESH_ROUTER_REFIT=false)"
        )
    typer.echo(f"{len(shown)} {status} lesson(s)")
    for lesson in shown:
        target = lesson.label or "(none: out of scope)"
        text = lesson.text if len(lesson.text) <= 80 else lesson.text[:77] + "..."
        typer.echo(f"  {lesson.id}  {lesson.source:<10} x{lesson.seen:<3} -> {target:<16} {text}")


def _label(name: str, installed: set[str]) -> str | None:
    """'none' (out of scope) or an installed specialist's name."""
    if name.strip().lower() == "none":
        return None
    if name not in installed:
        raise InvalidRequestError(
            f"{name!r} is not an installed specialist; use one of {sorted(installed)} or 'none'",
            param="label",
        )
    return name
