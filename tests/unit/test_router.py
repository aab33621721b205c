"""Router scoring on a table-driven fake encoder: pure logic, no model."""

from __future__ import annotations

import numpy as np
import pytest

from router import Router

VOCAB = ["python", "code", "poem", "story", "weather", "hello"]


class BagOfWordsEncoder:
    """Counts vocabulary words; deterministic, so scores are predictable."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.array(
            [[text.lower().split().count(word) for word in VOCAB] for text in texts],
            dtype=np.float32,
        )
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms == 0, 1.0, norms)


EXAMPLES = {
    "code": ["python code", "code python", "python"],
    "writing": ["poem", "story poem", "story"],
    "general": ["hello", "weather", "hello weather"],
}


@pytest.mark.parametrize("method", ["knn", "centroid"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [("python code please", "code"), ("a poem", "writing"), ("weather hello", "general")],
)
def test_routes_to_best_specialist(method: str, query: str, expected: str) -> None:
    router = Router.from_examples(
        EXAMPLES, fallback="general", method=method, encoder=BagOfWordsEncoder()
    )
    decision = router.route(query)
    assert decision.mode == "single"
    assert decision.chosen == expected
    assert decision.targets[0].score >= decision.targets[-1].score
    assert expected in decision.reason


def test_below_threshold_falls_back() -> None:
    router = Router.from_examples(
        EXAMPLES, fallback="general", encoder=BagOfWordsEncoder(), threshold=0.5
    )
    decision = router.route("quantum chromodynamics")  # no known words: all scores 0
    assert decision.mode == "fallback"
    assert decision.fallback
    assert decision.chosen == "general"
    assert "below threshold" in decision.reason


def test_no_specialists_means_no_choice() -> None:
    router = Router.from_examples({}, encoder=BagOfWordsEncoder())
    decision = router.route("anything")
    assert decision.chosen is None
    assert decision.mode == "fallback"


def test_route_batch_matches_single_routes() -> None:
    router = Router.from_examples(EXAMPLES, encoder=BagOfWordsEncoder())
    queries = ["python", "story", "hello"]
    assert [d.chosen for d in router.route_batch(queries)] == [
        router.route(q).chosen for q in queries
    ]
