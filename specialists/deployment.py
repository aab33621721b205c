"""`SpecialistDeployment`: one specialist as a Ray Serve deployment, one Serve app per specialist.

Each specialist gets its own application (`specialist-<name>`), so it has its own replicas,
resources and autoscaling, and can be deployed, upgraded or removed without touching the others.
Three entry points: `chat` (whole answer), `chat_stream` (deltas) for the gateway, and `receive`
for messages from other specialists. All of them may delegate through a `MeshContext`. A LoRA
specialist on a shared base (`specialists.adapter_pool`) holds no weights: it generates through
its base's pool app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from registry.manifest import SpecialistManifest
from specialists.adapter_pool import FORWARDER_CPUS, PoolClient, shares_base
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
    GenerationParams,
    GenerationResult,
    TextDelta,
    collect,
    engine_class,
)
from specialists.messages import ContextState, Message
from specialists.scheduler import BatchScheduler
from specialists.serve_options import deployment_options, keep_replica_on_loopback
from specialists.sources import SourceOptions
from specialists.tool_engine import ToolEngine

APP_PREFIX = "specialist-"


def app_name(specialist: str) -> str:
    """The Serve application name of a specialist."""
    return f"{APP_PREFIX}{specialist}"


class _Prepared:
    """A request after delegation: the messages to generate from and what tools said exactly."""

    def __init__(self, messages: list[dict[str, str]], received: list[str]) -> None:
        self.messages = messages
        self.received = received
        self.exact: list[tuple[str, str, str]] = []


class SpecialistDeployment:
    """Serves one specialist manifest."""

    def __init__(self, manifest: dict[str, Any], sources: dict[str, Any] | None = None) -> None:
        keep_replica_on_loopback()
        self.manifest = SpecialistManifest.model_validate(manifest)
        options = SourceOptions.model_validate(sources or {})
        self.tool: ToolEngine | None = None
        self.engine: Engine | None = None
        self.pool: PoolClient | None = None
        if shares_base(self.manifest):  # the base and adapter live in the shared pool
            self.pool = PoolClient(self.manifest)
        elif self.manifest.model.engine == "tool":
            self.tool = ToolEngine(self.manifest)
            self.tool.load()
        else:
            self.engine = _model_engine(self.manifest, options)
            self.engine.load()
        # Every request this replica holds, streaming or not, decodes in one continuous batch.
        self.scheduler = (
            BatchScheduler(self.engine, max_batch_size=self.manifest.scaling.max_batch_size)
            if self.engine is not None
            else None
        )

    # -- entry points ---------------------------------------------------------------------
    async def chat(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        context: dict[str, Any] | None = None,
        data: list[str] | None = None,
    ) -> GenerationResult:
        ctx = self._context(context)
        return await self._answer(
            messages, GenerationParams.model_validate(params), ctx, data or []
        )

    async def chat_stream(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        context: dict[str, Any] | None = None,
        data: list[str] | None = None,
    ) -> AsyncIterator[TextDelta]:
        """Trace events first (as delegations finish), then the answer's text deltas.

        Directives in streamed output are not followed: the text is already on its way.
        """
        ctx = self._context(context)
        parsed = GenerationParams.model_validate(params)
        if self.tool is not None:
            result = await self._run_tool(messages, ctx)
            yield TextDelta(text="", trace=result.trace)
            yield TextDelta(text=result.text)
            yield TextDelta(
                text="", finish_reason="stop", completion_tokens=result.completion_tokens
            )
            return
        prepared = await self._delegate(messages, ctx, data or [])
        if ctx.trace:
            yield TextDelta(text="", trace=ctx.trace)
        text = ""
        async for delta in self._decode(prepared.messages, self._bounded(parsed, ctx)):
            text += delta.text
            if delta.finish_reason:
                cited = cite_missing(text, prepared.exact)
                if cited != text:
                    yield TextDelta(text=cited[len(text) :])
            yield delta

    async def receive(
        self, message: dict[str, Any], state: dict[str, Any], max_tokens: int | None = None
    ) -> Reply:
        """A message from another specialist (or the gateway's panel): answer it as data."""
        incoming = Message.model_validate(message)
        ctx = self._context(state)
        limit = min(
            max_tokens or self.manifest.generation.max_tokens, max(ctx.remaining_tokens(), 1)
        )
        params = GenerationParams.merge(self.manifest.generation, max_tokens=limit)
        chat = [{"role": "user", "content": incoming.content}]
        result = await self._answer(chat, params, ctx, [])
        return Reply(
            text=result.text,
            tokens=result.completion_tokens,
            tokens_used=ctx.state.tokens_used,  # this answer and everything it asked for
            trust="tool" if self.tool is not None else "specialist",
            trace=result.trace,
        )

    def batch_stats(self) -> dict[str, Any]:
        """What this replica's decode batch is doing (rows running and waiting, totals)."""
        return self.scheduler.snapshot().model_dump() if self.scheduler else {}

    def check_health(self) -> None:
        if self.engine is None and self.tool is None and self.pool is None:
            raise RuntimeError("engine not loaded")

    # -- steps ----------------------------------------------------------------------------
    async def _answer(
        self,
        messages: list[dict[str, Any]],
        params: GenerationParams,
        ctx: MeshContext,
        data: list[str],
    ) -> GenerationResult:
        """Delegate, generate, follow the model's own directives once, cite exact results."""
        if self.tool is not None:
            return await self._run_tool(messages, ctx)
        prepared = await self._delegate(messages, ctx, data)
        result = await self._generate(prepared.messages, params, ctx)
        follow_up = parse_directives(result.text, prepared.received)
        if follow_up:  # the model asked for help itself: ask, then answer again with the data
            await self._ask_all(follow_up, ctx, prepared)
            result = await self._generate(prepared.messages, params, ctx)
        text = cite_missing(strip_directives(result.text), prepared.exact)
        return result.model_copy(update={"text": text, "trace": ctx.trace})

    def _context(self, state: dict[str, Any] | None) -> MeshContext:
        parsed = ContextState.model_validate(state) if state else ContextState()
        if not parsed.path:
            parsed = parsed.model_copy(update={"path": [self.manifest.name]})
        return MeshContext(parsed, self.manifest.name, list(self.manifest.can_message))

    async def _run_tool(self, messages: list[dict[str, Any]], ctx: MeshContext) -> GenerationResult:
        assert self.tool is not None
        query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = await self.tool.run(query, ctx)
        tokens = max(len(text.split()), 1)
        ctx.spend(tokens)
        return GenerationResult(
            text=text,
            prompt_tokens=len(query.split()),
            completion_tokens=tokens,
            finish_reason="stop",
            trace=ctx.trace,
        )

    async def _delegate(
        self, messages: list[dict[str, Any]], ctx: MeshContext, data: list[str]
    ) -> _Prepared:
        """Run the planned delegations and quote their answers into the last user turn."""
        query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prepared = _Prepared(with_data(messages, data), [m["content"] for m in messages] + data)
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
        bounded = self._bounded(params, ctx)
        # A second generation (after the model asked for help) may not outspend the budget.
        limit = max(min(bounded.max_tokens, ctx.remaining_tokens()), 1)
        bounded = bounded.model_copy(update={"max_tokens": limit})
        result = collect([delta async for delta in self._decode(messages, bounded)])
        ctx.spend(result.completion_tokens)
        return result

    async def _decode(
        self, messages: list[dict[str, str]], params: GenerationParams
    ) -> AsyncIterator[TextDelta]:
        """Join this replica's running batch; leaving early frees the row at the next step."""
        if self.pool is not None:
            async for delta in self.pool.stream(messages, params):
                yield delta
            return
        if self.engine is None or self.scheduler is None:
            raise RuntimeError("engine not loaded")
        chat = [ChatMessage.model_validate(m) for m in messages]
        prompt = self.engine.prepare(chat, params)  # a bad request fails here, alone
        async for delta in self.scheduler.stream(prompt):
            yield delta

    @staticmethod
    def _bounded(params: GenerationParams, ctx: MeshContext) -> GenerationParams:
        """Generation may not outlive the request's deadline."""
        return params.model_copy(update={"max_time_s": max(ctx.remaining_s(), 0.05)})


def _model_engine(manifest: SpecialistManifest, sources: SourceOptions) -> Engine:
    """The manifest's engine; one that loads weights gets the operator's loading settings."""
    from specialists.transformers_engine import TransformersEngine

    engine_type = engine_class(manifest.model.engine)
    if issubclass(engine_type, TransformersEngine):
        return engine_type(manifest, sources)
    return engine_type(manifest)


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
    if shares_base(manifest):  # no weights here: the pool app asks for the manifest's resources
        actor_options = {"num_cpus": min(resources.num_cpus, FORWARDER_CPUS)}
    options = deployment_options(manifest.name, actor_options, scaling)
    deployment = serve.deployment(SpecialistDeployment, **options)
    options = (sources or SourceOptions()).model_dump(mode="json")
    return deployment.bind(manifest.model_dump(mode="json"), options)  # type: ignore[attr-defined]
