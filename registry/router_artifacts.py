"""Router artifacts in Redis: what the router was fitted with, versioned, with one current.

A router artifact is everything the router learnt beyond the manifests: the scoring method, the
thresholds fitted on labelled queries (and those queries, so a refit can reuse them), the linear
head, and, when the encoder was fine-tuned, where its weights lie and their sha256. The small
parts live here in Redis; the encoder weights (about 90 MB for MiniLM) live under
`$MESH_HOME/router/<version>/model/` and are checked against the sha256 recorded here before
they are loaded. Records are immutable; `mesh:router:current` names the one the router serves.

No router or torch imports: the router package builds and reads these records.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry import keys
from registry.errors import MeshError
from registry.redis_server import redis_errors

FORMAT_VERSION = 1
WATCH_RETRIES = 20
LEXICAL_WEIGHT = 0.7
LEXICAL_DIMS = 2048


class RouterArtifactError(MeshError):
    """A router artifact is missing, damaged or of a format this version cannot read."""


class LabelledQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    label: str | None = Field(description="The specialist that should answer; null: none fits.")


class LexicalSpec(BaseModel):
    """How lexical features were mixed in: part of a fitted head, so stored beside it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(LEXICAL_WEIGHT, gt=0, le=4, description="Scale against the embedding.")
    dims: int = Field(LEXICAL_DIMS, ge=64, le=1 << 16, description="Hashed feature columns.")


class EncoderFiles(BaseModel):
    """A fine-tuned encoder on disk, pinned by sha256 so a swapped or damaged file is caught."""

    model_config = ConfigDict(extra="forbid")
    dir: str = Field(description="sentence-transformers folder, relative to MESH_HOME.")
    files: dict[str, str] = Field(description="Path inside `dir` -> sha256.")
    base: str = Field(description="The encoder it was fine-tuned from.")
    examples_digest: str = Field(description="Digest of the examples it was fine-tuned on.")
    specialists: list[str]
    settings: dict[str, Any] = Field(default_factory=dict, description="Fine-tuning settings.")
    train_seconds: float = 0.0


class LinearHeadData(BaseModel):
    """A trained linear head: float32 arrays as base64 of their little-endian bytes."""

    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(description="Specialists of the head's columns, in order.")
    dim: int = Field(ge=1)
    weights: str = Field(description="base64 float32 (dim, columns), row-major.")
    bias: str = Field(description="base64 float32 (columns,).")
    rejects: bool = Field(
        False, description='One more column after the names: the "none of them" class.'
    )


class OperatingPoint(BaseModel):
    """What the fitted thresholds aim for on the labelled queries (at most one target).

    No target: one query routed right weighs as much as one out-of-scope query rejected.
    """

    model_config = ConfigDict(extra="forbid")
    oos_recall: float | None = Field(
        None, gt=0, le=1, description="Reject at least this share of out-of-scope queries."
    )
    precision: float | None = Field(
        None, gt=0, le=1, description="Of the queries not falling back, this share routed right."
    )

    @model_validator(mode="after")
    def _one_target(self) -> OperatingPoint:
        if self.oos_recall is not None and self.precision is not None:
            raise ValueError("choose one target: oos_recall or precision")
        return self


class TradeOffPoint(BaseModel):
    """One setting of the thresholds and what it did on the labelled queries (out of fold)."""

    model_config = ConfigDict(extra="forbid")
    oos_weight: float = Field(description="Weight of a rejected out-of-scope query in the fit.")
    threshold: float = Field(description="The global threshold at this weight.")
    accuracy: float = Field(description="In-scope queries routed right (a fallback is wrong).")
    oos_recall: float | None = Field(description="Out-of-scope queries that fell back.")
    precision: float = Field(description="Routed queries (not falling back) routed right.")
    target_recall: float | None = Field(
        None,
        description="Set on the point fitted for an out-of-scope recall target: one global "
        "cut, the lowest that rejects that share of the labelled out-of-scope queries.",
    )


