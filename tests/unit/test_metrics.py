"""`/metrics` numbers (`mesh.metrics`), read back with Prometheus's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.metrics import MeshMetrics, bucket_quantile, read_exposition
from router.cluster import SpecialistLoad
from router.decision import RouteDecision, RouteTarget
from specialists.engine import TextDelta


def samples(metrics: MeshMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: MeshMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_requests_by_outcome_latency_and_open_requests() -> None:
    metrics = MeshMetrics()
    first, second = metrics.start("code"), metrics.start("code")
    assert metrics.open_requests == {"code": 2}
    assert value(metrics, "mesh_specialist_open_requests", specialist="code") == 2
    first.tokens(12, 30)
    first.done("answered")
    first.done("failed")  # idempotent: the first outcome counts
    second.done("handed_back")
    metrics.refused("code")
    assert metrics.open_requests == {}
    assert (
        value(metrics, "mesh_specialist_requests_total", specialist="code", outcome="answered") == 1
    )
    assert (
        value(metrics, "mesh_specialist_requests_total", specialist="code", outcome="failed")
        is None
    )
    assert (
        value(metrics, "mesh_specialist_requests_total", specialist="code", outcome="refused") == 1
    )
    assert (
        value(metrics, "mesh_specialist_requests_total", specialist="code", outcome="handed_back")
        == 1
    )
    assert value(metrics, "mesh_specialist_tokens_total", specialist="code", direction="in") == 12
    assert value(metrics, "mesh_specialist_tokens_total", specialist="code", direction="out") == 30
    # Latency counts answered and failed requests, not hand-backs.
    assert value(metrics, "mesh_specialist_request_seconds_count", specialist="code") == 1


def test_a_watched_stream_times_its_first_token_and_counts_tokens() -> None:
    metrics = MeshMetrics()
    meter = metrics.start("writing")

    async def deltas() -> AsyncGenerator[tuple[int, TextDelta], None]:
        yield 0, TextDelta(text="")
        yield 0, TextDelta(text="Hello")
        yield (
            0,
            TextDelta(text=" world", finish_reason="stop", prompt_tokens=5, completion_tokens=2),
        )

    async def drain() -> list[str]:
        return [delta.text async for _, delta in meter.watch(deltas())]

    assert asyncio.run(drain()) == ["", "Hello", " world"]
    meter.done("answered")
    assert (
        value(metrics, "mesh_specialist_time_to_first_token_seconds_count", specialist="writing")
        == 1
    )
    assert (
        value(metrics, "mesh_specialist_tokens_total", specialist="writing", direction="out") == 2
    )


def test_replicas_states_and_queue_depth_from_the_cluster() -> None:
    metrics = MeshMetrics()
    meters = [metrics.start("code") for _ in range(11)]
    loads = {
        "code": SpecialistLoad(
            state="running", replicas={"running": 1, "starting": 1}, per_replica=8
        ),
        "math": SpecialistLoad(state="scaled_to_zero"),
    }
    metrics.observe_cluster(loads)
    assert value(metrics, "mesh_specialist_replicas", specialist="code", state="running") == 1
    assert value(metrics, "mesh_specialist_replicas", specialist="code", state="starting") == 1
    assert value(metrics, "mesh_specialist_queue_depth", specialist="code") == 3
    assert (
        value(metrics, "mesh_specialist_available", specialist="math", state="scaled_to_zero") == 1
    )
    assert value(metrics, "mesh_specialist_available", specialist="math", state="running") == 0
    metrics.observe_cluster({"code": loads["code"]})  # math uninstalled: its series go
    assert value(metrics, "mesh_specialist_replicas", specialist="math", state="running") is None
    assert (
        value(metrics, "mesh_specialist_available", specialist="math", state="scaled_to_zero")
        is None
    )
    for meter in meters:
        meter.done("answered")


def test_decisions_by_final_mode_and_router_time_for_routed_requests_only() -> None:
    metrics = MeshMetrics()
    target = [RouteTarget(name="general", score=0.1)]
    low = RouteDecision(targets=target, mode="fallback", threshold=0.3, reason="low")
    metrics.decided(low, 0.004)
    metrics.decided(RouteDecision(targets=target, mode="single", threshold=0.3, reason="ok"), 0.002)
    metrics.decided(RouteDecision(targets=target, mode="pinned", threshold=0, reason="pin"), None)
    assert value(metrics, "mesh_router_decisions_total", mode="fallback") == 1
    assert value(metrics, "mesh_router_decisions_total", mode="single") == 1
    assert value(metrics, "mesh_router_decisions_total", mode="pinned") == 1
    assert value(metrics, "mesh_router_fallbacks_total") == 1
    assert value(metrics, "mesh_router_seconds_count") == 2


def test_two_meshes_in_one_process_count_apart() -> None:
    one, two = MeshMetrics(), MeshMetrics()
    one.refused("code")
    assert (
        value(two, "mesh_specialist_requests_total", specialist="code", outcome="refused") is None
    )


def test_quantiles_from_buckets_as_prometheus_computes_them() -> None:
    inf = float("inf")
    buckets = [(0.1, 2.0), (0.5, 6.0), (inf, 6.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.2)
    before = [(0.1, 2.0), (0.5, 2.0), (inf, 2.0)]  # the window since: 4 requests in (0.1, 0.5]
    assert bucket_quantile(0.5, buckets, before) == pytest.approx(0.3)
    assert bucket_quantile(0.5, buckets, buckets) is None  # nothing new
    assert bucket_quantile(0.99, [(0.1, 1.0), (inf, 10.0)]) == 0.1  # in +Inf: highest bound
    assert bucket_quantile(0.5, []) is None


def test_the_ui_reads_back_what_the_gateway_exposes() -> None:
    metrics = MeshMetrics()
    for _ in range(3):
        meter = metrics.start("code")
        meter.first_token()
        meter.done("answered")
    metrics.start("code")  # one still open
    metrics.observe_cluster({"code": SpecialistLoad(state="running", replicas={"running": 2})})
    numbers = read_exposition(metrics.exposition().decode())["code"]
    assert numbers.finished == 3 and numbers.open_requests == 1 and numbers.state == "running"
    assert numbers.replicas["running"] == 2
    assert numbers.latency_buckets[-1] == (float("inf"), 3.0)
    assert bucket_quantile(0.5, numbers.ttft_buckets) is not None
