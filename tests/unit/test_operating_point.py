"""The out-of-scope class of the linear head, and the operating point the thresholds aim for.

Pure logic on the bag-of-words fake encoder and on synthetic score matrices; the measured
effect on real queries (HWU64) is `benchmarks/router.py --quality`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mesh.cli import router as router_cli
from mesh.cli.router import router_app
from registry.router_artifacts import OperatingPoint, RouterArtifactError, parse_record
from router import Router
from router.artifact import apply_record, decode_head, encode_head
from router.calibrate import OOS_WEIGHTS, choose, outcome, trade_off, trade_off_table
from router.linear import LinearHead
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder
from tests.unit.test_router_artifact import fit
from tests.unit.test_router_cli import write_jsonl

# "recipe" and "soup" appear in no specialist's examples: the out-of-scope topic.
VAL_TEXTS = ["python code", "story poem", "hello weather", "soup recipe", "recipe", "soup soup"]
VAL_LABELS: list[str | None] = ["code", "writing", "general", None, None, None]


def linear_router() -> Router:
    return Router.from_examples(
        EXAMPLES, fallback="general", method="linear", encoder=BagOfWordsEncoder()
    )


def test_out_of_scope_rows_add_a_none_of_them_class() -> None:
    vectors = np.eye(4, dtype=np.float32)
    head = LinearHead.fit(vectors, np.array([0, 1, 2, -1]), 3)
    assert head.rejects and head.n_specialists == 3
    assert head.weights.shape == (4, 4)
    scores = head.scores(vectors)
    assert scores.shape == (4, 3)
    assert (scores.sum(axis=1) < 1).all()
    assert scores[3].max() < scores[:3].max(axis=1).min()  # the out-of-scope row scores lowest
    plain = LinearHead.fit(vectors[:3], np.array([0, 1, 2]), 3)
    assert not plain.rejects and np.allclose(plain.scores(vectors).sum(axis=1), 1)


def test_the_fitted_head_learns_the_labelled_out_of_scope_topic() -> None:
    before = linear_router()
    soup_before = before.scores(["soup recipe please"])[0].max()
    after = linear_router()
    after.fit(VAL_TEXTS, VAL_LABELS)
    head = after.linear_head
    assert head is not None and head.rejects
    assert after.scores(["soup recipe please"])[0].max() < soup_before / 2
    assert after.route("soup recipe please").mode == "fallback"
    assert after.route("python code").chosen == "code"


def test_lessons_train_the_head_but_are_not_calibrated_on() -> None:
    plain, taught = linear_router(), linear_router()
    plain.fit(VAL_TEXTS, VAL_LABELS)
    lessons = [("python story", "writing"), ("python story story", "writing")]
    report = taught.fit(VAL_TEXTS, VAL_LABELS, lessons=lessons)
    assert report.n_in_scope == 3 and report.n_out_of_scope == 3  # the calibration set only
    assert plain.route("python story").chosen != "writing"
    assert taught.route("python story").chosen == "writing"
    with pytest.raises(ValueError, match="not indexed"):
        linear_router().fit(VAL_TEXTS, VAL_LABELS, lessons=[("x", "nobody")])


def test_teach_without_a_calibration_set_keeps_the_default_thresholds() -> None:
    router = linear_router()
    router.teach([("python story", "writing"), ("python story story", "writing")])
    assert router.thresholds == {} and router.route("python story").chosen == "writing"
    knn = Router.from_examples(EXAMPLES, method="knn", encoder=BagOfWordsEncoder())
    knn.teach([("python story", "writing")])  # no head: nothing to teach
    assert knn.route("python story").chosen == "code"


def test_a_rejecting_head_round_trips_through_the_artifact(tmp_path: Path) -> None:
    router, record = fit(tmp_path, "linear")
    assert record.head is not None and record.head.rejects  # type: ignore[attr-defined]
    back = decode_head(record.head)  # type: ignore[attr-defined]
    assert back.rejects and back.n_specialists == len(EXAMPLES)
    fresh = Router.from_examples(
        EXAMPLES, fallback="general", method="linear", encoder=BagOfWordsEncoder()
    )
    assert apply_record(fresh, parse_record(record.model_dump_json(), "test"))  # type: ignore[attr-defined]
    queries = ["python code", "soup", "story story"]
    np.testing.assert_array_equal(fresh.scores(queries), router.scores(queries))


def test_a_head_without_its_rejecting_column_is_refused() -> None:
    head = LinearHead(np.ones((9, 4)), np.ones(4), rejects=True)
    data = encode_head(["a", "b", "c"], head).model_copy(update={"rejects": False})
    with pytest.raises(RouterArtifactError, match="damaged"):
        decode_head(data)


def test_one_target_at_most_and_within_range() -> None:
    with pytest.raises(ValidationError, match="choose one target"):
        OperatingPoint(oos_recall=0.8, precision=0.9)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValidationError):
            OperatingPoint(oos_recall=bad)


def synthetic_scores(seed: int = 0) -> tuple[np.ndarray, list[int | None]]:
    """Two specialists; in-scope queries score high on their own, out-of-scope ones lower."""
    rng = np.random.default_rng(seed)
    inside = rng.uniform(0.3, 1.0, size=(60, 2))
    labels: list[int | None] = [int(i) for i in inside.argmax(axis=1)]
    inside[:10] = inside[:10, ::-1]  # some are routed wrong
    outside = rng.uniform(0.0, 0.6, size=(40, 2))
    return np.concatenate([inside, outside]), labels + [None] * 40


def test_the_curve_trades_in_scope_accuracy_for_out_of_scope_recall() -> None:
    scores, labels = synthetic_scores()
    curve = [point for point, _ in trade_off(scores, labels)]
    assert [p.oos_weight for p in curve] == list(OOS_WEIGHTS)
    recalls = [p.oos_recall for p in curve]
    accuracies = [p.accuracy for p in curve]
    assert recalls == sorted(recalls)  # type: ignore[type-var]
    assert accuracies == sorted(accuracies, reverse=True)
    assert recalls[0] < recalls[-1]  # type: ignore[operator]


def test_choose_meets_the_target_with_the_best_accuracy() -> None:
    scores, labels = synthetic_scores()
    curve = [point for point, _ in trade_off(scores, labels)]
    balanced = curve[choose(curve, OperatingPoint())]
    assert balanced.oos_weight == 1.0
    for goal in (0.5, 0.8, 0.95):
        picked = curve[choose(curve, OperatingPoint(oos_recall=goal))]
        meeting = [p for p in curve if (p.oos_recall or 0) >= goal]
        if meeting:
            assert picked.accuracy == max(p.accuracy for p in meeting)
            assert picked.oos_recall >= goal  # type: ignore[operator]
    goal = sorted(p.precision for p in curve)[len(curve) // 2]
    precise = [p for p in curve if p.precision >= goal]
    picked = curve[choose(curve, OperatingPoint(precision=goal))]
    assert picked.precision >= goal
    assert picked.accuracy == max(p.accuracy for p in precise)


def test_an_unreachable_target_takes_the_closest_point() -> None:
    scores, labels = synthetic_scores()
    curve = [point for point, _ in trade_off(scores, labels)]
    flat = [p.model_copy(update={"oos_recall": 0.5}) for p in curve]
    flat[3] = flat[3].model_copy(update={"oos_recall": 0.6})
    assert choose(flat, OperatingPoint(oos_recall=0.99)) == 3


def test_outcome_counts_fallbacks_as_wrong() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.15]])
    accuracy, recall, precision = outcome(scores, [0, 1, None], np.array([0.5, 0.5]))
    assert (accuracy, recall, precision) == (0.5, 1.0, 1.0)


def test_fit_reports_the_curve_and_the_point_in_use() -> None:
    router = linear_router()
    report = router.fit(VAL_TEXTS, VAL_LABELS, OperatingPoint(oos_recall=1.0))
    assert report.operating_point.oos_recall == 1.0
    assert len(report.trade_off) == len(OOS_WEIGHTS) + 1  # the curve and the one cut at 1.0
    assert report.chosen == report.trade_off[-1] and report.chosen.target_recall == 1.0
    assert report.global_threshold == report.chosen.threshold  # type: ignore[union-attr]
    assert "<- in use" in trade_off_table(report.trade_off, report.chosen)


def test_the_record_keeps_the_operating_point_for_refits(tmp_path: Path) -> None:
    target = OperatingPoint(precision=0.9)
    _, record = fit(tmp_path, "knn", target=target)
    assert record.operating_point == target  # type: ignore[attr-defined]
    assert len(record.trade_off) == len(OOS_WEIGHTS)  # type: ignore[attr-defined]
    _, unfitted = fit(tmp_path, "knn", labelled=[])
    assert unfitted.trade_off == []  # type: ignore[attr-defined]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setattr(router_cli, "load_encoder", lambda path: BagOfWordsEncoder())
    examples: list[dict[str, object]] = [
        {"specialist": n, "text": t} for n, texts in EXAMPLES.items() for t in texts
    ]
    val: list[dict[str, object]] = [
        {"text": t, "label": lab} for t, lab in zip(VAL_TEXTS, VAL_LABELS, strict=True)
    ]
    return {
        "examples": write_jsonl(tmp_path / "ex.jsonl", examples),
        "val": write_jsonl(tmp_path / "val.jsonl", val),
    }


def test_eval_prints_the_trade_off_and_honours_the_target(data: dict[str, Path]) -> None:
    files = ["--examples", str(data["examples"]), "--val", str(data["val"])]
    args = ["eval", *files, "--test", str(data["val"]), "--method", "linear"]
    human = CliRunner().invoke(router_app, [*args, "--oos-recall", "0.9", "--latency-samples", "0"])
    assert human.exit_code == 0, human.output
    assert "Trade-off on the validation set" in human.output and "<- in use" in human.output
    result = CliRunner().invoke(router_app, [*args, "--precision", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.output)["calibration"]
    assert calibration["operating_point"] == {"oos_recall": None, "precision": 0.9}
    assert len(calibration["trade_off"]) == len(OOS_WEIGHTS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--oos-recall", "0.8", "--precision", "0.9"], "only one of them"),
        (["--oos-recall", "1.5"], "invalid operating point"),
    ],
)
def test_a_bad_operating_point_exits_1_with_one_line(
    data: dict[str, Path], extra: list[str], message: str
) -> None:
    files = ["--examples", str(data["examples"]), "--val", str(data["val"])]
    result = CliRunner().invoke(router_app, ["eval", *files, "--test", str(data["val"]), *extra])
    assert result.exit_code == 1
    assert message in result.output
