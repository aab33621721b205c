"""Per-specialist thresholds from labelled data.

A query goes to its top specialist only when the top score reaches that specialist's threshold;
otherwise it falls back. A threshold is the cut that maximises, among the labelled queries whose
top candidate is that specialist, (queries routed right and kept) + oos_weight x (out-of-scope
queries rejected). Few queries land on any one specialist, so each cut is shrunk toward the
global cut (fitted the same way on all queries) with the weight of `prior` pseudo-queries.

The operator chooses the trade-off (`OperatingPoint`): the cuts are fitted at a range of
out-of-scope weights (`trade_off`, the curve `mesh router eval` prints), and `choose` takes the
one that reaches the target out-of-scope recall or precision with the best in-scope accuracy.

An out-of-scope recall target is met more directly: one global cut, the lowest that rejects
that share of the labelled out-of-scope queries (`recall_cut`), added to the curve and chosen.
The per-specialist cuts are fitted on those same few queries (10 or so per specialist), so on
them they look better than they are; on held-out HWU64 queries the single cut at the target
kept 1.5-2 more points of in-scope accuracy at the same recall (docs/routing.md).
"""

from __future__ import annotations

import math

import numpy as np

from registry.router_artifacts import OperatingPoint, TradeOffPoint

DEFAULT_PRIOR = 30.0


def _truth(labels: list[int | None]) -> np.ndarray:
    """Labels as column ids, -1 for an out-of-scope query."""
    return np.array([-1 if label is None else label for label in labels])


