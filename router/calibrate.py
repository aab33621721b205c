"""Per-specialist thresholds from labelled data.

A query goes to its top specialist only when the top score reaches that specialist's threshold;
otherwise it falls back. A threshold is the cut that maximises, among the labelled queries whose
top candidate is that specialist, (queries routed right and kept) + oos_weight x (out-of-scope
queries rejected). Few queries land on any one specialist, so each cut is shrunk toward the
global cut (fitted the same way on all queries) with the weight of `prior` pseudo-queries.
"""

from __future__ import annotations

import numpy as np

DEFAULT_PRIOR = 30.0


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
    truth = np.array([-1 if label is None else label for label in labels])
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
