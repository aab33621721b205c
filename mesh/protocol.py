"""OpenAI-compatible request and response bodies, plus the `mesh` extension object."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mesh.tool_calls import (
    MAX_TOOLS,
    NamedToolChoice,
    ToolCall,
    ToolChoice,
    ToolMode,
    ToolSpec,
    mode_of,
    render_call,
    render_result,
    tool_grammar,
    tools_prompt,
)
from registry.errors import InvalidRequestError
from registry.text import check_encodable
from router.decision import RouteDecision
from router.embeddings import ROUTED_ALIAS, EmbeddingBatch
from specialists.grammar import Grammar

ROUTED_MODELS = frozenset({"mesh", "mesh/auto", "auto"})


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_USER_CHARS = 256
MAX_COMPLETION_TOKENS = 1_000_000  # a sanity cap; each specialist's manifest clamps far lower
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit
MAX_CHOICES = 8  # `n`: each choice is one more row in the specialist's batch
MAX_EMBEDDING_INPUTS = 256  # texts per /v1/embeddings call (OpenAI allows 2048; ours is a CPU)

# OpenAI request fields the mesh does not honour, with the values that ask for nothing (so a
# client sending its defaults still works). Anything else is a 400 naming the field: silently
# ignoring `tools` or `response_format` would hand back an answer the caller did not ask for.
UNSUPPORTED_FIELDS: dict[str, tuple[Any, ...]] = {
    "logit_bias": (None, {}),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
}


class ContentPart(BaseModel):
    """One part of a message's content: only text is read, so any other kind is refused
    rather than dropped (an image the model never sees would be answered as if it had)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=128)
    name: str | None = Field(None, max_length=64)

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        """Name the unsupported part kind (pydantic's union error would blame `str`)."""
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ValueError(f"only text content parts are supported, got {kind!r}")
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def as_chat(self) -> dict[str, str]:
        """This message as engines take it: `developer` is OpenAI's newer `system`; earlier
        tool calls and tool results become the text form the model writes and reads."""
        if self.role == "tool":
            result = render_result(self.text(), self.tool_call_id, self.name)
            return {"role": "user", "content": result}
        text = self.text()
        if self.role == "assistant" and self.tool_calls:
            text += "".join(render_call(call) for call in self.tool_calls)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


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
    tools: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Live specialists offered to the answering model as tools (one `query` "
        "each); the mesh runs the call it makes and the model answers with the result.",
    )


