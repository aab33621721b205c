"""Continuous batching in a running mesh: concurrent requests share decode steps, streams do not
queue behind each other, and a client that disconnects frees its row at once."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import RunningMesh, get_json, wait_for

pytestmark = pytest.mark.slow
LONG = "Write a long, detailed story about a lighthouse keeper and the sea."


def _body(stream: bool, max_tokens: int, content: str = LONG) -> dict:
    return {
        "model": "general",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": 1,
        "stream": stream,
    }


def _batch(mesh: RunningMesh) -> dict:
    return get_json(f"{mesh.base_url}/v1/specialists/general/batch")


def test_concurrent_requests_decode_in_one_batch(mesh: RunningMesh) -> None:
    before = _batch(mesh)
    url = f"{mesh.base_url}/v1/chat/completions"

    def ask(i: int) -> dict:
        body = _body(False, 24, f"{LONG} Call the keeper name number {i}.")
        return dict(httpx.post(url, json=body, timeout=300).json())

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all(a["choices"][0]["message"]["content"].strip() for a in answers)
    after = _batch(mesh)
    assert after["admitted"] - before["admitted"] == 4
    assert after["largest_batch"] >= 2, "concurrent requests were decoded together"
    steps = after["steps"] - before["steps"]
    tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    assert steps < tokens, f"{tokens} tokens took {steps} steps: some steps served several rows"


def test_a_second_stream_starts_before_the_first_ends(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/chat/completions"
    first_done = threading.Event()
    first_started = threading.Event()

    def first_stream() -> None:
        with httpx.stream("POST", url, json=_body(True, 96), timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    first_started.set()
        first_done.set()

    thread = threading.Thread(target=first_stream)
    thread.start()
    assert first_started.wait(120)
    with httpx.stream("POST", url, json=_body(True, 8, "Say hi."), timeout=300) as response:
        chunks = [line for line in response.iter_lines() if line.startswith("data: {")]
    second_finished_while_first_ran = not first_done.is_set()
    thread.join()
    assert chunks
    assert second_finished_while_first_ran, "the short stream waited for the long one"


def test_client_disconnect_frees_the_row(mesh: RunningMesh) -> None:
    before = _batch(mesh)
    url = f"{mesh.base_url}/v1/chat/completions"
    with httpx.stream("POST", url, json=_body(True, 256), timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"]:
                break  # one token in: hang up
    hung_up = time.monotonic()
    stats = wait_for(
        lambda: (s := _batch(mesh))["cancelled"] > before["cancelled"] and s["running"] == 0 and s,
        timeout_s=60,
        what="the abandoned row to be cancelled",
        interval_s=0.2,
    )
    assert stats["steps"] - before["steps"] < 256, "generation stopped well before max_tokens"
    assert time.monotonic() - hung_up < 60


def test_a_seed_reproduces_an_answer_inside_a_busy_batch(mesh: RunningMesh) -> None:
    """OpenAI's `seed`: each row samples with its own generator, whatever shares its batch."""
    url = f"{mesh.base_url}/v1/chat/completions"
    seeded = {**_body(False, 16, "Invent a name for a cat."), "temperature": 1.0, "seed": 5}
    other = _body(False, 16, "Describe a storm at sea.")

    def ask(body: dict) -> str:
        reply = httpx.post(url, json=body, timeout=300).json()
        return str(reply["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(3) as pool:
        first, _, second = pool.map(ask, [seeded, other, seeded])
    assert first == second
