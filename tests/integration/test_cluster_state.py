"""The operator's view of the running mesh: `/metrics`, scale to zero, routing that knows load,
and OpenTelemetry spans.

All on the session mesh (real Ray Serve, Redis, models, HTTP). The tie test installs two
specialists with the same examples, one of them an LLM that takes one request at a time, holds
a stream open on it, and watches the tie go to the other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from benchmarks.fault_lab import catalog_copy
from mesh.cli import app
from mesh.metrics import read_exposition
from registry import SpecialistManifest
from tests.integration.conftest import ADMIN_TOKEN, OtlpReceiver, RunningMesh, wait_for

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LEDGER = [
    "Tally 214 plus 389 for the lighthouse ledger.",
    "Tally 57 plus 12 for the lighthouse ledger.",
    "Tally 1000 plus 1 for the lighthouse ledger.",
]


def publish(mesh: RunningMesh, manifest: SpecialistManifest) -> None:
    """Publish and install as the operator (force: the tie's twins fail the copy check on
    purpose), then wait until the mesh serves it."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    url = f"{mesh.base_url}/v1/specialists?force=true"
    reply = httpx.post(url, json=data, headers=ADMIN, timeout=300)
    assert reply.status_code == 201 and reply.json()["installed"], reply.text
    wait_for(lambda: availability(mesh, data["name"]) is not None, 240, f"{data['name']} live")


def remove(mesh: RunningMesh, *names: str) -> None:
    for name in names:
        httpx.delete(f"{mesh.base_url}/v1/specialists/{name}", headers=ADMIN, timeout=60)


def availability(mesh: RunningMesh, name: str) -> str | None:
    """The specialist's state once it is RUNNING for Serve (None before)."""
    state = httpx.get(f"{mesh.base_url}/healthz", timeout=30).json()["specialists"].get(name)
    if not state or state["status"] != "RUNNING":
        return None
    return str(state["availability"])


def ask(mesh: RunningMesh, model: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=180)


