"""Autoscaling against a fixed replica, side by side in one run, on a simulated Ray cluster.

Two copies of the catalog's `general` (the onnx engine on SmolLM2) run in one mesh on
`ray.cluster_utils.Cluster` (`benchmarks/fault_lab.py`): `fixed-general` with one replica and
`scaled-general` autoscaling from 1 to `--max-replicas` on a short window. The same streamed
requests go to each in turn at `--concurrency` (closed loop, `benchmarks/serving.py`'s client);
the script reports time to first token (p50, p95), latency and tokens/s for both, the replicas
`scaled-general` reached (as `/healthz` shows them while loaded), how long it took to come
back to one replica once traffic stopped, and the ratios autoscaled / fixed.

What to expect depends on the machine: the replicas of one cluster share its cores. On a
2-core machine three replicas split two cores, so the gain is in queueing (TTFT), not in
total tokens/s; on real nodes each replica brings its own cores. Usage:

    python -m benchmarks.autoscale [--requests 64] [--concurrency 16] [--max-tokens 48]

(as a module from the repository root: `benchmarks/specialists.py` would shadow the package.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks.fault_lab import FaultLab, catalog_copy
from benchmarks.serving import bench_mesh


def autoscaling(max_replicas: int) -> dict[str, Any]:
    return {
        "min_replicas": 1,
        "max_replicas": max_replicas,
        "target_ongoing_requests": 4,
        "max_ongoing_requests": 8,
        "max_queued_requests": 64,
        "look_back_period_s": 2,
        "upscale_delay_s": 0,
        "downscale_delay_s": 10,
    }


def measure(lab: FaultLab, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """One closed-loop run on `model`, with the running replicas sampled every 0.5 s."""
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            seen.append(lab.running_replicas(model))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        levels = (args.concurrency,)
        result = bench_mesh(lab.base_url, model, args.requests, args.max_tokens, levels)
    finally:
        done.set()
        sampler.join()
    return {**result[str(args.concurrency)], "replicas_max": max(seen, default=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--home", type=Path, help="reuse a MESH_HOME (its ONNX cache)")
    args = parser.parse_args()

    scaling = {"min_replicas": 1, "max_replicas": 1}
    specialists = [
        catalog_copy("general", "fixed-general", scaling=scaling),
        catalog_copy("general", "scaled-general", scaling=autoscaling(args.max_replicas)),
    ]
    with tempfile.TemporaryDirectory(prefix="mesh-autoscale-") as scratch:
        home = args.home or Path(scratch)
        with FaultLab(home, specialists, head_cpus=4, worker_cpus=2) as lab:
            fixed = measure(lab, "fixed-general", args)
            scaled = measure(lab, "scaled-general", args)
            back_to_one_s = lab.wait(lambda: lab.running_replicas("scaled-general") == 1, 180)

    def ratio(key: str) -> float | None:
        return round(scaled[key] / fixed[key], 3) if fixed.get(key) else None

    print(
        json.dumps(
            {
                "concurrency": args.concurrency,
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "fixed_single_replica": fixed,
                "autoscaled": scaled,
                "scaled_back_to_one_s": back_to_one_s,
                "ratios_autoscaled_over_fixed": {
                    key: ratio(key)
                    for key in ("ttft_p50_ms", "ttft_p95_ms", "p50_ms", "p95_ms", "tokens_per_s")
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
