"""OpenAI's server-sent events for chat completions: one or several specialist streams (`n`
choices) framed as `chat.completion.chunk` events, trace events as chunks with no choices, and
errors after the first byte as one final error event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.responses import StreamingResponse

from mesh.errors import as_mesh_error
from mesh.protocol import MeshInfo, Usage, chunk_body, error_body
from mesh.tool_calls import ToolCallReader, ToolMode
from registry.errors import MeshError
from specialists.engine import TextDelta

logger = logging.getLogger("ray.serve")


async def sse_stream(
    deltas: AsyncGenerator[tuple[int, TextDelta], None],
    info: MeshInfo,
    id: str,
    model: str,
    on_finish: Callable[[bool], None],
    cancel: Callable[[], None],
    *,
    choices: int = 1,
    include_usage: bool = False,
    tool_mode: ToolMode = "text",
    spent: int = 0,
) -> AsyncIterator[str]:
    """OpenAI's SSE framing of `choices` interleaved streams of (index, delta): a role chunk
    per choice (the first also carries the `mesh` object), then text (or, for a tool call,
    one `tool_calls` delta once the call is complete), a finish chunk per choice, and with
    `include_usage` a last chunk with no choices that carries the usage (plus `spent`: tokens
    generated for the request before these streams, such as a tool round's)."""
    failed = True
    readers = [ToolCallReader(tool_mode) for _ in range(choices)]
    finished: list[tuple[int, int]] = []  # (prompt, completion) tokens per finished choice
    try:  # from the first byte: a client gone at any point still ends the request below
        for index in range(choices):
            role = {"role": "assistant", "content": ""}
            first = info if index == 0 else None
            yield sse_event(chunk_body(id=id, model=model, delta=role, mesh=first, index=index))
        for gateway_event in info.trace:  # gateway-level events (panel drafts) come first
            yield trace_chunk(id, model, gateway_event)
        async with contextlib.aclosing(deltas) as stream:
            async for index, delta in stream:
                for event in delta.trace:
                    yield trace_chunk(id, model, event.dump())
                pieces = readers[index].feed(delta.text)
                if delta.logprobs:  # the tokens' entries ride on this step's first chunk
                    entries = [entry.model_dump() for entry in delta.logprobs]
                    opening, *pieces = pieces or [{"content": ""}]
                    yield sse_event(
                        chunk_body(id=id, model=model, delta=opening, index=index, logprobs=entries)
                    )
                for piece in pieces:
                    yield sse_event(chunk_body(id=id, model=model, delta=piece, index=index))
                if delta.finish_reason:
                    last, reason = readers[index].finish(delta.finish_reason)
                    for piece in last:
                        yield sse_event(chunk_body(id=id, model=model, delta=piece, index=index))
                    yield sse_event(
                        chunk_body(id=id, model=model, delta={}, finish_reason=reason, index=index)
                    )
                    extra = 0 if finished else spent
                    finished.append((delta.prompt_tokens, delta.completion_tokens + extra))
                    if len(finished) == choices:
                        break
        if include_usage and finished:
            usage = Usage.of_choices(finished)
            body = chunk_body(id=id, model=model, delta={}, usage=usage)
            body["choices"] = []
            yield sse_event(body)
        failed = False
    except Exception as raised:
        error = as_mesh_error(raised)
        if isinstance(error, MeshError):  # raised on purpose: its message is for the client
            yield sse_event(error_body(error.message, error.error_type, error.param))
        else:
            logger.exception("stream failed")
            yield sse_event(error_body(f"stream failed: {type(error).__name__}", "server_error"))
    finally:
        on_finish(failed)
        if failed:
            # The client went away (or the stream broke): tell the specialist now, so its row
            # leaves the batch at the next step. Serve's own propagation of the proxy's cancel
            # to this child stream was seen to miss (1 run in 4).
            cancel()
    yield "data: [DONE]\n\n"


async def interleaved(
    streams: Sequence[AsyncIterator[TextDelta]], firsts: list[TextDelta]
) -> AsyncGenerator[tuple[int, TextDelta], None]:
    """Each stream's deltas tagged with its index, as they come (first deltas first)."""
    for index, first in enumerate(firsts):
        yield index, first
    if len(streams) == 1:  # the common case: no tasks, no queue
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[TextDelta]) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
            await queue.put((index, None))
        except Exception as error:  # ends the whole response with one error event
            await queue.put((index, error))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    """The HTTP response around SSE `events`: no caching, no proxy buffering."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse_event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def trace_chunk(id: str, model: str, event: dict[str, Any]) -> str:
    """A trace event as an OpenAI chunk with no choices, so any client skips it safely."""
    body = chunk_body(id=id, model=model, delta={})
    body["choices"] = []
    body["mesh"] = {"trace_event": event}
    return sse_event(body)
