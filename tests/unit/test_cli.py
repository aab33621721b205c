from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mesh.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "ask", "register", "list", "show"):
        assert command in result.output


def test_register_bad_manifest_exits_1_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\nversion: 1.0.0\n")
    result = runner.invoke(app, ["register", str(bad)], env={"MESH_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "name: must be DNS-safe" in result.output
    assert "description: field required" in result.output
    assert "Traceback" not in result.output


def test_redis_down_names_the_url(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:1/0"
    result = runner.invoke(app, ["list"], env={"MESH_REDIS_URL": url, "MESH_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert f"cannot reach Redis at {url}" in result.output


def test_ask_without_a_mesh_says_how_to_start_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "hi", "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "mesh up" in result.output
