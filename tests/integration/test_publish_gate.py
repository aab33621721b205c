"""The publish-time quality gate: over HTTP on the running mesh (the router deployment replays),
and through the CLI on a store seeded with the catalog (the CLI replays in its own process)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from mesh.cli import app
from registry import Registry, load_manifest
from tests.conftest import ROOT, manifest_data
from tests.integration.conftest import ADMIN_TOKEN, RunningMesh, get_json, owner_token, wait_for

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OWNER = "gate-tests"
CODE_EXAMPLES = load_manifest(ROOT / "specialists" / "catalog" / "code.yaml").examples


def tool_manifest(name: str, description: str, examples: list[str]) -> dict:
    """A cheap specialist (the math tool) whose examples are what the gate looks at."""
    return manifest_data(
        name=name,
        owner=OWNER,
        description=description,
        examples=examples,
        model={"engine": "tool", "source": "math"},
        resources={"num_cpus": 0.05},
    )


COPYCAT = tool_manifest("gate-copycat", "Programming help.", CODE_EXAMPLES)
NICHE = tool_manifest(
    "gate-gardening",
    "Gardening advice: plants, soil, pests and pruning.",
    [
        "When should I plant tomato seedlings outdoors?",
        "How often should I water succulents?",
        "What is eating the leaves of my roses?",
        "How do I prune an apple tree in winter?",
        "How deep should I plant tulip bulbs?",
    ],
)


def live(mesh: RunningMesh) -> set[str]:
    return {m["id"] for m in get_json(f"{mesh.base_url}/v1/models")["data"]}


def published(mesh: RunningMesh, name: str) -> bool:
    url = f"{mesh.base_url}/v1/specialists/{name}"
    return httpx.get(url, timeout=30).status_code == 200


def test_a_dry_run_reports_the_impact_and_writes_nothing(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/specialists?dry_run=true"
    anonymous = httpx.post(url, json=COPYCAT, timeout=60)
    assert anonymous.status_code == 401, anonymous.text

    checked = httpx.post(url, json=COPYCAT, headers=ADMIN, timeout=120)
    assert checked.status_code == 200, checked.text
    body = checked.json()
    assert body["dry_run"] == "gate-copycat@1.0.0"
    assert body["installs"] is True and body["passes"] is False, "the operator's publish installs"
    assert body["impact"]["worst"] == "code" and body["impact"]["max_share"] > 0.25
    assert body["impact"]["victims"][0]["samples"], "the operator sees which queries"
    assert "`code`" in body["impact"]["summary"] and "force" in body["verdict"]

    token = {"Authorization": f"Bearer {owner_token(mesh, OWNER)}"}
    as_owner = httpx.post(url, json=COPYCAT, headers=token, timeout=120).json()
    assert as_owner["installs"] is False and as_owner["passes"] is True, "an owner's waits"
    assert as_owner["impact"]["worst"] == "code"
    assert as_owner["impact"]["victims"][0]["samples"] == [], "the labelled set is the operator's"
    # Ownership and version are checked before any report, as the publish would.
    theirs = httpx.post(url, json={**COPYCAT, "name": "code"}, headers=token, timeout=60)
    assert theirs.status_code == 403 and "impact" not in theirs.text, theirs.text
    code = get_json(f"{mesh.base_url}/v1/specialists/code")["manifest"]
    again = httpx.post(url, json=code, headers=ADMIN, timeout=60)
    assert again.status_code == 409 and "immutable" in again.text, again.text

    niche = httpx.post(url, json=NICHE, headers=ADMIN, timeout=120).json()
    assert niche["passes"] is True and niche["impact"]["max_share"] <= 0.25, niche
    assert not published(mesh, "gate-copycat") and not published(mesh, "gate-gardening")

    # A publish that installs nothing (an owner's) is not replayed at all.
    waits = httpx.post(url.split("?")[0], json=NICHE, headers=token, timeout=60)
    try:
        assert waits.status_code == 201, waits.text
        assert waits.json()["installed"] is False and waits.json()["impact"] is None
    finally:
        httpx.delete(f"{mesh.base_url}/v1/specialists/gate-gardening", headers=ADMIN, timeout=30)


def test_an_operator_publish_of_a_copycat_needs_force(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/specialists"
    names = ("gate-copycat", "gate-gardening")
    try:
        refused = httpx.post(url, json=COPYCAT, headers=ADMIN, timeout=120)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["type"] == "quality_gate_error" and error["param"] == "force"
        assert "`code`'s labelled queries" in error["message"]
        assert not published(mesh, "gate-copycat"), "a refused publish writes nothing"

        forced = httpx.post(f"{url}?force=true", json=COPYCAT, headers=ADMIN, timeout=120)
        assert forced.status_code == 201, forced.text
        assert forced.json()["installed"] is True
        assert forced.json()["impact"]["worst"] == "code"

        niche = httpx.post(url, json=NICHE, headers=ADMIN, timeout=120)
        assert niche.status_code == 201, niche.text
        assert niche.json()["installed"] is True
        wait_for(lambda: set(names) <= live(mesh), 120, "both live")
    finally:  # leave the shared mesh as it was: `code` answers code questions alone
        for name in names:
            httpx.delete(f"{url}/{name}", headers=ADMIN, timeout=30)
        wait_for(lambda: not set(names) & live(mesh), 120, "both removed")


# -- the CLI, on a store holding the catalog --------------------------------------------------
@pytest.fixture
def cli(redis_url: str, registry: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    for path in sorted((ROOT / "specialists" / "catalog").glob("*.yaml")):
        registry.publish(load_manifest(path), install=True)
    env = {"MESH_REDIS_URL": redis_url, "MESH_HOME": str(tmp_path), "MESH_ADMIN_TOKEN": ADMIN_TOKEN}

    def run(*args: str, **more: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**env, **more})

    return run


def test_register_dry_run_prints_the_report_and_install_needs_force(  # type: ignore[no-untyped-def]
    cli, registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "copycat.yaml"
    path.write_text(yaml.safe_dump(COPYCAT))

    dry = cli("register", str(path), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "takes" in dry.output and "`code`" in dry.output and "--force" in dry.output
    assert "was not published" in dry.output
    refused = cli("register", str(path))
    assert refused.exit_code == 1 and "MESH_GATE_MAX_SHARE" in refused.output
    assert "gate-copycat" not in registry.names(), "dry run and refusal wrote nothing"

    token = json.loads(cli("token", "create", "--owner", OWNER, "--json").stdout)["token"]
    as_owner = cli("register", str(path), "--dry-run", "--token", token)
    assert as_owner.exit_code == 0 and "`code`" in as_owner.output, as_owner.output
    assert "e.g." not in as_owner.output, "a publisher sees no sample queries"
    theirs = tmp_path / "code.yaml"
    theirs.write_text(yaml.safe_dump({**COPYCAT, "name": "code"}))
    refused = cli("register", str(theirs), "--dry-run", "--token", token)
    assert refused.exit_code == 1 and "takes" not in refused.output, "ownership before the report"
    assert cli("register", str(path), "--token", token).exit_code == 0, "an owner's publish waits"
    refused = cli("install", "gate-copycat")
    assert refused.exit_code == 1 and "--force" in refused.output
    assert "gate-copycat" not in registry.install_states()
    forced = cli("install", "gate-copycat", "--force")
    assert forced.exit_code == 0, forced.output
    assert "`code`" in forced.output
    assert registry.install_states()["gate-copycat"].model_dump() == {
        "pin": "latest",
        "version": "1.0.0",
    }, "the version the gate checked, still following new publishes"
