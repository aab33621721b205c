"""The mesh's own specialists offered to a model as tools (`mesh: {"tools": ["math", "sql"]}`).

The answering specialist sees each named specialist as a function taking one `query`; its first
answer is held to the tool-call grammar as any tool request is. When it calls one of them, the
gateway asks that specialist through a `MeshContext` (bounded by the request's hops, tokens and
deadline, and traced as `kind: "tool"`), gives the answer back as a quoted `role: tool` result,
and the specialist answers again, now without tools. A call to one of the client's own tools, or
a plain answer, is returned as it is. One round: a planner picks, the mesh runs, it answers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mesh.tool_calls import (
    CalledFunction,
    FunctionSpec,
    ToolCall,
    ToolCallReader,
    ToolMode,
    ToolSpec,
    render_call,
    render_result,
)
from registry import NotFoundError, SpecialistManifest
from specialists.context import MeshContext
from specialists.deployment import SpecialistRequest
from specialists.engine import ChatMessage, GenerationParams, GenerationResult
from specialists.messages import ContextState, TraceEvent, quote_data

MAX_QUERY_CHARS = 2000
QUERY = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 200}},
    "required": ["query"],
    "additionalProperties": False,
}


def specialist_tools(names: list[str], live: dict[str, SpecialistManifest]) -> list[ToolSpec]:
    """Each named live specialist as a function the model may call with a `query`."""
    missing = [name for name in names if name not in live]
    if missing:
        raise NotFoundError(f"mesh.tools: not live: {', '.join(missing)}", param="mesh")
    return [
        ToolSpec(
            type="function",
            function=FunctionSpec(
                name=name,
                description=f"Ask the {name} specialist: {live[name].description[:400]}",
                parameters=QUERY,
            ),
        )
        for name in names
    ]


Generate = Callable[[SpecialistRequest], Awaitable[GenerationResult]]


@dataclass
class ToolRound:
    """What the first answer led to: itself (`answer`: no specialist was called), or the
    request that answers again with the specialist's reply (`again`), and the trace so far."""

    answer: GenerationResult | None
    again: SpecialistRequest | None
    trace: list[TraceEvent] = field(default_factory=list)
    spent: int = 0  # tokens the first answer and the specialist's reply took


async def answer_with_specialists(
    call: SpecialistRequest,
    mode: ToolMode,
    names: set[str],
    asker: str,
    generate: Generate,
    *,
    plain: list[ChatMessage],
    plain_params: GenerationParams,
) -> ToolRound:
    """Run the first answer; if it calls one of the specialists in `names`, ask it. The
    answer after the call is generated from `plain` (the conversation without the tools shown)
    with `plain_params` (no grammar), within what is left of the request's bounds."""
    first = await generate(call)
    message, finish = ToolCallReader(mode).message(first.text, first.finish_reason)
    called = (message.get("tool_calls") or [None])[0]
    if finish != "tool_calls" or called is None or called["function"]["name"] not in names:
        return ToolRound(answer=first, again=None)
    name, arguments = called["function"]["name"], called["function"]["arguments"]
    query = str(json.loads(arguments).get("query", ""))[:MAX_QUERY_CHARS]
    assert call.context is not None
    ctx = MeshContext(call.context, asker, sorted(names))
    # The first answer's own asks count against the request's budget and fan-out too.
    asked = [event for event in first.trace if event.hop == ctx.hop]
    ctx.spend(first.completion_tokens + sum(event.tokens for event in asked))
    ctx.asked = len(asked)
    reply = await ctx.ask(name, query, kind="tool", max_tokens=call.params.max_tokens)
    said = reply.text if reply.ok else f"(no answer: {reply.note})"
    tool_call = ToolCall(id=called["id"], function=CalledFunction(name=name, arguments=arguments))
    result = render_result(quote_data(name, reply.trust, said), tool_call.id, name)
    messages = [
        *plain,
        ChatMessage(role="assistant", content=render_call(tool_call)),
        ChatMessage(role="user", content=result),
    ]
    again = call.model_copy(
        update={
            "messages": messages,
            "params": plain_params,
            "context": _what_is_left(ctx),
            "data": [],
        }
    )
    trace = [*first.trace, *ctx.trace]
    return ToolRound(answer=None, again=again, trace=trace, spent=ctx.state.tokens_used)


def _what_is_left(ctx: MeshContext) -> ContextState:
    """The request's state for the answer after the call: the fan-out its asks have left
    (none left: no more hops)."""
    bounds = ctx.state.bounds
    left = bounds.max_fanout - ctx.asked
    update = {"max_fanout": left} if left >= 1 else {"max_hops": 0}
    return ctx.state.model_copy(update={"bounds": bounds.model_copy(update=update)})
