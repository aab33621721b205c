"""Threshold calibration, the linear head and the evaluation metrics, on tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry.errors import MeshError
from router import metrics
from router.calibrate import best_cut, fit_thresholds
from router.finetune import FORMAT_VERSION, META_FILE, RouterArtifactError, read_artifact
from router.linear import LinearHead
from tests.unit.test_router import make_router


@pytest.mark.parametrize(
    ("top", "keep", "reject", "expected"),
    [
        ([0.6, 0.7, 0.2, 0.3], [1, 1, 0, 0], [0, 0, 1, 1], 0.45),  # clean gap: the middle
        ([0.6, 0.7], [1, 1], [0, 0], 0.575),  # nothing to reject: below the lowest
        ([0.2, 0.3], [0, 0], [1, 1], 0.325),  # nothing to keep: above the highest
        ([0.3, 0.4, 0.45, 0.46, 0.5, 0.6], [0, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0], 0.48),
    ],
)
def test_best_cut(top: list[float], keep: list[int], reject: list[int], expected: float) -> None:
    cut = best_cut(np.array(top), np.array(keep, bool), np.array(reject, bool), 1.0)
    assert cut == pytest.approx(expected)


def test_fit_thresholds_shrinks_sparse_specialists_toward_the_global_cut() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.1], [0.3, 0.1], [0.1, 0.7], [0.1, 0.2]])
    labels: list[int | None] = [0, 0, None, 1, None]
    global_cut, per = fit_thresholds(scores, labels, prior=0.0)
    assert 0.3 < global_cut < 0.7
    assert 0.3 < per[0] < 0.8 and 0.2 < per[1] < 0.7
    _, shrunk = fit_thresholds(scores, labels, prior=1e9)
    assert shrunk == pytest.approx([global_cut, global_cut])


@pytest.mark.parametrize("method", ["centroid", "knn", "knn-max", "linear"])
def test_fit_calibrates_thresholds_so_out_of_scope_falls_back(method: str) -> None:
    router = make_router(method, threshold=-1.0)
    assert router.route("python story story story").mode != "fallback"
    texts = ["python code", "story poem", "hello", "python story story story", "code poem poem"]
    labels = ["code", "writing", "general", None, None]
    report = router.fit(texts, labels)
    assert (report.n_in_scope, report.n_out_of_scope) == (3, 2)
    assert set(report.thresholds) == {"code", "writing", "general"}
    assert router.route("python story story story").mode == "fallback"
    assert router.route("python code").chosen == "code"
    assert router.route("python code").mode == "single"


def test_fit_rejects_labels_of_unknown_specialists() -> None:
    with pytest.raises(ValueError, match="not indexed"):
        make_router().fit(["x"], ["cooking"])


def test_fit_trains_the_linear_head_on_new_words() -> None:
    router = make_router("linear")
    before = router.route("rust").targets[0].score
    router.fit(["rust", "rust code", "rust python", "soup"], ["code", "code", "code", None])
    decision = router.route("rust")
    assert decision.chosen == "code"
    assert decision.targets[0].score > before


def test_fitted_linear_data_survives_an_index_swap() -> None:
    router = make_router("linear")
    router.fit(["rust", "rust code"], ["code", "code"])
    router.index = router.index  # a rebuild retrains the head, keeping the fitted data
    assert router.route("rust").chosen == "code"


def test_linear_head_separates_separable_data() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8)
    x = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(40, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.repeat(np.arange(4), 10)
    probabilities = LinearHead.fit(x, y, 4).scores(x)
    assert (probabilities.argmax(axis=1) == y).all()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(40), abs=1e-5)


def test_metrics_on_a_table() -> None:
    truth = ["a", "a", "b", None, None]
    predicted = ["a", "b", "b", None, "a"]
    assert metrics.in_scope_accuracy(truth, predicted) == pytest.approx(2 / 3)
    assert metrics.oos_accuracy(truth, predicted) == 0.5
    # F1: a = 2*1/(2+2) = 0.5, b = 2*1/(1+2) = 2/3, oos = 2*1/(2+1) = 2/3
    assert metrics.macro_f1(truth, predicted) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert metrics.confusion(truth, predicted) == {
        "_oos": {"_oos": 1, "a": 1},
        "a": {"a": 1, "b": 1},
        "b": {"b": 1},
    }
    assert metrics.auroc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    assert metrics.auroc(np.array([1.0]), np.array([])) is None


def test_artifact_of_another_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / META_FILE).write_text(f'{{"format_version": {FORMAT_VERSION + 1}}}')
    with pytest.raises(RouterArtifactError, match="format version") as caught:
        read_artifact(tmp_path)
    assert isinstance(caught.value, MeshError)
    with pytest.raises(RouterArtifactError, match="not a router encoder artifact"):
        read_artifact(tmp_path / "missing")


def test_calibration_travels_with_the_encoder_artifact(tmp_path: Path) -> None:
    from router.finetune import (
        EncoderArtifact,
        FinetuneSettings,
        apply_calibration,
        save_calibration,
    )

    (tmp_path / "model").mkdir()
    artifact = EncoderArtifact(
        format_version=FORMAT_VERSION,
        base="fake",
        examples_digest="0" * 64,
        specialists=["code", "general", "writing"],
        n_examples=9,
        settings=FinetuneSettings(),
        final_loss=0.1,
        train_seconds=1.0,
        created_at="2026-01-01T00:00:00+00:00",
    )
    (tmp_path / META_FILE).write_text(artifact.model_dump_json())
    fitted = make_router("knn")
    report = fitted.fit(
        ["python code", "story", "hello", "soup"], ["code", "writing", "general", None]
    )
    save_calibration(tmp_path, report)
    stored = read_artifact(tmp_path)
    assert stored.calibration == report
    fresh = make_router("knn")
    assert apply_calibration(fresh, stored)
    assert dict(fresh.thresholds) == dict(fitted.thresholds)
    assert fresh.threshold == pytest.approx(fitted.threshold, abs=1e-4)
    assert not apply_calibration(make_router("linear"), stored)  # fitted for another method
