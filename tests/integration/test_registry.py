"""The registry against a real redis-server process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import app
from registry import (
    ConflictError,
    NotFoundError,
    Registry,
    RegistryUnavailableError,
    parse_manifest,
)
from registry.redis_server import EmbeddedRedis
from tests.conftest import free_port, manifest_data

pytestmark = pytest.mark.slow


def test_publish_round_trip(registry: Registry) -> None:
    manifest = parse_manifest(manifest_data(tags=["x"]))
    registry.publish(manifest)
    assert registry.get("demo") == manifest
    assert registry.get("demo", "1.0.0") == manifest
    assert registry.names() == ["demo"]
    assert registry.latest() == [manifest]
    assert registry.installed() == {}
    kinds = [event.kind for event in registry.events()]
    assert kinds == ["publish"]


def test_published_versions_are_immutable(registry: Registry) -> None:
    owner = registry.principal(registry.tokens.create("tests"), None)
    registry.publish(parse_manifest(manifest_data(version="1.0.0")))
    changed = parse_manifest(manifest_data(version="1.0.0", description="sneaky change"))
    with pytest.raises(ConflictError, match="immutable"):
        registry.publish(changed, owner)
    assert registry.get("demo").description == "A demo specialist."
    with pytest.raises(ConflictError, match="lower than the latest"):
        registry.publish(parse_manifest(manifest_data(version="0.9.0")), owner)
    registry.publish(parse_manifest(manifest_data(version="1.1.0")), owner)
    assert registry.versions("demo") == ["1.0.0", "1.1.0"]
    assert registry.get("demo").version == "1.1.0"


def test_install_and_uninstall(registry: Registry) -> None:
    registry.publish(parse_manifest(manifest_data()), install=True)
    assert list(registry.installed()) == ["demo"]
    registry.uninstall("demo")
    assert registry.installed() == {}
    with pytest.raises(NotFoundError):
        registry.uninstall("demo")
    with pytest.raises(NotFoundError, match="no specialist named 'ghost'"):
        registry.install("ghost")
    kinds = [event.kind for event in registry.events()]
    assert kinds == ["publish", "install", "uninstall"]


def test_unknown_specialist_is_404(registry: Registry) -> None:
    with pytest.raises(NotFoundError) as error:
        registry.get("nobody")
    assert error.value.status_code == 404


def test_unreachable_redis_names_the_url_to_the_operator_only() -> None:
    url = f"redis://admin:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RegistryUnavailableError) as raised:
        Registry.from_url(url)
    assert "cannot reach Redis" in raised.value.message
    assert "127.0.0.1" not in raised.value.message, "clients see no address or password"
    assert f"redis://admin:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in raised.value.detail
    assert "s3cret" not in raised.value.detail


def test_embedded_server_persists_across_restarts(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    registry = Registry.from_url(server.start())
    registry.publish(parse_manifest(manifest_data()), install=True)
    server.stop()
    assert not server.is_running()
    with EmbeddedRedis(tmp_path) as again:
        assert list(Registry.from_url(again.url).installed()) == ["demo"]
    assert (tmp_path / "appendonly.aof").exists()


def test_cli_register_list_show(tmp_path: Path, redis_url: str, registry: Registry) -> None:
    runner = CliRunner()
    env = {"MESH_REDIS_URL": redis_url, "MESH_HOME": str(tmp_path), "MESH_ADMIN_TOKEN": "adm"}
    good = tmp_path / "demo.yaml"
    good.write_text(parse_manifest(manifest_data()).model_dump_json())
    bad = tmp_path / "bad.yaml"
    bad.write_text(parse_manifest(manifest_data()).model_dump_json().replace('"owner"', '"ownr"'))

    result = runner.invoke(app, ["register", str(bad)], env=env)
    assert result.exit_code == 1
    assert "ownr: unknown field" in result.output
    assert registry.names() == [], "a bad manifest writes nothing"

    result = runner.invoke(app, ["register", str(good)], env=env)
    assert result.exit_code == 0, result.output
    assert "published demo@1.0.0" in result.output

    anonymous = {**env, "MESH_ADMIN_TOKEN": None}
    result = runner.invoke(app, ["register", str(good)], env=anonymous)  # type: ignore[arg-type]
    assert result.exit_code == 1
    assert "needs a token" in result.output
    result = runner.invoke(app, ["register", str(good), "--token", "adm"], env=env)
    assert result.exit_code == 1
    assert "already published" in result.output

    result = runner.invoke(app, ["list", "--json"], env=env)
    assert result.exit_code == 0
    assert '"name": "demo"' in result.output and '"installed": "1.0.0"' in result.output

    result = runner.invoke(app, ["show", "demo@1.0.0"], env=env)
    assert result.exit_code == 0
    assert "demo@1.0.0" in result.output and "first example" in result.output

    result = runner.invoke(app, ["show", "nobody"], env=env)
    assert result.exit_code == 1
    assert "no specialist named 'nobody'" in result.output
