"""One request's failure stays in that request, against real services: feedback counted once
per completion (a real redis-server), and a running stream that outlives its neighbours' bad
requests (a running mesh)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from registry import NotFoundError, Registry
from registry import keys as redis_keys
from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow


# -- feedback: one counted rating per completion ----------------------------------------------
def _thumbs(registry: Registry, name: str) -> tuple[int, int]:
    stats = registry.stats.get(name)
    return stats.thumbs_up, stats.thumbs_down


def test_feedback_counts_once_and_the_latest_rating_wins(registry: Registry) -> None:
    stats = registry.stats
    stats.record("general", routed=True, latency_ms=5.0, error=False, response_id="r1")
    for _ in range(5):
        assert stats.feedback("r1", "up") == "general"
    assert _thumbs(registry, "general") == (1, 0), "sending it again changes nothing"
    stats.feedback("r1", "down")
    assert _thumbs(registry, "general") == (0, 1), "up then down moves the count"
    ttl = registry.client.ttl(redis_keys.rating("r1"))
    assert 0 < ttl <= redis_keys.RESPONSE_TTL_S, "the rating expires with its response"
    with pytest.raises(NotFoundError):
        stats.feedback("no-such-response", "up")


def test_racing_ratings_of_one_completion_count_once(registry: Registry) -> None:
    stats = registry.stats
    stats.record("code", routed=False, latency_ms=5.0, error=False, response_id="r2")
    ratings = ["up", "down"] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda rating: stats.feedback("r2", rating), ratings))
    up, down = _thumbs(registry, "code")
    assert up + down == 1
    assert registry.client.get(redis_keys.rating("r2")) == ("up" if up else "down")


# -- the mesh: a bad neighbour never touches a running stream ---------------------------------
def _stream(url: str, body: dict[str, Any], out: dict[str, Any], started: threading.Event) -> None:
    """Read one SSE stream to its end; record its text and its last finish_reason."""
    import json

    text, finish = "", None
    with httpx.stream("POST", url, json=body, timeout=300) as response:
        out["status"] = response.status_code
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                out["error"] = chunk["error"]
                continue
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
                started.set()
    out["text"], out["finish_reason"] = text, finish
    started.set()


def test_bad_requests_beside_a_running_stream_are_400s_and_the_stream_finishes(
    mesh: RunningMesh,
) -> None:
    url = f"{mesh.base_url}/v1/chat/completions"
    question = [{"role": "user", "content": "Tell me about the history of tea."}]
    normal = {"model": "general", "messages": question, "max_tokens": 40, "stream": True}
    out: dict[str, Any] = {}
    started = threading.Event()
    reader = threading.Thread(target=_stream, args=(url, normal, out, started))
    reader.start()
    assert started.wait(300), "the normal stream never produced a token"

    seeded = {**normal, "seed": 2**64}
    too_long = {**normal, "messages": [{"role": "user", "content": "1 " * 15_000}]}
    unsupported = {**normal, "functions": [{"name": "f"}]}  # OpenAI's deprecated form of tools
    replies = {
        "seed": httpx.post(url, json=seeded, timeout=120),
        "messages": httpx.post(url, json=too_long, timeout=120),
        "functions": httpx.post(url, json=unsupported, timeout=120),
    }
    reader.join(300)
    for param, reply in replies.items():
        assert reply.status_code == 400, (param, reply.text)
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
    assert out.get("status") == 200 and "error" not in out, out
    assert out["finish_reason"] in ("stop", "length") and out["text"].strip()
