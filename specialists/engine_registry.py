"""The engine registry: engines are found by name, from the `mesh.engines` entry-point group.

A manifest names its engine as a string (`model.engine: onnx`); the class behind the name is an
entry point declared by an installed package (this one declares `transformers`, `onnx`, `tool`
and `vllm` in pyproject.toml). As with tools (`specialists.tools.registry`), what can run is
decided by whoever installs packages on the mesh, never by a publisher: publishing checks the
name against the registry without importing anything, and a replica loads the class by name.
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import EntryPoint, entry_points

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest
from specialists.engine import Engine
from specialists.tools.registry import check_tool

GROUP = "mesh.engines"
FIELD = "model.engine"


def _entry_points() -> dict[str, EntryPoint]:
    return _scan(tuple(sys.path))


@functools.cache
def _scan(path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """The group's entry points, read once per `sys.path` (a scan takes milliseconds and the
    controller asks per manifest; a package added to the path is seen)."""
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def engine_names() -> list[str]:
    """Names of the installed engines, sorted."""
    return sorted(_entry_points())


def _unknown(name: str) -> ManifestError:
    known = ", ".join(engine_names()) or "none installed"
    return ManifestError(f"{FIELD}: unknown engine {name!r}; known engines: {known}", param=FIELD)


def engine_class(name: str) -> type[Engine]:
    """The `Engine` subclass registered as `name` (its module is imported now)."""
    entry = _entry_points().get(name)
    if entry is None:
        raise _unknown(name)
    try:
        loaded = entry.load()
    except ImportError as error:  # an optional engine whose extra is not installed
        raise ManifestError(
            f"{FIELD}: engine {name!r} is registered but cannot be imported here ({error}); "
            "install its extra on every node",
            param=FIELD,
        ) from None
    if not (isinstance(loaded, type) and issubclass(loaded, Engine)):
        raise ManifestError(f"{FIELD}: {name!r} is not an Engine subclass", param=FIELD)
    return loaded


def check_publishable(manifest: SpecialistManifest) -> None:
    """What publishing needs beyond the manifest's own validation: its engine (and, for a tool
    specialist, its tool) is installed. By name only: nothing is imported, so publishing never
    runs an engine's or a tool's code."""
    if manifest.model.engine not in _entry_points():
        raise _unknown(manifest.model.engine)
    if manifest.model.engine == "tool":
        check_tool(manifest)


# What each manifest feature needs of its engine.
FEATURE_NEEDS: dict[str, str] = {"structured_output": "grammars", "tools": "grammars"}


def check_features(manifest: SpecialistManifest) -> None:
    """A feature the manifest declares and its engine cannot serve fails the install, never a
    request (imports the engine: the controller calls it, not publishing)."""
    capabilities = engine_class(manifest.model.engine).capabilities
    missing = [f for f in manifest.features if not getattr(capabilities, FEATURE_NEEDS[f])]
    if missing:
        raise ManifestError(
            f"features: the {manifest.model.engine!r} engine cannot serve "
            f"{', '.join(missing)} (it has no constrained decoding)",
            param="features",
        )
    if manifest.hand_back is not None and not capabilities.logprobs:
        raise ManifestError(
            f"hand_back: the {manifest.model.engine!r} engine reports no log-probabilities, "
            "which the scope check reads",
            param="hand_back",
        )
