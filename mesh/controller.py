"""`MeshController`: makes the running mesh follow the registry's install state, live.

It follows the `mesh:events` stream (and re-checks periodically), deploys one Serve application per
installed specialist, upgrades it when the installed version changes and deletes it on uninstall,
without touching the other specialists. It publishes the set of *live* (RUNNING) specialists with a
generation number; the gateway and router replicas poll that number and refresh when it moves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel

from mesh.health import FAILED_STATUSES
from mesh.settings import MeshSettings
from registry import Registry, RegistryUnavailableError, SpecialistManifest
from registry.errors import MeshError
from router.cluster import AvailabilityState, SpecialistLoad
from specialists.adapter_pool import (
    PoolConfig,
    base_spec,
    build_pool_app,
    pool_app_name,
    pool_configs,
    shares_base,
)
from specialists.deployment import app_name, build_specialist_app, engine_for
from specialists.engine_registry import check_features
from specialists.serve_options import keep_replica_on_loopback
from specialists.sources import SourceOptions

logger = logging.getLogger("ray.serve")
RESYNC_EVERY_S = 5.0
EVENT_BLOCK_MS = 1000
# Serve's deployment message: "... replicas that have taken more than 30s to be scheduled ..."
SLOW_SCHEDULING = "to be scheduled"
# Serve statuses reported as PENDING when replicas wait for resources.
WAITING_STATUSES = ("DEPLOYING", "NOT_STARTED")
# Not live, and not worth waiting for: the mesh is ready without them.
SETTLED_NOT_LIVE = FAILED_STATUSES | {"PENDING"}
_EPSILON = 1e-6  # Ray keeps resources in fixed point
# Serve's replica states, as the routing tie-break and /metrics count them.
REPLICA_STATES = {
    "RUNNING": "running",
    "PENDING_MIGRATION": "running",  # still serving while a node drains
    "STARTING": "starting",
    "RECOVERING": "starting",
    "UPDATING": "starting",
    "STOPPING": "stopping",
}


class ReplicaInfo(BaseModel):
    replica_id: str
    state: str
    actor_id: str | None = None
    node_id: str | None = None
    pid: int | None = None


class SpecialistState(BaseModel):
    name: str
    version: str
    # Serve's application status (DEPLOYING | RUNNING | DEPLOY_FAILED | UNHEALTHY | ...), or
    # PENDING: Serve is still deploying but replicas wait for resources (see `pending`).
    status: str
    message: str = ""
    # Why replicas are not placed, e.g. "waiting for resources: needs GPU 2 per replica; the
    # largest node has GPU 1". Also set (status unchanged) when a running app cannot scale up.
    pending: str | None = None
    replicas: list[ReplicaInfo] = []
    # The shared-base pool app that holds this adapter specialist's weights, and its status.
    pool: str | None = None
    pool_status: str | None = None
    # What a router and an operator need: running, starting, scaled_to_zero, pending, failed.
    availability: AvailabilityState = "starting"


class LiveView(BaseModel):
    """What the gateway and router need: the live manifests, stamped with a generation."""

    generation: int
    specialists: dict[str, SpecialistManifest]


class MeshController:
    def __init__(self, redis_url: str, sources: dict[str, Any] | None = None) -> None:
        keep_replica_on_loopback()
        self.registry = Registry.from_url(redis_url)
        # What replicas need to load weights: this Redis for `artifact:` sources, and the
        # operator's settings (MESH_ALLOW_PICKLE, ...) read here, in the mesh layer.
        self.sources = (
            SourceOptions.model_validate(sources) if sources else source_options(redis_url)
        )
        self.deployed: dict[str, SpecialistManifest] = {}
        self.pools: dict[str, PoolConfig] = {}  # shared-base LoRA pool apps, by app name
        self.states: dict[str, SpecialistState] = {}
        self.loads: dict[str, SpecialistLoad] = {}
        self.live: dict[str, SpecialistManifest] = {}
        self.generation = 0
        self.synced_once = False
        self.registry_error: str | None = None
        # Manifests Serve refused to take (not retried until the manifest changes), and why.
        self.unbuildable: dict[str, SpecialistManifest] = {}
        self.build_errors: dict[str, str] = {}
        self._task = asyncio.get_event_loop().create_task(self._follow())

    # -- API for the other deployments ----------------------------------------------------
    def live_generation(self) -> int:
        return self.generation

    def live_view(self) -> LiveView:
        return LiveView(generation=self.generation, specialists=dict(self.live))

    def cluster_loads(self) -> dict[str, SpecialistLoad]:
        """Each specialist's live state and replicas, as of the last refresh (about 1 s)."""
        return dict(self.loads)

    def status(self) -> dict[str, Any]:
        # A specialist that waits for resources (PENDING) does not hold the mesh back: the
        # rest serves, and status says what it waits for.
        # Neither does one that failed to deploy: the mesh is `degraded` (see mesh.health).
        starting = [
            n
            for n in self.deployed
            if n not in self.live
            and getattr(self.states.get(n), "status", "") not in SETTLED_NOT_LIVE
        ]
        return {
            "ready": self.synced_once and not starting,
            "generation": self.generation,
            "registry_error": self.registry_error,
            "specialists": {n: s.model_dump() for n, s in sorted(self.states.items())},
        }

    async def reconcile_now(self) -> dict[str, Any]:
        await self._reconcile()
        return self.status()

    # -- the loop -------------------------------------------------------------------------
    async def _follow(self) -> None:
        last_event = "$"
        while True:
            try:
                if last_event == "$":
                    last_event = await asyncio.to_thread(self.registry.last_event_id)
                await self._reconcile()
                events = await asyncio.to_thread(
                    self.registry.events, last_event, block_ms=EVENT_BLOCK_MS
                )
                if events:
                    last_event = events[-1].id
                    continue  # reconcile right away
                self.registry_error = None
            except RegistryUnavailableError as error:
                # Keep serving what is deployed; try again shortly.
                self.registry_error = error.message
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("controller loop failed; retrying")
                await asyncio.sleep(RESYNC_EVERY_S)

    async def _reconcile(self) -> None:
        desired = await asyncio.to_thread(self.registry.installed)
        pools = pool_configs(desired.values())
        await self._deploy_pools(pools)  # before the specialists that forward to them
        for name, manifest in desired.items():
            if self.deployed.get(name) != manifest and self.unbuildable.get(name) != manifest:
                await self._deploy_one(manifest)
        self.unbuildable = {n: m for n, m in self.unbuildable.items() if desired.get(n) == m}
        for name in [n for n in self.deployed if n not in desired]:
            logger.info("removing %s", name)
            await asyncio.to_thread(_delete, self.deployed[name])
            del self.deployed[name]
        await self._remove_pools(pools)
        await self._refresh_states()
        self.synced_once = True

    async def _deploy_one(self, manifest: SpecialistManifest) -> None:
        """Submit one specialist; one Serve refuses (a bad option) fails alone, never the loop."""
        logger.info("deploying %s", manifest.ref)
        previous = self.deployed.get(manifest.name)
        stale = backend_app(previous) if previous else None
        try:
            await asyncio.to_thread(_deploy, manifest, self.sources)
            if stale and stale != backend_app(manifest):  # the old engine's backend is unused
                await asyncio.to_thread(_delete_app, stale)
        except Exception as error:
            logger.exception("cannot deploy %s", manifest.ref)
            self.unbuildable[manifest.name] = manifest
            self.deployed.pop(manifest.name, None)
            self.build_errors[manifest.name] = f"Serve refused the deployment: {error}"[:2000]
            return
        self.build_errors.pop(manifest.name, None)
        self.deployed[manifest.name] = manifest

    async def _deploy_pools(self, pools: dict[str, PoolConfig]) -> None:
        for name, config in pools.items():
            if self.pools.get(name) != config:
                logger.info("deploying shared-base pool %s", name)
                try:
                    await asyncio.to_thread(_deploy_pool, name, config, self.sources)
                except Exception:  # its members fail to reach it and show so; the rest go on
                    logger.exception("cannot deploy shared-base pool %s", name)
                    continue
                self.pools[name] = config

    async def _remove_pools(self, pools: dict[str, PoolConfig]) -> None:
        for name in [n for n in self.pools if n not in pools]:
            logger.info("removing shared-base pool %s", name)
            await asyncio.to_thread(_delete_app, name)
            del self.pools[name]

    async def _refresh_states(self) -> None:
        from ray import serve

        applications = (await asyncio.to_thread(serve.status)).applications
        replicas = await asyncio.to_thread(_replica_details)
        nodes: list[dict[str, float]] | None = None
        states: dict[str, SpecialistState] = {}
        loads: dict[str, SpecialistLoad] = {}
        for name, manifest in self.deployed.items():
            app = applications.get(app_name(name))
            status = str(getattr(app.status, "value", app.status)) if app else "NOT_STARTED"
            messages = [app.message] if app and app.message else []
            if app:
                messages += [d.message for d in app.deployments.values() if d.message]
            backend_name = backend_app(manifest)
            if backend_name:  # live only when the engine's backend app runs too
                backend = applications.get(backend_name)
                backend_status = (
                    str(getattr(backend.status, "value", backend.status))
                    if backend
                    else "NOT_STARTED"
                )
                if backend_status != "RUNNING" and status == "RUNNING":
                    status = backend_status
                if backend:
                    messages += [backend.message] if backend.message else []
                    messages += [d.message for d in backend.deployments.values() if d.message]
            pending = None
            mine = replicas.get(app_name(name), [])
            counts = replica_counts(mine)
            # At zero replicas a specialist is RUNNING for Serve: it is `scaled_to_zero`, not
            # pending, even when no node alive now could hold a replica; the first request
            # asks for one, which is what makes a cluster autoscaler add the node.
            slow = any(SLOW_SCHEDULING in m for m in messages)
            if status != "RUNNING" or slow:
                if nodes is None:  # one GCS call per refresh, only when something waits
                    nodes = await asyncio.to_thread(_node_resources)
                pending = pending_reason(manifest, nodes, messages)
                if pending and status in WAITING_STATUSES:
                    status = "PENDING"
            pool = pool_app_name(base_spec(manifest)) if shares_base(manifest) else None
            pool_app = applications.get(pool) if pool else None
            state = availability(status, pending, counts, manifest.scaling.min_replicas)
            loads[name] = SpecialistLoad(
                state=state,
                replicas=counts,
                per_replica=manifest.scaling.max_ongoing_requests,
                note=pending,
            )
            states[name] = SpecialistState(
                name=name,
                version=manifest.version,
                status=status,
                message=" ".join(dict.fromkeys(messages))[:2000],
                pending=pending,
                replicas=mine,
                availability=state,
                pool=pool,
                pool_status=str(getattr(pool_app.status, "value", pool_app.status))
                if pool_app
                else None,
            )
        for name, manifest in self.unbuildable.items():
            states[name] = SpecialistState(
                name=name,
                version=manifest.version,
                status="DEPLOY_FAILED",
                message=self.build_errors.get(name, ""),
                availability="failed",
            )
        live = live_manifests(states, self.deployed, self.live)
        self.states = states
        self.loads = loads
        if live != self.live:
            self.live = live
            self.generation += 1


