"""The `Engine` contract: one request in, an async stream of text deltas out.

The shape is Ray Serve LLM's (and vLLM's `AsyncLLMEngine`): the mesh hands an engine one
request at a time and reads its deltas; how requests are batched is the engine's business. So an
engine that schedules its own batches (onnxruntime-genai, vLLM) plugs in as easily as the mesh's
own continuous-batching decoder (`BatchEngine`, behind the `transformers` engine). Engines are
found by name in `specialists.engine_registry` (entry-point group `mesh.engines`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from registry.manifest import GenerationDefaults, SpecialistManifest
from specialists.grammar import Grammar
from specialists.messages import TraceEvent
from specialists.sources import SourceOptions

FinishReason = Literal["stop", "length", "cancelled"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class TopLogprob(BaseModel):
    """One token and its log-probability (OpenAI's `top_logprobs` entry)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A sampled token's log-probability and the most likely alternatives at that step."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class GenerationParams(BaseModel):
    """Sampling settings for one request, already clamped to the manifest's limits."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, le=1_000_000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0)
    # The manifest's stops plus the request's: capped because every decode step scans them.
    stop: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=32)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="Any int64.")
    max_time_s: float | None = Field(None, gt=0, description="Stop generating after this long.")
    grammar: Grammar | None = Field(
        None,
        description="Constrained decoding: the output matches this (engines declaring "
        "`capabilities.grammars`).",
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Return each sampled token's log-probability and this many most likely "
        "alternatives (OpenAI's `top_logprobs`; 0: none); None: no log-probabilities. Raw: "
        "the model's own distribution, before penalties, temperature, top_p and grammar "
        "(engines declaring `capabilities.logprobs`).",
    )

    @classmethod
    def merge(
        cls,
        defaults: GenerationDefaults,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        grammar: Grammar | None = None,
        logprobs: int | None = None,
    ) -> GenerationParams:
        """Request values win, but never beyond the manifest's `max_tokens`. With a grammar
        the manifest's stop strings do not apply (they end free text; the grammar ends its
        own, and a stop inside a JSON string would cut it invalid); the request's still do."""
        limit = defaults.max_tokens
        return cls(
            max_tokens=min(max_tokens or limit, limit),
            temperature=defaults.temperature if temperature is None else temperature,
            top_p=defaults.top_p if top_p is None else top_p,
            repetition_penalty=defaults.repetition_penalty,
            stop=([] if grammar else list(defaults.stop)) + list(stop or []),
            seed=seed,
            grammar=grammar,
            logprobs=logprobs,
        )


