"""`EmbeddingCache`: an LRU of query embeddings in front of an encoder.

Repeated queries (retries, the earlier turns of a conversation that is routed again on every
turn) skip the encoder, which is most of a route's cost. Misses are encoded in one call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from router.encoder import Encoder


class EmbeddingCache:
    """Wraps an `Encoder`; thread-safe, so the batcher's worker thread may share it."""

    def __init__(self, encoder: Encoder, maxsize: int = 4096) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            rows = {t: self._get(t) for t in dict.fromkeys(texts) if t in self._rows}
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = np.asarray(self.encoder.encode(missing), dtype=np.float32)
            rows.update(zip(missing, fresh, strict=True))
            with self._lock:
                for text, row in zip(missing, fresh, strict=True):
                    self._put(text, row)
        return np.stack([rows[t] for t in texts])

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def _get(self, text: str) -> np.ndarray:
        self._rows.move_to_end(text)
        return self._rows[text]

    def _put(self, text: str, row: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        self._rows[text] = row
        self._rows.move_to_end(text)
        while len(self._rows) > self.maxsize:
            self._rows.popitem(last=False)
