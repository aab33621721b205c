"""Lexical features for the linear head, and the one-cut operating point for a recall target.

Pure logic on the bag-of-words fake encoder and synthetic scores; what they do on real queries
(HWU64) is `benchmarks/router.py --quality`.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from registry.router_artifacts import LexicalSpec, OperatingPoint, TradeOffPoint, parse_record
from router import Router
from router.artifact import apply_record
from router.calibrate import choose, outcome, recall_cut, trade_off, trade_off_table
from router.lexical import (
    LexicalEncoder,
    base_encoder,
    grams,
    lexical_rows,
    lexical_spec,
    with_lexical,
)
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder
from tests.unit.test_router_artifact import INSTALLED, LABELLED, decisions, fit, live


def test_grams_are_words_pairs_and_word_pieces() -> None:
    features = grams("Don't play it")
    assert features[:5] == ["don't", "play", "it", "don't play", "play it"]
    assert "<pl" in features and "lay>" in features and "<it>" in features
    assert grams("") == [] and grams("!!! ???") == []


def test_lexical_rows_are_stable_unit_rows_and_unseen_words_cost_nothing() -> None:
    rows = lexical_rows(["set an alarm", "set an alarm", "", "zzzqqq"], 256)
    assert rows.shape == (4, 256) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows[[0, 1, 3]], axis=1), 1)
    assert np.array_equal(rows[0], rows[1])  # crc32, not Python's salted hash
    assert not rows[2].any()  # an empty text has no features and no NaN


def test_the_lexical_encoder_appends_weighted_features_and_stays_unit_length() -> None:
    base = BagOfWordsEncoder()
    spec = LexicalSpec(weight=0.5, dims=128)
    encoder = LexicalEncoder(base, spec)
    vectors = encoder.encode(["python code", "story"])
    width = base.encode(["x"]).shape[1]
    assert vectors.shape == (2, width + 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    # the embedding part keeps its direction; the lexical part weighs `weight` against it
    embedded = base.encode(["python code"])[0]
    head = vectors[0, :width] / np.linalg.norm(vectors[0, :width])
    assert np.allclose(head, embedded / np.linalg.norm(embedded), atol=1e-6)
    ratio = np.linalg.norm(vectors[0, width:]) / np.linalg.norm(vectors[0, :width])
    assert ratio == pytest.approx(0.5, rel=1e-5)


def test_wrapping_is_idempotent_and_undone_by_base_encoder() -> None:
    base = BagOfWordsEncoder()
    spec = LexicalSpec()
    wrapped = with_lexical(base, spec)
    assert isinstance(wrapped, LexicalEncoder) and base_encoder(wrapped) is base
    assert with_lexical(wrapped, spec) is wrapped  # never wrapped twice
    rewrapped = with_lexical(wrapped, LexicalSpec(weight=1.0))
    assert isinstance(rewrapped, LexicalEncoder) and rewrapped.base is base
    assert with_lexical(wrapped, None) is base
    assert lexical_spec(0) is None and lexical_spec(0.7) == LexicalSpec(weight=0.7)


@pytest.mark.parametrize("field, value", [("weight", 0), ("weight", 5), ("dims", 8)])
def test_a_bad_lexical_spec_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        LexicalSpec(**{field: value})


def test_a_linear_artifact_records_its_lexical_features_and_reproduces_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = LexicalSpec(weight=0.7, dims=256)
    router, record = fit(tmp_path, "linear", lexical=spec)
    assert record.lexical == spec  # type: ignore[attr-defined]
    assert parse_record(record.model_dump_json(), "test").lexical == spec  # type: ignore[attr-defined]
    fresh = Router.from_examples(
        EXAMPLES,
        fallback="general",
        method="linear",
        encoder=with_lexical(BagOfWordsEncoder(), spec),
    )
    assert apply_record(fresh, record)  # type: ignore[arg-type]
    assert decisions(fresh) == decisions(router)
    _, knn = fit(tmp_path, "knn", lexical=spec)
    assert knn.lexical is None  # type: ignore[attr-defined]  # other methods ignore it


def test_a_head_without_the_recorded_features_does_not_fit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, record = fit(tmp_path, "linear", lexical=LexicalSpec(dims=256))
    bare = Router.from_examples(EXAMPLES, method="linear", encoder=BagOfWordsEncoder())
    with pytest.raises(ValueError, match="does not fit"):
        apply_record(bare, record)  # type: ignore[arg-type]


def test_the_live_router_serves_an_artifact_with_the_features_it_was_fitted_on(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    spec = LexicalSpec(dims=256)
    serving = live(tmp_path, method="linear", lexical=spec)
    assert isinstance(serving.router.encoder, LexicalEncoder)
    assert serving.frozen_encoder() is base_encoder(serving.router.encoder)  # search stays bare
    serving.update(INSTALLED, EXAMPLES)
    _, old = fit(tmp_path, "linear")  # fitted before lexical features existed
    serving.record = old  # type: ignore[assignment]
    assert serving.stale()  # a linear artifact without the configured features is refitted
    assert serving.refit()
    assert serving.record is not None and serving.record.lexical == spec
    assert isinstance(serving.router.encoder, LexicalEncoder)
    assert not serving.stale()
    knn = live(tmp_path, method="knn", lexical=spec)
    assert not isinstance(knn.router.encoder, LexicalEncoder)


def scores_and_labels() -> tuple[np.ndarray, list[int | None]]:
    rng = np.random.default_rng(0)
    inside = rng.uniform(0.4, 1.0, size=(40, 2))
    outside = rng.uniform(0.0, 0.6, size=(20, 2))
    labels: list[int | None] = [int(row.argmax()) for row in inside] + [None] * 20
    return np.concatenate([inside, outside]).astype(np.float32), labels


@pytest.mark.parametrize("recall", [0.5, 0.8, 0.85, 1.0])
def test_recall_cut_is_the_lowest_cut_meeting_the_target(recall: float) -> None:
    scores, labels = scores_and_labels()
    cut = recall_cut(scores, labels, recall)
    assert cut is not None
    tops = np.sort(scores.max(axis=1)[np.array([label is None for label in labels])])
    rejected = (tops < cut).mean()
    assert rejected >= recall - 1e-9
    assert (tops < cut).sum() == int(np.ceil(recall * len(tops) - 1e-9))  # not one more


def test_recall_cut_without_out_of_scope_queries_is_none() -> None:
    assert recall_cut(np.ones((3, 2), np.float32), [0, 1, 0], 0.8) is None


def test_a_recall_target_adds_one_global_cut_to_the_curve_and_chooses_it() -> None:
    scores, labels = scores_and_labels()
    curve = trade_off(scores, labels, target_recall=0.8)
    points = [point for point, _ in curve]
    last, cuts = curve[-1]
    assert last.target_recall == 0.8 and last.oos_weight == 0.0
    assert np.allclose(cuts, cuts[0])  # one cut for every specialist
    assert last.oos_recall is not None and last.oos_recall >= 0.8
    assert choose(points, OperatingPoint(oos_recall=0.8)) == len(points) - 1
    assert outcome(scores, labels, cuts)[1] == pytest.approx(last.oos_recall, abs=1e-4)
    # another target does not pick it; balanced and precision targets ignore it
    assert choose(points, OperatingPoint(oos_recall=0.9)) != len(points) - 1
    assert choose(points, OperatingPoint()) != len(points) - 1
    assert "one cut, recall 0.8" in trade_off_table(points, last)
    assert all(point.target_recall is None for point, _ in trade_off(scores, labels))


def test_router_fit_at_a_recall_target_uses_the_one_cut() -> None:
    router = Router.from_examples(
        EXAMPLES, fallback="general", method="linear", encoder=BagOfWordsEncoder()
    )
    texts = [q.text for q in LABELLED]
    labels = [q.label for q in LABELLED]
    report = router.fit(texts, labels, OperatingPoint(oos_recall=0.5))
    assert report.chosen is not None and report.chosen.target_recall == 0.5
    assert set(router.thresholds.values()) == {report.chosen.threshold}


def test_old_trade_off_points_load_without_the_new_field() -> None:
    point = TradeOffPoint.model_validate(
        {"oos_weight": 1.0, "threshold": 0.3, "accuracy": 0.9, "oos_recall": 0.8, "precision": 1}
    )
    assert point.target_recall is None


def test_recall_cut_rejects_tied_out_of_scope_scores_together() -> None:
    scores = np.array([[0.6, 0.1]] * 4 + [[0.9, 0.0]], dtype=np.float32)
    labels: list[int | None] = [None, None, None, None, 0]
    cut = recall_cut(scores, labels, 0.5)
    assert cut is not None and cut > 0.6  # all four ties fall back, not none of them
    assert outcome(scores, labels, np.full(2, cut))[1] == 1.0


def test_recall_cut_survives_the_rounding_thresholds_are_stored_with() -> None:
    scores = np.array([[0.6, 0.0], [0.6000001, 0.0], [0.9, 0.0]], dtype=np.float32)
    labels: list[int | None] = [None, None, None]
    cut = recall_cut(scores, labels, 0.6)
    assert cut is not None and round(cut, 4) == cut
    recall = outcome(scores, labels, np.full(2, round(cut, 4)))[1]
    assert recall is not None and recall >= 0.6


def test_a_huge_text_is_hashed_only_up_to_its_start() -> None:
    from router.lexical import MAX_CHARS

    head = "set an alarm " * (MAX_CHARS // 13 + 1)
    assert np.array_equal(lexical_rows([head], 256), lexical_rows([head + "zebra " * 10_000], 256))


def test_a_record_of_another_method_does_not_bring_its_features(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from router.live import LiveRouter, LiveRouterOptions

    class Store:
        def __init__(self, record) -> None:  # type: ignore[no-untyped-def]
            self.record = record

        def current_version(self) -> str:
            return self.record.version

        def get(self, version: str):  # type: ignore[no-untyped-def]
            return self.record

        def save(self, record, *, expect_current="*") -> bool:  # type: ignore[no-untyped-def]
            return True

    _, record = fit(tmp_path, "linear", lexical=LexicalSpec(dims=256))
    options = LiveRouterOptions(home=tmp_path, method="knn", refit=False)
    serving = LiveRouter(options, store=Store(record), frozen=BagOfWordsEncoder)  # type: ignore[arg-type]
    serving.start()
    assert not isinstance(serving.router.encoder, LexicalEncoder)
