"""Serving under pressure on the running mesh: a full queue is a clean 503, never a hang."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from mesh.cli import app
from tests.conftest import manifest_data
from tests.integration.conftest import RunningMesh, get_json, wait_for

pytestmark = pytest.mark.slow


def test_overload_is_a_clean_503_with_retry_after(
    mesh: RunningMesh, tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "busy.yaml"
    path.write_text(
        yaml.safe_dump(
            manifest_data(
                name="busy",
                description="A tiny model with room for one request at a time.",
                model={"source": str(tiny_model_dir)},
                resources={"num_cpus": 0.05},
                generation={"max_tokens": 200, "temperature": 0.0},
                scaling={"max_ongoing_requests": 1, "max_queued_requests": 1},
            )
        )
    )
    result = CliRunner().invoke(app, ["register", str(path)], env=mesh.env)
    assert result.exit_code == 0, result.output
    wait_for(
        lambda: "busy" in {m["id"] for m in get_json(f"{mesh.base_url}/v1/models")["data"]},
        180,
        "busy live",
    )

    def ask(_: int) -> httpx.Response:
        body = {
            "model": "busy",
            "messages": [{"role": "user", "content": "count"}],
            "max_tokens": 200,
        }
        return httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=120)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(ask, range(10)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    # 429: this one client went past its fair share of the queue (MESH_MAX_INFLIGHT_PER_CLIENT)
    assert set(codes) <= {200, 429, 503}
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers.get("retry-after")
    assert "overloaded" in rejected.json()["error"]["message"]
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.headers.get("retry-after")
