"""Every store command through the CLI runner, against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from mesh.cli import app
from registry import Registry
from tests.conftest import manifest_data

pytestmark = pytest.mark.slow
ADMIN = "admin-secret"


@pytest.fixture
def cli(redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    base_env = {"MESH_REDIS_URL": redis_url, "MESH_HOME": str(tmp_path), "MESH_ADMIN_TOKEN": ADMIN}

    def run(*args: str, **env: str) -> Result:
        return runner.invoke(app, list(args), env={**base_env, **env})

    return run


def write(tmp_path: Path, version: str, **fields: object) -> str:
    path = tmp_path / f"demo-{version}.yaml"
    path.write_text(yaml.safe_dump(manifest_data(version=version, **fields)))
    return str(path)


def test_ownership_through_the_cli(cli, tmp_path: Path, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    result = cli("register", write(tmp_path, "1.0.0"), MESH_ADMIN_TOKEN=None)
    assert result.exit_code == 1 and "needs a token" in result.output
    assert "demo" not in registry.names(), "an anonymous publish writes nothing"
    assert cli("register", write(tmp_path, "1.0.0")).exit_code == 0, "the operator (env token)"

    result = cli("register", write(tmp_path, "1.1.0"), MESH_ADMIN_TOKEN=None)
    assert result.exit_code == 1 and "needs a token" in result.output

    result = cli("token", "create", "--owner", "tests", MESH_ADMIN_TOKEN=None)
    assert result.exit_code == 1 and "admin token" in result.output
    result = cli("token", "create", "--owner", "tests", "--token", ADMIN, "--json")
    assert result.exit_code == 0, result.output
    token = json.loads(result.stdout)["token"]

    result = cli("register", write(tmp_path, "1.1.0"), "--token", "msh_wrong")
    assert result.exit_code == 1 and "not valid" in result.output
    assert registry.versions("demo") == ["1.0.0"], "nothing written on refusal"

    result = cli("publish", write(tmp_path, "1.1.0"), MESH_TOKEN=token)
    assert result.exit_code == 0, result.output
    result = cli("register", write(tmp_path, "1.0.5"), MESH_TOKEN=token)
    assert result.exit_code == 1 and "lower than the latest" in result.output


def test_lifecycle_through_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("register", write(tmp_path, "1.0.0", tags=["t1"], card="# Demo card")).exit_code == 0
    assert cli("register", write(tmp_path, "1.1.0"), "--token", ADMIN).exit_code == 0

    result = cli("versions", "demo", "--json")
    assert [row["version"] for row in json.loads(result.stdout)] == ["1.0.0", "1.1.0"]

    anonymous = cli("uninstall", "demo", MESH_ADMIN_TOKEN=None)
    assert anonymous.exit_code == 1, "operator action without the admin token"
    assert cli("uninstall", "demo", "--token", ADMIN).exit_code == 0
    assert cli("install", "demo@1.0.0", "--token", ADMIN).exit_code == 0
    result = cli("show", "demo", "--json")
    shown = json.loads(result.stdout)
    assert shown["installed"] == {"pin": "1.0.0", "version": "1.0.0"}
    assert shown["stats"]["requests"] == 0

    result = cli("deprecate", "demo", "--reason", "use demo2", "--token", ADMIN)
    assert result.exit_code == 0
    assert "[deprecated]" in cli("list").output
    assert "DEPRECATED: use demo2" in cli("show", "demo").output

    assert cli("yank", "demo@1.1.0", "--reason", "bad", "--token", ADMIN).exit_code == 0
    result = cli("install", "demo@1.1.0", "--token", ADMIN)
    assert result.exit_code == 1 and "yanked" in result.output

    result = cli("list", "--tag", "nope", "--json")
    assert json.loads(result.stdout) == []
    result = cli("list", "--owner", "tests", "--json")
    assert [row["name"] for row in json.loads(result.stdout)] == ["demo"]

    result = cli("events", "--json")
    kinds = [json.loads(line)["kind"] for line in result.output.splitlines()]
    assert kinds[:2] == ["publish", "install"] and {"deprecate", "yank", "uninstall"} <= set(kinds)

    exported = tmp_path / "store.json"
    assert cli("export", str(exported)).exit_code == 0
    result = cli("import", str(exported))
    assert result.exit_code == 1 and "not empty" in result.output

    assert cli("delete", "demo", "--yes", MESH_ADMIN_TOKEN=None).exit_code == 1
    assert cli("export", str(tmp_path / "x.json"), MESH_ADMIN_TOKEN=None).exit_code == 1
    assert cli("delete", "demo", "--yes", "--token", ADMIN).exit_code == 0
    assert "No specialists found" in cli("list").output
    assert cli("import", str(exported)).exit_code == 0
    assert "demo" in cli("list").output


def test_search_by_meaning_and_text(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from specialists.catalog import load_catalog

    for manifest in load_catalog():
        path = tmp_path / f"{manifest.name}.yaml"
        path.write_text(yaml.safe_dump(manifest.model_dump(mode="json")))
        assert cli("register", str(path)).exit_code == 0
    result = cli("search", "debugging a javascript program", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["name"] == "code"
    result = cli("search", "poem", "--json")
    top = json.loads(result.stdout)[0]
    assert top["name"] == "writing" and top["text_match"]
