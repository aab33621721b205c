"""Shared-base LoRA serving: one pool app per base model holds the base once, adapters on top.

Specialists whose manifests name a LoRA `model.adapter` on the same base (`model.source`,
`revision`, `dtype`, pinned base files) share one Serve application, `base-<slug>`. Its replicas
load the base once and keep up to `capacity` adapters unmerged on it (a peft `PeftModel` with
several named adapters) through `@serve.multiplexed`: the multiplexed model id is the
specialist's `name@version`, Serve routes a request to a replica that already holds that
adapter when one does, and the least recently used adapter is deleted from the model when a
replica holds too many (deferred while rows still decode with it). One continuous batch
(`BatchScheduler` + `BatchDecoder`) serves every adapter at once: each row names its adapter and
peft applies it per row (`adapter_names`).

The adapter specialist's own app stays (its name, routing, delegation, limits and status are
unchanged) but holds no weights: `PoolClient` forwards each generation to the pool with
`multiplexed_model_id`. The controller deploys a pool while any installed specialist needs it
and deletes it when none does. `model.share_base: false` opts a specialist out: its own replica
loads the base and merges the adapter in (no per-token LoRA cost, one copy of the base each).
See docs/performance.md ("LoRA adapters") for the memory and latency measured both ways.

Traded away: an unmerged adapter costs a little per token; a pool's config is derived from its
members, so installing a member that asks for more resources (or a larger batch) restarts the
pool's replicas, which then load the base again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from registry.errors import InvalidRequestError, ManifestError, MeshError, UnavailableError
from registry.manifest import ModelSpec, Scaling, SpecialistManifest
from specialists.decoding import BatchDecoder
from specialists.engine import (
    ChatMessage,
    Engine,
    EngineCapabilities,
    EngineRequest,
    TextDelta,
    coalesce,
)
from specialists.serve_options import app_handle, deployment_options, keep_replica_on_loopback
from specialists.sources import SourceOptions, adapter_folder, verify_sources
from specialists.transformers_engine import TransformersEngine, attach_adapter, check_adapter_folder

POOL_PREFIX = "base-"
DEFAULT_CAPACITY = 8  # adapters per replica; more members raise it (see `pool_configs`)
FORWARDER_CPUS = 0.1  # a specialist that forwards to a pool holds no weights


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSpec(_Frozen):
    """What makes two adapter specialists share a base: the same weights, loaded the same way."""

    engine: str = "transformers"
    source: str
    revision: str | None = None
    dtype: str = "auto"
    sha256: dict[str, str] = {}  # the base's own pinned files (no `adapter/...` entries)


class PoolConfig(_Frozen):
    """One pool app: its base and what its replicas need (derived from every member)."""

    base: BaseSpec
    capacity: int = DEFAULT_CAPACITY
    max_batch_size: int = 8
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    memory: int | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    max_ongoing_requests: int = 8
    max_queued_requests: int = 32
    look_back_period_s: float = 30.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0


def shares_base(manifest: SpecialistManifest) -> bool:
    """Whether this specialist is served from its base's shared pool: it has an adapter, did
    not opt out, and its engine serves adapters on a shared base."""
    model = manifest.model
    if not (model.adapter and model.share_base) or model.engine == "tool":
        return False
    from specialists.engine_registry import engine_class

    try:
        return engine_class(model.engine).capabilities.adapters
    except MeshError:  # an engine not installed here: its own deploy fails, alone
        return False


def pool_engine_class(engine: str) -> type[Engine]:
    """The engine a pool of `engine` bases runs: the transformers engine's pool form keeps
    adapters unmerged on one model; other engines serve adapters themselves."""
    if engine == "transformers":
        return AdapterPoolEngine
    from specialists.engine_registry import engine_class

    return engine_class(engine)


def base_spec(manifest: SpecialistManifest) -> BaseSpec:
    model = manifest.model
    return BaseSpec(
        engine=model.engine,
        source=model.source,
        revision=model.revision,
        dtype=model.dtype,
        sha256={k: v for k, v in model.sha256.items() if not k.startswith("adapter/")},
    )


def pool_app_name(base: BaseSpec) -> str:
    """`base-<readable stem>-<hash of the base spec>`: stable, and distinct per base."""
    # The default engine stays out of the digest, so pools deployed before engines were
    # named keep their app names.
    exclude = {"engine"} if base.engine == "transformers" else set()
    spec = base.model_dump(exclude=exclude)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    stem = re.sub(r"[^a-z0-9]+", "-", base.source.rsplit("/", 1)[-1].lower()).strip("-")
    return f"{POOL_PREFIX}{stem[:40].strip('-') or 'model'}-{digest[:8]}"


def adapter_id(manifest: SpecialistManifest) -> str:
    """The multiplexed model id of a specialist's adapter (versions are immutable)."""
    return manifest.ref


