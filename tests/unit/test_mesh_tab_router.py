"""The Mesh tab's router panel (`ui.mesh_tab.router_markdown`) from `GET /v1/router` bodies."""

from __future__ import annotations

from pathlib import Path

from registry.router_artifacts import OperatingPoint
from router.artifact import record_summary
from tests.unit.test_router_artifact import fit
from ui.mesh_tab import router_markdown


def test_without_an_artifact_it_says_how_to_fit_one() -> None:
    text = router_markdown({"artifact": None, "specialists": ["general"]})
    assert "default thresholds" in text and "mesh router fit --val" in text


def test_a_fitted_router_shows_its_target_and_the_row_in_use(tmp_path: Path) -> None:
    _, record = fit(tmp_path, "linear", target=OperatingPoint(oos_recall=0.6))
    summary = record_summary(record)  # type: ignore[arg-type]
    assert summary["rejects_out_of_scope"] and summary["n_labelled"] == 5
    assert "labelled" not in summary and "head" not in summary  # no texts, no weights
    text = router_markdown({"artifact": summary})
    assert "out-of-scope recall >= 0.6" in text and "learns out-of-scope queries" in text
    assert text.count("<- in use") == 1
    assert text.count("\n| ") == len(summary["trade_off"]) + 1  # header + one row per point


def test_a_chosen_index_out_of_range_marks_nothing(tmp_path: Path) -> None:
    _, record = fit(tmp_path, "knn")
    summary = record_summary(record) | {"chosen": 99}  # type: ignore[arg-type]
    assert "<- in use" not in router_markdown({"artifact": summary})
    assert "balanced" in router_markdown({"artifact": summary})
