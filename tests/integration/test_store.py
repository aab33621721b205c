"""The store's rules against a real redis-server: ownership, lifecycle, stats, export, faults."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from registry import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Principal,
    Registry,
    parse_manifest,
)
from registry import keys as redis_keys
from registry.errors import StaleManifestError
from registry.redis_server import EmbeddedRedis, connect
from registry.transfer import export_store, import_store
from tests.conftest import free_port, manifest_data

pytestmark = pytest.mark.slow
ADMIN = "admin-secret"


def publish(registry: Registry, version: str, principal: Principal | None = None, **fields):  # type: ignore[no-untyped-def]
    return registry.publish(parse_manifest(manifest_data(version=version, **fields)), principal)


def test_first_publisher_owns_the_name(registry: Registry) -> None:
    with pytest.raises(AuthenticationError, match="needs a token"):
        publish(registry, "1.0.0", Principal())
    publish(registry, "1.0.0")
    assert registry.owner("demo") == "tests"
    with pytest.raises(AuthenticationError, match="needs a token"):
        publish(registry, "1.1.0", Principal())
    other = registry.principal(registry.tokens.create("mallory"), ADMIN)
    with pytest.raises(PermissionDeniedError, match="belongs to 'mallory'"):
        publish(registry, "1.1.0", other)
    owner = registry.principal(registry.tokens.create("tests"), ADMIN)
    publish(registry, "1.1.0", owner)
    admin = registry.principal(ADMIN, ADMIN)
    publish(registry, "1.2.0", admin)
    with pytest.raises(ConflictError, match="owned by 'tests'"):
        publish(registry, "1.3.0", admin, owner="someone-else")
    assert registry.versions("demo") == ["1.0.0", "1.1.0", "1.2.0"]


def test_refused_publish_writes_nothing(registry: Registry) -> None:
    publish(registry, "1.0.0")
    before = sorted(registry.client.keys("*"))
    with pytest.raises(AuthenticationError):
        publish(registry, "2.0.0", Principal())
    with pytest.raises(PermissionDeniedError, match="not valid"):
        registry.principal("msh_forged", ADMIN)
    assert sorted(registry.client.keys("*")) == before


def test_tokens_are_stored_only_as_hashes(registry: Registry) -> None:
    token = registry.tokens.create("alice")
    stored = registry.client.hgetall(redis_keys.TOKENS)
    assert token not in str(stored)
    assert list(stored.values()) == ["alice"]
    assert registry.principal(token, None).owner == "alice"


def test_operator_actions_need_the_admin_token_when_configured(registry: Registry) -> None:
    publish(registry, "1.0.0")
    owner = registry.principal(registry.tokens.create("tests"), ADMIN)
    with pytest.raises(PermissionDeniedError, match="admin token"):
        registry.install("demo", "latest", owner)
    registry.install("demo", "latest", registry.principal(ADMIN, ADMIN))
    # no token is anonymous, whatever the settings: nothing is open by default
    for settings_token in (ADMIN, None):
        with pytest.raises(AuthenticationError, match="admin token"):
            registry.install("demo", "latest", registry.principal(None, settings_token))
        with pytest.raises(AuthenticationError, match="admin token"):
            registry.uninstall("demo", registry.principal(None, settings_token))
        with pytest.raises(AuthenticationError, match="admin token"):
            registry.scale("demo", 0, 2, registry.principal(None, settings_token))


def test_publishing_is_not_installing(registry: Registry) -> None:
    owner = registry.principal(registry.tokens.create("tests"), ADMIN)
    admin = registry.principal(ADMIN, ADMIN)
    publish(registry, "1.0.0", owner)
    other = parse_manifest(manifest_data(version="1.0.0", name="other"))
    registry.publish(other, owner, install=True)
    assert registry.install_states() == {}, "an owner's publish never installs"
    registry.install("demo", "latest", admin)
    publish(registry, "1.1.0", owner, scaling={"min_replicas": 4, "max_replicas": 4})
    assert registry.installed()["demo"].version == "1.0.0", "an owner's version waits"
    registry.install("demo", "latest", admin)
    assert registry.installed()["demo"].version == "1.1.0", "until the operator installs it"
    publish(registry, "1.2.0", admin)
    assert registry.installed()["demo"].version == "1.2.0", "the operator's publish rolls"
    third = parse_manifest(manifest_data(version="1.0.0", name="third"))
    registry.publish(third, admin, install=True)
    assert set(registry.install_states()) == {"demo", "third"}
    with pytest.raises(ConflictError, match="uninstalls it first"):
        registry.delete("demo", owner)
    registry.delete("other", owner)  # not installed: the owner's to delete


def test_latest_pin_follows_publishes_and_exact_pin_stays(registry: Registry) -> None:
    admin = Principal(admin=True, operator=True)
    publish(registry, "1.0.0")
    registry.install("demo")
    publish(registry, "1.1.0", admin)
    assert registry.installed()["demo"].version == "1.1.0"
    registry.install("demo", "1.0.0")
    publish(registry, "1.2.0", admin)
    assert registry.installed()["demo"].version == "1.0.0"
    assert registry.install_states()["demo"].pin == "1.0.0"


def test_deprecate_and_yank(registry: Registry) -> None:
    admin = Principal(admin=True, operator=True)
    publish(registry, "1.0.0")
    publish(registry, "1.1.0", admin)
    registry.install("demo")  # 1.1.0
    registry.deprecate("demo", None, "use demo2", admin)
    assert registry.info("demo").deprecation == "use demo2"
    registry.yank("demo", "1.1.0", "broken weights", admin)
    assert registry.installed()["demo"].version == "1.1.0", "a running yanked version stays"
    with pytest.raises(ConflictError, match="yanked"):
        registry.install("demo", "1.1.0")
    assert registry.install("demo").version == "1.0.0", "latest skips yanked versions"
    with pytest.raises(AuthenticationError):
        registry.yank("demo", "1.0.0", "nope", Principal())
    kinds = [event.kind for event in registry.events()]
    assert {"deprecate", "yank"} <= set(kinds)


def test_delete_removes_everything(registry: Registry) -> None:
    admin = Principal(admin=True, operator=True)
    publish(registry, "1.0.0")
    registry.install("demo")
    registry.stats.record("demo", routed=True, latency_ms=5, error=False, response_id="r1")
    with pytest.raises(AuthenticationError):
        registry.delete("demo", Principal())
    registry.delete("demo", admin)
    assert registry.names() == []
    assert registry.installed() == {}
    assert [k for k in registry.client.keys("mesh:*") if "demo" in k and "response" not in k] == []
    with pytest.raises(NotFoundError):
        registry.get("demo")


def test_filters(registry: Registry) -> None:
    publish(registry, "1.0.0", tags=["a"])
    registry.publish(parse_manifest(manifest_data(name="other", owner="bob", tags=["b"])))
    assert [m.name for m in registry.latest(tag="a")] == ["demo"]
    assert [m.name for m in registry.latest(owner="bob")] == ["other"]
    assert len(registry.latest()) == 2


def test_usage_stats_and_feedback(registry: Registry) -> None:
    publish(registry, "1.0.0")
    for ms, routed in ((10, True), (30, False), (20, True)):
        registry.stats.record(
            "demo", routed=routed, latency_ms=ms, error=False, response_id=f"id{ms}"
        )
    registry.stats.record("demo", routed=True, latency_ms=99, error=True, response_id=None)
    assert registry.stats.feedback("id10", "up") == "demo"
    registry.stats.feedback("id30", "down")
    stats = registry.stats.get("demo")
    assert (stats.requests, stats.routed, stats.pinned, stats.errors) == (4, 3, 1, 1)
    assert (stats.thumbs_up, stats.thumbs_down, stats.p50_ms) == (1, 1, 20.0)
    with pytest.raises(NotFoundError):
        registry.stats.feedback("unknown", "up")


def test_export_import_round_trip(registry: Registry, tmp_path: Path) -> None:
    admin = Principal(admin=True, operator=True)
    publish(registry, "1.0.0", card="# Demo")
    publish(registry, "1.1.0", admin)
    registry.install("demo", "1.0.0")
    registry.deprecate("demo", "1.0.0", "old", admin)
    token = registry.tokens.create("tests")
    registry.stats.record("demo", routed=True, latency_ms=12, error=False, response_id=None)
    exported = export_store(registry).model_dump(mode="json")

    with EmbeddedRedis(tmp_path / "other", port=free_port()) as other_server:
        other = Registry.from_url(other_server.url)
        assert import_store(other, exported) == 1
        again = export_store(other).model_dump(mode="json")
        exported.pop("exported_at"), again.pop("exported_at")
        assert again == exported
        assert other.installed()["demo"].version == "1.0.0"
        assert other.principal(token, None).owner == "tests"
        with pytest.raises(ConflictError, match="not empty"):
            import_store(other, exported | {"exported_at": 0})


def test_a_manifest_stored_under_older_rules_is_refused_alone(registry: Registry) -> None:
    """A version published before a rule tightened (a tool as a module path) is a clear 409
    where asked for, and skipped in listings, so it cannot hide or stop the rest."""
    publish(registry, "1.0.0")
    registry.install("demo")
    old = manifest_data("oldtool", model={"engine": "tool", "source": "os:system"})
    registry.client.set(redis_keys.manifest("oldtool", "0.1.0"), json.dumps(old))
    registry.client.zadd(redis_keys.versions("oldtool"), {"0.1.0": 1.0})
    registry.client.sadd(redis_keys.SPECIALISTS, "oldtool")
    registry.client.hset(
        redis_keys.INSTALLED, "oldtool", json.dumps({"pin": "latest", "version": "0.1.0"})
    )
    with pytest.raises(StaleManifestError, match="older rules") as refused:
        registry.get("oldtool")
    assert refused.value.status_code == 409 and "os:system" not in refused.value.message
    assert [m.name for m in registry.latest()] == ["demo"]
    assert list(registry.installed()) == ["demo"]


def test_kill_9_during_a_burst_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    """Acknowledged publishes survive kill -9 (AOF written before the reply); none is partial."""
    server = EmbeddedRedis(tmp_path, port=free_port())
    registry = Registry.from_url(server.start())
    admin = Principal(admin=True, operator=True)
    acknowledged: list[str] = []
    enough = threading.Event()

    def burst() -> None:
        for i in range(10_000):
            version = f"1.0.{i}"
            try:
                registry.publish(parse_manifest(manifest_data(version=version)), admin)
            except Exception:
                return
            acknowledged.append(version)
            if len(acknowledged) == 50:
                enough.set()

    writer = threading.Thread(target=burst)
    writer.start()
    assert enough.wait(60)
    process = server._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    writer.join(30)
    process.wait()

    registry = Registry.from_url(server.restart())
    try:
        stored = set(registry.versions("demo"))
        assert set(acknowledged) <= stored
        client = connect(server.url)
        manifest_keys = {k.rsplit(":", 1)[1] for k in client.keys("mesh:specialist:demo:1.*")}
        assert manifest_keys == stored, "every version has its manifest and vice versa"
        assert len(client.xrange(redis_keys.EVENTS)) == len(stored)
    finally:
        server.stop()
