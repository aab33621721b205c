"""`mesh finetune` on the real offline base, end to end: the loss falls, the held-out score beats
the base's with the same prompt, the card holds the provenance, `mesh register DIR` publishes
the folder, the adapter is served from the shared-base pool, and a routed query reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mesh.cli import app
from specialists.training.records import file_sha256
from tests.integration.conftest import ADMIN_TOKEN, RunningMesh, wait_for

pytestmark = pytest.mark.slow

SYSTEM = "You describe pirate ships."
SHIPS = ["Black Gull", "Sea Wolf", "Iron Maiden", "Red Tide", "Storm Crow", "Salt Queen"]
HELD_OUT = ["Grey Lantern", "Night Heron"]


def _rows(names: list[str]) -> str:
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Describe the pirate ship {name}."},
                {"role": "assistant", "content": f"Arr! The {name} be the fastest ship afloat!"},
            ]
        }
        for name in names
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.timeout(900)
def test_finetune_register_route(mesh: RunningMesh, tmp_path: Path) -> None:
    data, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    data.write_text(_rows(SHIPS * 2))
    held_out.write_text(_rows(HELD_OUT))
    out = tmp_path / "pirate"
    args = ["finetune", "--data", str(data), "--eval", str(held_out), "--metric", "exact"]
    args += ["--out", str(out), "--steps", "12", "--batch-size", "4", "--lr", "3e-3"]
    args += ["--threads", "1", "--name", "pirate", "--owner", "crew"]
    args += ["--description", "Describes pirate ships in pirate speech."]
    result = CliRunner().invoke(app, args, env=mesh.env)
    assert result.exit_code == 0, result.output

    losses = [point["loss"] for point in json.loads((out / "loss.json").read_text())]
    assert len(losses) == 12 and losses[-1] < losses[0] / 2
    provenance = json.loads((out / "training.json").read_text())
    evaluation = provenance["evaluation"]
    assert evaluation["n"] == 2 and evaluation["finetuned"] > evaluation["base"]
    card = (out / "card.md").read_text()
    assert file_sha256(data) in card and "SmolLM2" in card and "exact" in card

    result = CliRunner().invoke(app, ["register", str(out)], env=mesh.env)
    assert result.exit_code == 0, result.output
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def running() -> dict | None:
        body = httpx.get(f"{mesh.base_url}/healthz", headers=admin, timeout=30).json()
        state = body["specialists"].get("pirate")
        return state if state and state["status"] == "RUNNING" else None

    state = wait_for(running, timeout_s=300, what="pirate to go live")
    assert state["pool"] and state["pool"].startswith("base-"), state

    def routable() -> bool:  # the gateway's live view (what routing indexes) has caught up
        models = httpx.get(f"{mesh.base_url}/v1/models", timeout=30).json()["data"]
        return "pirate" in {m["id"] for m in models}

    wait_for(routable, timeout_s=120, what="pirate in the gateway's live view")
    completion = httpx.post(
        f"{mesh.base_url}/v1/chat/completions",
        json={
            "model": "mesh",
            "messages": [{"role": "user", "content": "Describe the pirate ship Black Gull."}],
            "max_tokens": 24,
            "temperature": 0.0,
        },
        timeout=300,
    ).json()
    assert completion["mesh"]["specialist"] == "pirate", completion["mesh"]["decision"]
    assert completion["choices"][0]["message"]["content"].startswith("Arr!")

    # `mesh eval NAME` scores the installed specialist through the mesh, its base offline.
    args = ["eval", "pirate", "--data", str(held_out), "--metric", "exact", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--max-tokens", "24", "--json"], env=mesh.env)
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout[result.stdout.index("{") :])
    assert scored["n"] == 2 and scored["specialist_score"] > scored["base"], scored

    deleted = httpx.delete(f"{mesh.base_url}/v1/specialists/pirate", headers=admin, timeout=60)
    assert deleted.status_code in (200, 409), deleted.text
