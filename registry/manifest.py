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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from registry.errors import ManifestError
from registry.text import check_encodable

SCHEMA_VERSION: Literal[1] = 1
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?\Z"
)
RESERVED_NAMES = frozenset({"mesh", "auto", "mesh-auto"})
# OpenAI API features a specialist may declare (`SpecialistManifest.features`).
Feature = Literal["structured_output", "tools"]

# Where weights may come from. A manifest names code or files only through these forms, checked
# here on the text alone: validating a manifest never touches the filesystem, so an error cannot
# tell a publisher what exists on the server.
PACKAGE_SCHEME = "package:"
ARTIFACT_SCHEME = "artifact:"
# Tool and engine names: registry keys, never module paths.
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
ARTIFACT_ID = re.compile(r"^[0-9a-f]{64}\Z")
PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}(?:\.[A-Za-z_][A-Za-z0-9_]{0,99}){0,9}\Z")
RESOURCE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}\Z")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}\Z")
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}\Z")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+#._-]{0,39}\Z")
PIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}\Z")
SOURCE_FORMS = (
    "'package:<python package>/<relative path>', a hub id 'org/name' or 'artifact:<sha256>' "
    "(upload local files with 'mesh register' or POST /v1/artifacts)"
)
MAX_MANIFEST_BYTES = 256 * 1024
MAX_TEXT_CHARS = 1_000_000
MAX_EXAMPLES = 200
MAX_EXAMPLE_CHARS = 500
MAX_STOP_CHARS = 64
PICKLE_REFUSED = "pickle is an operator setting (MESH_ALLOW_PICKLE), not a manifest field"

SourceKind = Literal["package", "hub", "artifact"]


def source_kind(source: str) -> SourceKind:
    """Which of the three forms `source` is in; ValueError (naming the forms) for anything else.

    Pure string checks: no filesystem, no imports, so it is safe on untrusted input.
    """
    if source.startswith(PACKAGE_SCHEME):
        package, _, relative = source.removeprefix(PACKAGE_SCHEME).partition("/")
        if not PACKAGE_NAME.match(package):
            raise ValueError(f"'{PACKAGE_SCHEME}' needs a python package name; use {SOURCE_FORMS}")
        if not relative or not all(RESOURCE_PART.match(part) for part in relative.split("/")):
            raise ValueError(
                "a package resource is a relative path inside the package (names of letters, "
                "digits, '.', '_' or '-'; no '..', no absolute or hidden parts)"
            )
        return "package"
    if source.startswith(ARTIFACT_SCHEME):
        if not ARTIFACT_ID.match(source.removeprefix(ARTIFACT_SCHEME)):
            raise ValueError("an artifact is 'artifact:' and 64 lowercase hex digits (its sha256)")
        return "artifact"
    if HUB_ID.match(source) and ".." not in source:
        return "hub"
    raise ValueError(f"must be {SOURCE_FORMS}; server paths are not accepted")


def artifact_id(source: str) -> str | None:
    """The artifact id of an `artifact:` source, else None."""
    return source.removeprefix(ARTIFACT_SCHEME) if source.startswith(ARTIFACT_SCHEME) else None


