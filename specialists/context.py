"""`MeshContext`: how specialist code asks another specialist, within the request's bounds.

    answer = await ctx.ask("math", "17*23")   # -> AskResult(text="391", ok=True, ...)

Every ask is checked before it is sent: the sender's manifest must list the receiver in
`can_message`; the hop count, the sender's fan-out, the shared token budget and the deadline
must allow it; and the receiver must not already be on the path (A asks B asks A is refused).
A refusal is not an exception: it returns `ok=False` with the reason, and lands in the trace.

The token budget is one count per request, safe under parallel asks (`asyncio.gather`): before
an ask is sent its share is reserved from what is left (so siblings cannot each spend the whole
remainder), the receiver gets that share as its own budget and a count starting at zero, and
its reply's `tokens_used` (what it and everything it asked spent) is added to the asker's count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel

from registry.errors import MeshError
from specialists import tracing
from specialists.messages import ContextState, Message, TraceEvent, Trust


class AskResult(BaseModel):
    text: str
    ok: bool
    note: str = ""
    trust: Trust = "specialist"
    trace: list[TraceEvent] = []


class MeshContext:
    def __init__(
        self,
        state: ContextState,
        sender: str,
        can_message: list[str],
        *,
        sender_trust: Trust = "specialist",
    ) -> None:
        self.state = state.started()
        self.sender = sender
        self.can_message = can_message
        self.sender_trust = sender_trust
        self.trace: list[TraceEvent] = []
        self.asked = 0
        self.reserved = 0  # tokens promised to asks still in flight

    @property
    def hop(self) -> int:
        """The hop number of the sender's asks: 0 from the gateway, 1 from the first answerer."""
        return len(self.state.path)

    def remaining_s(self) -> float:
        return max(self.state.deadline - time.time(), 0.0)

    def remaining_tokens(self) -> int:
        """What is left of the budget after what was spent and what asks in flight may spend."""
        return max(self.state.bounds.token_budget - self.state.tokens_used - self.reserved, 0)

    def spend(self, tokens: int) -> None:
        self.state = self.state.model_copy(
            update={"tokens_used": self.state.tokens_used + max(tokens, 0)}
        )

    def share(self, max_tokens: int | None) -> int:
        """The budget the next ask may take: what it asked for, else a fair share of what is
        left among the asks this sender may still send (so parallel asks without a limit do
        not starve each other), never more than what is left."""
        remaining = self.remaining_tokens()
        if remaining <= 0:
            return 0
        asks_left = max(self.state.bounds.max_fanout - self.asked, 1)
        wanted = max_tokens if max_tokens is not None else remaining // asks_left
        return min(max(wanted, 1), remaining)

    def refusal(self, to: str, content: str) -> str | None:
        """Why an ask from the sender to `to` may not be sent, or None when it may."""
        bounds = self.state.bounds
        if to not in self.can_message:
            return f"{self.sender} may not message {to} (not in its can_message)"
        if to in self.state.path:
            cycle = " -> ".join([*self.state.path, to])
            return f"cycle refused: {cycle}"
        if self.hop > bounds.max_hops:
            return f"hop limit reached ({bounds.max_hops})"
        if self.asked >= bounds.max_fanout:
            return f"fan-out limit reached ({bounds.max_fanout} asks from {self.sender})"
        if self.remaining_tokens() <= 0:
            return f"token budget exhausted ({bounds.token_budget})"
        if self.remaining_s() <= 0:
            return "deadline passed"
        if not content.strip():
            return "empty message"
        return None

    async def ask(
        self, to: str, content: str, *, kind: str = "ask", max_tokens: int | None = None
    ) -> AskResult:
        """Send `content` to specialist `to` and wait for its answer (never raises on refusal)."""
        hop = self.hop
        reason = self.refusal(to, content)
        if reason is not None:
            refused = AskResult(text="", ok=False, note=reason)
            return self._record(to, hop, kind, content, "refused", 0.0, refused)
        grant = self.share(max_tokens)
        self.asked += 1
        self.reserved += grant
        span = tracing.start(
            "mesh.ask", self.state.traceparent, sender=self.sender, receiver=to, hop=hop, kind=kind
        )
        try:
            result = await self._send(
                to, hop, kind, content, grant, max_tokens, tracing.traceparent_of(span)
            )
            if not result.ok:
                span.set_attribute("mesh.failed", result.note[:200])
            return result
        finally:
            self.reserved -= grant
            tracing.finish(span)

    async def _send(
        self,
        to: str,
        hop: int,
        kind: str,
        content: str,
        grant: int,
        max_tokens: int | None,
        traceparent: str | None = None,
    ) -> AskResult:
        """Deliver an ask holding `grant` tokens of the budget; count what the receiver spent.
        `traceparent`: the ask's span, which the receiver's answer nests under."""
        message = Message.model_validate(
            {
                "conversation_id": self.state.conversation_id,
                "from": self.sender,
                "to": to,
                "hop": hop,
                "content": content,
                "trust": self.sender_trust,
            }
        )
        child = self.state.model_copy(
            update={
                "path": [*self.state.path, to],
                "bounds": self.state.bounds.model_copy(update={"token_budget": grant}),
                "tokens_used": 0,
                "traceparent": traceparent or self.state.traceparent,
            }
        )
        started = time.perf_counter()
        try:
            reply = await asyncio.wait_for(
                send(message, child, grant if max_tokens is not None else None),
                timeout=max(self.remaining_s(), 0.001),
            )
        except TimeoutError:  # the receiver may still be spending: its share counts as spent
            self.spend(grant)
            late = AskResult(text="", ok=False, note="deadline passed while waiting")
            return self._record(to, hop, kind, content, "timeout", _ms(started), late)
        except Exception as error:  # the receiver failed: the asker carries on without it
            failed = AskResult(text="", ok=False, note=_failure_note(error))
            return self._record(to, hop, kind, content, "error", _ms(started), failed)
        self.spend(spent_by(reply))
        result = AskResult(text=reply.text, ok=True, trust=reply.trust, trace=reply.trace)
        self._record(to, hop, kind, content, "ok", _ms(started), result, tokens=reply.tokens)
        self.trace.extend(reply.trace)
        return result

    def _record(
        self,
        to: str,
        hop: int,
        kind: Any,
        content: str,
        outcome: Any,
        latency_ms: float,
        result: AskResult,
        tokens: int = 0,
    ) -> AskResult:
        self.trace.append(
            TraceEvent.model_validate(
                {
                    "from": self.sender,
                    "to": to,
                    "hop": hop,
                    "kind": kind,
                    "outcome": outcome,
                    "latency_ms": round(latency_ms, 1),
                    "tokens": tokens,
                    "content": content[:500],
                    "reply": result.text[:500],
                    "note": result.note,
                }
            )
        )
        return result


