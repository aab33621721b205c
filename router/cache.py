"""`EmbeddingCache`: an LRU of query embeddings in front of an encoder.

Repeated queries (retries, the earlier turns of a conversation that is routed again on every
turn) skip the encoder, which is most of a route's cost. Misses are encoded in one call.

Entries are keyed by the sha256 of the query, not the query: the cache holds at most `maxsize`
entries of a fixed size however long the queries are (and keeps no user text in memory).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from router.encoder import Encoder


class EmbeddingCache:
    """Wraps an `Encoder`; thread-safe, so the batcher's worker thread may share it."""

    def __init__(self, encoder: Encoder, maxsize: int = 4096) -> None:
        self.encoder = encoder
        self.maxsize = max(maxsize, 0)
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        keys = {text: cache_key(text) for text in texts}
        with self._lock:
            rows = {t: self._get(k) for t, k in keys.items() if k in self._rows}
        missing = [t for t in keys if t not in rows]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = np.asarray(self.encoder.encode(missing), dtype=np.float32)
            rows.update(zip(missing, fresh, strict=True))
            with self._lock:
                for text, row in zip(missing, fresh, strict=True):
                    self._put(keys[text], row)
        return np.stack([rows[t] for t in texts])

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def _get(self, key: bytes) -> np.ndarray:
        self._rows.move_to_end(key)
        return self._rows[key]

    def _put(self, key: bytes, row: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.maxsize:
            self._rows.popitem(last=False)


def cache_key(text: str) -> bytes:
    """The sha256 of a query (lone surrogates from JSON escapes hash too, instead of raising)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