def live_manifests(
    states: dict[str, SpecialistState],
    deployed: dict[str, SpecialistManifest],
    live: dict[str, SpecialistManifest],
) -> dict[str, SpecialistManifest]:
    """Who serves now, as which manifest: every RUNNING specialist; and one that was live and is
    being updated (Serve says DEPLOYING, or PENDING while the new replica waits for room) stays
    live, as the old version while an old replica still runs, else as the new one its requests
    wait for (Serve replaces a single replica stop-first; the wait is bounded by the request's
    deadline, as a cold start is)."""
    serving = {}
    for name, state in states.items():
        if name not in deployed:
            continue
        if state.status == "RUNNING":
            serving[name] = deployed[name]
        elif name in live and state.status not in FAILED_STATUSES:
            serving[name] = live[name] if state.availability == "running" else deployed[name]
    return serving


def replica_counts(replicas: list[ReplicaInfo]) -> dict[str, int]:
    """Replicas by state (running, starting, stopping); states Serve adds later are left out."""
    counts: dict[str, int] = {}
    for replica in replicas:
        state = REPLICA_STATES.get(replica.state)
        if state is not None:
            counts[state] = counts.get(state, 0) + 1
    return counts


def availability(
    status: str, pending: str | None, counts: dict[str, int], min_replicas: int
) -> AvailabilityState:
    """One word for whether a request sent now is answered, and how soon."""
    if status in FAILED_STATUSES:
        return "failed"
    if counts.get("running"):
        return "running"
    if status == "PENDING" or pending:
        return "pending"
    if status == "RUNNING" and min_replicas == 0 and not counts.get("starting"):
        return "scaled_to_zero"
    return "starting"


