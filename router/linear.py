"""`LinearHead`: multinomial logistic regression on embeddings, in numpy.

Small enough to train in milliseconds on a few hundred examples with plain accelerated
gradient descent, so the router needs no scikit-learn. Given out-of-scope queries (label -1), the
head learns one more class, "none of them": its probability mass is left out of the scores, so
the top specialist's probability drops on queries that look like the out-of-scope ones. That is
what separates out-of-scope queries from in-scope ones far better than any cut on a similarity.
Training cost grows with examples x specialists, so a store of thousands of specialists is
better served by k-NN.
"""

from __future__ import annotations

import numpy as np

# Measured on HWU64 with lexical features (docs/routing.md): 1e-3 / 400 steps under-fits the
# wider input; 1e-4 / 1000 steps gains about a point of in-scope accuracy and AUROC.
DEFAULT_L2 = 1e-4
DEFAULT_STEPS = 1000


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class LinearHead:
    """`rejects`: the last column is the "none of them" class; `scores` leaves it out."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, *, rejects: bool = False) -> None:
        self.weights = weights.astype(np.float32)  # (dim, columns)
        self.bias = bias.astype(np.float32)  # (columns,)
        self.rejects = rejects

    @property
    def n_specialists(self) -> int:
        return int(self.bias.shape[0]) - int(self.rejects)

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        *,
        l2: float = DEFAULT_L2,
        steps: int = DEFAULT_STEPS,
    ) -> LinearHead:
        """Minimise mean cross-entropy + l2/2 |W|^2 with Nesterov's accelerated gradient.

        `labels` are column ids; -1 marks an out-of-scope row, and any such row adds the
        "none of them" column (the head then `rejects`).
        """
        x = np.asarray(vectors, dtype=np.float32)  # float32 halves the time; the loss is smooth
        labels = np.asarray(labels, dtype=int)
        rejects = bool((labels < 0).any())
        columns = n_classes + int(rejects)
        y = np.zeros((len(x), columns), dtype=np.float32)
        y[np.arange(len(x)), np.where(labels < 0, n_classes, labels)] = 1.0
        # The loss is (0.5 * largest eigenvalue of x'x/n + l2)-smooth: that bounds the step.
        lipschitz = 0.5 * float(np.linalg.norm(x, ord=2) ** 2) / max(len(x), 1) + l2 + 0.5
        step = np.float32(1.0 / lipschitz)
        w: np.ndarray = np.zeros((x.shape[1], columns), dtype=np.float32)
        b: np.ndarray = np.zeros(columns, dtype=np.float32)
        w_prev, b_prev = w, b
        for t in range(1, steps + 1):
            momentum = np.float32((t - 1) / (t + 2))
            w_look = w + momentum * (w - w_prev)
            b_look = b + momentum * (b - b_prev)
            error = (softmax(x @ w_look + b_look) - y) / len(x)
            w_prev, b_prev = w, b
            w = w_look - step * (x.T @ error + np.float32(l2) * w_look)
            b = b_look - step * error.sum(axis=0)
        return cls(w, b, rejects=rejects)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(queries, specialists) probabilities; with `rejects`, they sum to less than one."""
        probabilities = softmax(queries @ self.weights + self.bias).astype(np.float32)
        return probabilities[:, : self.n_specialists]