class _Strict(BaseModel):
    # No inf/nan: `num_cpus: .inf` would pass `gt=0` and reach Ray.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    engine: str = Field(
        "transformers",
        max_length=63,
        description="An engine of the engine registry (entry-point group 'mesh.engines', "
        "checked at publish): 'transformers' and 'onnx' run model weights on CPU or GPU, "
        "'vllm' on GPU workers (extra 'gpu'), 'tool' runs a tool of the tool registry.",
    )
    source: str = Field(
        max_length=300,
        description="For 'transformers': 'package:<python package>/<path>' (weights shipped in "
        "a pip package), a hub id 'org/name' (read from the local cache, offline) or "
        "'artifact:<sha256>' (files uploaded into the store). For 'tool': a tool name from the "
        "tool registry (entry-point group 'mesh.tools'), such as 'math'.",
    )
    revision: str | None = Field(None, description="Hub revision or commit.")
    sha256: dict[str, str] = Field(
        default_factory=dict,
        max_length=256,
        description="Expected sha256 per artifact file name (`adapter/<file>` for the adapter).",
    )
    adapter: str | None = Field(
        None,
        max_length=300,
        description="A peft LoRA adapter folder applied on top of `source`: "
        "'package:<python package>/<folder>' or 'artifact:<sha256>'.",
    )
    share_base: bool = Field(
        True,
        description="With `adapter`: serve it from the base's shared pool (one copy of the base "
        "for every adapter specialist on it, Serve model multiplexing) instead of a dedicated "
        "replica holding the base with the adapter merged in.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    allow_pickle: bool = Field(
        False,
        exclude=True,
        description="Read only so manifests stored before pickle became an operator setting "
        "(MESH_ALLOW_PICKLE) still load; `true` is refused.",
    )

    @field_validator("engine")
    @classmethod
    def _engine_form(cls, value: str) -> str:
        if not TOOL_NAME.match(value):
            raise ValueError("must be an engine name (lower-case letters, digits, '_', '-')")
        return value

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("engine") == "tool":
            if not TOOL_NAME.match(value):
                raise ValueError(
                    "a tool specialist names a tool of the tool registry (such as 'math'), "
                    "not a module or a path"
                )
            return value
        source_kind(value)
        return value

    @field_validator("adapter")
    @classmethod
    def _adapter_form(cls, value: str | None) -> str | None:
        if value is not None and source_kind(value) == "hub":
            raise ValueError(
                "adapters are never fetched from a hub: use 'package:<python package>/<folder>' "
                "or 'artifact:<sha256>'"
            )
        return value

    @field_validator("revision")
    @classmethod
    def _revision_form(cls, value: str | None) -> str | None:
        if value is not None and (not REVISION.match(value) or ".." in value):
            raise ValueError(
                "must be a branch, tag or commit (letters, digits, '.', '_', '-', '/')"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _pins(cls, value: dict[str, str]) -> dict[str, str]:
        for key, digest in value.items():
            if not PIN_KEY.match(key) or ".." in key:
                raise ValueError(
                    "keys are relative file names (up to 200 letters, digits, '.', '_', '-', '/')"
                )
            if not SHA256_HEX.match(digest):
                raise ValueError(f"'{key}' must map to 64 hex digits")
        return {key: digest.lower() for key, digest in value.items()}

    @field_validator("allow_pickle")
    @classmethod
    def _no_pickle(cls, value: bool) -> bool:
        if value:
            raise ValueError(PICKLE_REFUSED)
        return value

    @model_validator(mode="after")
    def _tool_has_no_weights(self) -> ModelSpec:
        if self.engine == "tool" and (self.adapter or self.sha256 or self.revision):
            raise ValueError("a tool specialist has no adapter, revision or sha256")
        return self


class GenerationDefaults(_Strict):
    max_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)
    stop: list[str] = Field(default_factory=list, max_length=4)

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, value: list[str]) -> list[str]:
        if any(not text or len(text) > MAX_STOP_CHARS for text in value):
            raise ValueError(f"stop strings are 1-{MAX_STOP_CHARS} characters")
        return value


class HandBackPolicy(_Strict):
    """An LLM specialist that declines queries outside its scope, so the router's next
    candidate answers. Before answering a routed query it asks its own model whether the query
    is one it should answer (one prompt, one token, read from the log-probabilities of "yes"
    and "no"; `specialists.scope_check`). Tools decline in their code instead."""

    min_in_scope: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Decline when the model's probability that the query is in its scope is "
        "below this.",
    )


class Resources(_Strict):
    num_cpus: float = Field(0.25, gt=0, le=256)
    num_gpus: float = Field(0.0, ge=0, le=16)
    memory: int | None = Field(None, ge=0, le=2**40, description="Bytes of memory to reserve.")
    accelerator_type: str | None = Field(
        None,
        max_length=40,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="A Ray accelerator type such as 'H100' or 'A10G': GPU replicas are placed "
        "only on nodes that have it.",
    )


