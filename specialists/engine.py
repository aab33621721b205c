"""The `Engine` contract: what every way of running a specialist's model must provide.

An engine is a plain Python object (no Ray inside), so it can be tested and benchmarked directly
and wrapped by `SpecialistDeployment` for serving. Engines are looked up by the manifest's
`model.engine` name in `ENGINES`, so a new engine is one class and one registry entry.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import Literal

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

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
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


class Engine(ABC):
    """Loads a model once and turns chat messages into text.

    - `load()` is called once before any request; it raises on missing or broken weights.
    - `generate()` returns the whole answer with token counts.
    - `stream()` yields `TextDelta`s as text is produced; the final delta has `finish_reason`.
      Setting `cancel` (a threading.Event) stops generation early with reason "cancelled".
    - Bad requests (a prompt longer than the context) raise `InvalidRequestError`.
    """

    def __init__(self, manifest: SpecialistManifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def generate(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> GenerationResult: ...

    @abstractmethod
    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generator[TextDelta, None, None]: ...


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