def adapter_key(model_id: str) -> str:
    """peft's name for an adapter (module names may not hold '.'; semver holds no '_')."""
    return model_id.replace(".", "_")


def pool_configs(manifests: Iterable[SpecialistManifest]) -> dict[str, PoolConfig]:
    """The pool apps the given installed specialists need, by app name."""
    members: dict[str, list[SpecialistManifest]] = {}
    bases: dict[str, BaseSpec] = {}
    for manifest in manifests:
        if shares_base(manifest):
            base = base_spec(manifest)
            name = pool_app_name(base)
            bases[name] = base
            members.setdefault(name, []).append(manifest)
    configs = {}
    for name, group in sorted(members.items()):
        memories = [m.resources.memory for m in group if m.resources.memory]
        configs[name] = PoolConfig(
            base=bases[name],
            capacity=max(DEFAULT_CAPACITY, len(group)),
            max_batch_size=max(m.scaling.max_batch_size for m in group),
            num_cpus=max(m.resources.num_cpus for m in group),
            num_gpus=max(m.resources.num_gpus for m in group),
            memory=max(memories) if memories else None,
            min_replicas=max(m.scaling.min_replicas for m in group),
            max_replicas=max(m.scaling.max_replicas for m in group),
            target_ongoing_requests=max(m.scaling.target_ongoing_requests for m in group),
            max_ongoing_requests=sum(m.scaling.max_ongoing_requests for m in group),
            max_queued_requests=sum(m.scaling.max_queued_requests for m in group),
            look_back_period_s=min(m.scaling.look_back_period_s for m in group),
            upscale_delay_s=min(m.scaling.upscale_delay_s for m in group),
            downscale_delay_s=max(m.scaling.downscale_delay_s for m in group),
        )
    return configs


