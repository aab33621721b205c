"""OpenAI's legacy `POST /v1/completions`, for clients that still send a bare prompt.

Specialists are chat models, so a prompt is answered as one user turn of a chat completion
(routing, pins, bounds and errors are the chat route's), and the answer is reshaped into
`text_completion` objects, streamed or not. What only a raw-text model could do (`echo`,
`suffix`, `best_of` > 1, token-array prompts, several prompts in one call) is a 400 naming the
field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from pydantic import Field, field_validator

from mesh.protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_COMPLETION_TOKENS,
    ApiBody,
    ChatCompletionRequest,
    MeshOptions,
    StreamOptions,
)


class CompletionRequest(ApiBody):
    """The legacy body: one text prompt; the sampling fields of the chat route."""

    model: str = "mesh"
    prompt: str | list[str] = Field(description="One prompt (a list of exactly one is accepted).")
    stream: bool = False
    n: int | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX, strict=True)
    user: str | None = None
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5, description="Top alternatives per token.")
    mesh: MeshOptions | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _one_text(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per call (specialists answer one chat each)")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported by the mesh (send it unset)")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported by the mesh (send it unset)")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("best_of is not supported by the mesh (send it unset)")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def as_chat(self) -> ChatCompletionRequest:
        """The same request on the chat route (validated there, so its limits apply)."""
        fields = self.model_dump(
            exclude={"prompt", "echo", "suffix", "best_of", "logprobs"}, exclude_unset=True
        )
        if self.logprobs is not None:
            fields |= {"logprobs": True, "top_logprobs": self.logprobs}
        fields["messages"] = [{"role": "user", "content": self.text()}]
        return ChatCompletionRequest.model_validate(fields)


def _legacy_logprobs(chat: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat's `logprobs.content` as the legacy parallel lists."""
    if not chat:
        return None
    entries = chat.get("content") or []
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": [],
    }


def text_completion(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat completion body as a legacy `text_completion` body."""
    return {
        **chat,
        "object": "text_completion",
        "choices": [
            {
                "index": c["index"],
                "text": c["message"].get("content") or "",
                "logprobs": _legacy_logprobs(c.get("logprobs")),
                "finish_reason": c["finish_reason"],
            }
            for c in chat["choices"]
        ],
    }


def _text_chunk(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """A chat chunk as a legacy chunk (None: nothing to send, the role-only opening)."""
    if "error" in chunk:
        return chunk
    choices = []
    for c in chunk.get("choices", []):
        text = c["delta"].get("content") or ""
        if not text and c.get("finish_reason") is None and not c.get("logprobs"):
            continue
        choices.append(
            {
                "index": c["index"],
                "text": text,
                "logprobs": _legacy_logprobs(c.get("logprobs")),
                "finish_reason": c.get("finish_reason"),
            }
        )
    if not choices and not chunk.get("usage") and "mesh" not in chunk:
        return None
    return {**chunk, "object": "text_completion", "choices": choices}


async def text_completion_events(
    events: AsyncIterable[str | bytes | memoryview],
) -> AsyncIterator[str]:
    """The chat route's SSE events as legacy completion events."""
    async for event in events:
        line = event if isinstance(event, str) else bytes(event).decode()
        if not line.startswith("data: ") or line.strip() == "data: [DONE]":
            yield line
            continue
        reshaped = _text_chunk(json.loads(line[len("data: ") :]))
        if reshaped is not None:
            yield f"data: {json.dumps(reshaped)}\n\n"
