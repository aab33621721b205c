"""Compound questions: each part of the query goes to its own specialist, and the answers are
joined into one (`router.compound` finds the parts).

Parts are asked through a `MeshContext`, so hops, tokens and the deadline stay bounded and
every part is traced (`kind: "part"`, who answered which piece). By default a part waits for
the earlier ones and sees their questions and answers as quoted data, never as instructions
("Then write a haiku about *it*", "Then write a poem about the city"). Only a part the user
joined as an addition ("... Also, ...", "... plus ...") that does not point back with a
pronoun is asked at once, beside the others, so independent parts cost the slowest one's time,
not the sum (`independent`). Missing a dependency gives a wrong answer while a false one only
costs the wait, so the rule leans to waiting. Answers are shown in the query's order. A part
that cannot be answered says so in its place; the others stand.
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
    r"\b(it|its|that|this|these|those|them|they|their|theirs|he|him|his|she|her|hers|there"
    r"|such|same|above|result|answer)\b",
    re.IGNORECASE,
)
# What may stand between two parts the user joined as an addition, not a sequence.
ADDITIVE = re.compile(r"^[\s,.;:?!]*(?:and\s+)?(?:also|plus|as\s+well)[\s,:]*$", re.IGNORECASE)


def refers_back(part: DecisionPart) -> bool:
    """Whether the part points at what came before it ("write a haiku about it")."""
    return REFERS_BACK.search(part.text) is not None


def independent(query: str, parts: list[DecisionPart]) -> list[bool]:
    """Per part, whether it may be asked without the earlier answers: the first always; a
    later one only when the words between it and the part before are "also" or "plus" (the
    router's pieces are cut from `query`, joiners removed) and it does not `refer_back`. A part
    not found as it is in `query` (merged pieces) waits, and so does every part after it."""
    flags = [True]
    start = query.find(parts[0].text) if parts else -1
    end = start + len(parts[0].text) if start >= 0 else -1
    for part in parts[1:]:
        at = query.find(part.text, end) if end >= 0 else -1
        gap = query[end:at] if at >= 0 else ""
        flags.append(at >= 0 and bool(ADDITIVE.match(gap)) and not refers_back(part))
        end = at + len(part.text) if at >= 0 else -1
    return flags


def part_prompt(part: DecisionPart, earlier: list[tuple[DecisionPart, str]]) -> str:
    """The part's own text, with the earlier parts' questions and answers as data."""
    if not earlier:
        return part.text
    context = "\n\n".join(f"Q: {q.text}\nA: {answer}" for q, answer in earlier)
    quoted = quote_data("the earlier parts of this request, answered", "specialist", context)
    return f"{part.text}\n\n{quoted}"


async def answer_parts(
    state: ContextState,
    parts: list[DecisionPart],
    live: set[str],
    max_tokens: int | None,
    query: str = "",
) -> AsyncGenerator[tuple[int, TextDelta], None]:
    """(choice 0, delta) per part in the query's order, then a finish delta with the tokens the
    parts spent (as completion tokens: each part's prompt is the specialist's business).
    `query`: the text the parts were cut from (which parts may run at once, `independent`)."""
    ctx = MeshContext(state, ORIGIN, sorted(live), sender_trust="user")
    answers: list[asyncio.Task[str]] = []
    alone = independent(query, parts)

    async def answer(index: int, part: DecisionPart) -> str:
        earlier: list[tuple[DecisionPart, str]] = []
        if not alone[index]:
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
        await asyncio.gather(*answers, return_exceptions=True)
    yield 0, TextDelta(text="", finish_reason="stop", completion_tokens=ctx.state.tokens_used)
