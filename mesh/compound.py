"""Compound questions: each part of the query goes to its own specialist, and the answers are
joined into one (`router.compound` finds the parts).

Parts are asked through a `MeshContext`, so hops, tokens and the deadline stay bounded and
every part is traced (`kind: "part"`, who answered which piece). A part that points back at
the earlier ones ("write a haiku about *it*") waits for them and sees their questions and
answers as quoted data, never as instructions; a part that does not ("What is 17*23? Also,
what's the capital of France?") is asked at once, beside the others, so independent parts cost
the slowest one's time, not the sum. Answers are still shown in the query's order. A part that
cannot be answered says so in its place; the others stand.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from router.compound import DecisionPart
from specialists.context import MeshContext
from specialists.engine import TextDelta
from specialists.messages import ORIGIN, ContextState, quote_data

SEPARATOR = "\n\n"
# Words by which a part points at what came before it. A false match only costs the wait.
REFERS_BACK = re.compile(
    r"\b(it|its|that|this|these|those|them|they|the (?:result|answer|number|above|same))\b",
    re.IGNORECASE,
)


def refers_back(part: DecisionPart) -> bool:
    """Whether the part needs the earlier parts' answers ("write a haiku about it")."""
    return REFERS_BACK.search(part.text) is not None


def part_prompt(part: DecisionPart, earlier: list[tuple[DecisionPart, str]]) -> str:
    """The part's own text, with the earlier parts' questions and answers as data."""
    if not earlier:
        return part.text
    context = "\n\n".join(f"Q: {q.text}\nA: {answer}" for q, answer in earlier)
    quoted = quote_data("the earlier parts of this request, answered", "specialist", context)
    return f"{part.text}\n\n{quoted}"


async def answer_parts(
    state: ContextState, parts: list[DecisionPart], live: set[str], max_tokens: int | None
) -> AsyncGenerator[tuple[int, TextDelta], None]:
    """(choice 0, delta) per part as it is answered, then a finish delta with the tokens the
    parts spent (as completion tokens: each part's prompt is the specialist's business)."""
    ctx = MeshContext(state, ORIGIN, sorted(live), sender_trust="user")
    answers: list[asyncio.Task[str]] = []

    async def answer(index: int, part: DecisionPart) -> str:
        earlier: list[tuple[DecisionPart, str]] = []
        if index and refers_back(part):
            texts = [await task for task in answers[:index]]
            earlier = list(zip(parts[:index], texts, strict=True))
        result = await ctx.ask(
            part.specialist, part_prompt(part, earlier), kind="part", max_tokens=max_tokens
        )
        text = result.text.strip()
        if not result.ok or not text:
            why = result.note or "no answer"
            text = f"({part.specialist} could not answer '{part.text}': {why})"
        return text

    # Every task exists before any runs, so a part waiting for earlier ones finds them all.
    answers.extend(asyncio.create_task(answer(i, part)) for i, part in enumerate(parts))
    shown = 0
    try:
        for index, task in enumerate(answers):
            text = await task
            events, shown = ctx.trace[shown:], len(ctx.trace)
            yield 0, TextDelta(text=(SEPARATOR if index else "") + text, trace=events)
    finally:  # the client left, or a part failed: stop the parts still running
        for task in answers:
            task.cancel()
    yield 0, TextDelta(text="", finish_reason="stop", completion_tokens=ctx.state.tokens_used)
