"""`BatchScheduler`: continuous batching of every request a replica holds, streaming or not.

One asyncio task drives one `DecodeBatch`: between decode steps it admits waiting requests (up
to `max_batch_size` rows), so a request that arrives mid-answer joins at the next step instead of
waiting for the batch to drain, and a row that finishes leaves at once. Each request reads its
own queue of deltas. A caller that goes away (client disconnect, deadline) sets its row's cancel
event, and the row is dropped at the next step: the slot is free again.

Serve's `@serve.batch` was the first candidate. It forms *static* batches (a stream arriving
while a batch runs waits for the whole batch to finish) and gives one batch call no way to learn
that one caller left; `continuous=False` reproduces that policy so the benchmark can compare.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from specialists.engine import DecodeBatch, Engine, Prompt, TextDelta

logger = logging.getLogger("ray.serve")


class BatchStats(BaseModel):
    """What the scheduler is doing now, and has done (for `mesh status` and tests)."""

    running: int = 0
    waiting: int = 0
    steps: int = 0
    admitted: int = 0
    cancelled: int = 0
    largest_batch: int = 0


@dataclass
class _Request:
    prompt: Prompt
    cancel: threading.Event = field(default_factory=threading.Event)
    deltas: asyncio.Queue[TextDelta | BaseException] = field(default_factory=asyncio.Queue)


class BatchScheduler:
    def __init__(self, engine: Engine, max_batch_size: int = 8, continuous: bool = True) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.continuous = continuous
        self.stats = BatchStats()
        self._waiting: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}  # id(row) -> request
        self._batch: DecodeBatch | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def stream(self, prompt: Prompt) -> AsyncIterator[TextDelta]:
        """The deltas of one request; the last one carries `finish_reason`."""
        request = _Request(prompt)
        self._waiting.append(request)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drive())
        try:
            while True:
                delta = await request.deltas.get()
                if isinstance(delta, BaseException):
                    raise delta
                yield delta
                if delta.finish_reason:
                    return
        finally:
            request.cancel.set()  # a no-op when finished; otherwise the row leaves next step
            if request in self._waiting:
                self._waiting.remove(request)

    def snapshot(self) -> BatchStats:
        return self.stats.model_copy(
            update={"running": len(self._running), "waiting": len(self._waiting)}
        )

    # -- the loop -------------------------------------------------------------------------
    async def _drive(self) -> None:
        while True:
            if not self._running and not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            admitted = self._take_admissible()
            try:
                if admitted:
                    await self._admit(admitted)
                if self._batch is not None and self._running:
                    await self._step()
            except Exception as error:  # the batch is lost: tell every caller in it
                logger.exception("decode batch failed")
                for request in [*admitted, *self._running.values()]:
                    request.deltas.put_nowait(error)
                self._running.clear()
                self._batch = None

    def _take_admissible(self) -> list[_Request]:
        joinable = self.continuous and (self._batch is None or self._batch.can_admit_running)
        if self._running and not joinable:
            return []
        room = self.max_batch_size - len(self._running)
        taken: list[_Request] = []
        while self._waiting and len(taken) < room:
            request = self._waiting.popleft()
            if request.cancel.is_set():
                continue
            taken.append(request)
        return taken

    async def _admit(self, requests: list[_Request]) -> None:
        if self._batch is None or not self._running:
            self._batch = self.engine.new_batch()
        batch = self._batch
        prompts = [r.prompt for r in requests]
        cancels = [r.cancel for r in requests]
        rows = await asyncio.to_thread(batch.admit, prompts, cancels)
        for row, request in zip(rows, requests, strict=True):
            self._running[id(row)] = request
        self.stats.admitted += len(requests)

    async def _step(self) -> None:
        assert self._batch is not None
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._running))
        deltas = await asyncio.to_thread(self._batch.step)
        self.stats.steps += 1
        for row, delta in deltas:
            request = self._running[id(row)]
            if delta.text or delta.finish_reason:
                request.deltas.put_nowait(delta)
            if delta.finish_reason:
                del self._running[id(row)]
                if delta.finish_reason == "cancelled":
                    self.stats.cancelled += 1
