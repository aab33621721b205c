"""`Router`: scores a query against every installed specialist's examples and picks who answers.

Scoring is one matrix product of the query embedding with the example matrix. Two methods:
`centroid` (similarity to the mean example) and `knn` (mean of the top-k example similarities,
the default: it keeps a specialist with varied examples from being averaged into mush).
Below `threshold` the decision falls back to the configured fallback specialist.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from router.decision import RouteDecision, RouteTarget
from router.encoder import Encoder, SentenceTransformerEncoder

Method = Literal["centroid", "knn"]
DEFAULT_THRESHOLD = 0.2
TOP_CANDIDATES = 3


class RouterIndex:
    """Example embeddings of the installed specialists, grouped by specialist."""

    def __init__(self, names: list[str], vectors: np.ndarray, owners: np.ndarray) -> None:
        self.names = names
        self.vectors = vectors  # (n_examples, dim), L2-normalised
        self.owners = owners  # (n_examples,) index into names

    @classmethod
    def build(cls, encoder: Encoder, examples: dict[str, list[str]]) -> RouterIndex:
        names = sorted(name for name, texts in examples.items() if texts)
        texts = [text for name in names for text in examples[name]]
        owners = np.array([i for i, name in enumerate(names) for _ in examples[name]], dtype=int)
        vectors = encoder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        return cls(names, vectors, owners)

    def scores(self, queries: np.ndarray, method: Method, k: int) -> np.ndarray:
        """(n_queries, n_specialists) similarity scores."""
        similarities = queries @ self.vectors.T  # (q, n_examples)
        out = np.full((queries.shape[0], len(self.names)), -1.0, dtype=np.float32)
        for i in range(len(self.names)):
            own = similarities[:, self.owners == i]
            if method == "centroid":
                centroid = self.vectors[self.owners == i].mean(axis=0)
                centroid /= np.linalg.norm(centroid) or 1.0
                out[:, i] = queries @ centroid
            else:
                top = np.sort(own, axis=1)[:, -min(k, own.shape[1]) :]
                out[:, i] = top.mean(axis=1)
        return out


class Router:
    def __init__(
        self,
        encoder: Encoder,
        index: RouterIndex,
        *,
        fallback: str | None = None,
        method: Method = "knn",
        threshold: float = DEFAULT_THRESHOLD,
        k: int = 3,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.fallback = fallback
        self.method: Method = method
        self.threshold = threshold
        self.k = k

    @classmethod
    def from_examples(
        cls,
        examples: dict[str, list[str]],
        fallback: str | None = None,
        method: Method = "knn",
        *,
        encoder: Encoder | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> Router:
        encoder = encoder or SentenceTransformerEncoder()
        return cls(
            encoder,
            RouterIndex.build(encoder, examples),
            fallback=fallback,
            method=method,
            threshold=threshold,
        )

    def route(self, text: str) -> RouteDecision:
        return self.route_batch([text])[0]

    def route_batch(self, texts: list[str]) -> list[RouteDecision]:
        if not self.index.names:
            return [self._decide(None) for _ in texts]
        scores = self.index.scores(self.encoder.encode(texts), self.method, self.k)
        return [self._decide(row) for row in scores]

    def _decide(self, row: np.ndarray | None) -> RouteDecision:
        if row is None:
            return RouteDecision(
                targets=[],
                mode="fallback",
                threshold=self.threshold,
                reason="no specialists are installed",
            )
        order = np.argsort(-row)[:TOP_CANDIDATES]
        targets = [
            RouteTarget(name=self.index.names[i], score=round(float(row[i]), 4)) for i in order
        ]
        best = targets[0]
        if best.score >= self.threshold:
            return RouteDecision(
                targets=targets,
                mode="single",
                threshold=self.threshold,
                reason=f"{best.name} scored {best.score:.2f} >= threshold {self.threshold:.2f} "
                f"({self.method})",
            )
        if self.fallback and self.fallback in self.index.names:
            others = [t for t in targets if t.name != self.fallback]
            score = float(row[self.index.names.index(self.fallback)])
            targets = [RouteTarget(name=self.fallback, score=round(score, 4)), *others]
        return RouteDecision(
            targets=targets[:TOP_CANDIDATES],
            mode="fallback",
            threshold=self.threshold,
            reason=f"best score {best.score:.2f} ({best.name}) is below threshold "
            f"{self.threshold:.2f}; falling back to {targets[0].name}",
        )
