"""Router scoring and decisions on a table-driven fake encoder: pure logic, no model.

The fake encoder is shared by the other `test_router_*` modules.
"""

from __future__ import annotations

import numpy as np
import pytest

from router import Router, RouterIndex
from router.scoring import METHODS, example_scores

VOCAB = ["python", "code", "rust", "poem", "story", "weather", "hello", "recipe", "soup"]

EXAMPLES = {
    "code": ["python code", "code python", "python"],
    "writing": ["poem", "story poem", "story"],
    "general": ["hello", "weather", "hello weather"],
}


class BagOfWordsEncoder:
    """Counts vocabulary words; deterministic, so scores are predictable. Records its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = np.array(
            [[text.lower().replace("?", " ").split().count(w) for w in VOCAB] for text in texts],
            dtype=np.float32,
        )
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms == 0, 1.0, norms)


def make_router(method: str = "knn", **options: object) -> Router:
    return Router.from_examples(
        EXAMPLES,
        fallback=options.pop("fallback", "general"),  # type: ignore[arg-type]
        method=method,  # type: ignore[arg-type]
        encoder=BagOfWordsEncoder(),
        **options,
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("query", "expected"),
    [("python code please", "code"), ("a poem", "writing"), ("weather hello", "general")],
)
def test_routes_to_best_specialist(method: str, query: str, expected: str) -> None:
    decision = make_router(method).route(query)
    assert decision.mode == "single"
    assert decision.chosen == expected
    assert decision.method == method
    assert decision.targets[0].score >= decision.targets[-1].score
    assert expected in decision.reason


@pytest.mark.parametrize(
    ("method", "query", "expected"),
    [
        # "python story": centroid of code is (python+code) mixed, k-NN sees the pure "python" one.
        ("knn-max", "python story story", "writing"),
        ("knn-max", "python python story", "code"),
        ("centroid", "python", "code"),
    ],
)
def test_method_scores_table(method: str, query: str, expected: str) -> None:
    assert make_router(method).route(query).chosen == expected


def test_knn_scores_are_exact() -> None:
    router = make_router("knn", k=2)
    row = router.scores(["python"])[0]
    code = router.index.names.index("code")
    # similarities of "python" to code's examples: 1/sqrt2, 1/sqrt2, 1 -> top-2 mean
    assert row[code] == pytest.approx((1 + 2**-0.5) / 2, abs=1e-6)
    knn_max = make_router("knn-max").scores(["python"])[0]
    assert knn_max[code] == pytest.approx(1.0)


def naive_scores(index: RouterIndex, queries: np.ndarray, method: str, k: int) -> np.ndarray:
    """The obvious loop over specialists, to check the vectorised versions against."""
    out = np.zeros((len(queries), len(index.names)))
    for i in range(len(index.names)):
        own = index.vectors[index.owners == i]
        sims = queries @ own.T
        if method == "centroid":
            c = own.mean(axis=0)
            out[:, i] = queries @ (c / np.linalg.norm(c))
        elif method == "knn-max":
            out[:, i] = sims.max(axis=1)
        else:
            out[:, i] = np.sort(sims, axis=1)[:, -min(k, own.shape[0]) :].mean(axis=1)
    return out


@pytest.mark.parametrize("method", ["centroid", "knn", "knn-max"])
def test_vectorised_scoring_matches_a_loop_with_uneven_example_counts(method: str) -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, size=40)  # some specialists have fewer than k examples
    owners = np.repeat(np.arange(40), counts)
    rng.shuffle(owners)
    vectors = rng.normal(size=(len(owners), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = RouterIndex([f"s{i}" for i in range(40)], vectors, owners)
    queries = vectors[:5] + 0.1
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(
        example_scores(index, queries, method, 3),
        naive_scores(index, queries, method, 3),
        atol=1e-5,
    )


def test_a_thousand_specialists_score_in_one_product() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = np.repeat(np.arange(1000), 20)
    index = RouterIndex([f"s{i:04d}" for i in range(1000)], vectors, owners)
    scores = example_scores(index, vectors[[123, 4567]], "knn", 3)
    assert scores.shape == (2, 1000)
    assert list(scores.argmax(axis=1)) == [123 // 20, 4567 // 20]


def test_below_threshold_falls_back() -> None:
    decision = make_router(threshold=0.5).route("quantum chromodynamics")  # all scores 0
    assert decision.mode == "fallback"
    assert decision.fallback
    assert decision.chosen == "general"
    assert decision.threshold == 0.5
    assert "below threshold" in decision.reason


def test_fallback_not_installed_keeps_ranking_but_flags_fallback() -> None:
    decision = make_router(threshold=0.5, fallback="nobody").route("quantum")
    assert decision.mode == "fallback"
    assert decision.chosen in EXAMPLES


def test_no_specialists_means_no_choice() -> None:
    router = Router.from_examples({}, encoder=BagOfWordsEncoder())
    decision = router.route("anything")
    assert decision.chosen is None
    assert decision.mode == "fallback"


def test_route_batch_matches_single_routes() -> None:
    router = make_router()
    queries = ["python", "story", "hello"]
    assert [d.chosen for d in router.route_batch(queries)] == [
        router.route(q).chosen for q in queries
    ]


def test_decision_explains_itself() -> None:
    decision = make_router(thresholds={"code": 0.3}).route("python code")
    top = decision.targets[0]
    assert top.name == "code"
    assert top.threshold == 0.3
    assert decision.threshold == 0.3
    assert [n.text for n in top.nearest][:2] == ["python code", "code python"]
    assert top.nearest[0].score == pytest.approx(1.0)
    assert all(t.threshold is not None for t in decision.targets)
    assert set(decision.model_dump()) >= {"targets", "mode", "threshold", "reason"}


@pytest.mark.parametrize(
    ("margin", "mode", "panel"),
    [(0.3, "panel", ["code", "writing"]), (0.1, "single", [])],
)
def test_close_runners_up_make_a_panel(margin: float, mode: str, panel: list[str]) -> None:
    router = make_router("knn-max", panel_margin=margin)
    decision = router.route("python code poem")  # code 0.82, writing 0.58
    assert decision.mode == mode
    assert sorted(decision.panel) == panel


def test_panel_needs_every_member_above_its_threshold() -> None:
    router = make_router("knn-max", panel_margin=0.3, thresholds={"writing": 0.9})
    decision = router.route("python code poem")
    assert decision.mode == "single"
    assert decision.chosen == "code"


@pytest.mark.parametrize(
    ("text", "chosen", "mode"),
    [
        ("@writing python code", "writing", "pinned"),
        ("python code, ask @Writing", "writing", "pinned"),
        ("@nobody python code", "code", "single"),  # not indexed: routed as usual
        ("mail me@writing.org python code", "code", "single"),  # an address, not a mention
    ],
)
def test_at_mention_pins(text: str, chosen: str, mode: str) -> None:
    decision = make_router().route(text)
    assert (decision.chosen, decision.mode) == (chosen, mode)


def test_pin_beats_threshold_and_scores_the_rest_of_the_text() -> None:
    router = make_router(threshold=0.9)
    decision = router.route("@general python code")
    assert decision.mode == "pinned"
    assert decision.targets[0].name == "general"
    assert decision.targets[1].name == "code"  # scored on "python code", without the mention
    assert router.encoder.calls[-1] == ["python code"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("history", "text", "chosen", "follow_up_of"),
    [
        (["python code please"], "and in rust?", "code", "code"),  # nothing matches: stays
        (["python code please"], "and then?", "code", "code"),
        (["a story"], "python?", "code", None),  # clearly elsewhere: switches
        (["python code", "and then?"], "and after that?", "code", "code"),  # sticky chain
        (["@writing python"], "more?", "writing", "writing"),  # a pin sets the thread
        (["quantum"], "python code", "code", None),  # the history had no specialist
    ],
)
def test_follow_ups_stay_with_the_thread(
    history: list[str], text: str, chosen: str, follow_up_of: str | None
) -> None:
    decision = make_router(threshold=0.3).route(text, history)
    assert decision.chosen == chosen
    assert decision.follow_up_of == follow_up_of


def test_switch_margin_decides_when_a_turn_leaves_the_thread() -> None:
    text = "python python story"  # code leads writing by about 0.3 on this turn
    assert make_router(switch_margin=0.1).route(text, ["a story"]).chosen == "code"
    sticky = make_router(switch_margin=0.5).route(text, ["a story"])
    assert sticky.chosen == "writing"
    assert "switch margin" in sticky.reason


def test_route_conversation_reads_openai_messages() -> None:
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "python code please"},
        {"role": "assistant", "content": "here is a poem story"},
        {"role": "user", "content": [{"type": "text", "text": "and in rust?"}]},
    ]
    decision = make_router(threshold=0.3).route_conversation(messages)
    assert decision.chosen == "code"
    assert decision.follow_up_of == "code"


def test_one_encoder_call_per_batch_and_a_cache_for_repeats() -> None:
    router = make_router()
    encoder: BagOfWordsEncoder = router.encoder  # type: ignore[assignment]
    encoder.calls.clear()
    router.route_batch(["python", "story"], [["hello"], None])
    assert encoder.calls == [["python", "story", "hello"]]
    router.route("story", ["python"])
    assert len(encoder.calls) == 1  # everything was cached
    assert router.cache.hits >= 2


def test_swapping_the_index_routes_to_new_specialists() -> None:
    for method in METHODS:
        router = make_router(method)
        router.index = RouterIndex.build(router.encoder, {**EXAMPLES, "cooking": ["recipe soup"]})
        assert router.route("soup recipe").chosen == "cooking"


def test_a_long_turn_is_a_question_of_its_own() -> None:
    router = make_router(switch_margin=0.9)  # a short turn can hardly leave the thread
    short = router.route("story story python", ["python code"])
    assert (short.chosen, short.follow_up_of) == ("code", "code")
    long = router.route("story story python and a few more words make it long", ["python code"])
    assert (long.chosen, long.follow_up_of) == ("writing", None)
    nothing_fits = router.route("and a few more words that match nothing at all here", ["python"])
    assert (nothing_fits.chosen, nothing_fits.follow_up_of) == ("code", "code")


def test_thresholds_are_replaced_not_mutated() -> None:
    router = make_router(threshold=0.1)
    with pytest.raises(TypeError):
        router.thresholds["code"] = 0.99  # type: ignore[index]
    router.thresholds = {"code": 0.99}
    assert router.route("python code").mode == "fallback"


def test_the_index_reads_examples_description_and_each_tag() -> None:
    from registry import parse_manifest
    from router.index import index_texts, tag_text
    from tests.conftest import manifest_data

    manifest = parse_manifest(manifest_data(tags=["hue_lightdim", "sql", "c++", "data-science"]))
    assert index_texts(manifest) == [*manifest.examples, manifest.description]  # default
    texts = index_texts(manifest, tags=True)
    assert texts[: len(manifest.examples)] == manifest.examples
    assert texts[len(manifest.examples)] == manifest.description
    assert texts[len(manifest.examples) + 1 :] == ["hue lightdim", "sql", "c++", "data science"]
    assert tag_text("--") == "--"  # never an empty text
