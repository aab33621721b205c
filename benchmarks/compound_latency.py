"""What a compound question costs against its parts asked one by one, on a real mesh.

Two LLM parts that do not point back at each other ("Write a haiku about the sea. Also, how do
I reverse a list in Python?") are asked at once by the gateway (`mesh.compound`), so the
compound answer should take about the slower part's time, not the sum. A part that points
back ("... Then write a haiku about it.") must wait for the first. Interleaved rounds, the same
max_tokens everywhere. Prints ONE JSON object: p50 of the compound request, of each part
alone, of their sum and max, and compound / sum.

    python -m benchmarks.compound_latency [--url URL] [--rounds 5]

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

PARTS = ("Write a haiku about the sea.", "How do I reverse a list in Python?")
JOINED = f"{PARTS[0]} Also, {PARTS[1][0].lower()}{PARTS[1][1:]}"


def ask(client: httpx.Client, text: str, max_tokens: int) -> tuple[float, dict[str, Any]]:
    body = {
        "model": "mesh",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()["mesh"]


def run(base_url: str, rounds: int, max_tokens: int) -> dict[str, Any]:
    client = httpx.Client(base_url=base_url, timeout=600)
    ask(client, "warm up", 4)
    times: dict[str, list[float]] = {"compound": [], "first": [], "second": []}
    decision: dict[str, Any] = {}
    for _ in range(rounds):
        elapsed, info = ask(client, JOINED, max_tokens)
        times["compound"].append(elapsed)
        decision = info["decision"]
        for key, text in zip(("first", "second"), PARTS, strict=True):
            times[key].append(ask(client, text, max_tokens)[0])
    sums = [a + b for a, b in zip(times["first"], times["second"], strict=True)]
    maxes = [max(a, b) for a, b in zip(times["first"], times["second"], strict=True)]
    p50 = {key: round(statistics.median(values), 1) for key, values in times.items()}
    return {
        "query": JOINED,
        "mode": decision.get("mode"),
        "parts": [(p["specialist"], p["text"]) for p in decision.get("parts") or []],
        "p50_ms": {
            **p50,
            "sum_of_parts": round(statistics.median(sums), 1),
            "max_of_parts": round(statistics.median(maxes), 1),
        },
        "compound_over_sum": round(
            statistics.median(times["compound"]) / statistics.median(sums), 3
        ),
        "compound_over_max": round(
            statistics.median(times["compound"]) / statistics.median(maxes), 3
        ),
        "config": {"rounds": rounds, "max_tokens": max_tokens},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="A running mesh; default: start one.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args.rounds, args.max_tokens)))
        return
    from mesh.launcher import running_mesh

    with tempfile.TemporaryDirectory() as home, running_mesh(Path(home), ui=False) as mesh:
        print(json.dumps(run(mesh.base_url, args.rounds, args.max_tokens)))


if __name__ == "__main__":
    main()