def replica_ask(manifest: SpecialistManifest) -> dict[str, float]:
    """The Ray resources one replica asks for (as `build_specialist_app` sets them)."""
    resources = manifest.resources
    ask = {"CPU": resources.num_cpus}
    if resources.num_gpus:
        ask["GPU"] = resources.num_gpus
    if resources.memory:
        ask["memory"] = float(resources.memory)
    return ask


def pending_reason(
    manifest: SpecialistManifest, nodes: list[dict[str, float]], messages: list[str]
) -> str | None:
    """Why a specialist's replicas are not placed, or None when nothing says they wait.

    Two sources: the manifest's per-replica ask compared with each alive node's *total*
    resources (no node could ever hold a replica: known at once, no need to wait for Serve), and
    Serve's own "taken more than 30s to be scheduled" message (the cluster is full for now, or an
    autoscaler is adding nodes).
    """
    ask = replica_ask(manifest)
    if nodes and not any(_fits(ask, node) for node in nodes):
        largest = {key: max(node.get(key, 0.0) for node in nodes) for key in ask}
        short = [key for key in ask if ask[key] > largest[key] + _EPSILON]
        if short:
            needs = ", ".join(_amount(key, ask[key]) for key in short)
            has = ", ".join(_amount(key, largest[key]) for key in short)
            return f"waiting for resources: needs {needs} per replica; the largest node has {has}"
        needs = ", ".join(_amount(key, value) for key, value in ask.items())
        return (
            f"waiting for resources: needs {needs} per replica on one node; "
            "no single node has all of it"
        )
    slow = next((m for m in messages if SLOW_SCHEDULING in m), None)
    if slow is not None:
        return f"waiting for resources: {slow}"
    return None


