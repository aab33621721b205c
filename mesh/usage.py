"""Record usage stats from the gateway without ever slowing or failing a request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from registry import Registry

logger = logging.getLogger("ray.serve")


class UsageRecorder:
    def __init__(self, registry: Callable[[], Registry]) -> None:
        self.registry = registry
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, specialist: str, *, routed: bool, response_id: str) -> Callable[[bool], None]:
        """Begin timing a request; call the returned function with `error` when it ends."""
        started = time.perf_counter()

        def finish(error: bool) -> None:
            latency_ms = (time.perf_counter() - started) * 1000
            task = asyncio.get_running_loop().create_task(
                self._write(specialist, routed, latency_ms, error, response_id)
            )
            self._tasks.add(task)  # keep a reference until done
            task.add_done_callback(self._tasks.discard)

        return finish

    async def _write(
        self, name: str, routed: bool, latency_ms: float, error: bool, response_id: str
    ) -> None:
        try:
            stats = self.registry().stats
            await asyncio.to_thread(
                stats.record,
                name,
                routed=routed,
                latency_ms=latency_ms,
                error=error,
                response_id=None if error else response_id,
            )
        except Exception as failure:  # Redis down: a lost sample, never a failed request
            logger.warning("usage stats not recorded for %s: %s", name, failure)
