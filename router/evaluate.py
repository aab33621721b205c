"""Offline evaluation: labelled JSONL in, an `EvalReport` out (what `mesh router eval` prints).

Example lines are `{"specialist": name, "text": ...}`; test and validation lines are
`{"text": ..., "label": name or null}` (null = out of scope).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import InvalidRequestError
from router import metrics
from router.decision import RouteDecision
from router.router import FitReport, Router

BATCH = 64
FOLLOW_UPS = [
    "and why is that?",
    "can you explain that more simply?",
    "what about the other options?",
    "give me another example",
    "and in Rust?",
    "is that always true?",
    "ok, and the next step?",
    "why not the second one?",
]
Line = TypeVar("Line", bound=BaseModel)


class ExampleLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    specialist: str = Field(min_length=1)
    text: str = Field(min_length=1)


class LabelledLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    label: str | None


class EvalReport(BaseModel):
    accuracy: float = Field(description="In-scope queries routed to the right specialist.")
    macro_f1: float = Field(description="Mean F1 over true classes, out-of-scope included.")
    oos_auroc: float | None = Field(
        description="How well (threshold - top score) ranks out-of-scope above in-scope queries."
    )
    oos_accuracy: float | None = Field(description="Out-of-scope queries that fell back.")
    p50_ms: float = Field(description="Single-query routing latency, cold query cache.")
    p95_ms: float
    n_test: int
    n_out_of_scope: int
    method: str
    fitted: bool = Field(description="Thresholds were calibrated on a validation set.")
    panel_rate: float = Field(description="Share of test queries routed to a panel.")
    confusion: dict[str, dict[str, int]] = Field(
        description="{true: {predicted: count}}; `_oos` stands for out of scope."
    )
    follow_ups: FollowUpReport | None = Field(
        None, description="Two-turn conversations built from the test set (opt-in)."
    )
    calibration: FitReport | None = Field(
        None, description="The threshold fit on the validation set: trade-off curve, choice."
    )


class FollowUpReport(BaseModel):
    """How the conversation rule behaves on synthetic two-turn conversations."""

    n: int = Field(description="Conversations of each kind.")
    stay_rate: float = Field(
        description="A generic follow-up ('and why is that?') stays with the first turn's choice."
    )
    switch_accuracy: float = Field(
        description="A new in-scope question on another topic goes to its own specialist."
    )
    switch_accuracy_without_history: float = Field(
        description="The same second turns routed alone: the most stickiness can cost."
    )


def _lines(path: Path) -> list[tuple[int, dict[str, object]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidRequestError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(data, dict):
            raise InvalidRequestError(f"{path}:{number}: expected a JSON object")
        rows.append((number, data))
    if not rows:
        raise InvalidRequestError(f"{path}: no lines")
    return rows


def _parse(model: type[Line], path: Path, number: int, data: dict[str, object]) -> Line:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "line"
        raise InvalidRequestError(f"{path}:{number}: {field}: {first['msg']}") from None


def read_examples(path: Path) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for number, data in _lines(path):
        row = _parse(ExampleLine, path, number, data)
        examples.setdefault(row.specialist, []).append(row.text)
    return examples


def read_labelled(path: Path, known: set[str] | None = None) -> tuple[list[str], list[str | None]]:
    """Texts and labels; with `known`, a label that names no specialist is an error."""
    texts: list[str] = []
    labels: list[str | None] = []
    for number, data in _lines(path):
        row = _parse(LabelledLine, path, number, data)
        if known is not None and row.label is not None and row.label not in known:
            raise InvalidRequestError(
                f"{path}:{number}: label {row.label!r} is not a specialist of the examples "
                f"(use null for out of scope)"
            )
        texts.append(row.text)
        labels.append(row.label)
    return texts, labels


def latency_ms(router: Router, texts: list[str], samples: int) -> list[float]:
    """Route `samples` queries one at a time on a cold query cache: what a new query costs."""
    if not texts or samples <= 0:
        return [0.0]
    picks = [texts[i] for i in np.linspace(0, len(texts) - 1, min(samples, len(texts))).astype(int)]
    router.cache.clear()
    router.route(picks[0])  # warm-up: first call pays one-off costs
    router.cache.clear()
    timings = []
    for text in picks:
        start = time.perf_counter()
        router.route(text)
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def evaluate(
    router: Router,
    texts: list[str],
    labels: list[str | None],
    *,
    fitted: bool = False,
    latency_samples: int = 200,
    conversations: bool = False,
) -> EvalReport:
    decisions = [
        d for i in range(0, len(texts), BATCH) for d in router.route_batch(texts[i : i + BATCH])
    ]
    predicted = [None if d.fallback else d.chosen for d in decisions]
    cut = dict(zip(router.index.names, router.threshold_row(), strict=True))
    # Out-of-scope-ness: how far the top score falls short of its specialist's threshold.
    shortfall = np.array(
        [
            cut.get(d.targets[0].name, 0.0) - d.targets[0].score if d.targets else 1.0
            for d in decisions
        ]
    )
    oos = np.array([label is None for label in labels])
    follow_up = follow_ups(router, texts, labels) if conversations else None
    timings = latency_ms(router, texts, latency_samples)
    return EvalReport(
        accuracy=round(metrics.in_scope_accuracy(labels, predicted), 4),
        macro_f1=round(metrics.macro_f1(labels, predicted), 4),
        oos_auroc=_round(metrics.auroc(shortfall[oos], shortfall[~oos])),
        oos_accuracy=_round(metrics.oos_accuracy(labels, predicted)),
        p50_ms=round(float(np.percentile(timings, 50)), 2),
        p95_ms=round(float(np.percentile(timings, 95)), 2),
        n_test=len(texts),
        n_out_of_scope=int(oos.sum()),
        method=router.method,
        fitted=fitted,
        panel_rate=round(sum(d.mode == "panel" for d in decisions) / max(len(decisions), 1), 4),
        confusion=metrics.confusion(labels, predicted),
        follow_ups=follow_up,
    )


def follow_ups(router: Router, texts: list[str], labels: list[str | None]) -> FollowUpReport:
    """Pair each in-scope test query with a generic follow-up (should stay) and with an
    in-scope query of another specialist (should switch to that one)."""
    pairs = [(t, label) for t, label in zip(texts, labels, strict=True) if label is not None]
    first = router.route_batch([t for t, _ in pairs])
    seconds = [pairs[(i + len(pairs) // 2) % len(pairs)] for i in range(len(pairs))]
    kept = [(t, d.chosen) for (t, _), d in zip(pairs, first, strict=True) if not d.fallback]
    stayed = router.route_batch(
        [FOLLOW_UPS[i % len(FOLLOW_UPS)] for i in range(len(kept))], [[t] for t, _ in kept]
    )
    other = [(p, s) for p, s in zip(pairs, seconds, strict=True) if p[1] != s[1]]
    switched = router.route_batch([s[0] for _, s in other], [[p[0]] for p, _ in other])
    alone = router.route_batch([s[0] for _, s in other])
    right = [s[1] for _, s in other]
    return FollowUpReport(
        n=len(kept),
        stay_rate=round(
            sum(d.chosen == c for d, (_, c) in zip(stayed, kept, strict=True)) / max(len(kept), 1),
            4,
        ),
        switch_accuracy=round(_hits(switched, right), 4),
        switch_accuracy_without_history=round(_hits(alone, right), 4),
    )


def _hits(decisions: list[RouteDecision], right: Sequence[str | None]) -> float:
    hits = sum(not d.fallback and d.chosen == r for d, r in zip(decisions, right, strict=True))
    return hits / max(len(right), 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
