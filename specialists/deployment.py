"""`SpecialistDeployment`: one specialist as a Ray Serve deployment, one Serve app per specialist.

Each specialist gets its own application (`specialist-<name>`), so it has its own replicas,
resources and autoscaling, and can be deployed, upgraded or removed without touching the others.
The deployment is engine-agnostic: its engine class is injected (`engine_for` resolves the
manifest's engine in the registry; a LoRA specialist on a shared base gets `PoolClientEngine`,
which forwards to its base's pool app). Around the engine it does what every specialist does:
delegation through a `MeshContext`, the request's deadline and token budget, citing exact tool
results. Entry points take one typed request: `chat_stream` (deltas) and `chat` (the same path,
collected) for the gateway, `receive` for messages from other specialists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from registry.errors import HandedBackError, InvalidRequestError
from registry.manifest import SpecialistManifest
from specialists import tracing
from specialists.adapter_pool import FORWARDER_CPUS, PoolClientEngine, shares_base
from specialists.context import MeshContext, Reply
from specialists.delegation import (
    cite_missing,
    data_block,
    parse_directives,
    plan,
    strip_directives,
    with_data,
)
from specialists.engine import (
    ChatMessage,
    Engine,
    EngineRequest,
    GenerationParams,
    GenerationResult,
    TextDelta,
    coalesce,
    collect,
    collect_stream,
)
from specialists.engine_registry import engine_class
from specialists.messages import ContextState, Message
from specialists.scope_check import in_scope_probability, scope_messages, scope_params
from specialists.serve_options import deployment_options, keep_replica_on_loopback
from specialists.sources import SourceOptions

APP_PREFIX = "specialist-"


def app_name(specialist: str) -> str:
    """The Serve application name of a specialist."""
    return f"{APP_PREFIX}{specialist}"


class SpecialistRequest(BaseModel):
    """One call of a specialist across Serve: the chat, its settings (already merged with the
    manifest's), the mesh context it runs in, and data blocks (a panel's drafts) to quote."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    params: GenerationParams = Field(default_factory=GenerationParams)
    context: ContextState | None = None
    data: list[str] = Field(default_factory=list)
    may_hand_back: bool = Field(
        False,
        description="The router chose this specialist and has other candidates: one that "
        "cannot answer the query at all raises `HandedBackError` instead of answering.",
    )


class AskRequest(BaseModel):
    """A message from another specialist (or the gateway's panel), answered as data."""

    model_config = ConfigDict(extra="forbid")

    message: Message
    state: ContextState
    max_tokens: int | None = Field(None, ge=1)


def engine_for(manifest: SpecialistManifest) -> type[Engine]:
    """The engine class a specialist's replica runs."""
    if shares_base(manifest):  # the base and adapter live in the shared pool
        return PoolClientEngine
    return engine_class(manifest.model.engine)


class _Prepared:
    """A request after delegation: the messages to generate from and what tools said exactly."""

    def __init__(self, messages: list[dict[str, str]], received: list[str]) -> None:
        self.messages = messages
        self.received = received
        self.exact: list[tuple[str, str, str]] = []


