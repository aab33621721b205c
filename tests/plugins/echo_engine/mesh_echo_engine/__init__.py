"""`EchoEngine`: the smallest real engine, for plugin tests and as an example.

It "generates" the last user turn back, one word per token, with the contract's behaviour:
`max_tokens`, stop strings, deadline, cancel and the final delta's token counts. No model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import ClassVar

from registry.errors import InvalidRequestError
from specialists.engine import (
    Engine,
    EngineCapabilities,
    EngineRequest,
    FinishReason,
    TextDelta,
    truncate_at_stop,
)

MAX_PROMPT_WORDS = 2048
SECONDS_PER_TOKEN = 0.002  # so cancels and deadlines have something to interrupt


class EchoEngine(Engine):
    name: ClassVar[str] = "echo"
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities()

    def load(self) -> None:
        self.loaded = True

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = last.split()
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        if prompt_tokens > MAX_PROMPT_WORDS:
            raise InvalidRequestError(
                f"prompt is {prompt_tokens} words; the echo engine takes {MAX_PROMPT_WORDS}",
                param="messages",
            )
        params = request.params
        deadline = request.arrived + params.max_time_s if params.max_time_s else None
        text, sent, count, stopped = "", 0, 0, False
        finish: FinishReason = "stop"
        for word in words:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if count == params.max_tokens or (deadline and time.monotonic() >= deadline):
                finish = "length"
                break
            await asyncio.sleep(SECONDS_PER_TOKEN)
            text += ("" if count == 0 else " ") + word
            count += 1
            text, stopped = truncate_at_stop(text, params.stop)
            if stopped:
                break
            # hold back what could still become a stop string
            safe = len(text) - max((len(s) - 1 for s in params.stop), default=0)
            if safe > sent:
                yield TextDelta(text=text[sent:safe])
                sent = safe
        if len(text) > sent and finish != "cancelled":
            yield TextDelta(text=text[sent:])
        yield TextDelta(
            text="", finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=count
        )