def best_cut(top: np.ndarray, keep: np.ndarray, reject: np.ndarray, oos_weight: float) -> float:
    """The threshold t maximising sum(keep & top >= t) + oos_weight * sum(reject & top < t).

    Candidate cuts sit midway between neighbouring scores; among equally good cuts the middle
    one is taken, which leaves the widest margin on both sides.
    """
    if len(top) == 0:
        return float("nan")
    order = np.argsort(top)
    values = top[order]
    gain_keep = keep[order].astype(float)
    gain_reject = reject[order].astype(float) * oos_weight
    # Cut i puts values[:i] below the threshold (rejected) and values[i:] above (kept).
    kept = np.concatenate([np.cumsum(gain_keep[::-1])[::-1], [0.0]])
    rejected = np.concatenate([[0.0], np.cumsum(gain_reject)])
    objective = kept + rejected
    edges = np.concatenate([[values[0] - 0.05], values, [values[-1] + 0.05]])
    cuts = (edges[:-1] + edges[1:]) / 2
    best = np.flatnonzero(objective >= objective.max() - 1e-9)
    return float(cuts[best[len(best) // 2]])


def fit_thresholds(
    scores: np.ndarray,
    labels: list[int | None],
    *,
    prior: float = DEFAULT_PRIOR,
    oos_weight: float = 1.0,
) -> tuple[float, np.ndarray]:
    """(global threshold, per-specialist thresholds) from `scores` (queries, specialists).

    `labels` hold the right specialist's column, or None for an out-of-scope query.
    """
    predicted = scores.argmax(axis=1)
    top = scores.max(axis=1)
    truth = _truth(labels)
    keep = predicted == truth
    reject = truth == -1
    global_cut = best_cut(top, keep, reject, oos_weight)
    per = np.full(scores.shape[1], global_cut)
    for specialist in np.unique(predicted):
        mine = predicted == specialist
        cut = best_cut(top[mine], keep[mine], reject[mine], oos_weight)
        n = float(mine.sum())
        per[specialist] = (n * cut + prior * global_cut) / (n + prior)
    return global_cut, per


OOS_WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def outcome(
    scores: np.ndarray, labels: list[int | None], cuts: np.ndarray
) -> tuple[float, float | None, float]:
    """(in-scope accuracy, out-of-scope recall, precision) of per-specialist `cuts`."""
    predicted = scores.argmax(axis=1)
    kept = scores.max(axis=1) >= cuts[predicted]
    truth = _truth(labels)
    inside = truth >= 0
    right = kept & (predicted == truth)
    accuracy = float(right[inside].mean()) if inside.any() else 0.0
    recall = float((~kept[~inside]).mean()) if (~inside).any() else None
    precision = float(right.sum() / kept.sum()) if kept.any() else 1.0
    return accuracy, recall, precision


def recall_cut(scores: np.ndarray, labels: list[int | None], recall: float) -> float | None:
    """The lowest cut that rejects at least `recall` of the out-of-scope queries (midway
    between the last one rejected and the next); None without out-of-scope queries."""
    truth = _truth(labels)
    tops = np.sort(scores.max(axis=1)[truth == -1]) if len(truth) else np.zeros(0)
    if len(tops) == 0:
        return None
    rejected = min(int(np.ceil(recall * len(tops) - 1e-9)), len(tops))
    if rejected == 0:
        return float(tops[0] - 1e-4)
    last = tops[rejected - 1]
    above = tops[tops > last]  # ties with the last one rejected are rejected with it
    cut = float((last + above[0]) / 2) if len(above) else float(last) + 1e-4
    # Rounded up to the 4 decimals thresholds are stored with: rounding may only reject more.
    return math.ceil(cut * 1e4) / 1e4


def _point(
    scores: np.ndarray, labels: list[int | None], cuts: np.ndarray, weight: float, cut: float
) -> TradeOffPoint:
    accuracy, recall, precision = outcome(scores, labels, cuts)
    return TradeOffPoint(
        oos_weight=weight,
        threshold=round(cut, 4),
        accuracy=round(accuracy, 4),
        oos_recall=None if recall is None else round(recall, 4),
        precision=round(precision, 4),
    )


def trade_off(
    scores: np.ndarray,
    labels: list[int | None],
    *,
    prior: float = DEFAULT_PRIOR,
    target_recall: float | None = None,
) -> list[tuple[TradeOffPoint, np.ndarray]]:
    """The thresholds fitted at each of `OOS_WEIGHTS`, and how each did on these queries;
    with `target_recall`, one more point: the single `recall_cut` for it."""
    curve = []
    for weight in OOS_WEIGHTS:
        global_cut, per = fit_thresholds(scores, labels, prior=prior, oos_weight=weight)
        curve.append((_point(scores, labels, per, weight, global_cut), per))
    cut = None if target_recall is None else recall_cut(scores, labels, target_recall)
    if cut is not None:
        cuts = np.full(scores.shape[1], cut)
        point = _point(scores, labels, cuts, 0.0, cut)
        curve.append((point.model_copy(update={"target_recall": target_recall}), cuts))
    return curve


def choose(curve: list[TradeOffPoint], target: OperatingPoint) -> int:
    """Index of the point that meets the target with the best accuracy (else comes closest)."""
    if target.oos_recall is None and target.precision is None:
        return OOS_WEIGHTS.index(1.0)

    def reached(point: TradeOffPoint) -> float:
        if target.precision is not None:
            return point.precision
        return point.oos_recall if point.oos_recall is not None else 1.0

    goal = target.precision if target.precision is not None else target.oos_recall
    assert goal is not None
    for i, point in enumerate(curve):
        if target.oos_recall is not None and point.target_recall == target.oos_recall:
            return i
    meeting = [i for i, point in enumerate(curve) if reached(point) >= goal - 1e-9]
    if not meeting:
        return max(range(len(curve)), key=lambda i: (reached(curve[i]), curve[i].accuracy))
    return max(meeting, key=lambda i: (curve[i].accuracy, -curve[i].oos_weight))


def trade_off_table(curve: list[TradeOffPoint], chosen: TradeOffPoint | None = None) -> str:
    """The curve as a markdown table (terminal and UI alike); `chosen` is marked."""
    lines = [
        "| oos weight | threshold | in-scope accuracy | out-of-scope recall | precision | |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for point in curve:
        recall = "n/a" if point.oos_recall is None else f"{point.oos_recall:.3f}"
        mark = "<- in use" if chosen is not None and point == chosen else ""
        weight = (
            f"{point.oos_weight:g}"
            if point.target_recall is None
            else f"one cut, recall {point.target_recall:g}"
        )
        lines.append(
            f"| {weight} | {point.threshold:.3f} | {point.accuracy:.3f} | {recall} "
            f"| {point.precision:.3f} | {mark} |"
        )
    return "\n".join(lines)
