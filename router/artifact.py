"""Fit a router for the installed specialists and turn it into a versioned artifact, and back.

`fit_artifact` is what `mesh router fit` and the router service's background refit both run:
index the examples (+ descriptions), optionally fine-tune the encoder first (minutes), fit the
thresholds (and the linear head) on labelled queries, and describe the result as a
`RouterArtifactRecord` (stored in Redis by `registry.router_artifacts`). Its folder
`$MESH_HOME/router/<version>/` holds `router.json` (the record, for people) and, when the
encoder was fine-tuned, the encoder artifact of `router.finetune` (`model/` and
`router-encoder.json`). `load_router` reverses it: the encoder only after every file's sha256
matched the record, then thresholds and head. Labels of specialists that are no longer installed
count as out of scope: no installed specialist should take those queries.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from registry.artifacts import sha256_file
from registry.router_artifacts import (
    EncoderFiles,
    LabelledQuery,
    LexicalSpec,
    LinearHeadData,
    OperatingPoint,
    RouterArtifactError,
    RouterArtifactRecord,
)
from router.calibrate import choose
from router.encoder import Encoder, SentenceTransformerEncoder
from router.finetune import MODEL_DIR, FinetuneSettings, examples_digest, finetune_encoder
from router.index import RouterIndex
from router.lexical import LexicalEncoder, for_method, with_lexical
from router.linear import LinearHead
from router.router import FitReport, Method, Router

ROUTER_DIR = "router"
RECORD_FILE = "router.json"

EncoderLoader = Callable[[Path], Encoder]


def new_version() -> str:
    """Sortable by time, unique across replicas: 20260101T120000Z-3fa9c2."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def artifact_dir(home: Path, version: str) -> Path:
    return home / ROUTER_DIR / version


def hash_files(folder: Path) -> dict[str, str]:
    return {
        str(file.relative_to(folder)): sha256_file(file)
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    }


def verify_files(folder: Path, files: Mapping[str, str]) -> None:
    """Raise `RouterArtifactError` naming the first file that is missing or differs."""
    if not files:
        raise RouterArtifactError(f"router artifact at {folder} lists no files")
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise RouterArtifactError(f"router artifact file {path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise RouterArtifactError(
                f"router artifact file {path} has sha256 {actual[:12]}..., the record in Redis "
                f"expects {expected[:12]}...; refit with 'mesh router fit'"
            )


def load_encoder(
    files: EncoderFiles | None, home: Path, load: EncoderLoader = SentenceTransformerEncoder
) -> Encoder | None:
    """The fine-tuned encoder a record names, verified first; None means the frozen base."""
    if files is None:
        return None
    folder = home / files.dir
    verify_files(folder, files.files)
    try:
        return load(folder)
    except Exception as error:  # a folder that hashes right but will not load
        raise RouterArtifactError(f"cannot load the router encoder in {folder}: {error}") from None


def encode_head(names: list[str], head: LinearHead) -> LinearHeadData:
    weights = np.ascontiguousarray(head.weights, dtype="<f4")
    return LinearHeadData(
        names=list(names),
        dim=int(weights.shape[0]),
        weights=base64.b64encode(weights.tobytes()).decode(),
        bias=base64.b64encode(np.ascontiguousarray(head.bias, dtype="<f4").tobytes()).decode(),
        rejects=head.rejects,
    )


def decode_head(data: LinearHeadData) -> LinearHead:
    try:
        weights = np.frombuffer(base64.b64decode(data.weights, validate=True), dtype="<f4")
        bias = np.frombuffer(base64.b64decode(data.bias, validate=True), dtype="<f4")
        columns = len(data.names) + int(data.rejects)
        weights = weights.reshape(data.dim, columns)
    except ValueError as error:
        raise RouterArtifactError(f"router artifact head is damaged: {error}") from None
    if bias.shape != (columns,):
        raise RouterArtifactError("router artifact head is damaged: bias of the wrong length")
    return LinearHead(weights.astype(np.float32), bias.astype(np.float32), rejects=data.rejects)


def labelled_for(
    labelled: list[LabelledQuery], installed: Mapping[str, object]
) -> tuple[list[str], list[str | None]]:
    """Texts and labels to fit on; a label no longer installed becomes out of scope."""
    texts = [q.text for q in labelled]
    labels = [q.label if q.label in installed else None for q in labelled]
    return texts, labels


