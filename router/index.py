"""`RouterIndex`: the example embeddings of the installed specialists, laid out for scoring.

Examples are stored padded per specialist, `(n_specialists * max_examples, dim)`, so the
similarities of a query to every example of every specialist are one matrix product reshaped to
`(queries, specialists, max_examples)`: k-NN over a thousand specialists needs no Python loop.
Padding costs memory only when example counts are very uneven.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from router.encoder import Encoder

if TYPE_CHECKING:
    from registry.manifest import SpecialistManifest


def tag_text(tag: str) -> str:
    """A tag as the router reads it: 'hue_lightdim' -> 'hue lightdim'."""
    return re.sub(r"[-_]+", " ", tag).strip() or tag


def index_texts(manifest: SpecialistManifest, *, tags: bool = False) -> list[str]:
    """What the router indexes for a specialist: its examples, its description and, with
    `tags` (`MESH_ROUTER_INDEX_TAGS`), each tag as a text of its own. Off by default: tags that
    name the domain help (HWU64 with intent names as tags: +0.9 points for linear at the 0.8
    recall target, +2.3 for knn), but store tags are often metadata ("prompt-only", "lora",
    "tool") and a one-word tag text pulls short queries (docs/routing.md). The card is never
    indexed: it is provenance and usage notes, not queries."""
    tag_texts = [tag_text(tag) for tag in manifest.tags] if tags else []
    return [*manifest.examples, manifest.description, *tag_texts]


def index_examples(
    manifests: Mapping[str, SpecialistManifest], *, tags: bool = False
) -> dict[str, list[str]]:
    """{name: index_texts} for an installed set: what the live router indexes and what `mesh
    router fit` fits (their digests must agree, or every fit looks stale to the mesh)."""
    return {name: index_texts(manifest, tags=tags) for name, manifest in manifests.items()}


class RouterIndex:
    """Example embeddings grouped by specialist; `names` are sorted, owners index into them."""

    def __init__(
        self,
        names: list[str],
        vectors: np.ndarray,
        owners: np.ndarray,
        texts: list[str] | None = None,
    ) -> None:
        self.names = names
        self.vectors = np.asarray(vectors, dtype=np.float32)  # (n_examples, dim), L2-normalised
        self.owners = np.asarray(owners, dtype=int)  # (n_examples,) index into names
        self.texts = texts if texts is not None else [""] * len(self.owners)
        self.ids = {name: i for i, name in enumerate(names)}
        self.counts = np.bincount(self.owners, minlength=len(names))
        width = int(self.counts.max()) if len(names) else 0
        order = np.argsort(self.owners, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]) if len(names) else order
        slots = np.full((len(names), width), -1, dtype=int)
        slots[self.owners[order], np.arange(len(order)) - starts[self.owners[order]]] = order
        self.slots = slots  # (n_specialists, width): example row ids, -1 = padding
        self.mask = slots >= 0
        self.uniform = bool(self.mask.all())  # no padding: skip masking
        padded = self.vectors[slots.clip(min=0)] if self.vectors.size else self.vectors
        self.padded = (padded * self.mask[..., None]).reshape(-1, self.dim) if width else padded
        sums = np.zeros((len(names), self.dim), dtype=np.float32)
        np.add.at(sums, self.owners, self.vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self.centroids = sums / np.where(norms == 0, 1.0, norms)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @classmethod
    def build(cls, encoder: Encoder, examples: dict[str, list[str]]) -> RouterIndex:
        names = sorted(name for name, texts in examples.items() if texts)
        texts = [text for name in names for text in examples[name]]
        owners = np.array([i for i, name in enumerate(names) for _ in examples[name]], dtype=int)
        vectors = encoder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        return cls(names, vectors, owners, texts)

    def example_similarities(self, queries: np.ndarray) -> np.ndarray:
        """(queries, specialists, max_examples) cosine similarities; padding is -inf."""
        sims = (queries @ self.padded.T).reshape(len(queries), *self.slots.shape)
        return sims if self.uniform else np.where(self.mask, sims, -np.inf)

    def nearest(self, query: np.ndarray, specialist: int, n: int = 2) -> list[tuple[str, float]]:
        """The specialist's `n` examples closest to one query: the evidence for its score."""
        rows = self.slots[specialist][self.mask[specialist]]
        sims = self.vectors[rows] @ query
        best = np.argsort(-sims)[:n]
        return [(self.texts[rows[i]], float(sims[i])) for i in best]

    def scores(self, queries: np.ndarray, method: str, k: int = 3) -> np.ndarray:
        """(n_queries, n_specialists) scores for an example-based method (not `linear`)."""
        from router.scoring import example_scores

        return example_scores(self, queries, method, k)
