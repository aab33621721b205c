"""The store over HTTP on the running mesh: rules, live install/upgrade/uninstall, stats, faults."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from typer.testing import CliRunner

from mesh.cli import app
from tests.conftest import manifest_data
from tests.integration.conftest import ADMIN_TOKEN, RunningMesh, get_json, owner_token, wait_for

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def tiny_manifest(source: str, version: str) -> dict:
    return manifest_data(
        name="tiny",
        version=version,
        owner="tiny-team",
        description="A tiny random model used to test the store.",
        model={"source": source},
        resources={"num_cpus": 0.05},
        generation={"max_tokens": 8},
    )


@pytest.fixture(scope="module")
def tiny_source(mesh: RunningMesh, tiny_model_dir: Path) -> str:
    """The tiny model uploaded into the store's artifact area over HTTP, as a publisher would."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for file in sorted(tiny_model_dir.iterdir()):
            tar.add(file, arcname=file.name)
    url = f"{mesh.base_url}/v1/artifacts"
    body = archive.getvalue()
    headers = {"Content-Type": "application/gzip"}
    assert httpx.post(url, content=body, headers=headers, timeout=120).status_code == 401
    uploaded = httpx.post(url, content=body, headers={**headers, **ADMIN}, timeout=120)
    assert uploaded.status_code == 201, uploaded.text
    return str(uploaded.json()["artifact"])


def live_versions(mesh: RunningMesh) -> dict[str, str]:
    models = get_json(f"{mesh.base_url}/v1/models")["data"]
    return {m["id"]: m.get("version", "") for m in models}


def admin_health(mesh: RunningMesh) -> dict:
    """/healthz as the operator sees it: replica details are for the admin token only."""
    return dict(httpx.get(f"{mesh.base_url}/healthz", headers=ADMIN, timeout=30).json())


def replica_actors(mesh: RunningMesh) -> dict[str, list[str]]:
    specialists = admin_health(mesh)["specialists"]
    return {
        name: sorted(r["actor_id"] for r in state["replicas"])
        for name, state in specialists.items()
        if name in ("general", "code", "writing")
    }


