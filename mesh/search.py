"""Store search: semantic similarity (the router's encoder) plus plain text match.

Semantic scoring alone misses exact names and tags; text match alone misses paraphrases. A
specialist's score is its best cosine similarity between the query and its description or
examples, plus a bonus when the query appears literally in its name, tags or description.
"""

from __future__ import annotations

from pydantic import BaseModel

from registry.manifest import SpecialistManifest
from router.encoder import Encoder

TEXT_MATCH_BONUS = 0.5


class SearchHit(BaseModel):
    name: str
    version: str
    description: str
    score: float
    semantic: float
    text_match: bool


def search_texts(manifest: SpecialistManifest) -> list[str]:
    """What a specialist is searched by."""
    return [manifest.description, *manifest.examples]


def text_matches(manifest: SpecialistManifest, query: str) -> bool:
    needle = query.strip().lower()
    haystack = [manifest.name, manifest.description, *manifest.tags, *manifest.examples]
    return bool(needle) and any(needle in text.lower() for text in haystack)


def semantic_scores(
    encoder: Encoder, query: str, texts_by_name: dict[str, list[str]]
) -> dict[str, float]:
    """Best cosine similarity of `query` to each name's texts."""
    names = [name for name, texts in texts_by_name.items() if texts]
    if not names:
        return {}
    flat = [text for name in names for text in texts_by_name[name]]
    vectors = encoder.encode([query, *flat])
    similarities = vectors[1:] @ vectors[0]
    scores, start = {}, 0
    for name in names:
        count = len(texts_by_name[name])
        scores[name] = float(similarities[start : start + count].max())
        start += count
    return scores


def rank(
    manifests: list[SpecialistManifest], query: str, semantic: dict[str, float], limit: int = 10
) -> list[SearchHit]:
    hits = []
    for manifest in manifests:
        similarity = semantic.get(manifest.name, 0.0)
        matched = text_matches(manifest, query)
        hits.append(
            SearchHit(
                name=manifest.name,
                version=manifest.version,
                description=manifest.description,
                score=round(similarity + (TEXT_MATCH_BONUS if matched else 0.0), 4),
                semantic=round(similarity, 4),
                text_match=matched,
            )
        )
    return sorted(hits, key=lambda hit: -hit.score)[:limit]
