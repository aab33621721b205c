"""The tool registry: the only way a manifest reaches Python code.

A tool specialist's manifest names a tool (`model.source: math`); the code behind the name is an
entry point in the `mesh.tools` group, declared by an installed package (this one declares
`math` and `relay` in pyproject.toml). So what can run is decided by whoever installs packages
on the mesh, never by a publisher: a manifest cannot name a module, a function or a file.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest
from specialists.context import MeshContext

GROUP = "mesh.tools"
FIELD = "model.source"

ToolFunction = Callable[[str, MeshContext], Awaitable[str]]


class Declined(Exception):
    """A tool raises this when the query is not for it at all (not one it failed at): the
    mesh then tries the router's next candidate. `answer` is the reply for a caller that
    pinned the tool or asked it directly, where nobody else will answer."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


def _entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def tool_names() -> list[str]:
    """Names of the installed tools, sorted."""
    return sorted(_entry_points())


def _unknown(name: str) -> ManifestError:
    known = ", ".join(tool_names()) or "none installed"
    return ManifestError(f"{FIELD}: unknown tool {name!r}; known tools: {known}", param=FIELD)


def load_tool(name: str) -> ToolFunction:
    """The async function `(text, ctx) -> str` registered as `name`."""
    entry = _entry_points().get(name)
    if entry is None:
        raise _unknown(name)
    try:
        function: Any = entry.load()
    except (ImportError, AttributeError) as error:
        raise ManifestError(
            f"{FIELD}: tool {name!r} is registered but cannot be loaded: {error}", param=FIELD
        ) from None
    if not inspect.iscoroutinefunction(function):
        raise ManifestError(
            f"{FIELD}: tool {name!r} is not an async function (text, ctx) -> str", param=FIELD
        )
    return function  # type: ignore[no-any-return]


def check_tool(manifest: SpecialistManifest) -> None:
    """A tool specialist must name an installed tool. Checked by name only; nothing is
    imported."""
    if manifest.model.engine == "tool" and manifest.model.source not in _entry_points():
        raise _unknown(manifest.model.source)
