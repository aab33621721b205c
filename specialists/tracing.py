"""OpenTelemetry spans along a request's path: `mesh.request` -> `mesh.route`, then
`mesh.generate` in the answering replica -> `mesh.ask` to another specialist -> its
`mesh.generate`, and so on. Off by default.

`MESH_OTEL_EXPORTER=otlp` sends spans over OTLP/HTTP (the `otel` extra installs the exporter;
its endpoint comes from OpenTelemetry's own `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT`), `console` prints them; unset or `none`, the API's no-op tracer
costs a few function calls. Every process of the mesh (gateway, specialist replicas) configures
itself from that variable, so set it where Ray's workers inherit it (`mesh up`'s environment,
or each node's on a cluster).

The context crosses Ray calls in `ContextState.traceparent` (W3C trace context), set explicitly
rather than through the current context: a replica's answer is an async generator, and a
current span would not survive its yields.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

EXPORTER_ENV = "MESH_OTEL_EXPORTER"
EXPORTERS = ("none", "otlp", "console")
SERVICE_NAME = "specialist-mesh"
_PROPAGATOR = TraceContextTextMapPropagator()
_configured = False
logger = logging.getLogger(__name__)


def configure_tracing(exporter: str | None = None, *, span_exporter: Any = None) -> bool:
    """Install a tracer provider for this process once (`exporter`, else `MESH_OTEL_EXPORTER`);
    `span_exporter`: an SDK exporter object instead (tests). Returns whether spans record."""
    global _configured
    choice = (exporter or os.environ.get(EXPORTER_ENV) or "none").strip().lower()
    if choice not in EXPORTERS:
        raise ValueError(f"{EXPORTER_ENV} must be one of {', '.join(EXPORTERS)}, not {choice!r}")
    if _configured:
        return True
    if span_exporter is None and choice == "none":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif choice == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            logger.warning(
                "%s=otlp needs the 'otel' extra (OTLP exporter); tracing is off", EXPORTER_ENV
            )
            return False
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=1000)
        )
    else:
        raise ValueError(f"{EXPORTER_ENV} must be one of {', '.join(EXPORTERS)}, not {choice!r}")
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(SERVICE_NAME)


def start(
    name: str,
    parent: str | None = None,
    span_kind: SpanKind = SpanKind.INTERNAL,
    **attributes: Any,
) -> Span:
    """A span under the W3C `parent` (a `traceparent` string; None: a new trace), not made
    current: end it yourself (`finish`)."""
    context = _PROPAGATOR.extract({"traceparent": parent}) if parent else None
    clean = {f"mesh.{key}": value for key, value in attributes.items() if value is not None}
    return tracer().start_span(name, context=context, kind=span_kind, attributes=clean)


def finish(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` naming `span` as the parent (None when spans do not record)."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextlib.contextmanager
def current(
    name: str, span_kind: SpanKind = SpanKind.INTERNAL, **attributes: Any
) -> Iterator[Span]:
    """A span made current for a block of a plain coroutine (the gateway's request); its
    children (`start` with `traceparent_of(span)`) may outlive it."""
    span = start(name, traceparent_of(trace.get_current_span()), span_kind, **attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as error:
        finish(span, error)
        raise
    else:
        finish(span)
    finally:
        otel_context.detach(token)