def _fits(ask: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(key, 0.0) + _EPSILON >= value for key, value in ask.items())


def _amount(key: str, value: float) -> str:
    if key == "memory":
        return f"memory {value / 2**30:.2f} GiB"
    return f"{key} {value:g}"


def _node_resources() -> list[dict[str, float]]:
    """Total resources of each alive Ray node."""
    import ray

    try:
        return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    except Exception:
        logger.debug("node resources unavailable", exc_info=True)
        return []


def _replica_details() -> dict[str, list[ReplicaInfo]]:
    """Replicas per Serve app, with actor and node ids (what `serve status` shows).

    Serve has no public API for replica actor ids; the controller's instance details are what
    its dashboard uses. If that internal call changes, status degrades to app-level states.
    """
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        details = client.get_serve_details() if client is not None else {}
    except Exception:
        logger.debug("replica details unavailable", exc_info=True)
        return {}
    found: dict[str, list[ReplicaInfo]] = {}
    for app, app_details in (details.get("applications") or {}).items():
        for deployment in (app_details.get("deployments") or {}).values():
            for replica in deployment.get("replicas") or []:
                found.setdefault(app, []).append(
                    ReplicaInfo(
                        replica_id=str(replica.get("replica_id")),
                        state=str(getattr(replica.get("state"), "value", replica.get("state"))),
                        actor_id=replica.get("actor_id"),
                        node_id=replica.get("node_id"),
                        pid=replica.get("pid"),
                    )
                )
    return found


def source_options(redis_url: str, settings: MeshSettings | None = None) -> SourceOptions:
    """The operator's loading settings for specialist replicas, from MESH_* settings."""
    settings = settings or MeshSettings()
    return SourceOptions(
        redis_url=redis_url,
        cache_dir=str(settings.artifacts_dir),
        allow_pickle=settings.allow_pickle,
        max_artifact_bytes=settings.max_artifact_bytes,
        engine_threads=settings.engine_threads,
    )


def _deploy(manifest: SpecialistManifest, sources: SourceOptions) -> None:
    """Submit (or update) the specialist's app, and first its engine's backend app if it has
    one (vLLM's LLM server), and return at once; readiness is polled."""
    from ray import serve

    targets = []
    check_features(manifest)
    engine = engine_for(manifest)
    backend = engine.backend_app_name(manifest)
    if backend:
        app = engine.build_backend_app(manifest, sources)
        targets.append(serve.RunTarget(target=app, name=backend, route_prefix=None))
    targets.append(
        serve.RunTarget(
            target=build_specialist_app(manifest, sources),
            name=app_name(manifest.name),
            route_prefix=None,
        )
    )
    serve.run_many(
        targets, wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
    )


def backend_app(manifest: SpecialistManifest) -> str | None:
    """The engine's backend app of a specialist, if its engine has one (never raises: an
    engine that cannot be resolved here has none deployed)."""
    try:
        return engine_for(manifest).backend_app_name(manifest)
    except MeshError:
        return None


def _delete(manifest: SpecialistManifest) -> None:
    _delete_app(app_name(manifest.name))
    backend = backend_app(manifest)
    if backend:
        _delete_app(backend)


def _deploy_pool(name: str, config: PoolConfig, sources: SourceOptions) -> None:
    from ray import serve

    target = serve.RunTarget(target=build_pool_app(config, sources), name=name, route_prefix=None)
    serve.run_many(
        [target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
    )


def _delete_app(name: str) -> None:
    from ray import serve

    serve.delete(name, _blocking=False)
