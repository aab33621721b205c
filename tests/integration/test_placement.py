"""GPU placement on a simulated two-node Ray cluster, and pending specialists in `mesh status`.

`ray.cluster_utils.Cluster` starts a head node without GPUs and a worker node that declares one
(a logical resource: no real GPU is needed). The real mesh (`mesh up --address`, its controller,
a real redis-server) runs on that cluster; the specialists are tool specialists (the `math`
engine), so no model weights load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mesh.cli import app
from mesh.controller import pending_reason
from mesh.launcher import MeshProcess, free_port
from registry import Principal, Registry, SpecialistManifest
from specialists.catalog import load_catalog
from tests.integration.conftest import wait_for

ADMIN = Principal(admin=True, operator=True)
# Serve reports replicas that wait to be scheduled after 30s by default; 3s keeps the test short.
SERVE_SLOW_S = "3"


def tool_manifest(
    name: str, num_gpus: float, num_cpus: float = 0.05, memory: int | None = None
) -> SpecialistManifest:
    """The catalog's `math` tool specialist under another name, asking for GPUs."""
    math = next(m for m in load_catalog() if m.name == "math")
    data = math.model_dump(mode="json")
    data.update(name=name, version="1.0.0", card=None)
    data["resources"] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory}
    data["scaling"] = {"min_replicas": 1, "max_replicas": 1}
    return SpecialistManifest.model_validate(data)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """Head node: 2 CPUs, no GPU. Worker node: 1 CPU, 1 (simulated) GPU. Shut down afterwards."""
    from ray.cluster_utils import Cluster

    # Read by the Serve controller, a process the head's raylet starts with this environment.
    monkeypatch.setenv("RAY_SERVE_SLOW_STARTUP_WARNING_S", SERVE_SLOW_S)
    monkeypatch.setenv("RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S", SERVE_SLOW_S)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        worker = cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()


@pytest.fixture
def mesh_on_cluster(
    cluster: tuple[Any, Any], registry: Registry, redis_url: str, tmp_path: Path
) -> Iterator[MeshProcess]:
    """`mesh up --address` joined to the cluster, on the test's Redis, with one GPU specialist.

    The built-in catalog is published but not installed first, so `mesh up` deploys only the
    specialists this test installs (no model weights).
    """
    head, _ = cluster
    for manifest in load_catalog():
        registry.publish(manifest, ADMIN, install=False)
    registry.publish(tool_manifest("gpu-math", 1), ADMIN, install=True)

    home = tmp_path / "mesh-home"
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "MESH_HOME": str(home),
        "MESH_PORT": str(port),
        "MESH_REDIS_URL": redis_url,
        "HF_HUB_OFFLINE": "1",
    }
    log = home / "mesh-up.log"
    command = [sys.executable, "-m", "mesh", "up", "--no-ui", "--address", head.address]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    mesh = MeshProcess(f"http://127.0.0.1:{port}", home, process, log, {})
    try:
        mesh.wait_ready(timeout_s=240)
        yield mesh
    finally:
        mesh.stop(timeout_s=90)


def mesh_status(mesh: MeshProcess, *args: str) -> str:
    """`mesh status` as the operator on this machine: the CLI reads the admin token that
    `mesh up` wrote under MESH_HOME, and so sees replica details (nodes)."""
    env = {"MESH_HOME": str(mesh.home), "MESH_ADMIN_TOKEN": None}
    result = CliRunner().invoke(app, ["status", "--url", mesh.base_url, *args], env=env)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.stdout


def specialist_states(mesh: MeshProcess) -> dict[str, dict[str, Any]]:
    return dict(json.loads(mesh_status(mesh, "--json"))["specialists"])


