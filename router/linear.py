"""`LinearHead`: multinomial logistic regression on embeddings, in numpy.

Small enough to train in milliseconds on a few hundred examples with plain accelerated
gradient descent, so the router needs no scikit-learn. Training cost grows with
examples x specialists, so a store of thousands of specialists is better served by k-NN.
"""

from __future__ import annotations

import numpy as np

DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 400


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class LinearHead:
    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        self.weights = weights.astype(np.float32)  # (dim, n_classes)
        self.bias = bias.astype(np.float32)  # (n_classes,)

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
        """Minimise mean cross-entropy + l2/2 |W|^2 with Nesterov's accelerated gradient."""
        x = np.asarray(vectors, dtype=np.float64)
        y = np.zeros((len(x), n_classes))
        y[np.arange(len(x)), labels] = 1.0
        # The loss is (0.5 * largest eigenvalue of x'x/n + l2)-smooth: that bounds the step.
        lipschitz = 0.5 * float(np.linalg.norm(x, ord=2) ** 2) / max(len(x), 1) + l2 + 0.5
        step = 1.0 / lipschitz
        w = np.zeros((x.shape[1], n_classes))
        b = np.zeros(n_classes)
        w_prev, b_prev = w, b
        for t in range(1, steps + 1):
            momentum = (t - 1) / (t + 2)
            w_look = w + momentum * (w - w_prev)
            b_look = b + momentum * (b - b_prev)
            error = (softmax(x @ w_look + b_look) - y) / len(x)
            w_prev, b_prev = w, b
            w = w_look - step * (x.T @ error + l2 * w_look)
            b = b_look - step * error.sum(axis=0)
        return cls(w, b)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return softmax(queries @ self.weights + self.bias).astype(np.float32)