class SpecialistDeployment:
    """Serves one specialist manifest with the engine class it is given."""

    def __init__(
        self,
        manifest: dict[str, Any],
        sources: dict[str, Any] | None = None,
        engine: type[Engine] | None = None,
    ) -> None:
        keep_replica_on_loopback()
        tracing.configure_tracing()  # MESH_OTEL_EXPORTER, inherited from `mesh up`
        self.manifest = SpecialistManifest.model_validate(manifest)
        options = SourceOptions.model_validate(sources or {})
        self.engine = (engine or engine_for(self.manifest))(self.manifest, options)
        self.engine.load()
        # A tool computes its answer: callers quote it as exact data, and it plans no asks.
        self.exact = self.engine.capabilities.exact

    # -- entry points ---------------------------------------------------------------------
    async def chat(self, request: SpecialistRequest) -> GenerationResult:
        """The whole answer: `chat_stream`'s path, collected (and free to follow the model's
        own directives, since nothing was sent yet)."""
        return await collect_stream(self._answer(request, live=False))

    async def chat_stream(self, request: SpecialistRequest) -> AsyncIterator[TextDelta]:
        """Trace events first (as delegations finish), then the answer's text deltas.

        Directives in streamed output are not followed: the text is already on its way.
        """
        async for delta in coalesce(self._answer(request, live=True)):
            yield delta

    async def receive(self, request: AskRequest) -> Reply:
        """A message from another specialist (or the gateway's panel): answer it as data."""
        ctx = self._context(request.state)
        limit = min(
            request.max_tokens or self.manifest.generation.max_tokens,
            max(ctx.remaining_tokens(), 1),
        )
        params = GenerationParams.merge(self.manifest.generation, max_tokens=limit)
        chat = [ChatMessage(role="user", content=request.message.content)]
        asked = SpecialistRequest(messages=chat, params=params, context=ctx.state)
        result = await collect_stream(self._answer(asked, live=False, ctx=ctx))
        return Reply(
            text=result.text,
            tokens=result.completion_tokens,
            tokens_used=ctx.state.tokens_used,  # this answer and everything it asked for
            trust="tool" if self.exact else "specialist",
            trace=result.trace,
        )

    def batch_stats(self) -> dict[str, Any]:
        """What this replica's engine is doing (rows running and waiting, totals)."""
        return self.engine.stats()

    def check_health(self) -> None:
        self.engine.health()

    # -- steps ----------------------------------------------------------------------------
    async def _answer(
        self, request: SpecialistRequest, *, live: bool, ctx: MeshContext | None = None
    ) -> AsyncIterator[TextDelta]:
        """The one path every entry point takes, in a `mesh.generate` span (under the caller's,
        from `ContextState.traceparent`; asks from here nest under it)."""
        ctx = ctx or self._context(request.context)
        span = tracing.start(
            "mesh.generate",
            ctx.state.traceparent,
            specialist=self.manifest.name,
            version=self.manifest.version,
            streamed=live,
        )
        ctx.state = ctx.state.model_copy(
            update={"traceparent": tracing.traceparent_of(span) or ctx.state.traceparent}
        )
        failed: BaseException | None = None
        try:
            async for delta in self._steps(request, live, ctx):
                if delta.finish_reason:
                    span.set_attribute("mesh.completion_tokens", delta.completion_tokens)
                yield delta
        except Exception as error:
            failed = error
            raise
        finally:
            tracing.finish(span, failed)

    async def _steps(
        self, request: SpecialistRequest, live: bool, ctx: MeshContext
    ) -> AsyncIterator[TextDelta]:
        """`live`: deltas go out as they come (trace first); otherwise the answer may be
        regenerated once if the model asks for help, and the whole trace rides on the last
        delta."""
        params = request.params
        self._check_capabilities(params)
        if request.may_hand_back and self.manifest.hand_back is not None and not self.exact:
            await self._check_scope(request.messages, ctx)
        if self.exact:
            async for delta in self._run_tool(request, ctx):
                yield delta
            return
        prepared = await self._delegate(request.messages, ctx, request.data)
        # Output held to a grammar is the caller's format: never edited (no citations added,
        # no directives followed or stripped), or it would no longer parse.
        free_text = params.grammar is None
        if not live:
            result = await self._generate(prepared.messages, params, ctx)
            follow_up = parse_directives(result.text, prepared.received) if free_text else []
            if follow_up:  # the model asked for help itself: ask, then answer again with data
                await self._ask_all(follow_up, ctx, prepared)
                result = await self._generate(prepared.messages, params, ctx)
            text = result.text
            if free_text:
                text = cite_missing(strip_directives(text), prepared.exact)
            yield TextDelta(text=text, logprobs=result.logprobs)
            yield TextDelta(
                text="",
                finish_reason=result.finish_reason,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                trace=ctx.trace,
            )
            return
        if ctx.trace:
            yield TextDelta(text="", trace=list(ctx.trace))
        text = ""
        async for delta in self._decode(prepared.messages, params, ctx):
            text += delta.text
            if delta.finish_reason and free_text:
                cited = cite_missing(text, prepared.exact)
                if cited != text:
                    yield TextDelta(text=cited[len(text) :])
            yield delta

    def _check_capabilities(self, params: GenerationParams) -> None:
        """A request for what this engine cannot do is the request's 400, never ignored (the
        gateway routes by the manifest's `features`; this holds for every other caller)."""
        can = self.engine.capabilities
        if params.grammar is not None and not can.grammars:
            raise InvalidRequestError(
                f"{self.manifest.name}'s engine has no constrained decoding",
                param=params.grammar.param,
            )
        if params.logprobs is not None and not can.logprobs:
            raise InvalidRequestError(
                f"{self.manifest.name}'s engine does not report log-probabilities",
                param="logprobs",
            )

    async def _check_scope(self, messages: list[ChatMessage], ctx: MeshContext) -> None:
        """Raise `HandedBackError` when the model rates the query out of its scope
        (`specialists.scope_check`); asked like any generation, so its one token counts against
        the request's budget and it ends by the request's deadline."""
        assert self.manifest.hand_back is not None
        turns = [m.content for m in messages if m.role == "user"] or [""]
        question = scope_messages(self.manifest, turns[-1], turns[:-1])
        result = await self._generate([m.model_dump() for m in question], scope_params(), ctx)
        first = result.logprobs[0] if result.logprobs else None
        probability = in_scope_probability((first.top_logprobs or [first]) if first else [])
        floor = self.manifest.hand_back.min_in_scope
        if probability is not None and probability < floor:
            raise HandedBackError(
                f"{self.manifest.name} declined: its model rates the query in its scope at "
                f"{probability:.2f} (below {floor:g})"
            )

    def _context(self, state: ContextState | None) -> MeshContext:
        parsed = state or ContextState()
        if not parsed.path:
            parsed = parsed.model_copy(update={"path": [self.manifest.name]})
        return MeshContext(parsed, self.manifest.name, list(self.manifest.can_message))

    async def _run_tool(
        self, call: SpecialistRequest, ctx: MeshContext
    ) -> AsyncIterator[TextDelta]:
        """A tool's answer: exact, never cut by `max_tokens`; what it asked is in the trace."""
        asked = len(ctx.trace)
        request = EngineRequest(
            messages=call.messages,
            params=self._bounded(call.params, ctx),
            may_hand_back=call.may_hand_back,
            mesh=ctx,
        )
        async for delta in self.engine.stream(request):
            if delta.finish_reason:
                ctx.spend(delta.completion_tokens)
                delta = delta.model_copy(update={"trace": ctx.trace[asked:]})
            yield delta

    async def _delegate(
        self, messages: list[ChatMessage], ctx: MeshContext, data: list[str]
    ) -> _Prepared:
        """Run the planned delegations and quote their answers into the last user turn."""
        chat = [m.model_dump() for m in messages]
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        prepared = _Prepared(with_data(chat, data), [m.content for m in messages] + data)
        await self._ask_all(plan(query, ctx.can_message), ctx, prepared)
        return prepared

    async def _ask_all(self, asks: list[Any], ctx: MeshContext, prepared: _Prepared) -> None:
        results = await asyncio.gather(*(ctx.ask(a.to, a.content) for a in asks))
        blocks = []
        for ask, result in zip(asks, results, strict=True):
            if not result.ok:
                continue
            blocks.append(data_block(ask.to, result.trust, ask.content, result.text))
            if result.trust == "tool":
                prepared.exact.append((ask.to, ask.content, result.text))
        prepared.messages = with_data(prepared.messages, blocks)
        prepared.received.extend(blocks)

    async def _generate(
        self, messages: list[dict[str, str]], params: GenerationParams, ctx: MeshContext
    ) -> GenerationResult:
        # A second generation (after the model asked for help) may not outspend the budget.
        limit = max(min(params.max_tokens, ctx.remaining_tokens()), 1)
        bounded = params.model_copy(update={"max_tokens": limit})
        result = collect([delta async for delta in self._decode(messages, bounded, ctx)])
        ctx.spend(result.completion_tokens)
        return result

    async def _decode(
        self, messages: list[dict[str, str]], params: GenerationParams, ctx: MeshContext
    ) -> AsyncIterator[TextDelta]:
        """The engine's deltas, within what is left of the request's deadline (delegation
        and a first answer may have used some); leaving early cancels it in the engine."""
        chat = [ChatMessage.model_validate(m) for m in messages]
        request = EngineRequest(messages=chat, params=self._bounded(params, ctx))
        async for delta in self.engine.stream(request):
            yield delta

    @staticmethod
    def _bounded(params: GenerationParams, ctx: MeshContext) -> GenerationParams:
        """Generation may not outlive the request's deadline."""
        return params.model_copy(update={"max_time_s": max(ctx.remaining_s(), 0.05)})


