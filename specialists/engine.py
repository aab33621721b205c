"""The `Engine` contract: what every way of running a specialist's model must provide.

An engine is a plain Python object (no Ray inside), so it can be tested and benchmarked directly
and wrapped by `SpecialistDeployment` for serving. Engines are looked up by the manifest's
`model.engine` name in `ENGINES`, so a new engine is one class and one registry entry.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from registry.manifest import GenerationDefaults, SpecialistManifest
from specialists.messages import TraceEvent

FinishReason = Literal["stop", "length", "cancelled"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


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
    ) -> GenerationParams:
        """Request values win, but never beyond the manifest's `max_tokens`."""
        limit = defaults.max_tokens
        return cls(
            max_tokens=min(max_tokens or limit, limit),
            temperature=defaults.temperature if temperature is None else temperature,
            top_p=defaults.top_p if top_p is None else top_p,
            repetition_penalty=defaults.repetition_penalty,
            stop=list(defaults.stop) + list(stop or []),
            seed=seed,
        )


class GenerationResult(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    trace: list[TraceEvent] = Field(default_factory=list)


class TextDelta(BaseModel):
    """One streamed piece. The last delta of a stream carries `finish_reason` and token counts;
    deltas may carry trace events (messages to other specialists) instead of text."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace: list[TraceEvent] = Field(default_factory=list)


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


class Engine(ABC):
    """Loads a model once and turns chat messages into text, many requests at a time.

    - `load()` is called once before any request; it raises on missing or broken weights.
    - `prepare()` checks one request (a prompt longer than the context raises
      `InvalidRequestError`) and tokenizes it, so a bad request fails alone, never its batch.
    - `new_batch()` starts a `DecodeBatch`: rows join it between steps (continuous batching,
      driven by `specialists.scheduler.BatchScheduler`) and leave when they finish. Setting a
      row's `cancel` event ends that row with reason "cancelled"; the others go on.
    - `stream_batch()`, `stream()` and `generate()` are fixed-batch and one-request forms of the
      same path, for direct use and tests.
    """

    def __init__(self, manifest: SpecialistManifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def prepare(self, messages: list[ChatMessage], params: GenerationParams) -> Prompt: ...

    @abstractmethod
    def new_batch(self) -> DecodeBatch: ...

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

    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generator[TextDelta, None, None]:
        prompt = self.prepare(messages, params)
        for step in self.stream_batch([prompt], [cancel or threading.Event()]):
            delta = step[0]
            if delta is None:
                return
            if delta.text or delta.finish_reason:
                yield delta

    def generate(self, messages: list[ChatMessage], params: GenerationParams) -> GenerationResult:
        return collect(self.stream(messages, params))


def collect(deltas: Iterable[TextDelta]) -> GenerationResult:
    """Join streamed deltas into one result."""
    text, last = "", TextDelta(text="")
    for delta in deltas:
        text += delta.text
        last = delta
    return GenerationResult(
        text=text,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason or "stop",
    )


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop sequence; report whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def engine_class(name: str) -> type[Engine]:
    """Resolve a model engine name to its class (imported lazily: torch is heavy).

    Tool specialists (`engine: tool`) are not model engines; see `specialists.tool_engine`.
    """
    if name == "transformers":
        from specialists.transformers_engine import TransformersEngine

        return TransformersEngine
    raise ValueError(f"unknown model engine {name!r}; known engines: transformers")
