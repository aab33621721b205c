"""Resolve a manifest's `model.source` / `model.adapter` to local files, without network.

`package:` resources are found inside their installed package; `artifact:` bundles are fetched
from the store's artifact area (Redis) into a local cache and verified file by file; hub ids are
read from the local Hugging Face cache. What the operator decides about loading (the Redis URL,
the cache folder, whether pickle weights may load) travels into each replica as `SourceOptions`,
built by the controller from its settings (this package does not read mesh settings).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from registry.artifact_store import DEFAULT_MAX_BYTES, ArtifactStore
from registry.artifacts import package_path, verify_artifacts
from registry.errors import ManifestError
from registry.manifest import SpecialistManifest, artifact_id, source_kind


class SourceOptions(BaseModel):
    """The operator's settings for loading and running weights, passed explicitly into replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = Field(None, description="Where `artifact:` sources are fetched.")
    cache_dir: str | None = Field(
        None, description="Local folder for fetched artifacts (default: a temp folder)."
    )
    allow_pickle: bool = Field(False, description="MESH_ALLOW_PICKLE: load pickle weights.")
    max_artifact_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)
    engine_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="MESH_ENGINE_THREADS: compute threads per CPU engine replica (default: "
        "Ray's OMP_NUM_THREADS, which is 1 for a replica reserving under one CPU).",
    )

    def artifact_cache(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return Path(tempfile.gettempdir()) / "mesh-artifacts"

    def store(self, field: str = "model.source") -> ArtifactStore:
        if not self.redis_url:
            raise ManifestError(
                f"{field}: this replica has no store to fetch artifacts from", param=field
            )
        return ArtifactStore.from_url(self.redis_url, max_bytes=self.max_artifact_bytes)


@dataclass(frozen=True)
class ResolvedSource:
    """A folder or hub id, and the GGUF file name if any."""

    location: str
    gguf_file: str | None = None
    local: bool = True


def local_path(source: str, options: SourceOptions, field: str = "model.source") -> Path | None:
    """The local file or folder a source names (an artifact fetched first), None for a hub id."""
    kind = source_kind(source)
    if kind == "hub":
        return None
    if kind == "package":
        return package_path(source, field)
    folder = options.store(field).materialize(
        artifact_id(source) or "", options.artifact_cache(), field=field
    )
    files = [p for p in folder.rglob("*") if p.is_file()]
    return files[0] if len(files) == 1 and files[0].parent == folder else folder  # a lone file


def resolve_source(source: str, options: SourceOptions | None = None) -> ResolvedSource:
    """What `from_pretrained` needs for `model.source`: a folder (and a GGUF file) or a hub id."""
    path = local_path(source, options or SourceOptions())
    if path is None:
        return ResolvedSource(location=source, local=False)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ManifestError(
                "model.source: a single file must be a .gguf; give a model folder instead",
                param="model.source",
            )
        return ResolvedSource(location=str(path.parent), gguf_file=path.name)
    return ResolvedSource(location=str(path))


def adapter_folder(adapter: str, options: SourceOptions | None = None) -> Path:
    """The local folder of a `model.adapter` (adapters never come from a hub)."""
    path = local_path(adapter, options or SourceOptions(), "model.adapter")
    if path is None or not path.is_dir():
        raise ManifestError(
            "model.adapter: must be a folder (a peft LoRA adapter)", param="model.adapter"
        )
    return path


def verify_sources(
    manifest: SpecialistManifest, options: SourceOptions | None = None, *, only: str = ""
) -> None:
    """Check the manifest's sha256 pins before any weights load (swapped weights never load)."""
    spec = manifest.model
    needs_store = any(artifact_id(s or "") for s in (spec.source, spec.adapter))
    store = (options or SourceOptions()).store() if needs_store else None
    verify_artifacts(manifest, store, only=only)
