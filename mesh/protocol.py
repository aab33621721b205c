"""OpenAI-compatible request and response bodies, plus the `mesh` extension object."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.decision import RouteDecision

ROUTED_MODELS = frozenset({"mesh", "mesh/auto", "auto"})


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class MeshOptions(BaseModel):
    """The `mesh` extension of a chat request (OpenAI clients: `extra_body={"mesh": {...}}`).

    Bounds may only tighten the server's; `panel` asks several specialists and aggregates.
    """

    model_config = ConfigDict(extra="forbid")

    max_hops: int | None = Field(None, ge=0)
    max_fanout: int | None = Field(None, ge=1)
    token_budget: int | None = Field(None, ge=1)
    deadline_s: float | None = Field(None, gt=0)
    panel: list[str] | None = Field(None, min_length=2, max_length=8)
    aggregator: str | None = None


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat body the mesh honours; unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = "mesh"
    messages: list[RequestMessage]
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    mesh: MeshOptions | None = None

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[RequestMessage]) -> list[RequestMessage]:
        if not value:
            raise ValueError("messages must contain at least one message")
        return value

    @property
    def routed(self) -> bool:
        return self.model in ROUTED_MODELS

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def chat(self) -> list[dict[str, str]]:
        """Messages as the engines take them (`developer` is OpenAI's newer `system`)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]

    def earlier_user_turns(self) -> list[str]:
        """The user turns before the last one, for conversation-aware routing."""
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[:-1]

    def query(self) -> str:
        """The text the router reads: the last user turn."""
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].text()


class MeshInfo(BaseModel):
    """The `mesh` object on every completion: who answered and why."""

    specialist: str
    version: str
    decision: RouteDecision
    trace: list[dict[str, Any]] = Field(default_factory=list)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    *, id: str, model: str, text: str, finish_reason: str, usage: Usage, mesh: MeshInfo
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage.model_dump(),
        "mesh": mesh.model_dump(mode="json"),
    }


def chunk_body(
    *,
    id: str,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    mesh: MeshInfo | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if mesh is not None:
        body["mesh"] = mesh.model_dump(mode="json")
    if usage is not None:
        body["usage"] = usage.model_dump()
    return body


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
