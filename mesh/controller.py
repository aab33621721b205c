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

from registry import Registry, RegistryUnavailableError, SpecialistManifest
from specialists.deployment import app_name, build_specialist_app

logger = logging.getLogger("ray.serve")
RESYNC_EVERY_S = 5.0
EVENT_BLOCK_MS = 1000


class ReplicaInfo(BaseModel):
    replica_id: str
    state: str
    actor_id: str | None = None
    node_id: str | None = None
    pid: int | None = None


class SpecialistState(BaseModel):
    name: str
    version: str
    status: str  # DEPLOYING | RUNNING | DEPLOY_FAILED | UNHEALTHY | ...
    message: str = ""
    replicas: list[ReplicaInfo] = []


class LiveView(BaseModel):
    """What the gateway and router need: the live manifests, stamped with a generation."""

    generation: int
    specialists: dict[str, SpecialistManifest]


class MeshController:
    def __init__(self, redis_url: str) -> None:
        self.registry = Registry.from_url(redis_url)
        self.deployed: dict[str, SpecialistManifest] = {}
        self.states: dict[str, SpecialistState] = {}
        self.live: dict[str, SpecialistManifest] = {}
        self.generation = 0
        self.synced_once = False
        self.registry_error: str | None = None
        self._task = asyncio.get_event_loop().create_task(self._follow())

    # -- API for the other deployments ----------------------------------------------------
    def live_generation(self) -> int:
        return self.generation

    def live_view(self) -> LiveView:
        return LiveView(generation=self.generation, specialists=dict(self.live))

    def status(self) -> dict[str, Any]:
        installed_pending = [n for n in self.deployed if n not in self.live]
        return {
            "ready": self.synced_once and not installed_pending,
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
        for name, manifest in desired.items():
            if self.deployed.get(name) != manifest:
                logger.info("deploying %s", manifest.ref)
                await asyncio.to_thread(_deploy, manifest)
                self.deployed[name] = manifest
        for name in [n for n in self.deployed if n not in desired]:
            logger.info("removing %s", name)
            await asyncio.to_thread(_delete, name)
            del self.deployed[name]
        await self._refresh_states()
        self.synced_once = True

    async def _refresh_states(self) -> None:
        from ray import serve

        applications = (await asyncio.to_thread(serve.status)).applications
        replicas = await asyncio.to_thread(_replica_details)
        states: dict[str, SpecialistState] = {}
        for name, manifest in self.deployed.items():
            app = applications.get(app_name(name))
            status = str(getattr(app.status, "value", app.status)) if app else "NOT_STARTED"
            states[name] = SpecialistState(
                name=name,
                version=manifest.version,
                status=status,
                message=(app.message if app else "")[:2000],
                replicas=replicas.get(app_name(name), []),
            )
        live = {
            name: self.deployed[name] for name, state in states.items() if state.status == "RUNNING"
        }
        self.states = states
        if live != self.live:
            self.live = live
            self.generation += 1


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


def _deploy(manifest: SpecialistManifest) -> None:
    """Submit (or update) the specialist's app and return at once; readiness is polled."""
    from ray import serve

    target = serve.RunTarget(
        target=build_specialist_app(manifest), name=app_name(manifest.name), route_prefix=None
    )
    serve.run_many(
        [target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
    )


def _delete(name: str) -> None:
    from ray import serve

    serve.delete(app_name(name), _blocking=False)