def fit_artifact(
    examples: dict[str, list[str]],
    installed: Mapping[str, str],
    *,
    home: Path,
    encoder: Encoder,
    encoder_files: EncoderFiles | None = None,
    method: Method = "knn",
    k: int = 3,
    fallback: str | None = None,
    threshold: float | None = None,
    labelled: list[LabelledQuery] | None = None,
    lessons: tuple[int, list[LabelledQuery]] = (0, []),
    target: OperatingPoint | None = None,
    finetune: FinetuneSettings | None = None,
    index: RouterIndex | None = None,
    lexical: LexicalSpec | None = None,
    parent: str | None = None,
    load: EncoderLoader = SentenceTransformerEncoder,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Router, RouterArtifactRecord]:
    """Fit a router for `examples` ({specialist: examples + description}) and save its folder.

    `encoder` (described by `encoder_files`, None = frozen base) is used unless `finetune` is
    given: then a new encoder is trained on `examples` into this version's folder first.
    `index`: `examples` already indexed with `encoder` (skips encoding them again).
    `lexical`: the linear head also reads hashed word features (`router.lexical`); other
    methods ignore it, and the record says which features the head was trained on.
    Without `labelled` queries the thresholds are the method's defaults (or `threshold`);
    with them, `target` is the operating point they aim for (default: balanced). `lessons`
    (version, accepted lessons from traffic) train the linear head only (`Router.fit`); the
    record keeps `labelled` as given and the lessons' version.
    """
    version = new_version()
    folder = artifact_dir(home, version)
    digest = examples_digest(examples)
    if finetune is not None:
        trained = finetune_encoder(examples, folder, settings=finetune, progress=progress)
        model = folder / MODEL_DIR
        encoder_files = EncoderFiles(
            dir=str(model.relative_to(home)),
            files=hash_files(model),
            base=trained.base,
            examples_digest=trained.examples_digest,
            specialists=trained.specialists,
            settings=trained.settings.model_dump(),
            train_seconds=trained.train_seconds,
        )
        encoder, index = load(model), None
    routing = with_lexical(encoder, for_method(method, lexical))
    if routing is not encoder:
        encoder, index = routing, None
    router = Router(
        encoder,
        index if index is not None else RouterIndex.build(encoder, examples),
        fallback=fallback,
        method=method,
        threshold=threshold,
        k=k,
    )
    labelled = list(labelled or [])
    taught = (
        list(zip(*labelled_for(lessons[1], router.index.ids), strict=True))
        if method == "linear"
        else []
    )
    report = None
    if labelled:
        report = router.fit(*labelled_for(labelled, router.index.ids), target, lessons=taught)
    else:
        router.teach(taught)
    record = describe(
        router,
        version=version,
        installed=installed,
        digest=digest,
        labelled=labelled,
        encoder_files=encoder_files,
        parent=parent,
        report=report,
    ).model_copy(update={"lessons_version": lessons[0], "n_lessons": len(taught)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).write_text(record.model_dump_json(indent=2) + "\n")
    return router, record


def describe(
    router: Router,
    *,
    version: str,
    installed: Mapping[str, str],
    digest: str,
    labelled: list[LabelledQuery],
    encoder_files: EncoderFiles | None,
    parent: str | None = None,
    report: FitReport | None = None,
) -> RouterArtifactRecord:
    """The record of a fitted router (the linear head is trained now if it was not yet)."""
    head = router.linear_head
    return RouterArtifactRecord(
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        method=router.method,
        k=router.k,
        installed=dict(sorted(installed.items())),
        examples_digest=digest,
        threshold=round(router.threshold, 6),
        thresholds={name: float(cut) for name, cut in router.thresholds.items()},
        fitted=bool(labelled),
        labelled=labelled,
        operating_point=report.operating_point if report else OperatingPoint(),
        trade_off=report.trade_off if report else [],
        head=encode_head(router.index.names, head) if head is not None else None,
        encoder=encoder_files,
        lexical=router.encoder.spec if isinstance(router.encoder, LexicalEncoder) else None,
        parent=parent,
    )


def apply_record(router: Router, record: RouterArtifactRecord) -> bool:
    """Give `router` the record's thresholds and head when they were fitted for its method."""
    if record.method != router.method:
        return False
    router.threshold = record.threshold
    router.thresholds = record.thresholds
    if record.head is not None:
        router.use_head(record.head.names, decode_head(record.head))
    return True


def record_summary(record: RouterArtifactRecord) -> dict[str, Any]:
    """What logs, `indexed()` and `GET /v1/router` show: no labelled texts, no weights. With
    labelled queries, the trade-off curve and the index of the point in use (`chosen`)."""
    curve = record.trade_off
    return {
        "version": record.version,
        "method": record.method,
        "specialists": sorted(record.installed),
        "fitted": record.fitted,
        "fine_tuned": record.encoder is not None,
        "lexical": record.lexical.model_dump() if record.lexical else None,
        "threshold": record.threshold,
        "rejects_out_of_scope": bool(record.head and record.head.rejects),
        "n_labelled": len(record.labelled),
        "n_lessons": record.n_lessons,
        "lessons_version": record.lessons_version,
        "operating_point": record.operating_point.model_dump(),
        "trade_off": [point.model_dump() for point in curve],
        "chosen": choose(curve, record.operating_point) if curve else None,
    }
