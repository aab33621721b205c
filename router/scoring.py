"""Scoring methods: each maps query embeddings to a `(queries, specialists)` score matrix.

All are matrix products over the whole index, never a loop per specialist:
- `centroid`: cosine to the normalised mean example.
- `knn`: mean of the top-k example similarities (a specialist with varied examples is not
  averaged into mush, and one stray example cannot win alone).
- `knn-max`: the single nearest example.
- `linear`: a softmax logistic-regression head trained on the example embeddings (and on any
  labelled data given to `Router.fit`, out-of-scope queries as a "none of them" class); scores
  are probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from router.index import RouterIndex
from router.linear import LinearHead


class Scorer(Protocol):
    def scores(self, queries: np.ndarray) -> np.ndarray: ...


def centroid(index: RouterIndex, queries: np.ndarray, k: int) -> np.ndarray:
    return queries @ index.centroids.T


def knn_mean(index: RouterIndex, queries: np.ndarray, k: int) -> np.ndarray:
    sims = index.example_similarities(queries)
    k = max(1, min(k, sims.shape[2]))
    top = -np.partition(-sims, k - 1, axis=2)[:, :, :k]
    total = np.where(np.isfinite(top), top, 0.0).sum(axis=2)
    return total / np.maximum(np.minimum(index.counts, k), 1)


def knn_max(index: RouterIndex, queries: np.ndarray, k: int) -> np.ndarray:
    return index.example_similarities(queries).max(axis=2)


EXAMPLE_METHODS: dict[str, Callable[[RouterIndex, np.ndarray, int], np.ndarray]] = {
    "centroid": centroid,
    "knn": knn_mean,
    "knn-max": knn_max,
}


def example_scores(index: RouterIndex, queries: np.ndarray, method: str, k: int) -> np.ndarray:
    if method not in EXAMPLE_METHODS:
        raise ValueError(f"unknown example method {method!r}: one of {sorted(EXAMPLE_METHODS)}")
    if not index.names:
        return np.zeros((len(queries), 0), dtype=np.float32)
    return np.asarray(EXAMPLE_METHODS[method](index, queries, k), dtype=np.float32)


class ExampleScorer:
    def __init__(self, index: RouterIndex, method: str, k: int) -> None:
        self.index, self.method, self.k = index, method, k

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return example_scores(self.index, queries, self.method, self.k)


class LinearScorer:
    """Trains its head once, on the index's examples plus any extra labelled vectors."""

    def __init__(
        self, index: RouterIndex, extra: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        vectors, labels = index.vectors, index.owners
        if extra is not None and len(extra[1]):
            vectors = np.concatenate([vectors, extra[0]])
            labels = np.concatenate([labels, extra[1]])
        self.n = len(index.names)
        self.head = LinearHead.fit(vectors, labels, self.n) if self.n else None

    @classmethod
    def from_head(cls, head: LinearHead) -> LinearScorer:
        """A scorer around a head trained earlier (loaded from a router artifact)."""
        scorer = cls.__new__(cls)
        scorer.n, scorer.head = head.n_specialists, head
        return scorer

    def scores(self, queries: np.ndarray) -> np.ndarray:
        if self.head is None:
            return np.zeros((len(queries), 0), dtype=np.float32)
        return self.head.scores(queries)


def build_scorer(
    method: str,
    index: RouterIndex,
    k: int,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> Scorer:
    """`extra`: labelled vectors (rows, specialist ids into `index.names`, -1 for out of scope)
    for the linear head."""
    if method == "linear":
        return LinearScorer(index, extra)
    if method in EXAMPLE_METHODS:
        return ExampleScorer(index, method, k)
    raise ValueError(f"unknown routing method {method!r}: one of {sorted(METHODS)}")


METHODS = (*EXAMPLE_METHODS, "linear")