# -- the engine (plain Python, no Ray) ----------------------------------------------------
class AdapterPoolEngine(TransformersEngine):
    """One base model and any number of named LoRA adapters on it, decoded in one batch.

    Adapters are added and deleted between decode steps (a lock around every forward pass);
    an adapter still used by running rows is deleted only when its last row is done.
    """

    def __init__(self, manifest: SpecialistManifest, sources: SourceOptions | None = None) -> None:
        super().__init__(manifest, sources)
        self.base = base_spec(manifest)
        self.lock = threading.Lock()  # model forward passes vs adapter changes
        self._book = threading.Lock()  # the counts below
        self._users: dict[str, int] = {}
        self._retiring: set[str] = set()
        self._members: dict[str, SpecialistManifest] = {}  # adapter name -> its specialist

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        """As any engine with adapters: the adapter's specialist's system prompt goes first."""
        member = self._members.get(request.adapter) if request.adapter else None
        if member is not None and member.system_prompt:
            system = ChatMessage(role="system", content=member.system_prompt)
            request = request.model_copy(update={"messages": [system, *request.messages]})
        async for delta in super().stream(request, cancel):
            yield delta

    @property
    def adapters(self) -> list[str]:
        """The adapters loaded now (peft names)."""
        return sorted(getattr(self.model, "peft_config", {}))

    def add_adapter(self, manifest: SpecialistManifest) -> str:
        """Check (sha256, pickle, shape) and load a specialist's adapter; returns its name."""
        if base_spec(manifest) != self.base:
            raise ManifestError(
                f"{manifest.ref} is not on this pool's base ({self.base.source})",
                param="model.source",
            )
        name = adapter_key(adapter_id(manifest))
        with self._book:
            self._retiring.discard(name)
            self._members[name] = manifest
            if name in self.adapters:
                return name
        if not manifest.model.adapter:
            raise ManifestError(f"{manifest.ref} has no adapter", param="model.adapter")
        folder = adapter_folder(manifest.model.adapter, self.sources)
        folder = check_adapter_folder(folder, allow_pickle=self.sources.allow_pickle)
        verify_sources(manifest, self.sources, only="adapter/")
        with self.lock:
            self.model = attach_adapter(self.model, folder, name)
            self.model.eval()
        return name

    def acquire(self, name: str) -> None:
        with self._book:
            self._users[name] = self._users.get(name, 0) + 1

    def release(self, name: str) -> None:
        with self._book:
            self._users[name] -= 1
            idle = self._users[name] == 0 and name in self._retiring
        if idle:
            self._delete(name)

    def retire_adapter(self, name: str) -> None:
        """Delete `name` now, or when its last running row is done."""
        with self._book:
            busy = self._users.get(name, 0) > 0
            self._retiring.add(name)
        if not busy:
            self._delete(name)

    def _delete(self, name: str) -> None:
        with self._book:
            if name not in self._retiring or self._users.get(name, 0) > 0:
                return  # wanted again, or in use again, since it was retired
            self._retiring.discard(name)
            self._users.pop(name, None)
        with self.lock:
            if name in self.adapters:
                self.model.delete_adapter(name)

    def _prefix_cache(self) -> None:
        """No shared prefix: each row brings its specialist's system prompt and decodes with
        its own adapter, whose LoRA changes the prefix's KV too."""
        return None

    def new_batch(self) -> BatchDecoder:
        if self.model is None:
            raise UnavailableError(f"pool for {self.base.source} is not loaded")
        return BatchDecoder(_Locked(self), self.tokenizer, self.eos_ids, self.device)


class _Locked:
    """The engine's current model, called under its lock (adapters change between steps)."""

    def __init__(self, engine: AdapterPoolEngine) -> None:
        self.engine = engine

    def __call__(self, **kwargs: Any) -> Any:
        with self.engine.lock:
            return self.engine.model(**kwargs)


def pool_manifest(base: BaseSpec, max_batch_size: int = 8) -> SpecialistManifest:
    """The manifest a pool's engine loads: the base alone, under the pool's batch limit."""
    return SpecialistManifest(
        name="shared-base",
        version="0.0.0",
        description=f"Shared base {base.source}",
        owner="mesh",
        examples=["-", "-", "-"],
        scaling=Scaling(max_batch_size=max_batch_size),
        model=ModelSpec(
            engine=base.engine,
            source=base.source,
            revision=base.revision,
            sha256=base.sha256,
            dtype=base.dtype,  # type: ignore[arg-type]
        ),
    )


