"""`ToolEngine`: a deterministic specialist written in Python.

The manifest's `model.source` names an async function `module:function` taking the request text
and a `MeshContext` (so a tool can ask other specialists) and returning the answer text.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest
from specialists.context import MeshContext

ToolFunction = Callable[[str, MeshContext], Awaitable[str]]


class ToolEngine:
    def __init__(self, manifest: SpecialistManifest) -> None:
        self.manifest = manifest
        self.function: ToolFunction | None = None

    def load(self) -> None:
        module_name, _, attribute = self.manifest.model.source.partition(":")
        try:
            module = importlib.import_module(module_name)
            function: Any = getattr(module, attribute or "run")
        except (ImportError, AttributeError) as error:
            raise ManifestError(
                f"model.source: cannot load tool {self.manifest.model.source!r}: {error}",
                param="model.source",
            ) from None
        if not inspect.iscoroutinefunction(function):
            raise ManifestError(
                f"model.source: {self.manifest.model.source} must be an async function "
                "(text, ctx) -> str",
                param="model.source",
            )
        self.function = function

    async def run(self, text: str, ctx: MeshContext) -> str:
        if self.function is None:
            raise RuntimeError("tool not loaded")
        return await self.function(text, ctx)