# -- /metrics ------------------------------------------------------------------------------
def test_metrics_count_requests_tokens_replicas_and_decisions(mesh: RunningMesh) -> None:
    assert ask(mesh, "math", "What is 6*7?").status_code == 200
    assert ask(mesh, "mesh", "What is 17*23?").status_code == 200
    streamed = ask(mesh, "general", "Say hello.", stream=True, max_tokens=8)
    assert streamed.status_code == 200 and "[DONE]" in streamed.text

    reply = httpx.get(f"{mesh.base_url}/metrics", timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    for family in (
        "mesh_specialist_requests",
        "mesh_specialist_tokens",
        "mesh_specialist_time_to_first_token_seconds",
        "mesh_specialist_request_seconds",
        "mesh_specialist_open_requests",
        "mesh_specialist_queue_depth",
        "mesh_specialist_replicas",
        "mesh_router_decisions",
        "mesh_router_fallbacks",
        "mesh_router_seconds",
    ):
        assert family in families, family
    numbers = read_exposition(reply.text)
    assert numbers["math"].requests["answered"] >= 2
    assert numbers["math"].replicas["running"] >= 1 and numbers["math"].state == "running"
    assert numbers["general"].ttft_buckets[-1][1] >= 1  # the stream's first token was timed
    routed = sum(s.value for s in families["mesh_router_decisions"].samples)
    assert routed >= 1
    tokens = {
        (s.labels["specialist"], s.labels["direction"]): s.value
        for s in families["mesh_specialist_tokens"].samples
    }
    assert tokens[("general", "out")] >= 1 and tokens[("general", "in")] >= 1


# -- scale to zero -------------------------------------------------------------------------
@pytest.fixture
def zero_math(mesh: RunningMesh) -> Iterator[str]:
    scaling = {
        "min_replicas": 0,
        "max_replicas": 1,
        "look_back_period_s": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 2,
    }
    publish(mesh, catalog_copy("math", "zero-math", scaling=scaling))
    try:
        yield "zero-math"
    finally:
        remove(mesh, "zero-math")


def test_scale_to_zero_answers_the_first_request_after_a_cold_start(
    mesh: RunningMesh, zero_math: str
) -> None:
    # Deployed at zero replicas: live (routable), holding no resources.
    wait_for(lambda: availability(mesh, zero_math) == "scaled_to_zero", 60, "scaled to zero")
    status = CliRunner().invoke(app, ["status", "--url", mesh.base_url], env=mesh.env)
    assert status.exit_code == 0, status.output
    assert "scaled to zero" in status.stdout.split(zero_math, 1)[1].splitlines()[0]

    started = time.perf_counter()
    reply = ask(mesh, zero_math, "What is 6*7?")
    cold_start_s = time.perf_counter() - started
    assert reply.status_code == 200, reply.text
    assert "42" in reply.json()["choices"][0]["message"]["content"]
    assert availability(mesh, zero_math) in ("running", "starting")
    print(f"cold start answered in {cold_start_s:.1f}s")

    # Idle again: back to zero by itself, and a second cold start is answered too (streamed).
    wait_for(lambda: availability(mesh, zero_math) == "scaled_to_zero", 90, "back to zero")
    streamed = ask(mesh, zero_math, "What is 2^10?", stream=True)
    assert streamed.status_code == 200 and "1024" in streamed.text and "[DONE]" in streamed.text


# -- routing that knows the cluster ---------------------------------------------------------
@pytest.fixture
def twins(mesh: RunningMesh) -> Iterator[tuple[str, str]]:
    """`tie-llm` (an LLM taking one request at a time) and `tie-tool` (the math tool), both
    with the same examples: the router scores them equal on those."""
    llm = catalog_copy(
        "general",
        "tie-llm",
        examples=LEDGER,
        description="Keeps the lighthouse ledger.",
        scaling={"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 1},
    )
    tool = catalog_copy("math", "tie-tool", examples=LEDGER, description="Ledger sums.")
    try:
        publish(mesh, llm)
        publish(mesh, tool)
        yield "tie-llm", "tie-tool"
    finally:
        remove(mesh, "tie-llm", "tie-tool")


def first_text(line: str) -> bool:
    """Whether an SSE line carries generated text."""
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[len("data: ") :]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def route(mesh: RunningMesh, text: str) -> dict[str, Any]:
    reply = httpx.post(f"{mesh.base_url}/v1/route", json={"text": text}, timeout=60)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_a_tie_goes_to_the_specialist_that_is_not_saturated(
    mesh: RunningMesh, twins: tuple[str, str]
) -> None:
    llm, tool = twins
    question = LEDGER[0]

    def tied() -> dict[str, Any] | None:
        decision = route(mesh, question)  # the router indexes new installs within seconds
        return decision if decision["mode"] == "panel" else None

    decision = wait_for(tied, 60, "the twins to tie as a panel")
    assert set(decision["panel"]) == {llm, tool}, decision
    states = {t["name"]: t["state"] for t in decision["targets"]}
    assert states[llm] == states[tool] == "running"

    # One long stream holds the LLM's only slot: it is saturated while the stream is open.
    body = {
        "model": llm,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "stream": True,
        "max_tokens": 400,
        "temperature": 0.0,
    }
    with httpx.stream(
        "POST", f"{mesh.base_url}/v1/chat/completions", json=body, timeout=180
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        next(line for line in lines if first_text(line))  # generating now

        saturated = route(mesh, question)
        assert saturated["mode"] == "single" and saturated["targets"][0]["name"] == tool
        assert f"{llm} saturated (1 open on 1 replica x 1)" in saturated["reason"]
        assert saturated["reason"].endswith(f"{tool} answers alone")
        by_name = {t["name"]: t for t in saturated["targets"]}
        assert by_name[llm]["open_requests"] == 1 and by_name[tool]["state"] == "running"

        answer = ask(mesh, "mesh", question)
        assert answer.status_code == 200, answer.text
        info = answer.json()["mesh"]
        assert info["specialist"] == tool and "saturated" in info["decision"]["reason"]
        assert "603" in answer.json()["choices"][0]["message"]["content"]

    # The stream is over: the LLM has room again and the tie is a panel again.
    wait_for(tied, 30, "the panel once the stream ended")


# -- OpenTelemetry -------------------------------------------------------------------------
def test_spans_follow_a_request_from_the_route_to_the_specialist_and_its_asks(
    mesh: RunningMesh, otlp_receiver: OtlpReceiver
) -> None:
    """The session mesh exports to a real OTLP/HTTP endpoint (`otlp_receiver`): a request to
    `general` that asks `math` is one trace, request -> generate -> ask -> generate."""
    reply = ask(mesh, "general", "What is 17*23?", max_tokens=16)
    assert reply.status_code == 200, reply.text
    assert any(e["to"] == "math" for e in reply.json()["mesh"]["trace"]), "general asked math"

    def exported() -> dict[str, Any] | None:
        asks = [
            s
            for s in otlp_receiver.named("mesh.ask")
            if s["attributes"].get("mesh.receiver") == "math"
            and s["attributes"].get("mesh.sender") == "general"
        ]
        for span in asks:  # the trace of this request: its ask, and the spans around it
            trace = [s for s in otlp_receiver.spans if s["trace_id"] == span["trace_id"]]
            by_id = {s["span_id"]: s for s in trace}
            answer = [s for s in trace if s["parent_id"] == span["span_id"]]
            asker = by_id.get(span["parent_id"] or "")
            root = by_id.get((asker or {}).get("parent_id") or "")
            if answer and asker and root:
                return {"ask": span, "answer": answer[0], "asker": asker, "root": root}
        return None

    found = wait_for(exported, 30, "the request's spans at the OTLP endpoint")
    assert found["root"]["name"] == "mesh.request"
    assert found["root"]["attributes"]["mesh.specialist"] == "general"
    assert found["asker"]["name"] == "mesh.generate"
    assert found["asker"]["attributes"]["mesh.specialist"] == "general"
    assert found["answer"]["name"] == "mesh.generate"
    assert found["answer"]["attributes"]["mesh.specialist"] == "math"

    # A routed request: the route is a span of its own under the request.
    assert ask(mesh, "mesh", "What is 6*7?").status_code == 200

    def routed() -> bool:
        requests = {s["span_id"] for s in otlp_receiver.named("mesh.request")}
        return any(s["parent_id"] in requests for s in otlp_receiver.named("mesh.route"))

    wait_for(routed, 30, "a mesh.route span under a mesh.request")
