"""The mesh on a simulated cluster under load: autoscaling up and down, and faults survived with
every request counted (`benchmarks/fault_lab.py`, `benchmarks/load.py`).

One `FaultLab` for the module: `ray.cluster_utils.Cluster` (a head node and a worker node that
declares a GPU), a real redis-server the lab can stop, and `mesh up --address` with `general`
(an LLM, onnx), `math`, `gpu-math` (the math tool on the worker, the only GPU node) and
`busy-math` (the math tool, autoscaling 1..3 on a short window).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.fault_lab import FaultLab, catalog_copy, gpu_tool
from benchmarks.load import SCENARIOS, run_faults
from mesh.metrics import read_exposition
from specialists.catalog import load_catalog
from tests.conftest import seed_onnx_cache

pytestmark = pytest.mark.slow
N = 40  # requests per fault scenario
BUSY_EXAMPLES = ["Sum 2 and 2 busily.", "Busily add 3 and 4.", "Busy sum of 5 and 6."]
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 0.5,
    "max_ongoing_requests": 4,
    "look_back_period_s": 2,
    "upscale_delay_s": 0,
    "downscale_delay_s": 3,
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Iterator[FaultLab]:
    home = tmp_path_factory.mktemp("fault-lab")
    seed_onnx_cache(onnx_cache, home / "mesh" / "artifacts")
    specialists = [m for m in load_catalog() if m.name in ("general", "math")]
    specialists += [
        gpu_tool("gpu-math"),
        catalog_copy("math", "busy-math", scaling=AUTOSCALING, examples=BUSY_EXAMPLES),
    ]
    with FaultLab(home, specialists) as running:
        yield running


def hammer(url: str, model: str, workers: int, stop: threading.Event) -> int:
    """`workers` clients sending `model` requests back to back until `stop`; returns how many
    were answered."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}]}

    def client() -> int:
        answered = 0
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                answered += http.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        return answered

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda _: client(), range(workers)))


def test_a_loaded_specialist_scales_up_and_back_down_alone(lab: FaultLab) -> None:
    assert lab.running_replicas("busy-math") == 1 and lab.running_replicas("math") == 1
    stop = threading.Event()
    seen: list[tuple[int, int]] = []  # (busy-math, math) running replicas while loaded

    def scaled_up() -> bool:
        seen.append((lab.running_replicas("busy-math"), lab.running_replicas("math")))
        return seen[-1][0] >= 2

    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(hammer, lab.base_url, "busy-math", 16, stop)
        try:
            scaled = lab.wait(scaled_up, 90)
            metrics = read_exposition(httpx.get(f"{lab.base_url}/metrics", timeout=30).text)
        finally:
            stop.set()
        answered = load.result()
    assert scaled is not None, f"busy-math never scaled up: {seen}"
    assert answered > 0
    assert max(busy for busy, _ in seen) <= 3
    assert {other for _, other in seen} == {1}, "math was untouched"
    assert metrics["busy-math"].replicas.get("running", 0) >= 2  # /metrics shows it too
    assert metrics["busy-math"].requests.get("answered", 0) > 0

    # Traffic stops: back to its minimum by itself.
    down = lab.wait(lambda: lab.running_replicas("busy-math") == 1, 120)
    assert down is not None, "busy-math did not scale back down"
    assert lab.running_replicas("math") == 1
    print(f"scaled up in {scaled}s, back down in {down}s")


def test_no_request_is_lost_in_any_fault_and_the_mesh_recovers(lab: FaultLab) -> None:
    started = time.monotonic()
    report = run_faults(lab, SCENARIOS, n=N, concurrency=8, timeout_s=150, deadline_s=240)
    print(f"fault scenarios in {time.monotonic() - started:.0f}s: {report}")
    assert list(report) == list(SCENARIOS)
    for name, entry in report.items():
        counted = entry["answered"] + entry["refused"] + entry["failed_cleanly"]
        assert entry["fault_error"] is None, (name, entry["fault_error"])
        assert entry["lost"] == 0, (name, entry["not_answered"])
        assert entry["sent"] == N and entry["not_sent"] == 0 and counted == N, (name, entry)
        assert entry["recovered_s"] is not None, f"{name}: the mesh did not recover"
        assert entry["answered"] > 0, (name, entry)
    assert report["no_fault"]["answered"] == N, report["no_fault"]
    for name in SCENARIOS[1:]:  # each fault began while requests were in flight
        assert report[name]["fault_window_s"][0] < report[name]["duration_s"], report[name]
    assert lab.registry().installed()["math"].version == "0.2.1"  # the upgrade landed