def build_specialist_app(
    manifest: SpecialistManifest, sources: SourceOptions | None = None
) -> Application:
    """A Serve application for one manifest: resources and scaling come from the manifest;
    `sources` (Redis URL for `artifact:` sources, cache folder, pickle) from the operator."""
    resources, scaling = manifest.resources, manifest.scaling
    actor_options: dict[str, Any] = {"num_cpus": resources.num_cpus}
    if resources.num_gpus:
        actor_options["num_gpus"] = resources.num_gpus
    if resources.memory:
        actor_options["memory"] = resources.memory
    if resources.num_gpus and resources.accelerator_type:
        actor_options["accelerator_type"] = resources.accelerator_type
    engine = engine_for(manifest)  # resolved here: an unknown engine fails the deploy
    if shares_base(manifest) or engine.backend_app_name(manifest):
        # No weights here: the pool (or the engine's backend app) asks for the resources.
        actor_options = {"num_cpus": min(resources.num_cpus, FORWARDER_CPUS)}
    options = deployment_options(manifest.name, actor_options, scaling)
    deployment = serve.deployment(SpecialistDeployment, **options)
    options = (sources or SourceOptions()).model_dump(mode="json")
    return deployment.bind(manifest.model_dump(mode="json"), options, engine)  # type: ignore[attr-defined]
