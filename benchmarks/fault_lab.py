"""A mesh on a simulated Ray cluster that a benchmark (or a test) can hurt on purpose.

`FaultLab` starts `ray.cluster_utils.Cluster` (a head node and one worker node that declares a
GPU: a logical resource, no real GPU), a real redis-server on a TCP port that it owns, and the
real mesh (`mesh up --address`) on both, with the specialists it is given installed. Then it
can do to the running mesh what happens to real ones:

- `kill_replica(name)`: `ray.kill` one replica of a specialist (Serve starts another);
- `replace_worker()`: remove the worker node (`Cluster.remove_node`, as a lost machine) and add
  a fresh one, as a cluster autoscaler would;
- `restart_redis()`: stop the registry's redis-server and start it again on the same port and
  data (AOF persistence);
- `upgrade(name)`: publish and install a new version of a specialist (a rolling update);
and say whether the mesh is healthy again (`healthy`). Used by `benchmarks/load.py --faults`,
`benchmarks/autoscale.py` and the cluster integration tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mesh.launcher import MeshProcess, free_port, running_mesh
from registry import Principal, Registry, SpecialistManifest
from registry.redis_server import EmbeddedRedis
from specialists.catalog import load_catalog

OPERATOR = Principal(admin=True, operator=True)
# Serve reports replicas that wait to be scheduled after 30s by default; shorter here.
SLOW_STARTUP_S = "3"


def catalog_copy(base: str, name: str, **changes: Any) -> SpecialistManifest:
    """A catalog manifest under another name (version 1.0.0), with `changes` applied."""
    manifest = next(m for m in load_catalog() if m.name == base)
    data = manifest.model_dump(mode="json", exclude_none=True)
    data.update(name=name, version="1.0.0", card=None, **changes)
    return SpecialistManifest.model_validate({k: v for k, v in data.items() if v is not None})


def gpu_tool(name: str) -> SpecialistManifest:
    """The `math` tool asking for one GPU per replica: it runs on the worker node only."""
    return catalog_copy(
        "math",
        name,
        resources={"num_cpus": 0.05, "num_gpus": 1},
        scaling={"min_replicas": 1, "max_replicas": 1},
    )


class FaultLab:
    def __init__(
        self,
        home: Path,
        specialists: list[SpecialistManifest],
        *,
        env: dict[str, str] | None = None,
        head_cpus: int = 4,
        worker_cpus: int = 2,
        ready_timeout_s: float = 600,
    ) -> None:
        self.home = home
        self.specialists = specialists
        self.env = env or {}
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.ready_timeout_s = ready_timeout_s
        self.cluster: Any = None
        self.worker: Any = None
        self.redis: EmbeddedRedis | None = None
        self.mesh: MeshProcess | None = None
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FaultLab:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        # Read by the Serve controller, which the head's raylet starts with this environment.
        for variable in (
            "RAY_SERVE_SLOW_STARTUP_WARNING_S",
            "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S",
        ):
            self._stack.callback(_restore, variable, os.environ.get(variable))
            os.environ[variable] = SLOW_STARTUP_S
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": self.head_cpus, "num_gpus": 0, "include_dashboard": False},
        )
        self._stack.callback(self.cluster.shutdown)
        self.worker = self.cluster.add_node(num_cpus=self.worker_cpus, num_gpus=1)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address)  # this process kills replicas through Ray
        self._stack.callback(ray.shutdown)

        # A fresh store each time (a reused `home` keeps only the mesh's caches).
        shutil.rmtree(self.home / "redis", ignore_errors=True)
        self.redis = EmbeddedRedis(self.home / "redis", port=free_port())
        self.redis.start()
        self._stack.callback(self.redis.stop)
        registry = self.registry()
        ours = {manifest.ref for manifest in self.specialists}
        for manifest in load_catalog():  # published, not installed: only ours run
            if manifest.ref not in ours:
                registry.publish(manifest, OPERATOR, install=False)
        for manifest in self.specialists:
            registry.publish(manifest, OPERATOR, install=True)
        self.mesh = self._stack.enter_context(
            running_mesh(
                self.home / "mesh",
                env={"MESH_MAX_INFLIGHT_PER_CLIENT": "64", **self.env},
                ui=False,
                timeout_s=self.ready_timeout_s,
                address=self.cluster.address,
                redis_url=self.redis.url,
            )
        )

    @property
    def base_url(self) -> str:
        assert self.mesh is not None
        return self.mesh.base_url

    def registry(self) -> Registry:
        assert self.redis is not None
        return Registry.from_url(self.redis.url)

    # -- what the operator sees ------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        assert self.mesh is not None
        headers = {"Authorization": f"Bearer {self.mesh.admin_token}"}
        return dict(httpx.get(f"{self.base_url}/healthz", headers=headers, timeout=30).json())

    def running_replicas(self, name: str) -> int:
        state = self.health()["specialists"].get(name) or {}
        return sum(r.get("state") == "RUNNING" for r in state.get("replicas") or [])

    def healthy(self) -> bool:
        """Every installed specialist running, the registry reachable: recovered."""
        try:
            health = self.health()
        except (httpx.HTTPError, ValueError):
            return False
        states = health.get("specialists", {}).values()
        return (
            health.get("status") == "ok"
            and not health.get("registry_error")
            and all(s.get("availability") == "running" for s in states)
        )

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> float | None:
        """Seconds until `predicate` held (polled each 0.5 s), None if it never did."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if predicate():
                return round(time.monotonic() - start, 1)
            time.sleep(0.5)
        return None

    # -- faults ----------------------------------------------------------------------------
    def kill_replica(self, name: str) -> str:
        """Kill one running replica of specialist `name` (no restart); returns its actor name."""
        import ray

        from specialists.deployment import app_name

        prefix = f"SERVE_REPLICA::{app_name(name)}#"
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith(prefix):
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                ray.kill(handle, no_restart=True)
                return str(actor["name"])
        raise LookupError(f"no replica of {name} to kill")

    def replace_worker(self, pause_s: float = 2.0) -> None:
        """The worker node dies; `pause_s` later a fresh one (same shape) joins."""
        self.cluster.remove_node(self.worker, allow_graceful=False)
        time.sleep(pause_s)
        self.worker = self.cluster.add_node(num_cpus=self.worker_cpus, num_gpus=1)
        self.cluster.wait_for_nodes()

    def restart_redis(self, down_s: float = 3.0) -> None:
        """The registry's Redis goes away for `down_s` and comes back with its data."""
        assert self.redis is not None
        self.redis.stop()
        time.sleep(down_s)
        self.redis.start()

    def upgrade(self, name: str) -> str:
        """Publish and install a patch version of `name`; returns the new version."""
        registry = self.registry()
        current = registry.installed()[name]
        major, minor, patch = (int(part) for part in current.version.split(".")[:3])
        version = f"{major}.{minor}.{patch + 1}"
        data = current.model_dump(mode="json", exclude_none=True)
        data.update(version=version, description=f"{current.description} (upgraded)")
        registry.publish(SpecialistManifest.model_validate(data), OPERATOR, install=True)
        return version


def _restore(variable: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = value


@contextlib.contextmanager
def fault_lab(
    home: Path, specialists: list[SpecialistManifest], **options: Any
) -> Iterator[FaultLab]:
    with FaultLab(home, specialists, **options) as lab:
        yield lab