@pytest.mark.slow
def test_gpu_placement_and_pending_specialists(
    cluster: tuple[Any, Any], mesh_on_cluster: MeshProcess, registry: Registry
) -> None:
    mesh = mesh_on_cluster
    _, worker = cluster

    # A specialist asking for one GPU runs on the worker, the only node that has one.
    state = specialist_states(mesh)["gpu-math"]
    assert state["status"] == "RUNNING", state
    assert state["pending"] is None
    assert [r["node_id"] for r in state["replicas"]] == [worker.node_id], state

    # More GPUs per replica than any node has: PENDING at once, with the reason.
    registry.publish(tool_manifest("big-math", 2), ADMIN, install=True)
    big = wait_for(
        lambda: (s := specialist_states(mesh).get("big-math")) and s["pending"] and s,
        60,
        "big-math to be reported pending",
    )
    assert big["status"] == "PENDING", big
    assert big["pending"] == (
        "waiting for resources: needs GPU 2 per replica; the largest node has GPU 1"
    )
    assert big["replicas"] == [] or all(r["state"] != "RUNNING" for r in big["replicas"])

    # Fits a node, but the only GPU is taken: Serve's "taken more than Ns to be scheduled".
    registry.publish(tool_manifest("busy-math", 1), ADMIN, install=True)
    busy = wait_for(
        lambda: (s := specialist_states(mesh).get("busy-math")) and s["pending"] and s,
        90,
        "busy-math to be reported pending by Serve",
    )
    assert busy["status"] == "PENDING", busy
    assert busy["pending"].startswith("waiting for resources: ")
    assert "to be scheduled" in busy["pending"] and '"GPU": 1' in busy["pending"], busy

    # The text output says the same, and the running specialist is unaffected.
    text = mesh_status(mesh)
    assert "mesh: ok" in text  # what waits for resources does not hold the others back
    big_block = text.split("big-math", 1)[1]
    assert big_block.split()[1] == "PENDING", text
    assert (
        "pending: waiting for resources: needs GPU 2 per replica; the largest node has GPU 1"
        in (text)
    )
    assert "to be scheduled" in text.split("busy-math", 1)[1]

    # A request pinned to it is a 503 that says what it waits for.
    body = {"model": "big-math", "messages": [{"role": "user", "content": "2+2"}]}
    reply = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 503, reply.text
    assert "needs GPU 2 per replica" in reply.json()["error"]["message"]
    states = specialist_states(mesh)
    assert states["gpu-math"]["status"] == "RUNNING"

    # A pending specialist can be removed; freeing the GPU lets the waiting one run (on the
    # worker). Serve takes about 30s to give up on a replica that was never placed, so removing
    # big-math now also keeps the mesh's shutdown short.
    registry.uninstall("big-math", ADMIN)
    registry.uninstall("gpu-math", ADMIN)
    busy = wait_for(
        lambda: (s := specialist_states(mesh).get("busy-math")) and s["status"] == "RUNNING" and s,
        90,
        "busy-math to run once the GPU is free",
    )
    assert busy["pending"] is None
    assert [r["node_id"] for r in busy["replicas"]] == [worker.node_id], busy
    assert set(specialist_states(mesh)) == {"busy-math"}


# -- the reason, without a cluster -------------------------------------------------------
HEAD = {"CPU": 2.0, "memory": 8 * 2**30}
GPU_WORKER = {"CPU": 1.0, "GPU": 1.0, "memory": 4 * 2**30}


def test_pending_reason_names_what_no_node_has() -> None:
    nodes = [HEAD, GPU_WORKER]
    assert pending_reason(tool_manifest("a", 1), nodes, []) is None
    assert pending_reason(tool_manifest("a", 2), nodes, []) == (
        "waiting for resources: needs GPU 2 per replica; the largest node has GPU 1"
    )
    assert pending_reason(tool_manifest("a", 1), [HEAD], []) == (
        "waiting for resources: needs GPU 1 per replica; the largest node has GPU 0"
    )
    # 2 CPUs on the head, a GPU on the worker: never both on one node.
    assert pending_reason(tool_manifest("a", 1, num_cpus=2), nodes, []) == (
        "waiting for resources: needs CPU 2, GPU 1 per replica on one node; "
        "no single node has all of it"
    )
    assert pending_reason(tool_manifest("a", 0, memory=16 * 2**30), nodes, []) == (
        "waiting for resources: needs memory 16.00 GiB per replica; "
        "the largest node has memory 8.00 GiB"
    )


def test_pending_reason_passes_on_serve_scheduling_message() -> None:
    slow = (
        "Deployment 'a' in application 'specialist-a' has 1 replicas that have taken more "
        'than 30s to be scheduled. Resources required for each replica: {"CPU": 0.05, "GPU": 1}'
    )
    nodes = [HEAD, GPU_WORKER]
    assert pending_reason(tool_manifest("a", 1), nodes, ["Deploying app 'a'."]) is None
    assert pending_reason(tool_manifest("a", 1), nodes, [slow]) == (
        f"waiting for resources: {slow}"
    )
