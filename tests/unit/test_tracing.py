"""OpenTelemetry spans (`specialists.tracing`): off by default, and an ask nests under its
asker and above the answer through `ContextState.traceparent`, with no current context."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from specialists import context as context_module
from specialists import tracing
from specialists.context import MeshContext, Reply
from specialists.messages import ContextState, Message


def test_without_an_exporter_spans_carry_no_context() -> None:
    assert tracing.configure_tracing("none") is tracing._configured  # off unless configured
    assert tracing.traceparent_of(trace.INVALID_SPAN) is None
    assert tracing.start("mesh.request", None).get_span_context().trace_id is not None


def test_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="MESH_OTEL_EXPORTER must be one of"):
        tracing.configure_tracing("zipkin")


def test_an_ask_is_a_span_between_its_asker_and_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    if tracing._configured:  # another test configured this process first: add ours
        provider = trace.get_tracer_provider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    else:
        tracing.configure_tracing(span_exporter=exporter)
    received: list[ContextState] = []

    async def fake_send(message: Message, state: ContextState, max_tokens: int | None) -> Reply:
        received.append(state)
        answer = tracing.start("mesh.generate", state.traceparent, specialist=message.to)
        tracing.finish(answer)
        return Reply(text="391", tokens=1, tokens_used=1, trust="tool")

    monkeypatch.setattr(context_module, "send", fake_send)
    with tracing.current("mesh.request") as root:
        state = ContextState(traceparent=tracing.traceparent_of(root))
    asker = tracing.start("mesh.generate", state.traceparent, specialist="general")
    ctx = MeshContext(
        state.model_copy(
            update={"traceparent": tracing.traceparent_of(asker), "path": ["general"]}
        ),
        "general",
        ["math"],
    )
    result = asyncio.run(ctx.ask("math", "17*23"))
    tracing.finish(asker)
    assert result.ok and result.text == "391"

    spans = {
        (s.name, dict(s.attributes or {}).get("mesh.specialist")): s
        for s in exporter.get_finished_spans()
    }
    request = spans[("mesh.request", None)]
    general = spans[("mesh.generate", "general")]
    ask = spans[("mesh.ask", None)]
    math = spans[("mesh.generate", "math")]
    assert len({s.context.trace_id for s in (request, general, ask, math)}) == 1
    assert general.parent is not None and general.parent.span_id == request.context.span_id
    assert ask.parent is not None and ask.parent.span_id == general.context.span_id
    assert math.parent is not None and math.parent.span_id == ask.context.span_id
    assert dict(ask.attributes or {})["mesh.receiver"] == "math"
    assert received[0].traceparent is not None  # the receiver got the ask's context
