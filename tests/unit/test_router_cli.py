"""`mesh router eval` on a fake encoder: the JSON schema, and clean errors (exit code 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import router as router_cli
from mesh.cli.router import router_app
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder

runner = CliRunner()
REPORT_KEYS = {
    "accuracy",
    "macro_f1",
    "oos_auroc",
    "oos_accuracy",
    "p50_ms",
    "p95_ms",
    "n_test",
    "method",
    "confusion",
}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setattr(router_cli, "load_encoder", lambda path: BagOfWordsEncoder())
    examples = [{"specialist": n, "text": t} for n, texts in EXAMPLES.items() for t in texts]
    labelled = [
        {"text": "python code", "label": "code"},
        {"text": "a story poem", "label": "writing"},
        {"text": "hello there weather", "label": "general"},
        {"text": "soup recipe", "label": None},
        {"text": "python poem story", "label": None},
    ]
    return {
        "examples": write_jsonl(tmp_path / "ex.jsonl", examples),
        "test": write_jsonl(tmp_path / "test.jsonl", labelled),
        "val": write_jsonl(tmp_path / "val.jsonl", labelled),
    }


@pytest.mark.parametrize("method", ["centroid", "knn", "knn-max", "linear"])
def test_eval_json_schema(data: dict[str, Path], method: str) -> None:
    args = ["eval", "--examples", str(data["examples"]), "--test", str(data["test"])]
    result = runner.invoke(
        router_app, [*args, "--val", str(data["val"]), "--method", method, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= REPORT_KEYS
    assert report["method"] == method
    assert report["n_test"] == 5
    assert report["fitted"] is True
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["oos_auroc"] <= 1.0
    assert report["p95_ms"] >= report["p50_ms"] >= 0.0
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 5
    assert report["confusion"]["code"] == {"code": 1}


def test_eval_human_output(data: dict[str, Path]) -> None:
    args = ["eval", "--examples", str(data["examples"]), "--test", str(data["test"])]
    result = runner.invoke(router_app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy (in scope)" in result.output
    assert "--json" in result.output


@pytest.mark.parametrize(
    ("test_line", "extra", "message"),
    [
        ("{not json", [], "test.jsonl:1: not JSON"),
        ('{"text": "x"}', [], "test.jsonl:1: label: Field required"),
        ('{"text": "x", "label": "cooking"}', [], "label 'cooking' is not a specialist"),
        ('{"text": "x", "label": null}', ["--method", "magic"], "unknown method 'magic'"),
    ],
)
def test_eval_errors_exit_1_with_one_line(
    data: dict[str, Path], test_line: str, extra: list[str], message: str
) -> None:
    data["test"].write_text(test_line + "\n")
    args = ["eval", "--examples", str(data["examples"]), "--test", str(data["test"]), *extra]
    result = runner.invoke(router_app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "offline mode needs --out"),
        (["--out", "x", "--no-finetune"], "--no-finetune is for store mode"),
        (["--out", "x", "--method", "magic"], "unknown method 'magic'"),
    ],
)
def test_offline_fit_errors_exit_1(data: dict[str, Path], extra: list[str], message: str) -> None:
    result = runner.invoke(router_app, ["fit", "--examples", str(data["examples"]), *extra])
    assert result.exit_code == 1
    assert message in result.output


def test_store_mode_fit_refuses_a_lexical_weight_of_its_own() -> None:
    """The running mesh reads its features from its setting: a store fit must match it."""
    result = runner.invoke(router_app, ["fit", "--no-finetune", "--lexical-weight", "0.3"])
    assert result.exit_code == 1
    assert "--lexical-weight is for offline mode" in result.output
    assert "Traceback" not in result.output
