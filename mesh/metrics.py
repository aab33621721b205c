"""The operator's numbers, in Prometheus's exposition format at `GET /metrics`.

Each gateway replica counts what passes through it in its own `prometheus_client` registry
(not the process-wide default, so two meshes in one process or a test never share counts): per
specialist, requests by outcome, tokens in and out, time to first token and latency; requests
open right now (the queue depth the cluster-aware tie-break reads, `router.cluster`); and the
router's decisions by mode. Replicas by state come from the controller at scrape time. With
several gateway replicas, each scrape is one replica's view: scrape them all (or run one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from router.cluster import AVAILABILITY_STATES, REPLICA_STATES, SpecialistLoad
from router.decision import RouteDecision
from specialists.engine import TextDelta

METRICS_TYPE = CONTENT_TYPE_LATEST  # Prometheus's text format
Outcome = Literal["answered", "failed", "refused", "handed_back"]
# Seconds: from a fast tool answer to a long CPU generation.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
ROUTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class RequestMeter:
    """One request to one specialist: open until `done`, which is idempotent."""

    def __init__(self, metrics: MeshMetrics, specialist: str) -> None:
        self.metrics = metrics
        self.specialist = specialist
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished = False
        metrics.open_requests[specialist] = metrics.open_requests.get(specialist, 0) + 1
        metrics.inflight.labels(specialist).inc()

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.metrics.ttft.labels(self.specialist).observe(self.first_token_at - self.started)

    def tokens(self, prompt: int, completion: int) -> None:
        self.metrics.tokens.labels(self.specialist, "in").inc(max(prompt, 0))
        self.metrics.tokens.labels(self.specialist, "out").inc(max(completion, 0))

    def done(self, outcome: Outcome) -> None:
        if self.finished:
            return
        self.finished = True
        metrics, name = self.metrics, self.specialist
        left = metrics.open_requests.get(name, 1) - 1
        if left > 0:
            metrics.open_requests[name] = left
        else:
            metrics.open_requests.pop(name, None)
        metrics.inflight.labels(name).dec()
        metrics.requests.labels(name, outcome).inc()
        if outcome in ("answered", "failed"):
            metrics.latency.labels(name).observe(time.perf_counter() - self.started)

    async def watch(
        self, deltas: AsyncGenerator[tuple[int, TextDelta], None]
    ) -> AsyncGenerator[tuple[int, TextDelta], None]:
        """Pass a stream through, noting its first token and each choice's final counts;
        closing this closes `deltas` (which cancels the specialists' streams)."""
        async with contextlib.aclosing(deltas) as stream:
            async for index, delta in stream:
                if delta.text:
                    self.first_token()
                if delta.finish_reason:
                    self.tokens(delta.prompt_tokens, delta.completion_tokens)
                yield index, delta


class MeshMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.open_requests: dict[str, int] = {}  # read by the routing tie-break, no scrape
        self.requests = Counter(
            "mesh_specialist_requests",
            "Requests a specialist took, by outcome: answered, failed, refused (429, or 503: "
            "overloaded, or no replica within the deadline), handed_back.",
            ["specialist", "outcome"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "mesh_specialist_tokens",
            "Tokens a specialist read (in: prompt) and wrote (out: completion).",
            ["specialist", "direction"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "mesh_specialist_time_to_first_token_seconds",
            "Streamed requests: from the gateway taking the request to the first token.",
            ["specialist"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "mesh_specialist_request_seconds",
            "From the gateway taking the request to its last byte (answered or failed).",
            ["specialist"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "mesh_specialist_open_requests",
            "Requests open on a specialist right now (running or queued), at this gateway.",
            ["specialist"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "mesh_specialist_queue_depth",
            "Open requests beyond what the specialist's running replicas take at once.",
            ["specialist"],
            registry=self.registry,
        )
        self.replicas = Gauge(
            "mesh_specialist_replicas",
            "Replicas of a specialist by state (running, starting, stopping).",
            ["specialist", "state"],
            registry=self.registry,
        )
        self.availability = Gauge(
            "mesh_specialist_available",
            "1 for the specialist's current state (running, starting, scaled_to_zero, pending, "
            "failed), 0 for the others.",
            ["specialist", "state"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "mesh_router_decisions",
            "Requests by final decision mode (single, panel, fallback, pinned, compound).",
            ["mode"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "mesh_router_fallbacks",
            "Routed queries no specialist was confident about (sent to the fallback).",
            registry=self.registry,
        )
        self.route_latency = Histogram(
            "mesh_router_seconds",
            "Time to route one query, as the gateway waits for it.",
            buckets=ROUTER_BUCKETS,
            registry=self.registry,
        )

    def start(self, specialist: str) -> RequestMeter:
        return RequestMeter(self, specialist)

    def refused(self, specialist: str) -> None:
        """A request turned away before it was sent (429 fair share, 503 backpressure)."""
        self.requests.labels(specialist, "refused").inc()

    def decided(self, decision: RouteDecision, route_seconds: float | None) -> None:
        """A request's final decision (after the cluster's say), and the router's time when
        it was routed (None: pinned by `model`)."""
        self.decisions.labels(decision.mode).inc()
        if decision.fallback:
            self.fallbacks.inc()
        if route_seconds is not None:
            self.route_latency.observe(route_seconds)

    def observe_cluster(self, loads: Mapping[str, SpecialistLoad]) -> None:
        """Replicas and states as the controller last saw them, and queue depth from them."""
        for name in set(self._labelled("specialist", self.replicas)) - set(loads):
            for state in REPLICA_STATES:
                self.replicas.remove(name, state)
            for state in AVAILABILITY_STATES:
                self.availability.remove(name, state)
            self.queued.remove(name)
        for name, load in loads.items():
            for state in REPLICA_STATES:
                self.replicas.labels(name, state).set(load.replicas.get(state, 0))
            for state in AVAILABILITY_STATES:
                self.availability.labels(name, state).set(int(load.state == state))
            open_now = self.open_requests.get(name, 0)
            self.queued.labels(name).set(max(0, open_now - load.capacity))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def _labelled(label: str, metric: Gauge) -> Iterable[str]:
        for family in metric.collect():
            for sample in family.samples:
                yield sample.labels[label]


# -- reading it back (the UI's Mesh tab reads the same numbers Prometheus scrapes) ---------
class SpecialistNumbers(BaseModel):
    """One specialist's series from one scrape: counters are totals since the gateway began."""

    requests: dict[str, float] = Field(default_factory=dict, description="By outcome.")
    open_requests: float = 0.0
    queue_depth: float = 0.0
    state: str | None = None
    replicas: dict[str, float] = Field(default_factory=dict)
    latency_buckets: list[tuple[float, float]] = Field(
        default_factory=list, description="(upper bound, cumulative count), +Inf last."
    )
    ttft_buckets: list[tuple[float, float]] = Field(default_factory=list)

    @property
    def finished(self) -> float:
        return self.requests.get("answered", 0.0) + self.requests.get("failed", 0.0)


def read_exposition(text: str) -> dict[str, SpecialistNumbers]:
    """Per specialist, the `mesh_specialist_*` series of a `/metrics` scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, SpecialistNumbers] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("specialist")
            if name is None:
                continue
            numbers = found.setdefault(name, SpecialistNumbers())
            labels, value = sample.labels, sample.value
            if sample.name == "mesh_specialist_requests_total":
                numbers.requests[labels["outcome"]] = value
            elif sample.name == "mesh_specialist_open_requests":
                numbers.open_requests = value
            elif sample.name == "mesh_specialist_queue_depth":
                numbers.queue_depth = value
            elif sample.name == "mesh_specialist_available" and value:
                numbers.state = labels["state"]
            elif sample.name == "mesh_specialist_replicas":
                numbers.replicas[labels["state"]] = value
            elif sample.name == "mesh_specialist_request_seconds_bucket":
                numbers.latency_buckets.append((float(labels["le"]), value))
            elif sample.name == "mesh_specialist_time_to_first_token_seconds_bucket":
                numbers.ttft_buckets.append((float(labels["le"]), value))
    return found


def bucket_quantile(
    quantile: float,
    buckets: list[tuple[float, float]],
    before: list[tuple[float, float]] | None = None,
) -> float | None:
    """Prometheus's `histogram_quantile` over cumulative (bound, count) buckets, optionally
    over the window since `before` (an earlier scrape of the same histogram): linear within
    the bucket that holds the rank, the highest finite bound when it falls in +Inf."""
    earlier = dict(before or [])
    window = sorted((bound, count - earlier.get(bound, 0.0)) for bound, count in buckets)
    if not window or window[-1][1] <= 0:
        return None
    rank = quantile * window[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in window:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
