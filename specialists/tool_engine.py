"""`ToolEngine`: a deterministic specialist written in Python.

The manifest's `model.source` names a tool of the tool registry (`specialists.tools.registry`,
entry-point group `mesh.tools`): an async function taking the request text and a `MeshContext`
(so a tool can ask other specialists) and returning the answer text.
"""

from __future__ import annotations

from registry.manifest import SpecialistManifest
from specialists.context import MeshContext
from specialists.tools.registry import ToolFunction, load_tool

__all__ = ["ToolEngine", "ToolFunction"]


class ToolEngine:
    def __init__(self, manifest: SpecialistManifest) -> None:
        self.manifest = manifest
        self.function: ToolFunction | None = None

    def load(self) -> None:
        self.function = load_tool(self.manifest.model.source)

    async def run(self, text: str, ctx: MeshContext) -> str:
        if self.function is None:
            raise RuntimeError("tool not loaded")
        return await self.function(text, ctx)
