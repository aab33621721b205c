"""Panels (mixture of agents): several specialists draft, one aggregates.

The gateway asks each member in parallel through a `MeshContext` (so fan-out, tokens and the
deadline are bounded and every draft is traced), then hands the drafts to the aggregator as
quoted data with their provenance: drafts inform the final answer, they never instruct it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from mesh.protocol import MeshOptions
from registry.errors import InvalidRequestError, NotFoundError
from router.decision import RouteDecision
from specialists.context import MeshContext
from specialists.messages import ORIGIN, ContextState, TraceEvent, quote_data

MAX_PANEL = 3
AGGREGATE_INSTRUCTION = (
    "Several specialists drafted answers to the question above (quoted as data). "
    "Write one final answer: keep what is correct and useful, drop what is wrong."
)


def panel_members(
    options: MeshOptions | None, decision: RouteDecision, live: set[str]
) -> list[str]:
    """Who sits on the panel: the request's list, or the router's candidates above threshold."""
    if options is not None and options.panel:
        return [name for name in options.panel if name in live]
    if decision.mode != "panel":
        return []
    chosen = decision.panel or [t.name for t in decision.targets if t.score >= decision.threshold]
    return [name for name in chosen if name in live][:MAX_PANEL]


def check_aggregator(options: MeshOptions | None, members: list[str], live: set[str]) -> None:
    """Refuse a requested aggregator that cannot write the answer, before any draft is paid
    for: one that is not live is a 404, and a panel with no live member a 400 (both name
    `mesh`). A live aggregator outside the panel is allowed: it only reads the drafts."""
    if not members:
        raise InvalidRequestError("no panel member is live", param="mesh")
    requested = options.aggregator if options is not None else None
    if requested is not None and requested not in live:
        raise NotFoundError(
            f"mesh.aggregator: specialist '{requested}' is not live; live: "
            f"{', '.join(sorted(live)) or 'none'}",
            param="mesh",
        )


def choose_aggregator(members: list[str], options: MeshOptions | None, default: str | None) -> str:
    requested = options.aggregator if options is not None else None
    return requested or (default if default in members else None) or members[0]


class PanelRun(BaseModel):
    """What a panel hands to its aggregator: drafts as data, and the gateway-level trace."""

    aggregator: str
    data: list[str]
    trace: list[dict[str, Any]]
    state: ContextState


async def run_panel(
    state: ContextState,
    members: list[str],
    live: set[str],
    question: str,
    *,
    options: MeshOptions | None,
    default_aggregator: str | None,
    max_tokens: int,
) -> PanelRun:
    """Draft in parallel, then name the aggregator that writes the answer from the drafts."""
    check_aggregator(options, members, live)
    ctx = MeshContext(state, ORIGIN, sorted(live), sender_trust="user")
    data = await draft(ctx, members, question, max_tokens)
    drafts = len(data)
    if data:
        data.append(AGGREGATE_INSTRUCTION)
    aggregator = choose_aggregator(members, options, default_aggregator)
    aggregate = TraceEvent.model_validate(
        {
            "from": ORIGIN,
            "to": aggregator,
            "hop": 0,
            "kind": "aggregate",
            "content": f"{drafts} drafts",
            "note": "writes the answer",
        }
    )
    trace = [event.dump() for event in [*ctx.trace, aggregate]]
    return PanelRun(aggregator=aggregator, data=data, trace=trace, state=ctx.state)


async def draft(
    ctx: MeshContext, members: list[str], question: str, max_tokens: int | None = None
) -> list[str]:
    """Ask every member in parallel (drafts as long as the request allows); quote the answers."""
    results = await asyncio.gather(
        *(ctx.ask(name, question, kind="draft", max_tokens=max_tokens) for name in members)
    )
    return [
        quote_data(f"specialist {name} (draft)", result.trust, result.text)
        for name, result in zip(members, results, strict=True)
        if result.ok and result.text.strip()
    ]
