"""The specialist manifest: the contract between publishers, the store and the runtime.

A manifest is YAML or JSON validated by pydantic. Unknown fields are rejected (a typo must not be
silently ignored), and `schema_version` lets a later mesh read older manifests on purpose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.errors import ManifestError

SCHEMA_VERSION: Literal[1] = 1
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?$"
)
RESERVED_NAMES = frozenset({"mesh", "auto", "mesh-auto"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    engine: Literal["transformers", "tool"] = Field(
        "transformers",
        description="'transformers' runs model weights; 'tool' runs an async Python function.",
    )
    source: str = Field(
        description="Hub id (read from the local cache, offline), a local path, "
        "'package:<python package>/<file>' for weights shipped inside a pip package, or "
        "'module:function' for a tool."
    )
    revision: str | None = Field(None, description="Hub revision or commit.")
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Expected sha256 per artifact file name."
    )
    adapter: str | None = Field(
        None,
        description="Local folder of a peft LoRA adapter (absolute, './relative' or "
        "'package:<python package>/<folder>'), applied on top of `source`.",
    )
    share_base: bool = Field(
        True,
        description="With `adapter`: serve it from the base's shared pool (one copy of the base "
        "for every adapter specialist on it, Serve model multiplexing) instead of a dedicated "
        "replica holding the base with the adapter merged in.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    allow_pickle: bool = Field(
        False, description="Allow pickle weights (.bin/.pt); pickle can run code when loaded."
    )

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a hub id, a local path or a package: resource")
        return value


class GenerationDefaults(_Strict):
    max_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)
    stop: list[str] = Field(default_factory=list)


class Resources(_Strict):
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: int | None = Field(None, ge=0, description="Bytes of memory to reserve.")


class Scaling(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)
    max_ongoing_requests: int = Field(8, ge=1, description="Requests one replica takes at once.")
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Rows one replica decodes together (continuous batching)."
    )
    max_queued_requests: int = Field(
        32, ge=1, description="Requests waiting per caller before new ones get HTTP 503."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class SpecialistManifest(_Strict):
    """One immutable version of one specialist."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(description="DNS-safe name: lowercase letters, digits and '-'.")
    version: str = Field(description="Semantic version, immutable once published.")
    description: str = Field(min_length=1, max_length=2000)
    owner: str = Field(min_length=1, max_length=200)
    license: str = "apache-2.0"
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(
        min_length=3,
        description="Utterances this specialist should answer; the router learns them.",
    )
    model: ModelSpec
    system_prompt: str = ""
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    tools: list[str] = Field(default_factory=list)
    can_message: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)
    card: str | None = Field(None, description="Markdown model card.")

    @field_validator("name")
    @classmethod
    def _dns_safe(cls, value: str) -> str:
        if not DNS_LABEL.match(value):
            raise ValueError(
                "must be DNS-safe: 1-63 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        if value in RESERVED_NAMES:
            raise ValueError(f"'{value}' is reserved for routing; pick another name")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError("must be a semantic version such as 1.0.0")
        return value

    @field_validator("examples")
    @classmethod
    def _examples_not_blank(cls, value: list[str]) -> list[str]:
        if any(not text.strip() for text in value):
            raise ValueError("examples must not be blank")
        return value

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semver strings: releases sort after their pre-releases."""
    match = SEMVER.match(version)
    if match is None:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def format_validation_error(error: ValidationError, source: str = "manifest") -> str:
    """One line per problem, each naming the field path, so a user knows what to fix."""
    lines = [f"{source} is invalid:"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it or check its spelling)"
        elif item["type"] == "missing":
            message = "field required"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def parse_manifest(data: Any, source: str = "manifest") -> SpecialistManifest:
    """Validate already-parsed data; raise ManifestError naming every bad field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source} must be a mapping of fields, got {type(data).__name__}")
    try:
        return SpecialistManifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(format_validation_error(error, source)) from None


def parse_manifest_text(text: str, source: str = "manifest") -> SpecialistManifest:
    """Parse YAML or JSON text (JSON is valid YAML) into a validated manifest."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ManifestError(f"{source} is not valid YAML or JSON: {error}") from None
    return parse_manifest(data, source)


def load_manifest(path: str | Path) -> SpecialistManifest:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(f"cannot read manifest {path}: {error.strerror}") from None
    return parse_manifest_text(text, source=str(path))


def manifest_json(manifest: SpecialistManifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), sort_keys=True)