class Reply(BaseModel):
    """What a specialist returns to an asker."""

    text: str
    tokens: int
    # What the receiver and everything it asked spent: its count starts at 0 (the asker sends
    # `tokens_used=0` with the receiver's share as its budget), so the count it leaves is this.
    tokens_used: int = 0
    trust: Trust = "specialist"
    trace: list[TraceEvent] = []


def spent_by(reply: Reply) -> int:
    """The tokens a reply reports spent: at least its own answer's, never negative (a receiver
    that reports less than it answered still pays for its answer)."""
    return max(reply.tokens_used, reply.tokens, 0)


async def send(message: Message, state: ContextState, max_tokens: int | None) -> Reply:
    """Deliver a message to the receiver's Serve app (replaced in unit tests)."""
    from ray import serve

    from specialists.deployment import AskRequest, app_name

    handle = serve.get_app_handle(app_name(message.to))
    request = AskRequest(message=message, state=state, max_tokens=max_tokens)
    result: Any = await handle.receive.remote(request)
    return Reply.model_validate(result)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _failure_note(error: BaseException) -> str:
    """Why an ask failed, fit for the response trace: a mesh error's own message, otherwise the
    exception's type only (Ray's errors carry pids, addresses and server paths)."""
    cause = getattr(error, "cause", None)  # Ray wraps what the receiver raised
    original = cause if isinstance(cause, BaseException) else error
    if isinstance(original, MeshError):
        return f"{type(original).__name__}: {original.message}"[:300]
    return f"{type(original).__name__} in the receiver"
