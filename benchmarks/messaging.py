"""What messaging costs: one delegation hop and a 3-way panel, over a single answer.

Same prompts for every mode, side by side in one run, against one mesh:
  single     -- pinned `general`, delegation refused (`max_hops: 0`)
  delegation -- pinned `general`, arithmetic delegated to `math` (one hop)
  panel      -- drafts from general, code and writing, aggregated by general
Prints one JSON object with per-mode p50/p95 latency (ms) and the added latency and ratio of
delegation and panel over single. Usage:

    python benchmarks/messaging.py [--url http://127.0.0.1:8000] [--rounds 5]

Without --url it starts its own mesh (`mesh up` on a free port, temporary MESH_HOME).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PROMPTS = [
    "What is 17*23?",
    "How much is 48*12?",
    "Compute 1024/8 for me.",
    "What is 365*24?",
]
MODES: dict[str, dict[str, Any]] = {
    "single": {"model": "general", "mesh": {"max_hops": 0}},
    "delegation": {"model": "general"},
    "panel": {
        "model": "mesh",
        "mesh": {"panel": ["general", "code", "writing"], "aggregator": "general", "max_hops": 0},
    },
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def run(base_url: str, rounds: int, max_tokens: int) -> dict[str, Any]:
    client = httpx.Client(base_url=base_url, timeout=600)
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    hop_ms: list[float] = []
    for _ in range(rounds):
        for prompt in PROMPTS:
            for mode, extra in MODES.items():  # interleaved, so drift hits every mode alike
                body = {
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    **extra,
                }
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                latencies[mode].append(elapsed)
                if mode == "delegation":
                    hop_ms += [e["latency_ms"] for e in response.json()["mesh"]["trace"]]
    summary: dict[str, Any] = {
        mode: {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "n": len(values),
        }
        for mode, values in latencies.items()
    }
    base = summary["single"]["p50_ms"]
    for mode in ("delegation", "panel"):
        summary[mode]["added_p50_ms"] = round(summary[mode]["p50_ms"] - base, 1)
        summary[mode]["ratio_p50"] = round(summary[mode]["p50_ms"] / base, 2)
    summary["math_hop_p50_ms"] = round(statistics.median(hop_ms), 1) if hop_ms else None
    summary["config"] = {"rounds": rounds, "prompts": len(PROMPTS), "max_tokens": max_tokens}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="A running mesh; default: start one.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args.rounds, args.max_tokens), indent=2))
        return
    from mesh.launcher import running_mesh

    with tempfile.TemporaryDirectory() as home, running_mesh(Path(home), ui=False) as mesh:
        print(json.dumps(run(mesh.base_url, args.rounds, args.max_tokens), indent=2))


if __name__ == "__main__":
    main()
