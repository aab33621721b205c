"""Resolve a manifest's `model.source` to what `from_pretrained` needs, without network."""

from __future__ import annotations

from dataclasses import dataclass

from registry.artifacts import local_path
from registry.errors import ManifestError


@dataclass(frozen=True)
class ResolvedSource:
    """A folder or hub id, and the GGUF file name if any."""

    location: str
    gguf_file: str | None = None
    local: bool = True


def resolve_source(source: str) -> ResolvedSource:
    path = local_path(source)
    if path is None:
        return ResolvedSource(location=source, local=False)
    if not path.exists():
        raise ManifestError(
            f"model.source: {source} -> {path} does not exist", param="model.source"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ManifestError(
                f"model.source: {path} is a file but not a .gguf; point at a model folder instead",
                param="model.source",
            )
        return ResolvedSource(location=str(path.parent), gguf_file=path.name)
    return ResolvedSource(location=str(path))
