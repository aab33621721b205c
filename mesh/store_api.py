"""The store over HTTP: browse, search, publish, install and rate specialists.

Same rules as the CLI (see `registry.auth`). Write endpoints take the store token (owner or
admin) in `Authorization: Bearer`; read endpoints are guarded by the API keys when configured
(`mesh.http_auth.Gatekeeper`). Publishing never installs, unless the operator publishes; what
installs passes the quality gate first (`mesh.publish_gate`).
The routes are module-level functions on purpose: `@serve.ingress` pickles the gateway's class
routes by value, while these are imported by reference inside the replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from ray.serve.handle import DeploymentHandle

from mesh.http_auth import Gatekeeper
from mesh.live import LiveFollower
from mesh.protocol import ApiBody
from mesh.publish_gate import GateCheck, ImpactRequest, check_gate
from mesh.search import rank, search_texts
from mesh.settings import MeshSettings
from registry import (
    LATEST,
    InvalidRequestError,
    Principal,
    Registry,
    SpecialistInfo,
    SpecialistManifest,
    UnavailableError,
    parse_manifest,
    parse_manifest_text,
)
from registry.artifact_store import ArtifactStore
from registry.artifacts import pin_artifacts
from router.impact import ImpactReport
from specialists.engine_registry import check_publishable

router = APIRouter()

logger = logging.getLogger("ray.serve")


@dataclass
class StoreService:
    """What the store routes need from the gateway replica that hosts them."""

    settings: MeshSettings
    follower: LiveFollower
    router_handle: DeploymentHandle
    registry: Registry | None = None
    gate: Gatekeeper | None = None
    artifact_store: ArtifactStore | None = None

    def store(self) -> Registry:
        if self.registry is None:
            self.registry = Registry.from_url(str(self.settings.redis_url))
        return self.registry

    def artifacts(self) -> ArtifactStore:
        """The store's artifact area (blocking: connects on first use)."""
        if self.artifact_store is None:
            self.artifact_store = ArtifactStore.from_url(
                str(self.settings.redis_url), max_bytes=self.settings.max_artifact_bytes
            )
        return self.artifact_store

    def gatekeeper(self) -> Gatekeeper:
        if self.gate is None:
            self.gate = Gatekeeper(self.settings.api_keys, self.settings.admin_token, self.store)
        return self.gate

    async def call(self, method: Any, *args: Any) -> Any:
        """Run a blocking registry call off the event loop."""
        return await asyncio.to_thread(method, *args)

    async def client(self, authorization: str | None) -> None:
        """Reads: open, or an API key (or store credential) when MESH_API_KEYS is set."""
        await self.gatekeeper().client(authorization)

    async def gate_check(
        self, manifest: SpecialistManifest, principal: Principal, *, installs: bool
    ) -> GateCheck:
        """The quality gate's report for `manifest`, replayed by the router deployment. For
        callers other than the operator only the public labelled queries (the installed
        specialists' examples) and no query texts: the artifact's labelled set is theirs."""
        request = await self.call(
            lambda: ImpactRequest.gather(
                self.store(),
                manifest,
                operator=principal.operator,
                tags=self.settings.router_index_tags,
            )
        )
        report: ImpactReport = await self.router_handle.impact.remote(request)
        return GateCheck(impact=report, installs=installs, max_share=self.settings.gate_max_share)

    async def principal(self, authorization: str | None) -> Principal:
        """Writes: the owner or admin behind the token; anonymous callers are refused by the
        action's own check, with a message naming the token it needs."""
        return await self.gatekeeper().principal(authorization)


_service: StoreService | None = None


def bind(service: StoreService) -> None:
    """Called once by the gateway replica's constructor."""
    global _service
    _service = service


def service() -> StoreService:
    if _service is None:
        raise UnavailableError("the store API is not initialised yet")
    return _service


class InstallRequest(ApiBody):
    version: str = LATEST


class DeprecateRequest(ApiBody):
    version: str | None = None
    reason: str = Field(min_length=1, max_length=500)


class YankRequest(ApiBody):
    version: str
    reason: str = Field("yanked", max_length=500)


class ScaleRequest(ApiBody):
    replicas: int | None = Field(None, ge=0, le=64, description="A fixed replica count.")
    min_replicas: int | None = Field(None, ge=0, le=64)
    max_replicas: int | None = Field(None, ge=1, le=64)

    def bounds(self) -> tuple[int, int]:
        if self.replicas is not None:
            return self.replicas, max(self.replicas, 1)
        if self.min_replicas is None or self.max_replicas is None:
            raise InvalidRequestError("give 'replicas', or both 'min_replicas' and 'max_replicas'")
        return self.min_replicas, self.max_replicas


