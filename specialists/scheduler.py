"""`BatchScheduler`: continuous batching of every request a replica holds, streaming or not.

One asyncio task drives one `DecodeBatch`: between decode steps it admits waiting requests (up
to `max_batch_size` rows), so a request that arrives mid-answer joins at the next step instead of
waiting for the batch to drain, and a row that finishes leaves at once. Each request reads its
own queue of deltas. A caller that goes away (client disconnect, deadline) sets its row's cancel
event, and the row is dropped at the next step: the slot is free again.

One request's failure stays in that request. A request that cannot join (its seed, its
prefill) is retried alone, so only it fails, with an error its caller turns into a clean HTTP
error; a row whose sampling fails ends alone (the decoder sets its `error`). Only a failed step
of the whole batch fails every row in it, as a 503 to retry, and the loop lives on for the
requests that come next.

Serve's `@serve.batch` was the first candidate. It forms *static* batches (a stream arriving
while a batch runs waits for the whole batch to finish) and gives one batch call no way to learn
that one caller left; `continuous=False` reproduces that policy so the benchmark can compare.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from pydantic import BaseModel

from registry.errors import MeshError, UnavailableError
from specialists.engine import BatchSource, DecodeBatch, Prompt, TextDelta

logger = logging.getLogger("ray.serve")


class BatchStats(BaseModel):
    """What the scheduler is doing now, and has done (for `mesh status` and tests)."""

    running: int = 0
    waiting: int = 0
    steps: int = 0
    admitted: int = 0
    cancelled: int = 0
    failed: int = 0
    largest_batch: int = 0


@dataclass
class _Request:
    prompt: Prompt
    cancel: threading.Event = field(default_factory=threading.Event)
    deltas: asyncio.Queue[TextDelta | BaseException] = field(default_factory=asyncio.Queue)


class BatchScheduler:
    def __init__(
        self, engine: BatchSource, max_batch_size: int = 8, continuous: bool = True
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.continuous = continuous
        self.stats = BatchStats()
        self._waiting: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}  # id(row) -> request
        self._batch: DecodeBatch | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def stream(
        self, prompt: Prompt, cancel: threading.Event | None = None
    ) -> AsyncGenerator[TextDelta, None]:
        """The deltas of one request; the last one carries `finish_reason`. Setting `cancel`
        (or leaving early) frees the row at the next step."""
        request = _Request(prompt, cancel or threading.Event())
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
            if admitted:
                await self._admit(admitted)
            if self._batch is not None and self._running:
                try:
                    await self._step()
                except Exception as error:  # the batch is lost: tell every caller in it
                    self._fail_batch(error)

    def _take_admissible(self) -> list[_Request]:
        for request in [r for r in self._waiting if r.cancel.is_set()]:
            self._waiting.remove(request)  # cancelled while waiting: it ends without a row
            request.deltas.put_nowait(TextDelta(text="", finish_reason="cancelled"))
            self.stats.cancelled += 1
        joinable = self.continuous and (self._batch is None or self._batch.can_admit_running)
        if self._running and not joinable:
            return []
        room = self.max_batch_size - len(self._running)
        taken: list[_Request] = []
        while self._waiting and len(taken) < room:
            request = self._waiting.popleft()
            taken.append(request)
        return taken

    async def _admit(self, requests: list[_Request]) -> None:
        """Admit `requests` together; if that fails, one by one, so only a request that cannot
        start fails (a batch's `admit` is all or nothing, so the running rows are untouched)."""
        try:
            await self._admit_together(requests)
            return
        except Exception as error:
            if len(requests) == 1:
                self._fail(requests[0], error)
                return
        for request in requests:
            try:
                await self._admit_together([request])
            except Exception as error:
                self._fail(request, error)

    async def _admit_together(self, requests: list[_Request]) -> None:
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
            error = getattr(row, "error", None)
            if isinstance(error, BaseException):  # this row alone failed; the others go on
                del self._running[id(row)]
                self._fail(request, error)
                continue
            if delta.text or delta.finish_reason:
                request.deltas.put_nowait(delta)
            if delta.finish_reason:
                del self._running[id(row)]
                if delta.finish_reason == "cancelled":
                    self.stats.cancelled += 1

    def _fail(self, request: _Request, error: BaseException) -> None:
        """End one request with an error its caller can show (the others are untouched)."""
        if not isinstance(error, MeshError):
            logger.error("one request failed in the decode batch", exc_info=error)
        self.stats.failed += 1
        request.deltas.put_nowait(row_error(error))

    def _fail_batch(self, error: BaseException) -> None:
        """A shared step failed: every row in the batch ends with a retryable error, and the
        next request starts a fresh batch."""
        logger.error("decode batch failed", exc_info=error)
        for request in self._running.values():
            request.deltas.put_nowait(batch_error(error))
        self.stats.failed += len(self._running)
        self._running.clear()
        self._batch = None


def row_error(error: BaseException) -> MeshError:
    """What one request's caller sees: the mesh's own errors as they are (a bad seed is a 400),
    anything else as a 500 naming only the exception type (the log has the rest)."""
    if isinstance(error, MeshError):
        return error
    return MeshError(
        f"generation failed for this request ({type(error).__name__}); "
        "other requests were not affected"
    )


def batch_error(error: BaseException) -> MeshError:
    """What every caller in a failed batch step sees: a 503, since a retry starts afresh."""
    if isinstance(error, UnavailableError):
        return error
    return UnavailableError(f"the decode batch failed ({type(error).__name__}); retry shortly")
