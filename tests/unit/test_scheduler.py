"""BatchScheduler's policy on a scripted engine: admission, continuity, cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from registry.errors import InvalidRequestError, UnavailableError
from specialists.engine import BatchEngine, GenerationParams, Prompt, TextDelta
from specialists.scheduler import BatchScheduler
from tests.conftest import manifest_data


class _Row:
    def __init__(self, prompt: Prompt, cancel: threading.Event) -> None:
        self.prompt, self.cancel, self.left = prompt, cancel, prompt.params.max_tokens


class ScriptedBatch:
    """Each row emits "x" per step until max_tokens; records batch sizes per step."""

    def __init__(self, log: list[int], fail_at_step: int | None) -> None:
        self.rows: list[_Row] = []
        self.log, self.fail_at_step = log, fail_at_step

    @property
    def can_admit_running(self) -> bool:
        return True

    def admit(self, prompts: Sequence[Prompt], cancels: Sequence[threading.Event]) -> list[Any]:
        rows = [_Row(p, c) for p, c in zip(prompts, cancels, strict=True)]
        self.rows += rows
        return rows

    def step(self) -> list[tuple[Any, TextDelta]]:
        if self.fail_at_step is not None and len(self.log) == self.fail_at_step:
            raise RuntimeError("device lost")
        self.log.append(len(self.rows))
        out = []
        for row in self.rows:
            row.left -= 1
            if row.cancel.is_set():
                out.append((row, TextDelta(text="", finish_reason="cancelled")))
            elif row.left == 0:
                out.append((row, TextDelta(text="x", finish_reason="length")))
            else:
                out.append((row, TextDelta(text="x")))
        self.rows = [r for r, d in out if not d.finish_reason]
        return out


class ScriptedEngine(BatchEngine):
    def __init__(self, fail_at_step: int | None = None) -> None:
        from registry import parse_manifest

        super().__init__(parse_manifest(manifest_data()))
        self.log: list[int] = []
        self.fail_at_step = fail_at_step

    def load(self) -> None: ...

    def prepare(self, messages: Any, params: GenerationParams) -> Prompt:
        return Prompt(ids=[1], params=params)

    def new_batch(self) -> ScriptedBatch:
        return ScriptedBatch(self.log, self.fail_at_step)


def _prompt(tokens: int) -> Prompt:
    return Prompt(ids=[1], params=GenerationParams(max_tokens=tokens))


async def _text(scheduler: BatchScheduler, tokens: int) -> str:
    return "".join([d.text async for d in scheduler.stream(_prompt(tokens))])


def test_concurrent_requests_share_steps() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        scheduler = BatchScheduler(engine, max_batch_size=8)
        texts = await asyncio.gather(*(_text(scheduler, 5) for _ in range(4)))
        assert texts == ["xxxxx"] * 4
        assert engine.log == [4] * 5, "four rows decoded together in five steps"

    asyncio.run(main())


def test_a_late_request_joins_the_running_batch() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        scheduler = BatchScheduler(engine, max_batch_size=8)
        first = asyncio.create_task(_text(scheduler, 20))
        while not engine.log:
            await asyncio.sleep(0)
        assert await _text(scheduler, 3) == "xxx"
        assert not first.done(), "the short request finished while the long one still runs"
        await first
        assert 2 in engine.log

    asyncio.run(main())


def test_static_mode_waits_for_the_batch_to_drain() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        scheduler = BatchScheduler(engine, max_batch_size=8, continuous=False)
        first = asyncio.create_task(_text(scheduler, 6))
        while not engine.log:
            await asyncio.sleep(0)
        await _text(scheduler, 2)
        assert first.done()
        assert max(engine.log) == 1

    asyncio.run(main())


def test_batch_size_is_capped() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        scheduler = BatchScheduler(engine, max_batch_size=3)
        await asyncio.gather(*(_text(scheduler, 2) for _ in range(7)))
        assert max(engine.log) == 3
        assert scheduler.snapshot().admitted == 7

    asyncio.run(main())


def test_a_caller_that_leaves_frees_its_row() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        scheduler = BatchScheduler(engine, max_batch_size=8)
        stream = scheduler.stream(_prompt(1000))
        await anext(stream)
        await stream.aclose()  # what a client disconnect does to the request's generator
        for _ in range(500):  # the decode step runs in a thread: give a loaded machine time
            if scheduler.snapshot().running == 0:
                break
            await asyncio.sleep(0.01)
        stats = scheduler.snapshot()
        assert stats.running == 0 and stats.cancelled == 1
        assert len(engine.log) < 10, "generation stopped instead of running to max_tokens"

    asyncio.run(main())


def test_a_failed_step_fails_its_callers_and_the_next_request_still_runs() -> None:
    async def main() -> None:
        engine = ScriptedEngine(fail_at_step=2)
        scheduler = BatchScheduler(engine, max_batch_size=8)
        with pytest.raises(UnavailableError, match="RuntimeError") as raised:
            await asyncio.gather(_text(scheduler, 5), _text(scheduler, 5))
        assert raised.value.status_code == 503, "a lost batch is retryable, never a bare 500"
        assert scheduler.snapshot().failed == 2
        engine.fail_at_step = None
        assert await _text(scheduler, 2) == "xx"

    asyncio.run(main())


class PickyBatch(ScriptedBatch):
    """Refuses, all or nothing, any admission holding a prompt of 13 tokens."""

    def admit(self, prompts: Sequence[Prompt], cancels: Sequence[threading.Event]) -> list[Any]:
        if any(p.params.max_tokens == 13 for p in prompts):
            raise InvalidRequestError("unlucky prompt", param="messages")
        return super().admit(prompts, cancels)


def test_a_request_that_cannot_join_fails_alone_and_the_others_are_admitted() -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        engine.new_batch = lambda: PickyBatch(engine.log, None)  # type: ignore[method-assign]
        scheduler = BatchScheduler(engine, max_batch_size=8)
        results = await asyncio.gather(
            _text(scheduler, 3), _text(scheduler, 13), _text(scheduler, 4), return_exceptions=True
        )
        assert results[0] == "xxx" and results[2] == "xxxx"
        assert isinstance(results[1], InvalidRequestError)
        stats = scheduler.snapshot()
        assert (stats.admitted, stats.failed, stats.running) == (2, 1, 0)

    asyncio.run(main())
