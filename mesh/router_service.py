"""`RouterService`: the router as a Serve deployment, kept in step with the live specialists."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.serve.handle import DeploymentHandle

from mesh.controller import LiveView
from mesh.live import LiveFollower
from mesh.search import semantic_scores
from router import Router, RouterIndex, SentenceTransformerEncoder
from router.router import Method

logger = logging.getLogger("ray.serve")


class RouterService:
    def __init__(
        self,
        controller: DeploymentHandle,
        fallback: str,
        method: Method,
        threshold: float | None,
    ) -> None:
        self.encoder = SentenceTransformerEncoder()
        self.router = Router(
            self.encoder,
            RouterIndex.build(self.encoder, {}),
            fallback=fallback,
            method=method,
            threshold=threshold,
        )
        self.follower = LiveFollower(controller, self._rebuild)

    async def route(
        self, text: str, min_generation: int = -1, history: list[str] | None = None
    ) -> dict[str, Any]:
        """Route `text` (a follow-up stays with its thread: `history` holds the earlier user
        turns); first catch up with the live view the caller has already seen."""
        if self.follower.view.generation < min_generation:
            await self.follower.refresh()
        decision = await asyncio.to_thread(self.router.route, text, history)
        return decision.model_dump(mode="json")

    async def indexed(self, refresh: bool = False) -> dict[str, Any]:
        """Which specialists the index covers, at which live generation."""
        if refresh:
            await self.follower.refresh()
        return {"generation": self.follower.view.generation, "specialists": self.router.index.names}

    async def semantic_scores(
        self, query: str, texts_by_name: dict[str, list[str]]
    ) -> dict[str, float]:
        """Store search uses the router's encoder, so there is one copy of the model."""
        return await asyncio.to_thread(semantic_scores, self.encoder, query, texts_by_name)

    async def _rebuild(self, view: LiveView) -> None:
        examples = {name: [*m.examples, m.description] for name, m in view.specialists.items()}
        self.router.index = await asyncio.to_thread(RouterIndex.build, self.encoder, examples)
        logger.info("router index now covers %s", self.router.index.names)
