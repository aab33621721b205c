"""The Gateway: the mesh's front door, an OpenAI-compatible FastAPI app on Ray Serve.

Per request: validate, route (or honour a pinned `model`), call the chosen specialist's Serve
app, and answer in OpenAI's schema with a `mesh` object saying who answered and why.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from opentelemetry.trace import Span, SpanKind
from pydantic import Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from mesh import artifact_api, store_api
from mesh.compound import answer_parts
from mesh.controller import LiveView
from mesh.errors import as_mesh_error, error_response, install_error_handlers, replica_died
from mesh.fair_share import FairShare
from mesh.health import health_body
from mesh.http_auth import client_id
from mesh.http_guard import HttpGuard, current_policy, policy_from, set_policy
from mesh.legacy_completions import CompletionRequest, text_completion, text_completion_events
from mesh.live import LiveFollower, LoadFollower
from mesh.metrics import METRICS_TYPE, MeshMetrics, Outcome, RequestMeter
from mesh.panel import panel_members, run_panel
from mesh.protocol import (
    INT64_MAX,
    ApiBody,
    ChatCompletionRequest,
    EmbeddingRequest,
    MeshInfo,
    MeshOptions,
    Usage,
    completion_body,
    completion_id,
    embedding_body,
)
from mesh.settings import MeshSettings
from mesh.specialist_tools import answer_with_specialists, specialist_tools
from mesh.sse import interleaved, sse_response, sse_stream
from mesh.store_api import StoreService
from mesh.tool_calls import ToolCallReader, ToolMode
from mesh.usage import UsageRecorder
from registry import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SpecialistManifest,
    UnavailableError,
)
from registry.errors import HandedBackError, MeshError, RateLimitedError
from router.cluster import CANNOT_RUN, load_note, prefer_ready
from router.decision import RouteDecision, RouteTarget
from specialists import tracing
from specialists.deployment import SpecialistRequest, app_name
from specialists.engine import ChatMessage, GenerationParams, GenerationResult, TextDelta
from specialists.messages import Bounds, ContextState, TraceEvent
from specialists.serve_options import keep_replica_on_loopback

logger = logging.getLogger("ray.serve")
# A replica ends its own generation at the deadline: the gateway waits this much longer for it.
DEADLINE_GRACE_S = 5.0
# The request field that needs each manifest feature (errors name it).
FEATURE_FIELDS = {"structured_output": "response_format", "tools": "tools"}
api = FastAPI(title="specialist-mesh", version="0.1.0")
install_error_handlers(api)
api.include_router(store_api.router)
api.include_router(artifact_api.router)
api.add_middleware(HttpGuard, policy=current_policy)


class RouteRequest(ApiBody):
    text: str = Field(description="The query to route (at most MESH_MAX_ROUTE_CHARS characters).")


# Helpers sit above the class on purpose: @serve.ingress pickles the routes when the class is
# defined, so anything they call must already exist in the module by then.


def _hand_back_events(decision: RouteDecision) -> list[dict[str, Any]]:
    """Each hand-back as a trace event, from the specialist that declined to the next one."""
    names = [h.name for h in decision.handed_back] + [decision.chosen or ""]
    return [
        TraceEvent(from_=h.name, to=names[i + 1], hop=0, kind="hand_back", note=h.reason).dump()
        for i, h in enumerate(decision.handed_back)
    ]


def _why_whole(body: ChatCompletionRequest, decision: RouteDecision, live: set[str]) -> str | None:
    """Why a compound decision is answered by one specialist after all (None: it is not)."""
    if body.choices > 1:
        return "n > 1"
    if body.needs or body.logprobs:
        return f"{', '.join(body.needs or ['logprobs'])} asked"
    if body.mesh is not None and body.mesh.panel:
        return "a panel was requested"
    gone = [p.specialist for p in decision.parts if p.specialist not in live]
    return f"{', '.join(gone)} not live" if gone else None


def _choices(call: SpecialistRequest, n: int) -> list[SpecialistRequest]:
    """`n` calls for `n` choices; with a seed, choice i samples with seed + i (reproducible,
    and not n copies of one sample)."""
    seed = call.params.seed
    if n == 1 or seed is None:
        return [call] * n
    step = 1 if seed + n <= INT64_MAX else -1  # stay an int64
    return [
        call.model_copy(update={"params": call.params.model_copy(update={"seed": seed + step * i})})
        for i in range(n)
    ]


def _outcome(error: BaseException) -> Outcome:
    """How a request that raised `error` counts in /metrics."""
    if isinstance(error, HandedBackError):
        return "handed_back"
    if isinstance(error, MeshError) and error.status_code in (429, 503):
        return "refused"
    return "failed"


def _deadline(call: SpecialistRequest) -> float:
    """When the request must be over (`time.time()`); the gateway always starts the clock."""
    context = call.context
    return context.deadline if context is not None and context.deadline else time.time() + 3600


def _late(name: str) -> UnavailableError:
    return UnavailableError(
        f"no replica of '{name}' answered within the request's deadline (mesh.deadline_s); "
        "retry shortly"
    )


async def _answered(
    handle: DeploymentHandle, call: SpecialistRequest, name: str
) -> GenerationResult:
    """A whole answer, waited for until the request's deadline (a replica that never comes, on a
    cluster short of nodes, is a 503, not a hang). When the replica holding it died, asked once
    more (Serve sends it to a live replica): nothing reached the client yet, and a generation
    changes nothing outside its request, so a second try is safe; a second death is a 503."""
    deadline = _deadline(call)
    for attempt in (1, 2):
        response = handle.chat.remote(call)
        try:
            result: GenerationResult = await asyncio.wait_for(
                _awaited(response), max(deadline - time.time(), 0) + DEADLINE_GRACE_S
            )
            return result
        except TimeoutError:
            response.cancel()
            raise _late(name) from None
        except Exception as error:
            if attempt == 2 or not replica_died(error):
                raise
            response.cancel()
            logger.warning("a replica died under a request; asking another once: %s", error)
    raise AssertionError("unreachable")


async def _awaited(response: Any) -> Any:
    return await response


async def _first_delta(
    handle: DeploymentHandle,
    call: SpecialistRequest,
    stream: DeploymentResponseGenerator,
    name: str,
) -> tuple[DeploymentResponseGenerator, TextDelta]:
    """A stream and its first delta, by the request's deadline; a stream whose replica died
    before sending anything is opened once more (the same reasoning as `_answered`)."""
    end, deadline = TextDelta(text="", finish_reason="stop"), _deadline(call)
    for attempt in (1, 2):
        try:
            first = await asyncio.wait_for(
                anext(stream, end), max(deadline - time.time(), 0) + DEADLINE_GRACE_S
            )
            return stream, first
        except TimeoutError:
            stream.cancel()
            raise _late(name) from None
        except Exception as error:
            if attempt == 2 or not replica_died(error):
                raise
            stream.cancel()
            logger.warning("a replica died before a stream began; opening it again: %s", error)
            stream = cast(
                DeploymentResponseGenerator, handle.options(stream=True).chat_stream.remote(call)
            )
    raise AssertionError("unreachable")


async def _replayed(result: GenerationResult) -> AsyncGenerator[tuple[int, TextDelta], None]:
    """An answer already generated, as the one-choice stream `sse_stream` frames."""
    yield 0, TextDelta(text=result.text, logprobs=result.logprobs)
    final = result.model_dump(include={"finish_reason", "prompt_tokens", "completion_tokens"})
    yield 0, TextDelta(text="", trace=result.trace, **final)


@serve.ingress(api)
class Gateway:
    def __init__(
        self, router: DeploymentHandle, controller: DeploymentHandle, settings: dict[str, Any]
    ) -> None:
        keep_replica_on_loopback()
        self.settings = MeshSettings.model_validate(settings)
        tracing.configure_tracing(self.settings.otel_exporter)
        uploads = {  # bodies besides JSON: none is a type a browser may send cross-site
            "/v1/artifacts": (artifact_api.TAR_TYPES, self.settings.max_artifact_bytes),
            "/v1/specialists": (("application/yaml", "application/x-yaml", "text/yaml"), None),
        }
        set_policy(policy_from(self.settings, uploads=uploads))
        self.fair_share = FairShare(self.settings.max_inflight_per_client)
        self.router = router
        self.controller = controller
        self.handles: dict[str, DeploymentHandle] = {}
        self.follower = LiveFollower(controller, self._on_live_change)
        self.loads = LoadFollower(controller)
        self.metrics = MeshMetrics()
        self.store = StoreService(self.settings, self.follower, router)
        store_api.bind(self.store)
        self.usage = UsageRecorder(self.store.store)

    async def _on_live_change(self, view: LiveView) -> None:
        self.handles = {n: h for n, h in self.handles.items() if n in view.specialists}

    async def _check_auth(self, authorization: str | None) -> None:
        await self.store.client(authorization)

    # -- OpenAI API -----------------------------------------------------------------------
    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        self,
        body: ChatCompletionRequest,
        request: Request,
        authorization: str | None = Header(None),
    ) -> JSONResponse | StreamingResponse:
        await self._check_auth(authorization)
        with tracing.current(
            "mesh.request", SpanKind.SERVER, model=body.model, stream=body.stream
        ) as span:
            return await self._chat(body, request, authorization, span)

    async def _chat(
        self,
        body: ChatCompletionRequest,
        request: Request,
        authorization: str | None,
        span: Span,
    ) -> JSONResponse | StreamingResponse:
        """A chat completion under its `mesh.request` span (for a stream, the span ends at the
        first token; the replica's `mesh.generate` covers the rest)."""
        if body.specialist_tools:  # offered as functions: validated like the client's own
            offered = specialist_tools(body.specialist_tools, self.follower.view.specialists)
            body = body.with_tools(offered)
        self._check_size(body)
        manifest, decision = await self._choose(body)
        span.set_attributes({"mesh.specialist": manifest.name, "mesh.mode": decision.mode})
        address = request.client.host if request.client else None
        client = client_id(authorization, address, self.settings.api_keys)
        response_id = completion_id()
        # One deadline for the request, however many specialists hand it back.
        state = ContextState(
            conversation_id=response_id,
            bounds=self._bounds(body.mesh),
            traceparent=tracing.traceparent_of(span),
        ).started()
        while True:
            try:
                release = self.fair_share.acquire(client, manifest.name)
            except RateLimitedError:
                self.metrics.refused(manifest.name)
                raise
            try:
                return await self._answer(body, manifest, decision, release, response_id, state)
            except HandedBackError as declined:  # not this one's query: the next candidate
                release()
                manifest, decision = self._after_hand_back(manifest.name, declined, decision)
            except BaseException:
                release()
                raise

    @api.post("/v1/completions", response_model=None)
    async def completions(
        self,
        body: CompletionRequest,
        request: Request,
        authorization: str | None = Header(None),
    ) -> JSONResponse | StreamingResponse:
        """OpenAI's legacy route: the prompt as one chat turn (`mesh.legacy_completions`)."""
        try:
            chat = body.as_chat()
        except ValidationError as error:  # a 400 naming the field, as on the chat route
            raise RequestValidationError(error.errors()) from None
        response = await self.chat_completions(chat, request, authorization)
        if isinstance(response, StreamingResponse):
            return sse_response(text_completion_events(response.body_iterator))
        if response.status_code != 200:
            return response
        return JSONResponse(text_completion(json.loads(bytes(response.body))))

    def _after_hand_back(
        self, name: str, declined: HandedBackError, decision: RouteDecision
    ) -> tuple[SpecialistManifest, RouteDecision]:
        live = self.follower.view.specialists
        runnable = self._runnable()
        after = decision.after_hand_back(name, declined.message, runnable, self.settings.fallback)
        if after is None or after.chosen is None:  # the live view changed meanwhile
            raise UnavailableError(
                f"{name} handed the query back ({declined.message}) and no "
                "other specialist is live to answer it"
            )
        return live[after.chosen], after

    def _may_hand_back(self, body: ChatCompletionRequest, decision: RouteDecision) -> bool:
        """Routed (not pinned by `model` or an @mention), not a panel, and somebody else could
        answer: a specialist the query is not for (a tool) may hand it back instead."""
        if not body.routed or decision.mode in ("panel", "pinned"):
            return False
        return decision.can_hand_back(self.follower.view.specialists, self.settings.fallback)

    async def _answer(
        self,
        body: ChatCompletionRequest,
        manifest: SpecialistManifest,
        decision: RouteDecision,
        release: Callable[[], None],
        response_id: str,
        state: ContextState,
    ) -> JSONResponse | StreamingResponse:
        """Generate the answer; `release` frees the client's fair-share slot when it ends."""
        if body.mesh is not None and body.mesh.panel:
            if body.choices > 1:
                raise InvalidRequestError("n > 1 is not supported with a panel", param="n")
            if body.specialist_tools:
                raise InvalidRequestError("mesh.tools is not supported with a panel", param="mesh")
            if body.needs:
                field = FEATURE_FIELDS[body.needs[0]]
                raise InvalidRequestError(f"{field} is not supported with a panel", param=field)
            unknown = [n for n in body.mesh.panel if n not in self.follower.view.specialists]
            if unknown:
                raise NotFoundError(f"panel members not live: {', '.join(unknown)}", param="mesh")
        if body.specialist_tools and body.choices > 1:
            raise InvalidRequestError("n > 1 is not supported with mesh.tools", param="n")
        sampling: dict[str, Any] = {
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stop_list(),
            "seed": body.seed,
            "logprobs": body.logprob_count,
        }
        params = GenerationParams.merge(manifest.generation, grammar=body.grammar(), **sampling)
        live = set(self.follower.view.specialists)
        if decision.mode == "compound":
            whole = _why_whole(body, decision, self._runnable())
            if whole is None:
                return await self._compound(body, decision, params, release, response_id, state)
            reason = f"{decision.reason}; answered whole: {whole}"
            decision = decision.model_copy(update={"mode": "single", "parts": [], "reason": reason})
        members = panel_members(body.mesh, decision, live)
        alone = "n > 1" if body.choices > 1 else ", ".join(body.needs) + " asked"
        if members and (body.choices > 1 or body.needs):  # the top candidate answers alone
            members = []
            why = f"{decision.reason}; {alone}: the top candidate answers alone"
            decision = decision.model_copy(update={"mode": "single", "reason": why})
        data: list[str] = []
        trace: list[dict[str, Any]] = []
        if members:
            panel = await run_panel(
                state,
                members,
                live,
                body.query(),
                options=body.mesh,
                default_aggregator=self.settings.panel_aggregator,
                max_tokens=params.max_tokens,
            )
            aggregator = self.follower.view.specialists.get(panel.aggregator)
            if aggregator is None:  # went away while the drafts ran
                raise NotFoundError(
                    f"panel aggregator '{panel.aggregator}' is no longer live", param="mesh"
                )
            manifest = aggregator
            decision = decision.model_copy(update={"mode": "panel"})
            state, data, trace = panel.state, panel.data, panel.trace
        state = state.model_copy(update={"path": [manifest.name]})
        info = MeshInfo(
            specialist=manifest.name,
            version=manifest.version,
            decision=decision,
            trace=[*_hand_back_events(decision), *trace],
        )
        handle = self._handle(manifest.name)
        # A follow-up's last turn ("and in Rust?") means nothing without its thread.
        teaches = not body.routed or (
            decision.mode in ("single", "fallback") and decision.follow_up_of is None
        )
        recorded = self.usage.start(
            manifest.name,
            routed=body.routed,
            response_id=response_id,
            query=body.query() if teaches else None,
        )
        meter = self.metrics.start(manifest.name)

        def finish(failed: bool | None) -> None:
            """`failed` None: handed back, so not this specialist's request at all."""
            if failed is not None:
                recorded(failed)
            meter.done("handed_back" if failed is None else "failed" if failed else "answered")
            release()

        call = SpecialistRequest(
            messages=[ChatMessage.model_validate(m) for m in body.chat()],
            params=params,
            context=state,
            data=data,
            may_hand_back=not members and self._may_hand_back(body, decision),
        )
        calls, mode = _choices(call, body.choices), body.tool_mode
        ready: GenerationResult | None = None  # answered already (by the tool round)
        spent = 0
        try:
            if body.specialist_tools:  # the model may call a specialist first
                without_tools = body.model_copy(update={"tool_choice": "none"}).chat()
                round_ = await answer_with_specialists(
                    call,
                    mode,
                    set(body.specialist_tools),
                    manifest.name,
                    lambda asked: _answered(handle, asked, manifest.name),
                    plain=[ChatMessage.model_validate(m) for m in without_tools],
                    plain_params=GenerationParams.merge(manifest.generation, **sampling),
                )
                info.trace.extend(event.dump() for event in round_.trace)
                ready, spent = round_.answer, round_.spent
                if round_.again is not None:
                    calls, mode = [round_.again], "text"
            if body.stream:
                if ready is not None:
                    events = sse_stream(
                        meter.watch(_replayed(ready)),
                        info,
                        response_id,
                        info.specialist,
                        finish,
                        lambda: None,
                        include_usage=body.include_usage,
                        tool_mode=mode,
                    )
                    return sse_response(events)
                return await self._stream(
                    handle,
                    calls,
                    info,
                    response_id,
                    finish,
                    meter,
                    include_usage=body.include_usage,
                    tool_mode=mode,
                    spent=spent,
                )
            results: list[GenerationResult] = (
                [ready]
                if ready is not None
                else await asyncio.gather(*(_answered(handle, c, manifest.name) for c in calls))
            )
        except BaseException as error:  # cancelled too (the client went away): counted, freed
            mapped = as_mesh_error(error)
            meter.done(_outcome(mapped))
            finish(None if isinstance(mapped, HandedBackError) else True)
            if mapped is error:
                raise
            raise mapped from None
        for result in results:
            meter.tokens(result.prompt_tokens, result.completion_tokens)
        finish(False)
        for result in results:
            info.trace.extend(event.dump() for event in result.trace)
        counts = [(r.prompt_tokens, r.completion_tokens) for r in results]
        counts[0] = (counts[0][0], counts[0][1] + spent)  # the tool round's tokens count too
        usage = Usage.of_choices(counts)
        return JSONResponse(
            completion_body(
                id=response_id,
                model=manifest.name,
                choices=[
                    ToolCallReader(mode).message(result.text, result.finish_reason)
                    for result in results
                ],
                usage=usage,
                mesh=info,
                logprobs=(
                    [[e.model_dump() for e in r.logprobs] for r in results]
                    if body.logprobs
                    else None
                ),
            )
        )

    async def _compound(
        self,
        body: ChatCompletionRequest,
        decision: RouteDecision,
        params: GenerationParams,
        release: Callable[[], None],
        response_id: str,
        state: ContextState,
    ) -> JSONResponse | StreamingResponse:
        """Each part to its own specialist (`mesh.compound`: independent parts at once, the
        others after the parts before them); one answer, in the query's order."""
        view = self.follower.view
        first = view.specialists[decision.parts[0].specialist]
        info = MeshInfo(specialist=first.name, version=first.version, decision=decision, trace=[])
        recorded = self.usage.start(first.name, routed=True, response_id=response_id)
        meter = self.metrics.start(first.name)

        def finish(failed: bool | None) -> None:
            recorded(bool(failed))
            meter.done("failed" if failed else "answered")
            release()

        parts = meter.watch(
            answer_parts(
                state, decision.parts, set(view.specialists), params.max_tokens, body.query()
            )
        )
        if body.stream:
            return sse_response(
                sse_stream(
                    parts,
                    info,
                    response_id,
                    first.name,
                    finish,
                    lambda: None,
                    include_usage=body.include_usage,
                )
            )
        pieces: list[str] = []
        tokens = 0
        try:
            async for _, delta in parts:
                pieces.append(delta.text)
                info.trace.extend(event.dump() for event in delta.trace)
                tokens += delta.completion_tokens
        except BaseException as error:  # cancelled too: counted, freed
            finish(True)
            mapped = as_mesh_error(error)
            if mapped is error:
                raise
            raise mapped from None
        finish(False)
        return JSONResponse(
            completion_body(
                id=response_id,
                model=first.name,
                choices=[("".join(pieces), "stop")],
                usage=Usage.of_choices([(0, tokens)]),
                mesh=info,
            )
        )

    @api.post("/v1/embeddings")
    async def embeddings(
        self, body: EmbeddingRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        """OpenAI's embeddings, from the router's frozen encoder (`model`: "mesh" or its name)."""
        await self._check_auth(authorization)
        texts = body.texts()
        size = sum(len(text) for text in texts)
        if size > self.settings.max_prompt_chars:
            raise InvalidRequestError(
                f"input is {size} characters; the limit is {self.settings.max_prompt_chars}",
                param="input",
            )
        try:
            batch = await self.router.embed.remote(texts, body.model)
        except Exception as error:
            raise as_mesh_error(error) from None
        return embedding_body(batch, body.encoding_format)

    @api.get("/v1/models")
    async def models(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        await self._check_auth(authorization)
        view = await self.follower.refresh()
        created = int(time.time())
        data = [{"id": "mesh", "object": "model", "created": created, "owned_by": "mesh"}]
        data += [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": m.owner,
                "version": m.version,
                "description": m.description,
            }
            for name, m in sorted(view.specialists.items())
        ]
        return {"object": "list", "data": data}

    @api.post("/v1/route")
    async def route(
        self, body: RouteRequest, authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        """Dry run: the decision a chat request would get now (the router's, adjusted for the
        cluster's live state), without generating."""
        await self._check_auth(authorization)
        if not body.text.strip():
            raise InvalidRequestError("text must not be empty", param="text")
        if len(body.text) > self.settings.max_route_chars:
            limit = self.settings.max_route_chars
            raise InvalidRequestError(
                f"text is {len(body.text)} characters; the limit is {limit}", param="text"
            )
        view = self.follower.view
        routed = await self.router.route.remote(body.text, view.generation)
        decision = self._on_the_cluster(RouteDecision.model_validate(routed), [], view.specialists)
        return decision.model_dump(mode="json")

    @api.get("/v1/router")
    async def router_status(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        """The router serving now: method, artifact version, its operating point and the
        trade-off curve its thresholds were chosen on (no labelled texts, no weights)."""
        await self._check_auth(authorization)
        return dict(await self.router.indexed.remote())

    @api.get("/v1/specialists/{name}/batch")
    async def batch(self, name: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        """The decode batch of one of the specialist's replicas: rows running and waiting,
        steps, admissions, cancellations (how operators and tests see continuous batching)."""
        await self._check_auth(authorization)
        view = await self.follower.refresh()
        if name not in view.specialists:
            raise await self._not_live(name, sorted(view.specialists))
        return dict(await self._handle(name).batch_stats.remote())

    @api.get("/healthz")
    async def healthz(self, authorization: str | None = Header(None)) -> JSONResponse:
        """`ok`, `degraded` (some specialist failed; the rest serve) or `starting` (503).

        Replica details (pids, nodes, actor ids) and deploy errors are for the operator only:
        send the admin token to see them."""
        await self._check_auth(authorization)
        status = await self.controller.status.remote()
        try:
            detailed = (await self.store.principal(authorization)).admin
        except PermissionDeniedError:
            detailed = False
        return JSONResponse(
            health_body(status, detailed=detailed),
            status_code=200 if status["ready"] else 503,
        )

    @api.get("/metrics", response_class=PlainTextResponse)  # documented as text/plain
    async def prometheus(self, authorization: str | None = Header(None)) -> Response:
        """Prometheus exposition of this gateway's counts and the controller's replicas
        (`mesh.metrics`); the same auth as the other read routes."""
        await self._check_auth(authorization)
        try:
            self.metrics.observe_cluster(await self.loads.refresh())
        except Exception:  # the controller is busy or restarting: the last known replicas
            self.metrics.observe_cluster(self.loads.loads)
        return Response(self.metrics.exposition(), media_type=METRICS_TYPE)

    # -- helpers --------------------------------------------------------------------------
    def _check_size(self, body: ChatCompletionRequest) -> None:
        if len(body.messages) > self.settings.max_messages:
            raise InvalidRequestError(
                f"too many messages: {len(body.messages)} > {self.settings.max_messages}",
                param="messages",
            )
        size = sum(len(m["content"]) for m in body.chat())  # tools and calls shown included
        if size > self.settings.max_prompt_chars:
            raise InvalidRequestError(
                f"prompt is {size} characters; the limit is {self.settings.max_prompt_chars}",
                param="messages",
            )
        if not body.query().strip():
            raise InvalidRequestError("the last message has no text", param="messages")

    async def _choose(
        self, body: ChatCompletionRequest
    ) -> tuple[SpecialistManifest, RouteDecision]:
        view = self.follower.view
        route_s: float | None = None
        if body.routed:
            started = time.perf_counter()
            with tracing.current("mesh.route") as span:
                routed = await self.router.route.remote(
                    body.query(), view.generation, body.earlier_user_turns()
                )
                decision = RouteDecision.model_validate(routed)
                span.set_attributes({"mesh.mode": decision.mode, "mesh.reason": decision.reason})
            route_s = time.perf_counter() - started
            name = decision.chosen
            if name is None:
                raise UnavailableError("no specialist is live yet; retry shortly")
        else:
            name = body.model
            decision = RouteDecision(
                targets=[RouteTarget(name=name, score=1.0)],
                mode="pinned",
                threshold=0.0,
                reason=f"model '{name}' was requested explicitly",
            )
        if name not in view.specialists:
            view = await self.follower.refresh()
        if name not in view.specialists:
            raise await self._not_live(name, sorted(view.specialists))
        if body.needs:  # only specialists declaring every feature needed may answer
            decision = self._serving(body.needs, body, decision, view.specialists)
        decision = self._on_the_cluster(decision, body.needs, view.specialists)
        self.metrics.decided(decision, route_s)
        return view.specialists[decision.chosen or name], decision

    def _runnable(self) -> set[str]:
        """The live specialists that can run now (not pending or failed on the cluster)."""
        loads = self.loads.loads
        return {
            name
            for name in self.follower.view.specialists
            if name not in loads or loads[name].state not in CANNOT_RUN
        }

    def _on_the_cluster(
        self, decision: RouteDecision, needs: list[str], live: dict[str, SpecialistManifest]
    ) -> RouteDecision:
        """`decision` with each candidate's live state and load (`router.cluster`): one that
        cannot run is never chosen, and a panel keeps its warm members with room."""
        loads = self.loads.loads
        chosen = decision.chosen or ""
        able = [name for name, m in live.items() if set(needs) <= set(m.features)]
        load = loads.get(chosen)
        adjusted = prefer_ready(
            decision, loads, self.metrics.open_requests, able, self.settings.fallback
        )
        if adjusted is None or (decision.mode == "pinned" and load and load.state in CANNOT_RUN):
            raise UnavailableError(
                f"specialist '{chosen}' cannot run now: {load_note(chosen, load, 0)}"
                + ("" if decision.mode == "pinned" else "; no other live specialist fits")
            )
        return adjusted

    def _serving(
        self,
        needs: list[str],
        body: ChatCompletionRequest,
        decision: RouteDecision,
        live: dict[str, SpecialistManifest],
    ) -> RouteDecision:
        """`decision` among the live specialists whose manifest declares every feature in
        `needs`, or a 400 naming the request field that needs them."""
        able = sorted(n for n, m in live.items() if set(needs) <= set(m.features))
        need, field = " and ".join(needs), FEATURE_FIELDS[needs[-1]]
        offer = ", ".join(able) or "none is live"
        if not body.routed:
            if decision.chosen in able:
                return decision
            raise InvalidRequestError(
                f"{field}: specialist '{decision.chosen}' does not serve {need} (its manifest "
                f"does not declare it); specialists that do: {offer}",
                param=field,
            )
        restricted = decision.restricted_to(able, need, live, self.settings.fallback)
        if restricted is None:
            raise InvalidRequestError(
                f"{field}: no live specialist that fits this query serves {need}; "
                f"specialists that do: {offer}",
                param=field,
            )
        return restricted

    async def _not_live(self, name: str, live: list[str]) -> MeshError:
        status = await self.controller.status.remote()
        state = status["specialists"].get(name)
        if state is not None:
            why = f": {state['pending']}" if state.get("pending") else "; retry shortly"
            return UnavailableError(
                f"specialist '{name}' is installed but not ready ({state['status']}){why}"
            )
        available = ", ".join(["mesh", *live])
        return NotFoundError(
            f"The model '{name}' does not exist or is not installed in this mesh. "
            f"Available: {available}",
            param="model",
        )

    def _handle(self, name: str) -> DeploymentHandle:
        if name not in self.handles:
            self.handles[name] = serve.get_app_handle(app_name(name))
        return self.handles[name]

    async def _stream(
        self,
        handle: DeploymentHandle,
        calls: list[SpecialistRequest],
        info: MeshInfo,
        response_id: str,
        finish: Callable[[bool | None], None],
        meter: RequestMeter,
        *,
        include_usage: bool = False,
        tool_mode: ToolMode = "text",
        spent: int = 0,
    ) -> StreamingResponse | JSONResponse:
        """One stream per choice; each stream's first delta is awaited before the response
        starts, so a refusal (or a hand-back) is still a plain HTTP answer."""
        streams = [
            cast(DeploymentResponseGenerator, handle.options(stream=True).chat_stream.remote(c))
            for c in calls
        ]

        def cancel() -> None:
            for stream in streams:
                stream.cancel()

        firsts: list[TextDelta] = []
        try:
            for index, call in enumerate(calls):
                streams[index], first = await _first_delta(
                    handle, call, streams[index], info.specialist
                )
                firsts.append(first)
        except BaseException as error:  # refused before any token: a normal HTTP error
            cancel()
            mapped = as_mesh_error(error)
            meter.done(_outcome(mapped))
            if isinstance(mapped, HandedBackError):  # nothing sent yet: the next candidate
                finish(None)
                raise mapped from None
            finish(True)
            if not isinstance(error, Exception):  # cancelled: nobody to answer
                raise
            return error_response(mapped)
        return sse_response(
            sse_stream(
                meter.watch(interleaved(streams, firsts)),
                info,
                response_id,
                info.specialist,
                finish,
                cancel,
                choices=len(streams),
                include_usage=include_usage,
                tool_mode=tool_mode,
                spent=spent,
            )
        )

    def _bounds(self, options: MeshOptions | None) -> Bounds:
        """The settings' bounds, tightened by the request's `mesh` options where given."""
        ceiling = Bounds(
            max_hops=self.settings.max_hops,
            max_fanout=self.settings.max_fanout,
            token_budget=self.settings.token_budget,
            deadline_s=self.settings.deadline_s,
        )
        if options is None:
            return ceiling
        requested = {
            key: value
            for key, value in options.model_dump(
                include={"max_hops", "max_fanout", "token_budget", "deadline_s"}
            ).items()
            if value is not None
        }
        return ceiling.model_copy(update=requested).within(ceiling)
