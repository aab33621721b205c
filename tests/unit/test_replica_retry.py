"""The gateway's wait for a replica: bounded by the request's deadline, and one more try when
the replica died before answering (`mesh.gateway._answered`, `_first_delta`). The handle is a
stand-in (pure logic); the real replica deaths are in tests/integration/test_cluster_faults.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from mesh import gateway
from mesh.errors import as_mesh_error
from registry.errors import UnavailableError
from specialists.deployment import SpecialistRequest
from specialists.engine import ChatMessage, GenerationResult, TextDelta
from specialists.messages import Bounds, ContextState


def call(deadline_s: float = 60.0) -> SpecialistRequest:
    state = ContextState(bounds=Bounds(deadline_s=deadline_s)).started()
    return SpecialistRequest(messages=[ChatMessage(role="user", content="hi")], context=state)


class Response:
    """What `handle.chat.remote` returns: awaitable and cancellable."""

    def __init__(self, outcome: Any, delay_s: float = 0.0) -> None:
        self.outcome, self.delay_s, self.cancelled = outcome, delay_s, False

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        await asyncio.sleep(self.delay_s)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class Stream:
    def __init__(self, outcome: Any, delay_s: float = 0.0) -> None:
        self.outcome, self.delay_s, self.cancelled = outcome, delay_s, False

    def cancel(self) -> None:
        self.cancelled = True

    def __aiter__(self) -> AsyncIterator[TextDelta]:
        return self

    async def __anext__(self) -> TextDelta:
        await asyncio.sleep(self.delay_s)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[no-any-return]


class Handle:
    """Hands out the queued responses (or streams) in order and counts the calls."""

    def __init__(self, *queued: Any) -> None:
        self.queued, self.calls = list(queued), 0
        self.chat = self.chat_stream = self

    def options(self, **_: Any) -> Handle:
        return self

    def remote(self, _call: Any) -> Any:
        self.calls += 1
        return self.queued.pop(0)


ANSWER = GenerationResult(text="hello", finish_reason="stop", prompt_tokens=1, completion_tokens=1)


def test_a_request_whose_replica_died_is_asked_once_more() -> None:
    dead = Response(ActorDiedError())
    handle = Handle(dead, Response(ANSWER))
    result = asyncio.run(gateway._answered(handle, call(), "code"))  # type: ignore[arg-type]
    assert result.text == "hello" and handle.calls == 2 and dead.cancelled


def test_a_second_death_is_a_clean_503() -> None:
    handle = Handle(Response(ActorDiedError()), Response(ActorDiedError()))
    with pytest.raises(ActorDiedError) as raised:
        asyncio.run(gateway._answered(handle, call(), "code"))  # type: ignore[arg-type]
    mapped = as_mesh_error(raised.value)
    assert isinstance(mapped, UnavailableError) and "replica stopped" in mapped.message


@pytest.mark.parametrize("error", [ValueError("bad"), ActorUnavailableError("busy", None)])
def test_other_errors_are_not_retried(error: Exception) -> None:
    """Not a dead replica (an unreachable one may still be running the request)."""
    handle = Handle(Response(error), Response(ANSWER))
    with pytest.raises(type(error)):
        asyncio.run(gateway._answered(handle, call(), "code"))  # type: ignore[arg-type]
    assert handle.calls == 1


def test_no_replica_by_the_deadline_is_a_503_and_the_call_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway, "DEADLINE_GRACE_S", 0.0)
    slow = Response(ANSWER, delay_s=5.0)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="no replica of 'code' answered"):
        asyncio.run(gateway._answered(Handle(slow), call(deadline_s=0.2), "code"))  # type: ignore[arg-type]
    assert time.monotonic() - started < 2 and slow.cancelled


def test_a_stream_whose_replica_died_before_its_first_token_is_opened_again() -> None:
    dead, fresh = Stream(ActorDiedError()), Stream(TextDelta(text="Hi"))
    handle = Handle(fresh)
    stream, first = asyncio.run(gateway._first_delta(handle, call(), dead, "code"))  # type: ignore[arg-type]
    assert stream is fresh and first.text == "Hi" and handle.calls == 1


def test_a_stream_that_never_starts_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "DEADLINE_GRACE_S", 0.0)
    never = Stream(TextDelta(text="late"), delay_s=5.0)
    with pytest.raises(UnavailableError):
        asyncio.run(gateway._first_delta(Handle(), call(deadline_s=0.2), never, "code"))  # type: ignore[arg-type]
    assert never.cancelled