class ApiBody(BaseModel):
    """Base of every request body: text in it must be encodable (see `registry.text`)."""

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        check_encodable(data)
        return data


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: `include_usage` adds a last chunk with the usage and no
    choices (the other chunks carry none, so a client summing usage over chunks counts once)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`. The schema is always enforced (by constrained
    decoding), `strict` or not; without a schema, any JSON object."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: `text` (no constraint), `json_object`, or `json_schema`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self

    def grammar(self) -> Grammar | None:
        if self.type == "text":
            return None
        schema = self.json_schema.json_schema if self.json_schema else None
        if schema is None:
            return Grammar(kind="json_object")
        return Grammar(kind="json_schema", json_schema=schema)


class ChatCompletionRequest(ApiBody):
    """The subset of OpenAI's chat body the mesh honours, validated to OpenAI's ranges.

    OpenAI fields the mesh cannot honour (`UNSUPPORTED_FIELDS`, `n` over `MAX_CHOICES`) are
    refused with a 400 naming the field unless they carry their no-op value; harmless
    bookkeeping fields (`user`, `metadata`, `store`, `service_tier`) and unknown extras are
    accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = "mesh"
    messages: list[RequestMessage]
    stream: bool = False
    n: int | None = Field(
        None,
        description=f"Choices to generate, 1-{MAX_CHOICES}; with a seed, choice i samples "
        "with seed + i.",
    )
    max_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(
        None,
        description=f"Up to {MAX_STOP_SEQUENCES} non-empty sequences of at most "
        f"{MAX_STOP_CHARS} characters (every decode step scans for them).",
    )
    seed: int | None = Field(
        None,
        ge=INT64_MIN,
        le=INT64_MAX,
        strict=True,  # an integer, not `true` or "7"
        description="Any int64; same seed, same sample.",
    )
    user: str | None = Field(None, max_length=MAX_USER_CHARS)
    stream_options: StreamOptions | None = None
    metadata: dict[str, Any] | None = None
    mesh: MeshOptions | None = None
    response_format: ResponseFormat | None = Field(
        None,
        description="json_object or json_schema: the answer is held to it token by token "
        "(constrained decoding), so it always parses; only specialists declaring the "
        "`structured_output` feature answer such requests.",
    )
    tools: list[ToolSpec] | None = Field(
        None,
        max_length=MAX_TOOLS,
        description="Functions the model may call; its calls' arguments are held to their "
        "`parameters` schema by constrained decoding. Only specialists declaring the `tools` "
        "feature answer such requests.",
    )
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = Field(
        None, description="Accepted; an answer makes at most one call (a permission, not a duty)."
    )
    logprobs: bool | None = Field(
        None, description="Each answer token's log-probability (the model's raw distribution)."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Alternatives per token; needs logprobs."
    )
    # Not honoured: declared only so a request that asks for them is refused by name.
    logit_bias: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[RequestMessage]) -> list[RequestMessage]:
        if not value:
            raise ValueError("messages must contain at least one message")
        return value

    @field_validator("n")
    @classmethod
    def _choices(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_CHOICES:
            raise ValueError(f"n must be between 1 and {MAX_CHOICES}")
        return value

    @property
    def choices(self) -> int:
        return self.n or 1

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        """Stops are scanned at every decode step, so their number and length are capped."""
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        for stop in stops:
            if not stop:
                raise ValueError("stop sequences must not be empty")
            if len(stop) > MAX_STOP_CHARS:
                raise ValueError(f"stop sequences are at most {MAX_STOP_CHARS} characters")
        return value

    @field_validator(*UNSUPPORTED_FIELDS, mode="after")
    @classmethod
    def _not_honoured(cls, value: Any, info: ValidationInfo) -> Any:
        """A field asking for something the mesh does not do is refused, not ignored."""
        name = info.field_name or "field"
        if value is None or value in UNSUPPORTED_FIELDS[name]:
            return value
        raise ValueError(f"{name} is not supported by the mesh (send it unset)")

    @field_validator("response_format")
    @classmethod
    def _usable_schema(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        """A schema the grammar engine cannot use is this request's 400, not a replica's."""
        grammar = value.grammar() if value is not None else None
        if grammar is not None:
            try:
                grammar.check()
            except InvalidRequestError as error:
                raise ValueError(error.message) from None
        return value

    @model_validator(mode="after")
    def _usable_tools(self) -> ChatCompletionRequest:
        """Tool names unique, `tool_choice` naming one of them, schemas the grammar engine can
        use, and not mixed with `response_format` (refused by name, never half-honoured)."""
        declared = [t.function.name for t in self.tools or []]
        if len(set(declared)) < len(declared):
            raise ValueError("tools: function names must be unique")
        names = {*declared, *self.specialist_tools}  # the mesh adds its own before answering
        choice = self.tool_choice
        if choice is not None and choice != "none" and not names:
            raise ValueError("tool_choice: only allowed when tools are given")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice: no tool named {choice.function.name!r} in tools")
        if self.tool_mode != "text" and self.response_format_grammar() is not None:
            raise ValueError("tools: cannot be combined with a JSON response_format")
        # A named specialist tool is not offered yet (the gateway adds it, then checks again).
        grammar = self.tool_grammar()
        if grammar is not None:
            try:
                grammar.check()
            except InvalidRequestError as error:
                raise ValueError(f"tools: {error.message}") from None
        return self

    @model_validator(mode="after")
    def _logprobs_asked(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    @property
    def logprob_count(self) -> int | None:
        """Alternatives per token the engines report (None: no log-probabilities at all)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def tool_mode(self) -> ToolMode:
        return mode_of(self.tools, self.tool_choice)

    def tool_grammar(self) -> Grammar | None:
        return tool_grammar(self.tools or [], self.tool_choice)

    def response_format_grammar(self) -> Grammar | None:
        return self.response_format.grammar() if self.response_format else None

    def grammar(self) -> Grammar | None:
        """The constraint on the answer: `response_format`'s, or the tool calls'."""
        return self.response_format_grammar() or self.tool_grammar()

    @property
    def needs(self) -> list[str]:
        """Manifest features a specialist must declare to answer this request."""
        needs = ["structured_output"] if self.response_format_grammar() is not None else []
        tools = self.tool_mode != "text" or bool(self.mesh and self.mesh.tools)
        return needs + (["tools"] if tools else [])

    @property
    def specialist_tools(self) -> list[str]:
        return list(self.mesh.tools or []) if self.mesh else []

    def with_tools(self, extra: list[ToolSpec]) -> ChatCompletionRequest:
        """This request with more tools offered (validated again: names stay unique)."""
        data = self.model_dump(exclude_unset=True, by_alias=True)
        data["tools"] = [t.model_dump() for t in [*(self.tools or []), *extra]]
        try:
            return ChatCompletionRequest.model_validate(data)
        except ValidationError as error:
            message = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
            raise InvalidRequestError(f"mesh.tools: {message}", param="mesh") from None

    @property
    def routed(self) -> bool:
        return self.model in ROUTED_MODELS

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def chat(self) -> list[dict[str, str]]:
        """Messages as the engines take them, the tools shown first when the model may call
        them (see `mesh.tool_calls`)."""
        shown = tools_prompt(self.tools or [], self.tool_choice)
        tools = [{"role": "system", "content": shown}] if shown else []
        return tools + [m.as_chat() for m in self.messages]

    def earlier_user_turns(self) -> list[str]:
        """The user turns before the last one, for conversation-aware routing."""
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[:-1]

    def query(self) -> str:
        """The text the router reads: the last user turn."""
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].text()


class EmbeddingRequest(ApiBody):
    """OpenAI's embeddings body: text in, one vector per text. Token arrays and `dimensions`
    are refused by name (the encoder reads text and has one size)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(
        description=f"A text or up to {MAX_EMBEDDING_INPUTS} texts, none of them empty."
    )
    model: str = ROUTED_ALIAS
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Any = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("token arrays are not supported: send text")
        return value

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must hold at least one text")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} texts per call, got {len(texts)}")
        if any(not text.strip() for text in texts):
            raise ValueError("input texts must not be empty")
        return value

    @field_validator("dimensions")
    @classmethod
    def _one_size(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("dimensions is not supported by the mesh (send it unset)")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def embedding_body(batch: EmbeddingBatch, encoding_format: str) -> dict[str, Any]:
    """OpenAI's list of embeddings; base64 is little-endian float32, as OpenAI's clients read."""

    def encoded(vector: list[float]) -> list[float] | str:
        if encoding_format == "float":
            return vector
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")

    total = sum(batch.tokens)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encoded(v)}
            for i, v in enumerate(batch.vectors)
        ],
        "model": batch.model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


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

    @classmethod
    def of_choices(cls, counts: Iterable[tuple[int, int]]) -> Usage:
        """One request's usage from (prompt, completion) tokens per choice: every choice
        answers the same prompt, so it counts once; the completions add up."""
        pairs = list(counts)
        prompt = max((p for p, _ in pairs), default=0)
        completion = sum(c for _, c in pairs)
        return cls(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    *,
    id: str,
    model: str,
    choices: list[tuple[str | dict[str, Any], str]],
    usage: Usage,
    mesh: MeshInfo,
    logprobs: list[list[dict[str, Any]] | None] | None = None,
) -> dict[str, Any]:
    """`choices`: (text or assistant message, finish_reason) per choice, in index order;
    `logprobs`: each choice's token entries when the request asked for them."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": (
                    text if isinstance(text, dict) else {"role": "assistant", "content": text}
                ),
                "finish_reason": finish_reason,
                "logprobs": logprob_body(logprobs[index] if logprobs else None),
            }
            for index, (text, finish_reason) in enumerate(choices)
        ],
        "usage": usage.model_dump(),
        "mesh": mesh.model_dump(mode="json"),
    }


def logprob_body(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """OpenAI's `logprobs` object of a choice (or chunk): the token entries, no refusal."""
    return None if entries is None else {"content": entries, "refusal": None}


def chunk_body(
    *,
    id: str,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    mesh: MeshInfo | None = None,
    usage: Usage | None = None,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = logprob_body(logprobs)
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
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
