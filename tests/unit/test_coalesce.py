"""`coalesce`: fast tokens share one Serve message; nothing is lost, reordered or held back
past the end, and the first text, trace events and the final delta are never delayed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from specialists.engine import TextDelta, coalesce
from specialists.messages import TraceEvent


async def _source(deltas: list[TextDelta], gap_s: float) -> AsyncIterator[TextDelta]:
    for delta in deltas:
        await asyncio.sleep(gap_s)
        yield delta


def _run(deltas: list[TextDelta], gap_s: float, interval_s: float) -> list[TextDelta]:
    async def main() -> list[TextDelta]:
        return [d async for d in coalesce(_source(deltas, gap_s), interval_s)]

    return asyncio.run(main())


TOKENS = [TextDelta(text=f"t{i} ") for i in range(40)] + [
    TextDelta(text="", finish_reason="stop", prompt_tokens=5, completion_tokens=40)
]


def test_fast_tokens_are_merged_and_nothing_is_lost() -> None:
    out = _run(TOKENS, gap_s=0.0005, interval_s=0.05)
    assert "".join(d.text for d in out) == "".join(d.text for d in TOKENS)
    assert len(out) < 10, "forty fast tokens travel in a few messages"
    assert out[0].text == "t0 ", "the first token is not held back"
    assert out[-1].finish_reason == "stop" and out[-1].completion_tokens == 40
    assert all(d.finish_reason is None for d in out[:-1])


def test_slow_tokens_pass_one_by_one() -> None:
    out = _run(TOKENS[:5] + TOKENS[-1:], gap_s=0.02, interval_s=0.005)
    assert [d.text for d in out[:5]] == [d.text for d in TOKENS[:5]]


def test_trace_events_go_out_at_once_in_order() -> None:
    event = TraceEvent(from_="a", to="b", hop=1, content="x")
    deltas = [TextDelta(text="", trace=[event]), *TOKENS]
    out = _run(deltas, gap_s=0.0005, interval_s=0.05)
    assert out[0].trace == [event] and out[0].text == ""
    assert sum(len(d.trace) for d in out) == 1


def test_held_text_goes_out_when_the_interval_ends_without_another_token() -> None:
    async def stalls() -> AsyncIterator[TextDelta]:
        yield TextDelta(text="a")
        yield TextDelta(text="b")  # held: it came within the interval
        await asyncio.sleep(0.5)  # the engine stalls (another request's prefill)
        yield TextDelta(text="", finish_reason="stop")

    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        return [(d.text, loop.time() - start) async for d in coalesce(stalls(), 0.02)]

    out = asyncio.run(main())
    assert [text for text, _ in out] == ["a", "b", ""]
    assert out[1][1] < 0.2, "held text is not kept until the next token"


def test_held_text_goes_before_a_later_trace_event() -> None:
    event = TraceEvent(from_="a", to="b", hop=1, content="x")
    deltas = [
        TextDelta(text="one "),
        TextDelta(text="two "),
        TextDelta(text="", trace=[event]),
        TextDelta(text="", finish_reason="stop"),
    ]
    out = _run(deltas, gap_s=0.0005, interval_s=0.05)
    trace_at = next(i for i, d in enumerate(out) if d.trace)
    assert "".join(d.text for d in out[:trace_at]) == "one two "


def test_closing_early_closes_the_engine_stream() -> None:
    closed = asyncio.Event()

    async def engine() -> AsyncIterator[TextDelta]:
        try:
            while True:
                await asyncio.sleep(0.001)
                yield TextDelta(text="x")
        finally:
            closed.set()  # what frees the row in a real engine

    async def main() -> bool:
        stream = coalesce(engine(), 0.01)
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        return closed.is_set()

    assert asyncio.run(main())
