"""One real mesh for the whole session: `mesh up` in a subprocess, on a free port."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.launcher import MeshProcess, free_port, running_mesh
from registry.redis_server import EmbeddedRedis
from specialists.sources import SourceOptions
from tests.conftest import seed_onnx_cache

STARTUP_TIMEOUT_S = 900
ADMIN_TOKEN = "test-admin-token"
REDIS_RESTART_DELAY_S = 8


RunningMesh = MeshProcess


@pytest.fixture(scope="session")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, engine_plugin: Path, onnx_cache: Path
) -> Iterator[RunningMesh]:
    home: Path = tmp_path_factory.mktemp("mesh-home")
    seed_onnx_cache(onnx_cache, home / "artifacts")
    env = {
        # A third-party engine package installed beside the mesh (see `engine_plugin`).
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(engine_plugin), os.environ.get("PYTHONPATH")])
        ),
        "MESH_ADMIN_TOKEN": ADMIN_TOKEN,
        "MESH_REDIS_RESTART_DELAY_S": str(REDIS_RESTART_DELAY_S),
        # The tests add a dozen small specialists to the catalog's six (and the adapters' pool):
        # more than 2 logical CPUs of replica reservations. Logical CPUs are Ray's scheduling
        # budget, not cores, so the test mesh declares 4 on this 2-core machine.
        "MESH_RAY_NUM_CPUS": "4",
    }
    try:
        with running_mesh(home, env=env, timeout_s=STARTUP_TIMEOUT_S) as process:
            yield process
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourceOptions]:
    """A real Redis for `artifact:` sources, and a replica's cache folder."""
    root = tmp_path_factory.mktemp("artifacts")
    with EmbeddedRedis(root / "redis", port=free_port()) as server:
        yield SourceOptions(redis_url=server.url, cache_dir=str(root / "cache"))


def upload(options: SourceOptions, folder: Path) -> str:
    """What `mesh register` does with a local path: upload it, name it `artifact:<id>`."""
    return "artifact:" + options.store().upload_dir(folder)


def owner_token(mesh: MeshProcess, owner: str) -> str:
    """A store token for `owner`, issued the way an operator does: `mesh token create`."""
    from typer.testing import CliRunner

    from mesh.cli import app

    result = CliRunner().invoke(
        app, ["token", "create", "--owner", owner, "--json", "--token", ADMIN_TOKEN], env=mesh.env
    )
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["token"])


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def get_json(url: str) -> dict:
    return dict(httpx.get(url, timeout=30).json())