def test_browse_and_search_the_store(mesh: RunningMesh) -> None:
    listing = get_json(f"{mesh.base_url}/v1/specialists")["data"]
    by_name = {card["name"]: card for card in listing}
    assert {"general", "code", "writing"} <= set(by_name)
    assert by_name["code"]["installed"] == "0.5.0" and by_name["code"]["live"]
    found = get_json(f"{mesh.base_url}/v1/specialists?q=fix my python bug")["data"]
    assert found[0]["name"] == "code"
    detail = get_json(f"{mesh.base_url}/v1/specialists/code")
    assert detail["versions"] == ["0.5.0"]
    assert detail["card"].startswith("# code")
    sha = detail["manifest"]["model"]["sha256"]
    assert list(sha) == ["SmolLM2-135M-Instruct.Q4_1.gguf"], "catalog weights pinned at publish"
    missing = httpx.get(f"{mesh.base_url}/v1/specialists/nobody", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_publish_upgrade_uninstall_install_live(mesh: RunningMesh, tiny_source: str) -> None:
    url = f"{mesh.base_url}/v1/specialists"
    actors_before = replica_actors(mesh)

    anonymous = httpx.post(url, json=tiny_manifest(tiny_source, "0.1.0"), timeout=60)
    assert anonymous.status_code == 401, anonymous.text
    created = httpx.post(url, json=tiny_manifest(tiny_source, "0.1.0"), headers=ADMIN, timeout=60)
    assert created.status_code == 201, created.text
    assert created.json()["installed"] is True, "the operator's publish installs"
    wait_for(lambda: live_versions(mesh).get("tiny") == "0.1.0", 180, "tiny 0.1.0 live")

    refused = httpx.post(url, json=tiny_manifest(tiny_source, "0.2.0"), timeout=60)
    assert refused.status_code == 401, refused.text
    wrong = httpx.post(
        url,
        json=tiny_manifest(tiny_source, "0.2.0"),
        timeout=60,
        headers={"Authorization": "Bearer msh_not_a_token"},
    )
    assert wrong.status_code == 403
    bad = httpx.post(
        url, json={**tiny_manifest(tiny_source, "0.2.0"), "colour": 1}, headers=ADMIN, timeout=60
    )
    assert bad.status_code == 400 and "colour: unknown field" in bad.json()["error"]["message"]
    assert get_json(f"{url}/tiny")["versions"] == ["0.1.0"], "refusals wrote nothing"

    token = owner_token(mesh, "tiny-team")
    upgrade = httpx.post(
        url,
        content=yaml.safe_dump(tiny_manifest(tiny_source, "0.2.0")),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
        timeout=60,
    )
    assert upgrade.status_code == 201, upgrade.text
    assert upgrade.json()["installed"] is False
    time.sleep(3)
    assert live_versions(mesh).get("tiny") == "0.1.0", "an owner's new version waits"
    owner_install = httpx.post(
        f"{url}/tiny/install", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert owner_install.status_code == 403, "installing is the operator's"
    rolled = httpx.post(f"{url}/tiny/install", json={}, headers=ADMIN, timeout=30)
    assert rolled.status_code == 200 and rolled.json()["version"] == "0.2.0", rolled.text
    wait_for(lambda: live_versions(mesh).get("tiny") == "0.2.0", 180, "tiny rolled to 0.2.0")
    duplicate = httpx.post(
        url,
        json=tiny_manifest(tiny_source, "0.2.0"),
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert duplicate.status_code == 409

    owner_only = httpx.delete(f"{url}/tiny/install", headers={"Authorization": f"Bearer {token}"})
    assert owner_only.status_code == 403, "uninstall is an operator action"
    admin = ADMIN
    assert httpx.delete(f"{url}/tiny/install", headers=admin, timeout=30).status_code == 200
    wait_for(lambda: "tiny" not in live_versions(mesh), 120, "tiny removed")
    installed = httpx.post(
        f"{url}/tiny/install", json={"version": "0.1.0"}, headers=admin, timeout=30
    )
    assert installed.status_code == 200, installed.text
    wait_for(lambda: live_versions(mesh).get("tiny") == "0.1.0", 180, "tiny 0.1.0 back")
    answer = httpx.post(
        f"{mesh.base_url}/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["mesh"]["version"] == "0.1.0"

    assert replica_actors(mesh) == actors_before, "other specialists were not restarted"


def test_scale_changes_one_specialist_live(mesh: RunningMesh) -> None:
    actors_before = replica_actors(mesh)
    url = f"{mesh.base_url}/v1/specialists/math/scale"
    assert httpx.post(url, json={"replicas": 2}, timeout=30).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bad = httpx.post(url, json={"min_replicas": 3}, headers=admin, timeout=30)
    assert bad.status_code == 400

    def running_replicas() -> int:
        state = admin_health(mesh)["specialists"]["math"]
        return sum(r["state"] == "RUNNING" for r in state["replicas"])

    assert httpx.post(url, json={"replicas": 2}, headers=admin, timeout=30).status_code == 200
    wait_for(lambda: running_replicas() == 2, 120, "math at 2 replicas")
    result = CliRunner().invoke(
        app, ["scale", "math", "--replicas", "1", "--token", ADMIN_TOKEN], env=mesh.env
    )
    assert result.exit_code == 0, result.output
    wait_for(lambda: running_replicas() == 1, 120, "math back at 1 replica")
    status = CliRunner().invoke(app, ["status"], env=mesh.env)
    assert status.exit_code == 0 and "math" in status.stdout and "RUNNING" in status.stdout
    assert replica_actors(mesh) == actors_before, "other specialists untouched"


def test_usage_stats_and_feedback(mesh: RunningMesh) -> None:
    reply = httpx.post(
        f"{mesh.base_url}/v1/chat/completions",
        json={
            "model": "writing",
            "messages": [{"role": "user", "content": "A title?"}],
            "max_tokens": 8,
        },
        timeout=120,
    ).json()
    rated = httpx.post(f"{mesh.base_url}/v1/feedback", json={"id": reply["id"], "rating": "up"})
    assert rated.status_code == 200 and rated.json()["specialist"] == "writing"

    def stats() -> dict:
        return dict(get_json(f"{mesh.base_url}/v1/specialists/writing")["stats"])

    recorded = wait_for(lambda: stats() if stats()["pinned"] >= 1 else None, 30, "stats")
    assert recorded["thumbs_up"] >= 1 and recorded["p50_ms"] > 0
    unknown = httpx.post(f"{mesh.base_url}/v1/feedback", json={"id": "nope", "rating": "down"})
    assert unknown.status_code == 404


def test_deprecate_yank_delete_over_http(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/specialists/tiny"
    owner = {"Authorization": f"Bearer {owner_token(mesh, 'tiny-team')}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    anonymous = httpx.post(f"{url}/deprecate", json={"reason": "old"}, timeout=30)
    assert anonymous.status_code == 401
    deprecated = httpx.post(f"{url}/deprecate", json={"reason": "use tiny2"}, headers=owner)
    assert deprecated.status_code == 200, deprecated.text
    assert get_json(url)["deprecated"] == "use tiny2"

    yanked = httpx.post(f"{url}/yank", json={"version": "0.2.0", "reason": "bad"}, headers=owner)
    assert yanked.status_code == 200, yanked.text
    refused = httpx.post(f"{url}/install", json={"version": "0.2.0"}, headers=admin, timeout=30)
    assert refused.status_code == 409 and "yanked" in refused.json()["error"]["message"]
    assert get_json(url)["yanked_versions"] == {"0.2.0": "bad"}

    assert httpx.delete(url, timeout=30).status_code == 401
    installed = httpx.delete(url, headers=owner, timeout=30)
    assert installed.status_code == 409, "an owner cannot take a specialist out of the mesh"
    assert httpx.delete(url, headers=admin, timeout=30).status_code == 200
    assert httpx.get(url, timeout=30).status_code == 404
    wait_for(lambda: "tiny" not in live_versions(mesh), 120, "deleted tiny to leave the mesh")


def test_mesh_serves_while_redis_is_down_and_recovers(mesh: RunningMesh, tiny_source: str) -> None:
    client = redis.Redis(unix_socket_path=str(mesh.home / "redis.sock"))
    pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    answer = httpx.post(
        f"{mesh.base_url}/v1/chat/completions",
        json={
            "model": "mesh",
            "messages": [{"role": "user", "content": "Write a poem"}],
            "max_tokens": 4,
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    publish = httpx.post(
        f"{mesh.base_url}/v1/specialists",
        json=tiny_manifest(tiny_source, "0.3.0"),
        headers=ADMIN,
        timeout=30,
    )
    assert time.monotonic() - killed_at < 8, "checked while Redis was still down"
    assert publish.status_code == 503, publish.text
    assert "cannot reach Redis" in publish.json()["error"]["message"]
    assert publish.headers.get("retry-after")

    def store_back() -> bool:
        return httpx.get(f"{mesh.base_url}/v1/specialists", timeout=30).status_code == 200

    wait_for(store_back, 60, "the store to come back")
    names = {card["name"] for card in get_json(f"{mesh.base_url}/v1/specialists")["data"]}
    assert {"general", "code", "writing"} <= names, "AOF restored every version"
