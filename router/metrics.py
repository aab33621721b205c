"""Routing metrics on labelled queries; `None` is the out-of-scope label throughout."""

from __future__ import annotations

from collections import Counter

import numpy as np

OOS = "_oos"  # confusion-matrix key for "out of scope": no DNS-safe name starts with "_"


def in_scope_accuracy(truth: list[str | None], predicted: list[str | None]) -> float:
    """Share of in-scope queries routed to the right specialist (a fallback counts as wrong)."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t is not None]
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else float("nan")


def oos_accuracy(truth: list[str | None], predicted: list[str | None]) -> float | None:
    """Share of out-of-scope queries that fell back; None when the set has none."""
    pairs = [p for t, p in zip(truth, predicted, strict=True) if t is None]
    return sum(p is None for p in pairs) / len(pairs) if pairs else None


def macro_f1(truth: list[str | None], predicted: list[str | None]) -> float:
    """Mean F1 over every true class, out-of-scope included as a class of its own."""
    scores = []
    for label in sorted({OOS if t is None else t for t in truth}):
        t = [(x if x is not None else OOS) == label for x in truth]
        p = [(x if x is not None else OOS) == label for x in predicted]
        tp = sum(a and b for a, b in zip(t, p, strict=True))
        denominator = sum(t) + sum(p)
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a positive outscores a negative), ties counting half (Mann-Whitney U)."""
    if len(positive) == 0 or len(negative) == 0:
        return None
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # average ranks over ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def confusion(truth: list[str | None], predicted: list[str | None]) -> dict[str, dict[str, int]]:
    """{true: {predicted: count}} with `_oos` for out of scope."""
    counts = Counter(
        (OOS if t is None else t, OOS if p is None else p)
        for t, p in zip(truth, predicted, strict=True)
    )
    out: dict[str, dict[str, int]] = {}
    for (t, p), n in sorted(counts.items()):
        out.setdefault(t, {})[p] = n
    return out
