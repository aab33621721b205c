"""`SpecialistDeployment`: one specialist as a Ray Serve deployment, one Serve app per specialist.

Each specialist gets its own application (`specialist-<name>`), so it has its own replicas,
resources and autoscaling, and can be deployed, upgraded or removed without touching the others.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from registry.manifest import SpecialistManifest
from specialists.engine import (
    ChatMessage,
    Engine,
    GenerationParams,
    GenerationResult,
    TextDelta,
    engine_class,
)

APP_PREFIX = "specialist-"
_DONE = object()


def app_name(specialist: str) -> str:
    """The Serve application name of a specialist."""
    return f"{APP_PREFIX}{specialist}"


class SpecialistDeployment:
    """Serves one specialist manifest: chat (whole answer) and chat_stream (deltas)."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = SpecialistManifest.model_validate(manifest)
        self.engine: Engine = engine_class(self.manifest.model.engine)(self.manifest)
        self.engine.load()
        # One generation at a time per replica: on CPU, parallel generate() calls only fight
        # for the same cores. Batching concurrent requests is the next step (see docs).
        self._lock = asyncio.Lock()

    def info(self) -> dict[str, Any]:
        return {"name": self.manifest.name, "version": self.manifest.version}

    async def chat(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> GenerationResult:
        chat, parsed = _parse(messages, params)
        async with self._lock:
            return await asyncio.to_thread(self.engine.generate, chat, parsed)

    async def chat_stream(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> AsyncIterator[TextDelta]:
        chat, parsed = _parse(messages, params)
        cancel = threading.Event()
        async with self._lock:
            iterator = self.engine.stream(chat, parsed, cancel)
            try:
                while (delta := await asyncio.to_thread(next, iterator, _DONE)) is not _DONE:
                    yield delta  # type: ignore[misc]
            finally:
                cancel.set()  # the caller went away: stop generating and free the slot
                await asyncio.to_thread(iterator.close)

    def check_health(self) -> None:
        if self.engine is None:
            raise RuntimeError("engine not loaded")


def _parse(
    messages: list[dict[str, Any]], params: dict[str, Any]
) -> tuple[list[ChatMessage], GenerationParams]:
    return [ChatMessage.model_validate(m) for m in messages], GenerationParams.model_validate(
        params
    )


def build_specialist_app(manifest: SpecialistManifest) -> Application:
    """A Serve application for one manifest: resources and scaling come from the manifest."""
    resources, scaling = manifest.resources, manifest.scaling
    actor_options: dict[str, Any] = {"num_cpus": resources.num_cpus}
    if resources.num_gpus:
        actor_options["num_gpus"] = resources.num_gpus
    if resources.memory:
        actor_options["memory"] = resources.memory
    options: dict[str, Any] = {
        "name": manifest.name,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": 8,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 30,
    }
    if scaling.min_replicas == scaling.max_replicas:
        options["num_replicas"] = scaling.max_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    deployment = serve.deployment(SpecialistDeployment, **options)
    return deployment.bind(manifest.model_dump(mode="json"))  # type: ignore[attr-defined]
