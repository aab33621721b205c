"""`RouteBatcher`: concurrent `route` calls share one encoder call.

The encoder dominates a route's cost and costs far less per text in a batch. The batcher sends
a request on at once when the encoder is idle (no added latency at low load); while a batch is
being encoded, new requests queue and go together in the next one, up to `max_batch`. An
optional `max_wait_ms` holds a batch open a little longer for more company. With
`max_inflight` > 1, that many batches encode at once (each in its own thread): on a CPU the
encoder is compute-bound per core, so this is how a replica with several cores and one torch
thread per call uses them. A burst that arrives while several slots are idle is split evenly
across them (16 waiting callers, 2 idle slots: two batches of 8 at once), since one big batch
would leave the other cores idle.

Use one batcher per event loop, e.g. in a Serve deployment: `await batcher.route(text)`. It
routes through anything with `route_batch` (a `Router`, or a `LiveRouter` whose router may be
swapped between batches: each batch reads it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from router.decision import RouteDecision

Request = tuple[str, Sequence[str] | None, "asyncio.Future[RouteDecision]"]


class BatchRouter(Protocol):
    def route_batch(
        self, texts: list[str], histories: Sequence[Sequence[str] | None] | None = None
    ) -> list[RouteDecision]: ...


class RouteBatcher:
    def __init__(
        self,
        router: BatchRouter,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        max_inflight: int = 1,
    ) -> None:
        self.router = router
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.max_inflight = max_inflight
        self.batches = 0
        self.routed = 0
        self._queue: asyncio.Queue[Request] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def route(self, text: str, history: Sequence[str] | None = None) -> RouteDecision:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue))
        future: asyncio.Future[RouteDecision] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, history, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None

    async def _run(self, queue: asyncio.Queue[Request]) -> None:
        slots = asyncio.Semaphore(self.max_inflight)
        running: set[asyncio.Task[None]] = set()
        held: deque[Request] = deque()  # the rest of a split burst, served first
        while True:
            await slots.acquire()  # requests keep queueing while every slot is busy
            batch = [held.popleft() if held else await queue.get()]
            await asyncio.sleep(0)  # let callers that are ready right now join this batch
            deadline = asyncio.get_running_loop().time() + self.max_wait_ms / 1000
            while len(batch) < self.max_batch:
                if held:
                    batch.append(held.popleft())
                    continue
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            idle = self.max_inflight - len(running)  # this batch's slot included
            if idle > 1 and len(batch) > 1:
                size = math.ceil(len(batch) / idle)
                held.extendleft(reversed(batch[size:]))
                batch = batch[:size]
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _dispatch(self, batch: list[Request]) -> None:
        texts = [text for text, _, _ in batch]
        histories = [history for _, history, _ in batch]
        try:
            decisions = await asyncio.to_thread(self.router.route_batch, texts, histories)
        except Exception as error:  # every waiting caller gets the error, the worker lives on
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches += 1
        self.routed += len(batch)
        for (_, _, future), decision in zip(batch, decisions, strict=True):
            if not future.done():
                future.set_result(decision)