# -- Serve --------------------------------------------------------------------------------
class _LoadedAdapter:
    """What `@serve.multiplexed` caches per model id; Serve calls `__del__` on eviction."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name, self._gone = engine, name, False

    def __del__(self) -> None:  # Serve calls it on eviction; the GC may call it again
        if not self._gone:
            self._gone = True
            self.engine.retire_adapter(self.name)


class AdapterPoolDeployment:
    """Serves every adapter specialist on one base; callers set `multiplexed_model_id`."""

    def __init__(self, config: dict[str, Any], sources: dict[str, Any] | None = None) -> None:
        keep_replica_on_loopback()
        self.config = PoolConfig.model_validate(config)
        options = SourceOptions.model_validate(sources or {})
        engine_type = pool_engine_class(self.config.base.engine)
        manifest = pool_manifest(self.config.base, self.config.max_batch_size)
        self.engine = engine_type(manifest, options)
        self.engine.load()
        self._manifests: dict[str, SpecialistManifest] = {}

        async def load_adapter(model_id: str) -> _LoadedAdapter:
            manifest = self._manifests[model_id]
            name = await asyncio.to_thread(self.engine.add_adapter, manifest)
            return _LoadedAdapter(self.engine, name)

        capacity = self.config.capacity
        self._adapter = serve.multiplexed(max_num_models_per_replica=capacity)(load_adapter)

    async def generate(
        self, manifest: dict[str, Any], request: EngineRequest
    ) -> AsyncIterator[TextDelta]:
        """The deltas of one answer by the specialist `manifest` describes (its adapter)."""
        spec = SpecialistManifest.model_validate(manifest)
        model_id = adapter_id(spec)
        if serve.get_multiplexed_model_id() != model_id:
            raise InvalidRequestError(f"call with multiplexed_model_id={model_id!r}")
        self._manifests[model_id] = spec
        loaded: _LoadedAdapter = await self._adapter(model_id)
        # The engine puts the adapter's specialist's system prompt first.
        routed = request.received().model_copy(update={"adapter": loaded.name})
        acquire = getattr(self.engine, "acquire", None)
        if acquire is not None:
            acquire(loaded.name)
        try:
            async for delta in coalesce(self.engine.stream(routed)):
                yield delta
        except InvalidRequestError as error:  # name the specialist, not the pool
            message = error.message.replace(self.engine.manifest.name, spec.name)
            raise InvalidRequestError(message, param=error.param) from None
        finally:
            if acquire is not None:
                self.engine.release(loaded.name)  # type: ignore[attr-defined]

    def adapters(self) -> list[str]:
        return list(getattr(self.engine, "adapters", []))

    def batch_stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def check_health(self) -> None:
        self.engine.health()


def build_pool_app(config: PoolConfig, sources: SourceOptions | None = None) -> Application:
    """The pool's Serve app; `sources` carries the operator's loading settings into replicas."""
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus}
    if config.num_gpus:
        actor_options["num_gpus"] = config.num_gpus
    if config.memory:
        actor_options["memory"] = config.memory
    options = deployment_options("pool", actor_options, config)
    deployment = serve.deployment(AdapterPoolDeployment, **options)
    # Only what a replica itself uses goes into its arguments: a member joining or leaving
    # changes limits and replica counts (Serve applies those without restarting replicas).
    replica_args = config.model_dump(mode="json", include={"base", "capacity", "max_batch_size"})
    options = (sources or SourceOptions()).model_dump(mode="json")
    return deployment.bind(replica_args, options)  # type: ignore[attr-defined]


class PoolClientEngine(Engine):
    """The engine of an adapter specialist's own replica: it holds no weights and forwards
    each request to its base's pool app (Serve model multiplexing picks a replica that holds
    the adapter)."""

    name: ClassVar[str] = "pool"
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities()

    def __init__(self, manifest: SpecialistManifest, sources: SourceOptions | None = None) -> None:
        super().__init__(manifest, sources)
        # What the pool's engine can do, this specialist can (the pool applies grammars and
        # reports log-probabilities per row); serving adapters is the pool's own business.
        pooled = pool_engine_class(manifest.model.engine).capabilities
        self.capabilities = pooled.model_copy(update={"adapters": False})  # type: ignore[misc]
        self.app = pool_app_name(base_spec(manifest))
        self.model_id = adapter_id(manifest)
        self._payload = manifest.model_dump(mode="json")
        self._handle: Any = None

    def load(self) -> None:
        """Nothing to load: the pool app holds the weights (and checks the pins)."""

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        """The pool's deltas; leaving early (or `cancel`) cancels the pool's row too."""
        if self._handle is None:
            self._handle = app_handle(self.app, self.manifest.name, "its shared base pool")
        handle = self._handle.options(stream=True, multiplexed_model_id=self.model_id)
        responses = handle.generate.remote(self._payload, request.for_transport())
        finished = False
        try:
            async for delta in responses:
                if cancel is not None and cancel.is_set():
                    yield TextDelta(text="", finish_reason="cancelled")
                    return
                yield delta
                finished = bool(delta.finish_reason)
        finally:
            if not finished:
                responses.cancel()
