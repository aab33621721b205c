"""`RouterService`: the router as a Serve deployment, kept in step with the live specialists.

Concurrent `route` calls share encoder calls through `RouteBatcher` (not `@serve.batch`: it adds
no wait when the encoder is idle, carries each call's history, can keep several batches encoding
on spare cores, and is tested without Ray), behind the router's query-embedding cache. What it
routes with is a `LiveRouter`: loaded from the current router artifact in Redis at start (the
frozen MiniLM when there is none or it is damaged), re-indexed as soon as the installed set
changes, refitted in the background, and reloaded when `mesh router fit` makes a new artifact
current. Each swap replaces the whole router between two batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ray.serve.handle import DeploymentHandle

from mesh.controller import LiveView
from mesh.live import LiveFollower
from mesh.publish_gate import ImpactRequest
from mesh.search import semantic_scores
from mesh.settings import MeshSettings
from registry.router_artifacts import RouterArtifactStore
from registry.router_lessons import LessonStore
from router.artifact import EncoderLoader
from router.batcher import RouteBatcher
from router.embeddings import ROUTED_ALIAS, EmbeddingBatch, embed
from router.encoder import Encoder, SentenceTransformerEncoder
from router.finetune import FinetuneSettings
from router.impact import ImpactReport
from router.index import index_examples
from router.lexical import lexical_spec
from router.live import LiveRouter, LiveRouterOptions
from specialists.serve_options import keep_replica_on_loopback

logger = logging.getLogger("ray.serve")


def live_options(settings: MeshSettings) -> LiveRouterOptions:
    return LiveRouterOptions(
        home=settings.data_dir,
        method=settings.router_method,
        fallback=settings.fallback,
        threshold=settings.router_threshold,
        refit=settings.router_refit,
        refit_encoder=settings.router_refit_encoder,
        refit_delay_s=settings.router_refit_delay_s,
        finetune=FinetuneSettings(steps=settings.router_finetune_steps),
        lexical=lexical_spec(settings.router_lexical_weight),
    )


class RouterService:
    def __init__(
        self,
        controller: DeploymentHandle,
        settings: MeshSettings | dict[str, Any],
        *,
        load: EncoderLoader = SentenceTransformerEncoder,
        frozen: Callable[[], Encoder] | None = None,
    ) -> None:
        """`load` opens a fine-tuned encoder folder, `frozen` the base encoder (default: the
        offline MiniLM); tests inject small ones."""
        keep_replica_on_loopback()
        if not isinstance(settings, MeshSettings):
            settings = MeshSettings.model_validate(settings)
        store = RouterArtifactStore.from_url(settings.redis_url) if settings.redis_url else None
        lessons = LessonStore(store.client, store.url) if store is not None else None
        self.index_tags = settings.router_index_tags
        self.live = LiveRouter(
            live_options(settings), store=store, lessons=lessons, load=load, frozen=frozen
        )
        self.live.start()
        status = self.live.status()
        logger.info(
            "router serving artifact %s%s",
            (status["artifact"] or {}).get("version", "none (frozen encoder, default thresholds)"),
            " (degraded: the current artifact could not be loaded)" if status["degraded"] else "",
        )
        self.batcher = RouteBatcher(
            self.live,
            max_batch=settings.router_max_batch,
            max_wait_ms=settings.router_batch_wait_ms,
            max_inflight=settings.router_inflight,
        )
        self.reload_s = settings.router_reload_s
        self.follower = LiveFollower(controller, self._rebuild)
        self._reloader = asyncio.get_event_loop().create_task(self._reload_loop())

    async def route(
        self, text: str, min_generation: int = -1, history: list[str] | None = None
    ) -> dict[str, Any]:
        """Route `text` (a follow-up stays with its thread: `history` holds the earlier user
        turns); first catch up with the live view the caller has already seen."""
        if self.follower.view.generation < min_generation:
            await self.follower.refresh()
        decision = await self.batcher.route(text, history)
        return decision.model_dump(mode="json")

    async def indexed(self, refresh: bool = False) -> dict[str, Any]:
        """Which specialists the index covers, at which live generation, from which artifact."""
        if refresh:
            await self.follower.refresh()
        return {
            "generation": self.follower.view.generation,
            "specialists": self.live.router.index.names,
            **self.live.status(),
        }

    async def semantic_scores(
        self, query: str, texts_by_name: dict[str, list[str]]
    ) -> dict[str, float]:
        """Store search uses the frozen encoder (the router's own when it is not fine-tuned):
        a fine-tuned one is adapted to the installed specialists, not to the whole store."""
        encoder = self.live.frozen_encoder()
        return await asyncio.to_thread(semantic_scores, encoder, query, texts_by_name)

    async def embed(self, texts: list[str], model: str = ROUTED_ALIAS) -> EmbeddingBatch:
        """`/v1/embeddings` with the frozen encoder: stable vectors, whatever the router refits."""
        return await asyncio.to_thread(embed, self.live.frozen_encoder(), texts, model)

    async def impact(self, request: ImpactRequest) -> ImpactReport:
        """The quality gate's replay (`mesh.publish_gate`) with the router serving now (its
        encoder, method and thresholds), so the gateway never loads an encoder of its own."""
        return await asyncio.to_thread(request.replay, lambda: self.live.router)

    async def _rebuild(self, view: LiveView) -> None:
        examples = index_examples(view.specialists, tags=self.index_tags)
        installed = {name: m.version for name, m in view.specialists.items()}
        await asyncio.to_thread(self.live.update, installed, examples)
        logger.info("router index now covers %s", self.live.router.index.names)
        self.live.schedule_refit()

    async def _reload_loop(self) -> None:
        """Pick up an artifact that `mesh router fit` made current while the mesh runs, and
        refit when an operator accepted router lessons (`mesh router review`)."""
        last_error = ""
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                reloaded = await asyncio.to_thread(self.live.reload_if_changed)
                before = self.live.lessons_version
                if reloaded or await asyncio.to_thread(self.live.poll_lessons) != before:
                    self.live.schedule_refit()
                last_error = ""
            except Exception as error:
                if str(error) != last_error:
                    logger.warning("cannot check for a new router artifact: %s", error)
                last_error = str(error)
