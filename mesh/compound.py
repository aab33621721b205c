"""Compound questions: each part of the query goes to its own specialist, and the answers are
joined into one (`router.compound` finds the parts).

Parts are asked in order through a `MeshContext`, so hops, tokens and the deadline stay bounded
and every part is traced (`kind: "part"`, who answered which piece). A later part sees the
earlier parts and their answers as quoted data ("write a haiku about it" knows what "it" is),
never as instructions. A part that cannot be answered says so in its place; the others stand.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from router.compound import DecisionPart
from specialists.context import MeshContext
from specialists.engine import TextDelta
from specialists.messages import ORIGIN, ContextState, quote_data

SEPARATOR = "\n\n"


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
    earlier: list[tuple[DecisionPart, str]] = []
    shown = 0
    for part in parts:
        result = await ctx.ask(
            part.specialist, part_prompt(part, earlier), kind="part", max_tokens=max_tokens
        )
        text = result.text.strip()
        if not result.ok or not text:
            why = result.note or "no answer"
            text = f"({part.specialist} could not answer '{part.text}': {why})"
        events, shown = ctx.trace[shown:], len(ctx.trace)
        yield 0, TextDelta(text=(SEPARATOR if earlier else "") + text, trace=events)
        earlier.append((part, text))
    yield 0, TextDelta(text="", finish_reason="stop", completion_tokens=ctx.state.tokens_used)