class GenerationResult(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    trace: list[TraceEvent] = Field(default_factory=list)
    # One entry per answer token (end of sequence excluded) when `params.logprobs` was set.
    logprobs: list[TokenLogprob] = Field(default_factory=list)


class TextDelta(BaseModel):
    """One streamed piece. The last delta of a stream carries `finish_reason` and token counts;
    deltas may carry trace events (messages to other specialists) instead of text."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace: list[TraceEvent] = Field(default_factory=list)
    # When `params.logprobs` is set: the tokens sampled since the last delta, in order (end of
    # sequence excluded). Tokens whose text is held back travel with it; a stop string's own
    # tokens are reported although its text is cut.
    logprobs: list[TokenLogprob] = Field(default_factory=list)


@dataclass
class Prompt:
    """A request after validation: its prompt token ids and its (clamped) sampling settings."""

    ids: list[int]
    params: GenerationParams
    # The LoRA adapter this row decodes with, on a model holding several (a shared-base pool,
    # `specialists.adapter_pool`); None: the model as loaded.
    adapter: str | None = None
    # When the request arrived (time.monotonic): `params.max_time_s` counts from here, so
    # time spent waiting for a batch slot is part of the request's deadline.
    arrived: float = field(default_factory=time.monotonic)
    # The row's grammar state (`specialists.grammar.TokenConstraint`) when `params.grammar`.
    constraint: Any = None


class DecodeBatch(Protocol):
    """A running batch of rows (see `specialists.decoding.BatchDecoder`)."""

    rows: list[Any]

    @property
    def can_admit_running(self) -> bool:
        """Whether rows may join while others are mid-answer (else only an empty batch)."""
        ...

    def admit(self, prompts: Sequence[Prompt], cancels: Sequence[threading.Event]) -> list[Any]:
        """Prefill `prompts` and add them to the batch; returns their row handles."""
        ...

    def step(self) -> list[tuple[Any, TextDelta]]:
        """One token for every row; rows that finish leave the batch."""
        ...


class BatchSource(Protocol):
    """What `specialists.scheduler.BatchScheduler` drives: anything that starts decode batches."""

    def new_batch(self) -> DecodeBatch: ...


class EngineCapabilities(BaseModel):
    """What an engine can do beyond plain chat; the mesh routes and validates by these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapters: bool = Field(False, description="Serves several LoRA adapters on one base.")
    grammars: bool = Field(False, description="Constrained decoding (JSON schema, grammar).")
    logprobs: bool = Field(False, description="Token log-probabilities.")
    n: bool = Field(False, description="Several choices for one request.")
    continuous_batching: bool = Field(
        False, description="Requests join a running batch between steps."
    )
    exact: bool = Field(
        False,
        description="Computes answers instead of generating them (a tool): callers quote them "
        "as exact data, and the mesh plans no delegation for it.",
    )


class EngineRequest(BaseModel):
    """One request as an engine sees it: the chat, its (clamped) settings, and the adapter to
    decode with on an engine holding several. `mesh` is the live `MeshContext` a tool engine may
    ask other specialists through; it never crosses a process boundary."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    messages: list[ChatMessage]
    params: GenerationParams = Field(default_factory=GenerationParams)
    adapter: str | None = None
    # Another specialist may answer instead: an engine that cannot answer this request at all
    # (a tool it is not for) raises `HandedBackError` rather than answering.
    may_hand_back: bool = False
    # When the request arrived (time.monotonic): `params.max_time_s` counts from here, so time
    # spent waiting for a batch slot is part of the request's deadline.
    arrived: float = Field(default_factory=time.monotonic)
    mesh: Any = Field(None, exclude=True)

    def for_transport(self) -> EngineRequest:
        """A copy to send to another process: no live context, and the deadline as the time
        left (monotonic clocks differ between hosts). The receiver calls `received()`."""
        left = self.params.max_time_s
        if left is not None:
            left = max(left - (time.monotonic() - self.arrived), 0.001)
        params = self.params.model_copy(update={"max_time_s": left})
        return self.model_copy(update={"mesh": None, "params": params})

    def received(self) -> EngineRequest:
        """This request as it arrives from another process: its time left counts from now."""
        return self.model_copy(update={"arrived": time.monotonic()})


class Engine(ABC):
    """The per-request contract every way of running a specialist provides.

    - `load()` is called once before any request; it raises `ManifestError` on missing,
      swapped or broken weights, so a bad specialist fails its install, never a request.
    - `stream(request, cancel)` is an async iterator of `TextDelta`s for one request: text
      pieces, then one final delta with `finish_reason` and token counts. The engine schedules
      requests itself (continuous batching, static batches, a GPU server): the mesh only asks.
      A prompt that cannot fit raises `InvalidRequestError` before the first delta. Setting
      `cancel` (or closing the iterator) ends the request with "cancelled"; reaching
      `params.max_time_s` after `request.arrived` ends it with "length". One request's failure
      never fails another's.
    - `health()` raises while the engine cannot serve.
    - `capabilities` says what it can do beyond plain chat; `name` is its registry name
      (entry-point group `mesh.engines`, see `specialists.engine_registry`).

    Engines are plain Python (no Ray inside), so they are tested and benchmarked directly;
    `SpecialistDeployment` serves one.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities()

    def __init__(self, manifest: SpecialistManifest, sources: SourceOptions | None = None) -> None:
        self.manifest = manifest
        self.sources = sources or SourceOptions()

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]: ...

    @classmethod
    def backend_app_name(cls, manifest: SpecialistManifest) -> str | None:
        """The Serve app this engine's specialists forward to, deployed by the controller beside
        the specialist's own (vLLM's LLM server); None for engines that run in the replica."""
        return None

    @classmethod
    def build_backend_app(cls, manifest: SpecialistManifest, sources: SourceOptions) -> Any:
        """The `ray.serve.Application` named by `backend_app_name`."""
        raise NotImplementedError(f"the {cls.name} engine runs in the specialist's replica")

    def health(self) -> None:  # noqa: B027 (an engine that cannot fail after load says nothing)
        """Raise while this engine cannot serve (not loaded, its server gone)."""

    def stats(self) -> dict[str, Any]:
        """What the engine is doing now (rows running and waiting, totals), for `mesh status`."""
        return {}

    # -- engines with `capabilities.adapters` ---------------------------------------------
    def add_adapter(self, manifest: SpecialistManifest) -> str:
        """Check and load a specialist's LoRA adapter; returns the name requests use."""
        raise NotImplementedError(f"the {self.name} engine does not serve adapters")

    def retire_adapter(self, name: str) -> None:
        """Unload `name` now, or when its last running request is done."""
        raise NotImplementedError(f"the {self.name} engine does not serve adapters")