class FeedbackRequest(ApiBody):
    id: str = Field(description="The `id` of a chat completion.")
    rating: Literal["up", "down"]


def card(info: SpecialistInfo, live: bool, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary the UI shows as a card."""
    manifest = info.manifest
    return {
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "owner": info.owner,
        "tags": manifest.tags,
        "installed": info.installed.version if info.installed else None,
        "live": live,
        "deprecated": info.deprecation,
        "yanked": info.yanked.get(manifest.version),
        "stats": stats,
    }


@router.get("/v1/specialists")
async def list_specialists(
    tag: str | None = None,
    owner: str | None = None,
    q: str | None = Query(None, description="Search by meaning and text."),
    authorization: str | None = Header(None),
) -> dict[str, Any]:
    svc = service()
    await svc.client(authorization)
    store = svc.store()
    manifests = await svc.call(lambda: store.latest(tag=tag, owner=owner))
    order = [m.name for m in manifests]
    scores: dict[str, float] = {}
    if q and q.strip():
        texts = {m.name: search_texts(m) for m in manifests}
        semantic = await svc.router_handle.semantic_scores.remote(q, texts)
        hits = rank(manifests, q, semantic, limit=len(manifests))
        order = [hit.name for hit in hits]
        scores = {hit.name: hit.score for hit in hits}
    live = svc.follower.view.specialists
    data = []
    for name in order:
        info = await svc.call(store.info, name)
        stats = (await svc.call(store.stats.get, name)).model_dump()
        data.append({**card(info, name in live, stats), "score": scores.get(name)})
    return {"object": "list", "data": data}


@router.get("/v1/specialists/{name}")
async def show_specialist(
    name: str, version: str | None = None, authorization: str | None = Header(None)
) -> dict[str, Any]:
    svc = service()
    await svc.client(authorization)
    store = svc.store()
    info = await svc.call(store.info, name, version)
    stats = (await svc.call(store.stats.get, name)).model_dump()
    return {
        **card(info, name in svc.follower.view.specialists, stats),
        "versions": info.versions,
        "deprecations": info.deprecated,
        "yanked_versions": info.yanked,
        "card": info.manifest.card,
        "manifest": info.manifest.model_dump(mode="json"),
    }


def dry_run_answer(manifest: SpecialistManifest, check: GateCheck) -> JSONResponse:
    """A dry run's 200 (the routes answer 201 or 200 otherwise): the gate's check, no write."""
    return JSONResponse({"dry_run": manifest.ref, **check.model_dump(mode="json")})


ForceQuery = Annotated[
    bool, Query(description="Install even when the quality gate refuses (MESH_GATE_MAX_SHARE).")
]
DryRunQuery = Annotated[
    bool, Query(description="Only report the quality gate's impact; nothing is written.")
]


@router.post("/v1/specialists", status_code=201, response_model=None)
async def publish(
    request: Request,
    authorization: str | None = Header(None),
    force: ForceQuery = False,
    dry_run: DryRunQuery = False,
) -> dict[str, Any] | JSONResponse:
    """Publish a manifest sent as JSON, or as YAML with a YAML content type. A publish that
    installs passes the quality gate first; `dry_run` answers with its report (200). Ownership
    and version are checked before any report, and only a dry run or a publish that installs
    is replayed: a publisher's publish does not wait on the router deployment."""
    svc = service()
    principal = await svc.principal(authorization)
    principal.require_publisher("publishing")
    raw = await request.body()  # size capped by the HTTP guard before it is read
    text = raw.decode("utf-8", errors="replace")
    if "yaml" in request.headers.get("content-type", ""):
        manifest = parse_manifest_text(text, source="request body")
    else:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
            raise InvalidRequestError(
                "body is not valid JSON (send YAML as application/yaml)"
            ) from None
        manifest = parse_manifest(data, source="request body")
    check_publishable(manifest)
    store = svc.store()
    await svc.call(store.check_publish, manifest, principal)
    manifest = await svc.call(lambda: pin_artifacts(manifest, svc.artifacts()))
    install = await svc.call(
        lambda: store.publish_installs(manifest.name, principal, install=svc.settings.auto_install)
    )
    impact = None
    if dry_run or install:
        check = await svc.gate_check(manifest, principal, installs=install)
        if dry_run:
            return dry_run_answer(manifest, check)
        check_gate(check.impact, check.max_share, force)
        impact = check.impact.model_dump(mode="json")
    await svc.call(lambda: store.publish(manifest, principal, install=install))
    return {"published": manifest.ref, "installed": install, "impact": impact}


@router.post("/v1/specialists/{name}/install", response_model=None)
async def install(
    name: str,
    body: InstallRequest | None = None,
    authorization: str | None = Header(None),
    force: ForceQuery = False,
    dry_run: DryRunQuery = False,
) -> dict[str, Any] | JSONResponse:
    """Install a version (default: the latest not yanked) after the quality gate."""
    svc = service()
    principal = await svc.principal(authorization)
    principal.require_operator(f"installing {name}")
    store = svc.store()
    version = body.version if body else LATEST
    manifest = await svc.call(lambda: store.get(name, store.installable(name, version)))
    check = await svc.gate_check(manifest, principal, installs=True)
    if dry_run:
        return dry_run_answer(manifest, check)
    check_gate(check.impact, check.max_share, force)
    state = await svc.call(
        lambda: store.install(name, version, principal, resolved=manifest.version)
    )
    return {"installed": name, **state.model_dump(), "impact": check.impact.model_dump(mode="json")}


@router.delete("/v1/specialists/{name}/install")
async def uninstall(name: str, authorization: str | None = Header(None)) -> dict[str, Any]:
    svc = service()
    principal = await svc.principal(authorization)
    await svc.call(svc.store().uninstall, name, principal)
    return {"uninstalled": name}


@router.post("/v1/specialists/{name}/deprecate")
async def deprecate(
    name: str, body: DeprecateRequest, authorization: str | None = Header(None)
) -> dict[str, Any]:
    svc = service()
    principal = await svc.principal(authorization)
    await svc.call(svc.store().deprecate, name, body.version, body.reason, principal)
    return {"deprecated": name, "version": body.version or "*", "reason": body.reason}


@router.post("/v1/specialists/{name}/yank")
async def yank(
    name: str, body: YankRequest, authorization: str | None = Header(None)
) -> dict[str, Any]:
    svc = service()
    principal = await svc.principal(authorization)
    await svc.call(svc.store().yank, name, body.version, body.reason, principal)
    return {"yanked": f"{name}@{body.version}", "reason": body.reason}


@router.post("/v1/specialists/{name}/scale")
async def scale(
    name: str, body: ScaleRequest, authorization: str | None = Header(None)
) -> dict[str, Any]:
    """Change this mesh's replica range for one specialist; the others are not touched."""
    svc = service()
    principal = await svc.principal(authorization)
    low, high = body.bounds()
    scaling = await svc.call(svc.store().scale, name, low, high, principal)
    return {"scaled": name, **scaling.model_dump()}


@router.delete("/v1/specialists/{name}")
async def delete(name: str, authorization: str | None = Header(None)) -> dict[str, Any]:
    svc = service()
    principal = await svc.principal(authorization)
    await svc.call(svc.store().delete, name, principal)
    return {"deleted": name}


@router.post("/v1/feedback")
async def feedback(
    body: FeedbackRequest, authorization: str | None = Header(None)
) -> dict[str, Any]:
    """Thumbs up/down for a completion, counted in its specialist's usage stats. A thumbs-up
    on a routed answer also proposes its query as a router lesson (`mesh router review`)."""
    svc = service()
    await svc.client(authorization)
    store = svc.store()
    previous = await svc.call(store.stats.rating_of, body.id)
    name = await svc.call(store.stats.feedback, body.id, body.rating)
    lesson = None
    if body.rating == "up" and previous != "up":  # a repeated thumbs-up is one sighting
        lesson = await svc.call(_propose_thumbs_up, store, body.id, name)
    return {"id": body.id, "specialist": name, "rating": body.rating, "lesson": lesson}


def _propose_thumbs_up(store: Registry, response_id: str, name: str) -> str | None:
    """Best effort: the rating is counted already, and a lesson lost is only a lesson lost."""
    try:
        query = store.stats.query_of(response_id)
        proposed = store.lessons.propose(query, name, "thumbs_up") if query else None
    except Exception as error:
        logger.warning("router lesson not proposed for %s: %s", response_id, error)
        return None
    return proposed.id if proposed else None