class Scaling(_Strict):
    min_replicas: int = Field(1, ge=0, le=64)
    max_replicas: int = Field(1, ge=1, le=64)
    target_ongoing_requests: float = Field(4.0, gt=0, le=1024)
    max_ongoing_requests: int = Field(
        8, ge=1, le=1024, description="Requests one replica takes at once."
    )
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Rows one replica decodes together (continuous batching)."
    )
    max_queued_requests: int = Field(
        32, ge=1, le=4096, description="Requests waiting per caller before new ones get HTTP 503."
    )
    look_back_period_s: float = Field(
        30.0, gt=0, le=3600, description="The window over which ongoing requests are averaged."
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, le=3600, description="Load must stay above target this long to add replicas."
    )
    downscale_delay_s: float = Field(
        600.0,
        ge=0,
        le=86400,
        description="Load must stay below target this long to remove replicas (with "
        "min_replicas 0, an idle specialist releases its last replica after this).",
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
    version: str = Field(max_length=100, description="Semantic version, immutable once published.")
    description: str = Field(min_length=1, max_length=2000)
    owner: str = Field(min_length=1, max_length=200)
    license: str = Field("apache-2.0", max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=20)
    examples: list[str] = Field(
        min_length=3,
        max_length=MAX_EXAMPLES,
        description="Utterances this specialist should answer; the router learns them.",
    )
    model: ModelSpec
    system_prompt: str = Field("", max_length=8000)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    tools: list[str] = Field(default_factory=list, max_length=32)
    features: list[Feature] = Field(
        default_factory=list,
        description="OpenAI API features this specialist answers (`structured_output`: "
        "`response_format` JSON; `tools`: tool calls). Requests needing one go only to "
        "specialists that declare it; its engine must support it (checked at install).",
    )
    can_message: list[str] = Field(default_factory=list, max_length=32)
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)
    hand_back: HandBackPolicy | None = Field(
        None,
        description="Decline routed queries the model rates out of its scope (LLM "
        "specialists whose engine reports log-probabilities); None: always answer.",
    )
    card: str | None = Field(None, max_length=20_000, description="Markdown model card.")

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
        if any(len(text) > MAX_EXAMPLE_CHARS for text in value):
            raise ValueError(f"each example is at most {MAX_EXAMPLE_CHARS} characters")
        return value

    @field_validator("tags")
    @classmethod
    def _simple_tags(cls, value: list[str]) -> list[str]:
        if not all(TAG.match(tag) for tag in value):
            raise ValueError("tags are 1-40 letters, digits, '+', '#', '.', '_' or '-'")
        return value

    @field_validator("tools", "can_message")
    @classmethod
    def _specialist_names(cls, value: list[str]) -> list[str]:
        if not all(DNS_LABEL.match(name) for name in value):
            raise ValueError("entries are DNS-safe specialist names")
        return value

    @model_validator(mode="after")
    def _hand_back_is_for_models(self) -> SpecialistManifest:
        if self.hand_back is not None and self.model.engine == "tool":
            raise ValueError("hand_back is for LLM specialists: a tool declines in its code")
        return self

    @model_validator(mode="after")
    def _bounded_size(self) -> SpecialistManifest:
        """Caps on each field bound the whole, but a cap on the whole keeps storage honest."""
        size = len(json.dumps(self.model_dump(mode="json")).encode())
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest is {size} bytes as JSON; the limit is {MAX_MANIFEST_BYTES}")
        return self

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
        check_encodable(data)
    except ValueError as error:
        raise ManifestError(f"{source} is invalid: {error}") from None
    try:
        return SpecialistManifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(format_validation_error(error, source)) from None


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases: manifests never need them, and `*alias` references
    let a few KB of YAML expand into megabytes of data (a "billion laughs" body)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a manifest", mark
            )
        return super().compose_node(parent, index)


def parse_manifest_text(text: str, source: str = "manifest") -> SpecialistManifest:
    """Parse YAML or JSON text (JSON is valid YAML) into a validated manifest."""
    return parse_manifest(read_manifest_data(text, source), source)


def read_manifest_data(text: str, source: str = "manifest") -> Any:
    """The data of YAML or JSON text, not validated yet (`mesh register` rewrites local paths
    into artifacts between the two steps). No aliases, bounded size."""
    if len(text) > MAX_TEXT_CHARS:
        raise ManifestError(f"{source} is longer than {MAX_TEXT_CHARS} characters")
    if text.lstrip().startswith(("{", "[")):
        # JSON first: exact (PyYAML leaves \ud83d\ude00-style surrogate pairs unjoined) and fast.
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass  # YAML flow style, or not valid at all: YAML says which
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ManifestError(f"{source} is not valid YAML or JSON: {error}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        # The safe constructors raise these on odd scalars (a timestamp like 2001-13-45) and
        # on nesting deeper than the stack.
        name = type(error).__name__
        raise ManifestError(f"{source} is not valid YAML or JSON ({name})") from None
    return data


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