class BatchEngine(Engine):
    """An engine whose decode loop is the mesh's own: it tokenizes (`prepare`) and starts
    `DecodeBatch`es (`new_batch`) that `BatchScheduler` steps with continuous batching.

    `stream_batch()` and `generate()` decode a fixed batch synchronously, for direct use and
    tests; `stream()` joins the replica's running batch.
    """

    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities(continuous_batching=True)
    max_batch_size: int = 8

    @abstractmethod
    def prepare(self, messages: list[ChatMessage], params: GenerationParams) -> Prompt: ...

    @abstractmethod
    def new_batch(self) -> DecodeBatch: ...

    @property
    def scheduler(self) -> Any:
        """This engine's `BatchScheduler`, made on first use in the running event loop (its
        queues belong to one loop; direct use with `asyncio.run` gets a fresh one per loop)."""
        loop = asyncio.get_running_loop()
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is None or getattr(self, "_scheduler_loop", None) is not loop:
            from specialists.scheduler import BatchScheduler

            size = self.manifest.scaling.max_batch_size
            scheduler = self._scheduler = BatchScheduler(self, max_batch_size=size)
            self._scheduler_loop = loop
        return scheduler

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        if request.params.grammar is None:
            prompt = self.prepare(request.messages, request.params)  # a bad request fails alone
        else:  # compiling a large grammar takes a while: never on the replica's event loop
            prompt = await asyncio.to_thread(self.prepare, request.messages, request.params)
        prompt.adapter, prompt.arrived = request.adapter, request.arrived
        async for delta in self.scheduler.stream(prompt, cancel):
            yield delta

    def stats(self) -> dict[str, Any]:
        scheduler = getattr(self, "_scheduler", None)
        return scheduler.snapshot().model_dump() if scheduler is not None else {}

    def stream_batch(
        self, prompts: Sequence[Prompt], cancels: Sequence[threading.Event]
    ) -> Generator[list[TextDelta | None], None, None]:
        """Decode a fixed batch. Once per step, one entry per prompt: a `TextDelta` while that
        row runs (text may be empty), its final delta (`finish_reason`, token counts), then None."""
        batch = self.new_batch()
        rows = batch.admit(prompts, cancels)
        index = {id(row): i for i, row in enumerate(rows)}
        finished: set[int] = set()
        while batch.rows:
            step: list[TextDelta | None] = [
                None if i in finished else TextDelta(text="") for i in range(len(rows))
            ]
            for row, delta in batch.step():
                if getattr(row, "error", None) is not None:  # that row failed alone
                    raise row.error
                step[index[id(row)]] = delta
                if delta.finish_reason:
                    finished.add(index[id(row)])
            yield step

    def generate(self, messages: list[ChatMessage], params: GenerationParams) -> GenerationResult:
        """One answer, decoded alone and synchronously (tests, evaluation)."""
        prompt = self.prepare(messages, params)
        deltas = (step[0] for step in self.stream_batch([prompt], [threading.Event()]))
        return collect(d for d in deltas if d is not None)


