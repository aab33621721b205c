"""From one query's scores to a `RouteDecision`: pin, follow-up, fallback, panel or single.

Pure functions over numpy rows, so every rule is testable without a model. The rules, in order:
1. An `@name` mention of an indexed specialist pins it (mode `pinned`).
2. In a conversation, a turn stays with the thread's specialist (mode `single`, `follow_up_of`
   set) unless another specialist clearly owns it: its score reaches its own threshold and, for
   a short turn (at most `short_turn` words, "and in Rust?"), also beats the thread's
   specialist on this turn by `switch_margin`. A longer turn is a question of its own: it
   routes as if alone, but stays with the thread when nothing fits it.
3. A top score below the top specialist's threshold falls back (mode `fallback`).
4. When the runners-up score within `panel_margin` of the top and reach their own thresholds,
   they answer together (mode `panel`, members in `panel`).
5. Otherwise the top specialist answers alone (mode `single`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass

import numpy as np

from router.decision import NearestExample, RouteDecision, RouteTarget

MENTION = re.compile(r"(?<![\w@.])@([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?![\w-])", re.I)

Explain = Callable[[int], list[NearestExample]]


@dataclass(frozen=True)
class Policy:
    method: str
    fallback: str | None = None
    panel_margin: float = 0.02
    switch_margin: float = 0.15
    short_turn: int = 8
    top_candidates: int = 3


def find_pin(text: str, names: Container[str]) -> tuple[str | None, str]:
    """(pinned specialist, text without the mention): the first `@name` that is indexed."""
    for match in MENTION.finditer(text):
        name = match.group(1).lower()
        if name in names:
            rest = (text[: match.start()] + text[match.end() :]).strip()
            return name, " ".join(rest.split()) or text
    return None, text


def decide(
    names: list[str],
    row: np.ndarray,
    thresholds: np.ndarray,
    policy: Policy,
    *,
    pinned: int | None = None,
    thread: int | None = None,
    words: int = 0,
    explain: Explain | None = None,
    fallback_id: int | None = None,
) -> RouteDecision:
    """Apply the rules of this module to one query's scores (`row`, aligned with `names`);
    `words` is the length of the turn, which decides how sticky a conversation is;
    `fallback_id` saves a name lookup in large indexes."""
    if not names:
        return RouteDecision(
            targets=[],
            mode="fallback",
            threshold=round(float(thresholds.mean()), 4) if thresholds.size else 0.0,
            reason="no specialists are installed",
            method=policy.method,
        )
    ranked = [int(i) for i in np.argsort(-row, kind="stable")[: policy.top_candidates]]
    best = ranked[0]

    def targets(first: int | None = None) -> list[RouteTarget]:
        order = ranked if first is None else [first, *(i for i in ranked if i != first)]
        return [
            RouteTarget(
                name=names[i],
                score=round(float(row[i]), 4),
                threshold=round(float(thresholds[i]), 4),
                nearest=explain(i) if explain else [],
            )
            for i in order[: policy.top_candidates]
        ]

    def made(mode: str, first: int, reason: str, **extra: object) -> RouteDecision:
        compared = best if mode == "fallback" else first
        return RouteDecision.model_validate(
            {
                "targets": targets(first),
                "mode": mode,
                "threshold": round(float(thresholds[compared]), 4),
                "reason": f"{reason} ({policy.method})",
                "method": policy.method,
                **extra,
            }
        )

    if pinned is not None:
        return made("pinned", pinned, f"pinned by @{names[pinned]} in the text")
    top, cut = float(row[best]), float(thresholds[best])
    if thread is not None:
        lead = top - float(row[thread])
        margin = policy.switch_margin if words <= policy.short_turn else 0.0
        if thread == best or top < cut or lead < margin:
            why = (
                f"{names[best]} also leads this turn"
                if thread == best
                else f"{names[best]} leads by only {lead:.2f} < switch margin "
                f"{margin:.2f} for a short turn"
                if top >= cut
                else f"{names[best]} scored {top:.2f} < its threshold {cut:.2f}"
            )
            return made(
                "single",
                thread,
                f"follow-up: stays with {names[thread]}, the conversation's specialist; {why}",
                follow_up_of=names[thread],
            )
    if top < cut:
        if fallback_id is None and policy.fallback in names:
            fallback_id = names.index(policy.fallback)
        return _fallback(names, row, thresholds, best, fallback_id, made)
    panel = [
        i for i in ranked if top - float(row[i]) <= policy.panel_margin and row[i] >= thresholds[i]
    ]
    if len(panel) > 1:
        scores = ", ".join(f"{names[i]} {row[i]:.2f}" for i in panel)
        return made(
            "panel",
            best,
            f"panel: {scores} within {policy.panel_margin:.2f} of each other, all above "
            "their thresholds",
            panel=[names[i] for i in panel],
        )
    switched = f"; leaves {names[thread]} for it" if thread is not None else ""
    return made("single", best, f"{names[best]} scored {top:.2f} >= threshold {cut:.2f}{switched}")


def _fallback(
    names: list[str],
    row: np.ndarray,
    thresholds: np.ndarray,
    best: int,
    fallback_id: int | None,
    made: Callable[..., RouteDecision],
) -> RouteDecision:
    top, cut = float(row[best]), float(thresholds[best])
    first = best if fallback_id is None else fallback_id
    return made(
        "fallback",
        first,
        f"best score {top:.2f} ({names[best]}) is below threshold {cut:.2f}; "
        f"falling back to {names[first]}",
    )
