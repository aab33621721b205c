"""The SSE framing of specialist streams: interleaved choices, usage once, errors as events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from mesh.protocol import MeshInfo
from mesh.sse import interleaved, sse_stream
from registry.errors import UnavailableError
from router.decision import RouteDecision
from specialists.engine import TextDelta

INFO = MeshInfo(
    specialist="general",
    version="1.0.0",
    decision=RouteDecision(targets=[], mode="pinned", threshold=0.0, reason="test"),
)


async def _stream(*deltas: TextDelta, fail: Exception | None = None) -> AsyncIterator[TextDelta]:
    for delta in deltas:
        await asyncio.sleep(0.001)
        yield delta
    if fail is not None:
        raise fail


def _words(*words: str, tokens: int = 3) -> list[TextDelta]:
    deltas = [TextDelta(text=w) for w in words]
    deltas.append(
        TextDelta(text="", finish_reason="stop", prompt_tokens=5, completion_tokens=tokens)
    )
    return deltas


async def _events(n: int, streams: list[list[TextDelta]], **options: object) -> list[dict]:
    outcome: list[bool] = []
    cancelled: list[bool] = []
    sources = [_stream(*deltas[1:]) for deltas in streams]
    firsts = [deltas[0] for deltas in streams]
    lines = [
        line
        async for line in sse_stream(
            interleaved(sources, firsts),
            INFO,
            "id-1",
            "general",
            outcome.append,
            lambda: cancelled.append(True),
            choices=n,
            **options,  # type: ignore[arg-type]
        )
    ]
    assert lines[-1] == "data: [DONE]\n\n"
    assert outcome == [False] and cancelled == []
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_one_choice_streams_in_order_without_usage() -> None:
    events = asyncio.run(_events(1, [_words("a", "b")]))
    assert events[0]["mesh"]["specialist"] == "general"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == "ab" and events[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events)


def test_choices_interleave_by_index_and_usage_comes_once() -> None:
    streams = [_words("a", "b", tokens=2), _words("x", "y", "z", tokens=3)]
    events = asyncio.run(_events(2, streams, include_usage=True))
    texts = ["", ""]
    finishes = 0
    for event in events[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content", "")
            finishes += choice["finish_reason"] is not None
    assert texts == ["ab", "xyz"] and finishes == 2
    assert "mesh" in events[0] and "mesh" not in events[1]  # the decision rides once
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


def test_an_error_in_one_choice_ends_the_stream_with_one_error_event() -> None:
    async def run() -> tuple[list[str], list[bool], list[bool]]:
        outcome: list[bool] = []
        cancelled: list[bool] = []
        good = _stream(*_words("b"))
        bad = _stream(TextDelta(text="y"), fail=UnavailableError("replica died"))
        lines = [
            line
            async for line in sse_stream(
                interleaved([good, bad], [TextDelta(text="a"), TextDelta(text="x")]),
                INFO,
                "id-1",
                "general",
                outcome.append,
                lambda: cancelled.append(True),
                choices=2,
            )
        ]
        return lines, outcome, cancelled

    lines, outcome, cancelled = asyncio.run(run())
    error = json.loads(lines[-2].removeprefix("data: "))
    assert error["error"]["message"] == "replica died" and lines[-1] == "data: [DONE]\n\n"
    assert outcome == [True] and cancelled == [True]  # the other choice is cancelled too


@pytest.mark.parametrize("n", [1, 3])
def test_interleaved_yields_every_delta_once_with_its_index(n: int) -> None:
    async def run() -> list[tuple[int, str]]:
        streams = [_stream(*(TextDelta(text=f"{i}{j}") for j in range(1, 4))) for i in range(n)]
        firsts = [TextDelta(text=f"{i}0") for i in range(n)]
        return [(i, d.text) async for i, d in interleaved(streams, firsts)]

    seen = asyncio.run(run())
    assert sorted(seen) == [(i, f"{i}{j}") for i in range(n) for j in range(4)]
    for i in range(n):  # each stream's own order is kept
        assert [t for k, t in seen if k == i] == [f"{i}{j}" for j in range(4)]


def test_token_logprobs_ride_on_their_chunk_even_when_the_text_is_held() -> None:
    from specialists.engine import TokenLogprob

    entry = TokenLogprob(token="Hi", logprob=-0.1, bytes=[72, 105])
    held = TokenLogprob(token="<", logprob=-2.0, bytes=[60])
    deltas = [
        TextDelta(text="Hi", logprobs=[entry]),
        TextDelta(text="", logprobs=[held]),  # e.g. a tool-call marker's start, held back
        TextDelta(text="", finish_reason="stop", prompt_tokens=5, completion_tokens=2),
    ]
    events = asyncio.run(_events(1, [deltas]))
    chunks = [e["choices"][0] for e in events if e.get("choices")]
    with_logprobs = [c for c in chunks if c.get("logprobs")]
    assert [c["logprobs"]["content"][0]["token"] for c in with_logprobs] == ["Hi", "<"]
    assert with_logprobs[0]["delta"] == {"content": "Hi"}
    assert with_logprobs[1]["delta"] == {"content": ""}
    assert all("logprobs" not in c for c in chunks if c not in with_logprobs)