def collect(deltas: Iterable[TextDelta]) -> GenerationResult:
    """Join streamed deltas into one result."""
    text, last, trace, logprobs = "", TextDelta(text=""), [], []
    for delta in deltas:
        text += delta.text
        trace.extend(delta.trace)
        logprobs.extend(delta.logprobs)
        last = delta
    return GenerationResult(
        text=text,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason or "stop",
        trace=trace,
        logprobs=logprobs,
    )


async def collect_stream(deltas: AsyncIterable[TextDelta]) -> GenerationResult:
    """`collect` for an engine's async stream."""
    return collect([delta async for delta in deltas])


COALESCE_S = 0.015  # a Serve message and an SSE event cost about as much as a fast token


async def coalesce(
    deltas: AsyncIterable[TextDelta], interval_s: float = COALESCE_S
) -> AsyncIterator[TextDelta]:
    """Merge text deltas that arrive within `interval_s` of the last one sent, so a fast engine
    (a token every few ms) costs one message per interval, not per token, on each Serve hop.
    The first text, trace events and the final delta go out at once; held text goes out when
    the interval ends even if no token follows; order is kept (held text before a trace)."""
    loop = asyncio.get_running_loop()
    source = aiter(deltas)
    pending: TextDelta | None = None
    sent_at = -interval_s
    upcoming: asyncio.Future[TextDelta] | None = None
    try:
        while True:
            if upcoming is None:
                upcoming = asyncio.ensure_future(anext(source))
            if pending is not None:
                left = interval_s - (loop.time() - sent_at)
                done, _ = await asyncio.wait({upcoming}, timeout=max(left, 0.0))
                if not done:  # the interval is over and nothing came: send what is held
                    sent_at = loop.time()
                    yield pending
                    pending = None
                    continue
            try:
                delta = await upcoming
            except StopAsyncIteration:
                break
            finally:
                if upcoming.done():
                    upcoming = None
            if pending is not None and delta.trace:  # held text goes before the trace
                yield pending
                pending = None
            if pending is not None:
                delta = _merge(pending, delta)
                pending = None
            now = loop.time()
            if delta.finish_reason or delta.trace or now - sent_at >= interval_s:
                sent_at = now
                yield delta
            else:
                pending = delta
        if pending is not None:
            yield pending
    finally:  # the caller left: stop the engine's stream too (its `finally` frees the row)
        if upcoming is not None and not upcoming.done():
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


def _merge(first: TextDelta, then: TextDelta) -> TextDelta:
    return then.model_copy(
        update={
            "text": first.text + then.text,
            "trace": first.trace + then.trace,
            "logprobs": first.logprobs + then.logprobs,
        }
    )


def safe_length(text: str, stops: Sequence[str]) -> int:
    """How much of `text` can be shown now: hold back a half-decoded character and any tail
    that could still grow into a stop string (so a stop string never leaks out in pieces)."""
    end = len(text.rstrip("\ufffd"))
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                held = max(held, size)
                break
    return end - held


def next_piece(
    decoded: str,
    emitted: str,
    params: GenerationParams,
    *,
    eos: bool,
    generated: int,
    early: FinishReason | None,
) -> tuple[str, FinishReason | None]:
    """One decode step's text, for every decode loop: the part of `decoded` (the row's answer
    so far) past `emitted` that is safe to show, and why the row ends now, if it does: a stop
    string or end of sequence ("stop"), `max_tokens` ("length"), else `early` (the loop's own
    cancel and deadline check)."""
    text, stopped = truncate_at_stop(decoded, params.stop)
    finish: FinishReason | None
    if stopped or eos:
        finish = "stop"
    elif generated >= params.max_tokens:
        finish = "length"
    else:
        finish = early
    if finish is None:
        text = text[: safe_length(text, params.stop)]
    return (text[len(emitted) :] if text.startswith(emitted) else ""), finish


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop sequence; report whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
