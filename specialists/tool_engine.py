"""`ToolEngine`: a deterministic specialist written in Python, served through the engine contract.

The manifest's `model.source` names a tool of the tool registry (`specialists.tools.registry`,
entry-point group `mesh.tools`): an async function taking the request text and a `MeshContext`
(so a tool can ask other specialists) and returning the answer text. The engine answers the last
user turn in one delta; a tool's answer is exact, so it is never cut by `max_tokens`. A tool
that `Declined` the query hands it back to the gateway when the request allows it, and otherwise
answers with the decline's text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import ClassVar

from registry.errors import HandedBackError, UnavailableError
from specialists.context import MeshContext
from specialists.engine import Engine, EngineCapabilities, EngineRequest, TextDelta
from specialists.messages import ContextState
from specialists.tools.registry import Declined, ToolFunction, load_tool

__all__ = ["ToolEngine", "ToolFunction"]


class ToolEngine(Engine):
    name: ClassVar[str] = "tool"
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities(exact=True)

    function: ToolFunction | None = None

    def load(self) -> None:
        self.function = load_tool(self.manifest.model.source)

    def health(self) -> None:
        if self.function is None:
            raise UnavailableError(f"tool {self.manifest.model.source} is not loaded")

    async def run(self, text: str, ctx: MeshContext) -> str:
        """The tool's answer to `text`."""
        if self.function is None:
            raise UnavailableError(f"tool {self.manifest.model.source} is not loaded")
        return await self.function(text, ctx)

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        query = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        ctx = request.mesh or MeshContext(
            ContextState(path=[self.manifest.name]), self.manifest.name, []
        )
        task = asyncio.ensure_future(self.run(query, ctx))
        try:
            while not task.done():  # a cancel ends the request now, not when the tool returns
                if cancel is not None and cancel.is_set():
                    yield TextDelta(text="", finish_reason="cancelled")
                    return
                await asyncio.wait({task}, timeout=0.05)
        finally:  # the caller left, was cancelled, or cancelled: the tool stops too
            if not task.done():
                task.cancel()
        try:
            text = task.result()
        except Declined as declined:
            if request.may_hand_back:
                raise HandedBackError(declined.answer) from None
            text = declined.answer
        yield TextDelta(text=text)
        yield TextDelta(
            text="",
            finish_reason="stop",
            prompt_tokens=len(query.split()),
            completion_tokens=max(len(text.split()), 1),
        )
