"""Record usage stats (and what a request can teach the router) from the gateway, without ever
slowing or failing a request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from registry import Registry
from registry.router_lessons import MAX_TEXT_CHARS

logger = logging.getLogger("ray.serve")


class UsageRecorder:
    def __init__(self, registry: Callable[[], Registry]) -> None:
        self.registry = registry
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, specialist: str, *, routed: bool, response_id: str, query: str | None = None
    ) -> Callable[[bool], None]:
        """Begin timing a request; call the returned function with `error` when it ends.

        `query`: the text this answer can teach the router. Routed, it is kept with the
        response for a thumbs-up to propose; pinned (`model="<name>"`), the pin itself is
        proposed as a lesson for `mesh router review`. Failed requests teach nothing."""
        started = time.perf_counter()

        def finish(error: bool) -> None:
            latency_ms = (time.perf_counter() - started) * 1000
            task = asyncio.get_running_loop().create_task(
                self._write(specialist, routed, latency_ms, error, response_id, query)
            )
            self._tasks.add(task)  # keep a reference until done
            task.add_done_callback(self._tasks.discard)

        return finish

    async def _write(
        self,
        name: str,
        routed: bool,
        latency_ms: float,
        error: bool,
        response_id: str,
        query: str | None,
    ) -> None:
        try:
            registry = self.registry()
            await asyncio.to_thread(
                registry.stats.record,
                name,
                routed=routed,
                latency_ms=latency_ms,
                error=error,
                response_id=None if error else response_id,
                query=query if routed and query and len(query) <= MAX_TEXT_CHARS else None,
            )
            if query and not routed and not error:
                await asyncio.to_thread(registry.lessons.propose, query, name, "pin")
        except Exception as failure:  # Redis down: a lost sample, never a failed request
            logger.warning("usage stats not recorded for %s: %s", name, failure)