class RouterArtifactRecord(BaseModel):
    """One immutable version of the router's fitted state."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    version: str
    created_at: str
    method: str
    k: int = Field(3, ge=1)
    installed: dict[str, str] = Field(description="The installed set it was fitted for.")
    examples_digest: str = Field(description="sha256 of {specialist: examples}: refit if changed.")
    threshold: float = Field(description="Threshold of specialists without their own.")
    thresholds: dict[str, float] = Field(default_factory=dict)
    fitted: bool = Field(False, description="Thresholds came from labelled queries.")
    labelled: list[LabelledQuery] = Field(
        default_factory=list, description="The labelled queries thresholds were fitted on."
    )
    lessons_version: int = Field(0, ge=0, description="Accepted router lessons it was fitted at.")
    n_lessons: int = Field(0, ge=0, description="Accepted lessons fitted on, beside `labelled`.")
    operating_point: OperatingPoint = Field(default_factory=OperatingPoint)
    trade_off: list[TradeOffPoint] = Field(
        default_factory=list, description="The curve the thresholds were chosen on (fitted only)."
    )
    head: LinearHeadData | None = None
    encoder: EncoderFiles | None = Field(None, description="None: the frozen base encoder.")
    lexical: LexicalSpec | None = Field(
        None, description="Lexical features the head was trained with; None: embedding only."
    )
    parent: str | None = Field(None, description="The version this one was refitted from.")


def parse_record(raw: str | bytes, where: str) -> RouterArtifactRecord:
    """Validate a stored record; raise `RouterArtifactError` naming `where` when it is bad."""
    try:
        record = RouterArtifactRecord.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "record"
        raise RouterArtifactError(
            f"router artifact {where} is damaged ({field}: {first['msg']}); "
            "refit it with 'mesh router fit'"
        ) from None
    if record.format_version != FORMAT_VERSION:
        raise RouterArtifactError(
            f"router artifact {where} has format version {record.format_version}, this router "
            f"reads {FORMAT_VERSION}; refit it with 'mesh router fit'"
        )
    return record


class RouterArtifactStore:
    """Router artifact records in Redis (a client with decode_responses)."""

    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        self.client: Any = client
        self.url = url

    @classmethod
    def from_url(cls, url: str) -> RouterArtifactStore:
        """A store on `url` that connects on first use: a Redis that is down fails there, with
        `RegistryUnavailableError`, so a caller can start without it and retry later."""
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=10.0
        )
        return cls(client, url)

    def current_version(self) -> str | None:
        with redis_errors(self.url):
            version: str | None = self.client.get(keys.ROUTER_CURRENT)
        return version

    def current(self) -> RouterArtifactRecord | None:
        """The record the router should serve, or None when nothing was ever fitted."""
        version = self.current_version()
        return None if version is None else self.get(version)

    def get(self, version: str) -> RouterArtifactRecord:
        with redis_errors(self.url):
            raw = self.client.get(keys.router_artifact(version))
        if raw is None:
            raise RouterArtifactError(
                f"router artifact {version} is not in Redis; refit with 'mesh router fit'"
            )
        return parse_record(raw, version)

    def versions(self) -> list[str]:
        """Stored versions, oldest first."""
        with redis_errors(self.url):
            found: list[str] = self.client.zrange(keys.ROUTER_ARTIFACTS, 0, -1)
        return found

    def save(self, record: RouterArtifactRecord, *, expect_current: str | None = "*") -> bool:
        """Store `record` and make it current, in one transaction.

        With `expect_current` other than "*", only when the current version is still that one
        (None: no version yet); returns False, storing nothing, when another writer came first.
        """
        for _ in range(WATCH_RETRIES):
            with contextlib.suppress(redis.WatchError), redis_errors(self.url):
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.watch(keys.ROUTER_CURRENT)
                    if expect_current != "*" and pipe.get(keys.ROUTER_CURRENT) != expect_current:
                        return False
                    pipe.multi()
                    pipe.set(keys.router_artifact(record.version), record.model_dump_json())
                    pipe.zadd(keys.ROUTER_ARTIFACTS, {record.version: time.time()})
                    pipe.set(keys.ROUTER_CURRENT, record.version)
                    pipe.execute()
                return True
        return False

    def set_current(self, version: str) -> RouterArtifactRecord:
        """Serve a stored version again (a rollback); it must still parse."""
        record = self.get(version)
        with redis_errors(self.url):
            self.client.set(keys.ROUTER_CURRENT, version)
        return record
