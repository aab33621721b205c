"""Serving throughput and latency: the engine alone versus the mesh under concurrency.

Same specialist (`general`, SmolLM2-135M), same prompts, greedy decoding (so every mode generates
the same tokens for a prompt), side by side in one run:
  direct     -- `TransformersEngine` in this process, one request after another, with the
                replica's thread count (Ray gives a fractional-CPU replica one BLAS thread)
  scheduler  -- the same engine behind `BatchScheduler` in this process at concurrency 8,
                continuous versus static batching (the policy `@serve.batch` would give)
  mesh       -- streamed chat completions over HTTP, `model: general`, at concurrency 1/4/8/16
Prints one JSON object: {"direct": {...}, "scheduler": {...}, "mesh": {"1": {...}, ...},
"ratios": {...}}; each inner object has tokens_per_s, requests_per_s, p50_ms, p95_ms,
ttft_p50_ms. Usage:

    python benchmarks/serving.py [--url http://127.0.0.1:8000] [--requests 16] [--max-tokens 64]

Without --url it starts its own mesh (`mesh up` on a free port, temporary MESH_HOME).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

PROMPTS = [
    "Describe a sunrise over the ocean.",
    "Give me three tips for learning a new language.",
    "Explain what a compiler does.",
    "Write a short note thanking a colleague.",
    "What makes a good cup of tea?",
    "Describe the life cycle of a butterfly.",
    "Why do people enjoy hiking?",
    "Summarise the plot of a heist movie you invent.",
]
CONCURRENCY = (1, 4, 8, 16)
REPLICA_THREADS = 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


class Sample:
    """One request: latency, time to first token, generated tokens."""

    def __init__(self, latency_s: float, ttft_s: float, tokens: int) -> None:
        self.latency_s, self.ttft_s, self.tokens = latency_s, ttft_s, tokens


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    return {
        "tokens_per_s": round(sum(s.tokens for s in samples) / wall_s, 2),
        "requests_per_s": round(len(samples) / wall_s, 3),
        "p50_ms": round(statistics.median(s.latency_s for s in samples) * 1000, 1),
        "p95_ms": round(percentile([s.latency_s for s in samples], 0.95) * 1000, 1),
        "ttft_p50_ms": round(statistics.median(s.ttft_s for s in samples) * 1000, 1),
        "n": len(samples),
        "tokens": sum(s.tokens for s in samples),
    }


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def _max_tokens(i: int, longest: int) -> int:
    """Answers of mixed length (1/4 .. 4/4 of `longest`), as real traffic has: with equal
    lengths every policy looks like static batching."""
    return max(1, longest * (1 + (i * 3) % 4) // 4)


# -- (a) the engine alone --------------------------------------------------------------------
def load_engine() -> Any:
    import torch

    from specialists.catalog import load_catalog
    from specialists.transformers_engine import TransformersEngine

    torch.set_num_threads(REPLICA_THREADS)
    general = next(m for m in load_catalog() if m.name == "general")
    engine = TransformersEngine(general)
    engine.load()
    return engine


def _params(engine: Any, max_tokens: int) -> Any:
    from specialists.engine import GenerationParams

    return GenerationParams.merge(
        engine.manifest.generation, max_tokens=max_tokens, temperature=0.0
    )


def bench_direct(engine: Any, requests: int, max_tokens: int) -> dict[str, Any]:
    from specialists.engine import ChatMessage

    samples = []
    started = time.perf_counter()
    for i in range(requests):
        chat = [ChatMessage.model_validate(m) for m in _messages(i)]
        params = _params(engine, _max_tokens(i, max_tokens))
        begin = time.perf_counter()
        first = None
        for delta in engine.stream(chat, params):
            if first is None and delta.text:
                first = time.perf_counter()
        end = time.perf_counter()
        samples.append(Sample(end - begin, (first or end) - begin, delta.completion_tokens))
    return summarize(samples, time.perf_counter() - started)


# -- the scheduler in-process: continuous versus static -------------------------------------
def bench_scheduler(engine: Any, requests: int, max_tokens: int, continuous: bool) -> dict:
    from specialists.engine import ChatMessage
    from specialists.scheduler import BatchScheduler

    async def main() -> dict[str, Any]:
        scheduler = BatchScheduler(engine, max_batch_size=8, continuous=continuous)

        async def one(i: int) -> Sample:
            chat = [ChatMessage.model_validate(m) for m in _messages(i)]
            params = _params(engine, _max_tokens(i, max_tokens))
            begin = time.perf_counter()
            first, tokens = None, 0
            async for delta in scheduler.stream(engine.prepare(chat, params)):
                if first is None and delta.text:
                    first = time.perf_counter()
                tokens = delta.completion_tokens or tokens
            end = time.perf_counter()
            return Sample(end - begin, (first or end) - begin, tokens)

        summary, _ = await closed_loop(one, 8, requests)
        summary["largest_batch"] = scheduler.snapshot().largest_batch
        return summary

    return asyncio.run(main())


async def closed_loop(
    one: Callable[[int], Awaitable[Sample]], concurrency: int, requests: int
) -> tuple[dict[str, Any], list[Sample]]:
    """`concurrency` clients, each sending its next request when the last one returns."""
    counter = iter(range(requests))
    samples: list[Sample] = []

    async def client() -> None:
        for i in counter:
            samples.append(await one(i))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summarize(samples, time.perf_counter() - started), samples


# -- (b) the mesh over HTTP ------------------------------------------------------------------
async def stream_once(client: httpx.AsyncClient, i: int, max_tokens: int) -> Sample:
    body = {
        "model": "general",
        "messages": _messages(i),
        "max_tokens": _max_tokens(i, max_tokens),
        "temperature": 0,
        "stream": True,
    }
    begin = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if first is None and choice["delta"].get("content"):
                    first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return Sample(end - begin, (first or end) - begin, tokens)


def bench_mesh(base_url: str, requests: int, max_tokens: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=base_url, timeout=900, limits=limits) as client:
            await stream_once(client, 0, 8)  # warm the path (handles, caches)
            results = {}
            for concurrency in CONCURRENCY:
                total = max(requests, 4 * concurrency)
                results[str(concurrency)], _ = await closed_loop(
                    lambda i: stream_once(client, i, max_tokens), concurrency, total
                )
            return results

    return asyncio.run(main())


def run(base_url: str, requests: int, max_tokens: int, scheduler: bool) -> dict[str, Any]:
    engine = load_engine()
    bench_direct(engine, 2, 8)  # warm-up
    report: dict[str, Any] = {"direct": bench_direct(engine, requests, max_tokens)}
    if scheduler:
        report["scheduler"] = {
            "continuous": bench_scheduler(engine, 32, max_tokens, True),
            "static": bench_scheduler(engine, 32, max_tokens, False),
        }
    del engine
    report["mesh"] = bench_mesh(base_url, requests, max_tokens)
    direct, mesh = report["direct"], report["mesh"]
    report["ratios"] = {
        "mesh_c8_tokens_per_s_over_direct": round(
            mesh["8"]["tokens_per_s"] / direct["tokens_per_s"], 2
        ),
        "mesh_c16_tokens_per_s_over_direct": round(
            mesh["16"]["tokens_per_s"] / direct["tokens_per_s"], 2
        ),
        "mesh_c1_p50_latency_overhead_pct": round(
            100 * (mesh["1"]["p50_ms"] / direct["p50_ms"] - 1), 1
        ),
    }
    if scheduler:
        sched = report["scheduler"]
        report["ratios"]["continuous_over_static_tokens_per_s"] = round(
            sched["continuous"]["tokens_per_s"] / sched["static"]["tokens_per_s"], 2
        )
    report["settings"] = {
        "max_tokens": f"{_max_tokens(0, max_tokens)}..{max_tokens}, mixed",
        "requests_per_level": f"max({requests}, 4 x concurrency)",
        "engine_threads": REPLICA_THREADS,
        "cpus": os.cpu_count(),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running mesh; default: start one")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument(
        "--max-tokens", type=int, default=96, help="the longest answer; others are 1/4..3/4"
    )
    parser.add_argument("--no-scheduler", action="store_true", help="skip the in-process part")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.url:
        report = run(args.url, args.requests, args.max_tokens, not args.no_scheduler)
    else:
        from mesh.launcher import running_mesh

        with tempfile.TemporaryDirectory() as home, running_mesh(Path(home), ui=False) as mesh:
            report = run(mesh.base_url, args.requests, args.max_tokens, not args.no_scheduler)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
