"""Serving throughput and latency: each engine alone versus the mesh under concurrency.

Same base model (SmolLM2-135M, the catalog's `general` specialist), same prompts, greedy decoding
(so every mode generates the same tokens for a prompt), side by side in one run:
  direct     -- the transformers engine in this process, one request after another, with the
                replica's thread count (Ray gives a fractional-CPU replica one BLAS thread)
  scheduler  -- the same engine behind `BatchScheduler` in this process at concurrency 8,
                continuous versus static batching (the policy `@serve.batch` would give)
  mesh       -- streamed chat completions over HTTP to the transformers engine's specialist,
                at concurrency 1/4/8/16
  engines    -- for every engine of --engines: the engine alone in this process (concurrency 1
                and 8, through its `stream` contract) and through the mesh (concurrency 1 and 8)
                as a copy of `general` published with that engine (`bench-<engine>`)
  grammar    -- for every engine alone that supports grammars: the same batch of 8 rows, 64
                tokens each, with a json_schema grammar and without, alternated: constrained
                decoding's per-token overhead (tokens/s, decode ms per token, and the grammar's
                own calls in the decode loop, timed)
Every figure is the median of --repeats runs. Prints one JSON object: {"direct", "scheduler",
"mesh": {"1": ...}, "engines": {"<name>": {"alone": {...}, "alone_8": {...}, "grammar": {"free":
{...}, "json_schema": {...}, ...}, "mesh": {"1": ..., "8": ...}}}, "ratios", "settings"}; each
inner object has tokens_per_s, requests_per_s, p50_ms, p95_ms, ttft_p50_ms. Usage:

    python benchmarks/serving.py [--url URL --token ADMIN] [--engines transformers,onnx]
                                 [--requests 16] [--max-tokens 96] [--repeats 3] [--no-grammar]

Without --url it starts its own mesh (`mesh up` on a free port, temporary MESH_HOME).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# `python benchmarks/serving.py` puts this folder first on sys.path, where specialists.py and
# router.py (other benchmarks) would shadow the packages of the same names.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
# 16 needs MESH_MAX_INFLIGHT_PER_CLIENT >= 16: one client's fair share is 8 by default (429).
CONCURRENCY = (1, 4, 8)
ENGINE_CONCURRENCY = (1, 8)
# Threads per engine replica (--threads): the mesh's MESH_ENGINE_THREADS. `baseline` is always
# the transformers engine at one thread, what the catalog's specialists ran before the engines
# (Ray gives a replica reserving under one CPU OMP_NUM_THREADS=1).
REPLICA_THREADS = 1
BASELINE_THREADS = 1
BENCH_PREFIX = "bench-"
GPU_ENGINES = {"vllm"}  # serve through their own Serve app on a GPU: no "alone" figures here


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


class Sample:
    """One request: latency, time to first token, generated tokens."""

    def __init__(self, latency_s: float, ttft_s: float, tokens: int) -> None:
        self.latency_s, self.ttft_s, self.tokens = latency_s, ttft_s, tokens


async def timed(engine: Any, request: Any) -> Sample:
    """One request through an engine: its latency, time to first text, and tokens."""
    begin = time.perf_counter()
    first, tokens = None, 0
    async for delta in engine.stream(request):
        if first is None and delta.text:
            first = time.perf_counter()
        tokens = delta.completion_tokens or tokens
    end = time.perf_counter()
    return Sample(end - begin, (first or end) - begin, tokens)


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    return {
        "tokens_per_s": round(sum(s.tokens for s in samples) / wall_s, 2),
        "requests_per_s": round(len(samples) / wall_s, 3),
        "p50_ms": round(statistics.median(s.latency_s for s in samples) * 1000, 1),
        "p95_ms": round(percentile([s.latency_s for s in samples], 0.95) * 1000, 1),
        "ttft_p50_ms": round(statistics.median(s.ttft_s for s in samples) * 1000, 1),
        "ttft_p95_ms": round(percentile([s.ttft_s for s in samples], 0.95) * 1000, 1),
        "n": len(samples),
        "tokens": sum(s.tokens for s in samples),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the median of repeated runs (noisy shared machines), and the spread."""
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [run[key] for run in runs]
        if isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = round(statistics.median(values), 2)
        else:
            merged[key] = value
    merged["runs"] = len(runs)
    rates = [run["tokens_per_s"] for run in runs]
    merged["tokens_per_s_range"] = [min(rates), max(rates)]
    return merged


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def _max_tokens(i: int, longest: int) -> int:
    """Answers of mixed length (1/4 .. 4/4 of `longest`), as real traffic has: with equal
    lengths every policy looks like static batching."""
    return max(1, longest * (1 + (i * 3) % 4) // 4)


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


# -- (a) engines alone, through their `stream` contract --------------------------------------
def general_manifest(engine: str) -> Any:
    """The catalog's `general` specialist, run by `engine`."""
    from registry import SpecialistManifest
    from specialists.catalog import load_catalog

    general = next(m for m in load_catalog() if m.name == "general")
    data = general.model_dump(mode="json")
    data["model"]["engine"] = engine
    return SpecialistManifest.model_validate(data)


def load_engine(name: str, cache_dir: str) -> Any:
    from specialists.engine_registry import engine_class
    from specialists.sources import SourceOptions

    options = SourceOptions(cache_dir=cache_dir, engine_threads=REPLICA_THREADS)
    engine = engine_class(name)(general_manifest(name), options)
    engine.load()
    return engine


def _params(engine: Any, max_tokens: int) -> Any:
    from specialists.engine import GenerationParams

    return GenerationParams.merge(
        engine.manifest.generation, max_tokens=max_tokens, temperature=0.0
    )


def bench_alone(engine: Any, concurrency: int, requests: int, max_tokens: int) -> dict:
    from specialists.engine import ChatMessage, EngineRequest

    async def one(i: int) -> Sample:
        chat = [ChatMessage.model_validate(m) for m in _messages(i)]
        request = EngineRequest(messages=chat, params=_params(engine, _max_tokens(i, max_tokens)))
        return await timed(engine, request)

    async def main() -> dict[str, Any]:
        summary, _ = await closed_loop(one, concurrency, requests)
        return summary

    return asyncio.run(main())


def bench_baseline(engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The transformers engine alone at BASELINE_THREADS, concurrency 1: the issue's "today's
    single stream", measured in the same run as everything it is compared with."""
    import torch

    torch.set_num_threads(BASELINE_THREADS)
    try:
        runs = [bench_alone(engine, 1, args.requests, args.max_tokens) for _ in range(args.repeats)]
    finally:
        torch.set_num_threads(REPLICA_THREADS)
    return median_of(runs)


# -- constrained decoding's per-token overhead: one batch with a grammar and without ------------
GRAMMAR_ROWS = 8
# SmolLM2's free (greedy) answers to these prompts all run past GRAMMAR_MAX_TOKENS, and the
# schema cannot be complete within it (16 people at least): every row of both batches decodes
# exactly max_tokens, so the two differ only by the grammar.
GRAMMAR_MAX_TOKENS = 64
GRAMMAR_TOPICS = (
    "a heist",
    "a space voyage",
    "a small bakery",
    "a football team",
    "a haunted house",
    "a hospital",
    "a rock band",
    "a school trip",
)
GRAMMAR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 16,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "city": {"type": "string"},
                    "role": {"enum": ["engineer", "teacher", "doctor", "artist", "other"]},
                    "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                },
                "required": ["name", "age", "city", "role", "hobbies"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}


@contextmanager
def timed_constraints() -> Iterator[dict[str, list[float]]]:
    """While open, how long each grammar call of the decode loop takes (seconds per call):
    `start` (a row's grammar, once), `allowed` (its token mask as booleans), `restrict` (the
    mask applied to the logits: the onnx engine; `allowed` included), `accept` (one token)."""
    from specialists.grammar import GrammarCompiler, TokenConstraint

    calls = {
        "start": GrammarCompiler,
        "allowed": TokenConstraint,
        "restrict": TokenConstraint,
        "accept": TokenConstraint,
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    originals = {name: getattr(owner, name) for name, owner in calls.items()}

    def timed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times[name].append(time.perf_counter() - begin)

        return call

    for name, owner in calls.items():
        setattr(owner, name, timed(name, originals[name]))
    try:
        yield times
    finally:
        for name, owner in calls.items():
            setattr(owner, name, originals[name])


def bench_grammar(
    engine: Any,
    rows: int = GRAMMAR_ROWS,
    max_tokens: int = GRAMMAR_MAX_TOKENS,
    repeats: int = 3,
) -> dict[str, Any]:
    """`rows` requests at once (one batch), greedy, `max_tokens` each, all held to a
    json_schema grammar ("json_schema") or none ("free"), the two alternated `repeats` times
    (medians); the same prompts both ways. `decode_ms_per_token` is each row's (latency - TTFT)
    / (tokens - 1), its median over rows: the batch's step time as one row sees it, grammar
    included. `constraint_us` times the grammar's own calls in the decode loop (medians per
    call; `start_ms` per request), and `constraint_share_of_step_pct` is what they add to a
    step: rows x (the mask applied + accept) / the step."""
    from specialists.engine import ChatMessage, EngineRequest, GenerationParams
    from specialists.grammar import Grammar

    grammar = Grammar(kind="json_schema", json_schema=GRAMMAR_SCHEMA)

    async def one(i: int, constrained: bool) -> Sample:
        prompt = (
            f"Invent eight characters for a story about {GRAMMAR_TOPICS[i % len(GRAMMAR_TOPICS)]}."
            " Give each a name, age, city, role and hobbies, as JSON."
        )
        params = GenerationParams.merge(
            engine.manifest.generation,
            max_tokens=max_tokens,
            temperature=0.0,
            grammar=grammar if constrained else None,
        )
        request = EngineRequest(messages=[ChatMessage(role="user", content=prompt)], params=params)
        return await timed(engine, request)

    async def batch(constrained: bool) -> dict[str, Any]:
        started = time.perf_counter()
        samples = await asyncio.gather(*(one(i, constrained) for i in range(rows)))
        summary = summarize(list(samples), time.perf_counter() - started)
        per_token = [
            (s.latency_s - s.ttft_s) / (s.tokens - 1) * 1000 for s in samples if s.tokens > 1
        ]
        summary["decode_ms_per_token"] = round(statistics.median(per_token), 3)
        summary["min_tokens"] = min(s.tokens for s in samples)
        return summary

    asyncio.run(batch(True))  # warm-up: the tokenizer as the grammar engine reads it, caches
    runs: dict[str, list[dict[str, Any]]] = {"free": [], "json_schema": []}
    with timed_constraints() as times:
        for r in range(repeats):  # alternated, and in turn first: drift hits both alike
            for with_grammar in (False, True) if r % 2 == 0 else (True, False):
                key = "json_schema" if with_grammar else "free"
                runs[key].append(asyncio.run(batch(with_grammar)))
    free, constrained = median_of(runs["free"]), median_of(runs["json_schema"])
    calls = {name: statistics.median(t) * 1e6 for name, t in times.items() if t}
    start_us = calls.pop("start", 0.0)
    per_row_token = calls.get("restrict", calls.get("allowed", 0.0)) + calls.get("accept", 0.0)
    return {
        "rows": rows,
        "max_tokens": max_tokens,
        "free": free,
        "json_schema": constrained,
        "per_token_overhead_pct": round(
            100 * (constrained["decode_ms_per_token"] / free["decode_ms_per_token"] - 1), 1
        ),
        "tokens_per_s_ratio": round(constrained["tokens_per_s"] / free["tokens_per_s"], 3),
        "constraint_us": {name: round(us, 1) for name, us in calls.items()},
        "start_ms": round(start_us / 1000, 2),
        "constraint_share_of_step_pct": round(
            100 * rows * per_row_token / (constrained["decode_ms_per_token"] * 1000), 2
        ),
    }


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


# -- (b) the mesh over HTTP ------------------------------------------------------------------
async def stream_once(client: httpx.AsyncClient, model: str, i: int, max_tokens: int) -> Sample:
    body = {
        "model": model,
        "messages": _messages(i),
        "max_tokens": _max_tokens(i, max_tokens),
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
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


def bench_mesh(
    base_url: str, model: str, requests: int, max_tokens: int, levels: tuple[int, ...]
) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=base_url, timeout=900, limits=limits) as client:
            await stream_once(client, model, 0, 8)  # warm the path (handles, caches)
            results = {}
            for concurrency in levels:
                total = max(requests, 4 * concurrency)
                results[str(concurrency)], _ = await closed_loop(
                    lambda i: stream_once(client, model, i, max_tokens), concurrency, total
                )
            return results

    return asyncio.run(main())


def publish_bench_specialist(base_url: str, token: str, engine: str) -> str:
    """`general` run by `engine`, published and installed as `bench-<engine>` (forced past the
    quality gate: it is a copy of `general` on purpose); returns its name once it is live."""
    data = general_manifest(engine).model_dump(mode="json")
    name = f"{BENCH_PREFIX}{engine}"
    data.update(name=name, version="1.0.0", description=f"general on the {engine} engine")
    if engine in GPU_ENGINES:
        data["resources"]["num_gpus"] = 1
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/v1/specialists"
    answer = httpx.post(url, json=data, headers=headers, params={"force": "true"}, timeout=120)
    if answer.status_code == 409:  # published by an earlier run: install it (409: it is)
        answer = httpx.post(f"{url}/{name}/install", json={}, headers=headers, timeout=120)
    if answer.status_code != 409:
        answer.raise_for_status()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        models = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
        if any(m["id"] == name for m in models):
            return name
        time.sleep(2)
    raise TimeoutError(f"{name} did not go live")


def run(args: argparse.Namespace, base_url: str, token: str) -> dict[str, Any]:
    engines: list[str] = args.engines.split(",")
    repeat = range(args.repeats)
    report: dict[str, Any] = {"engines": {}}
    with tempfile.TemporaryDirectory() as cache:
        for name in engines:  # alone first, then freed: the mesh gets the cores to itself
            report["engines"][name] = {}
            if name in GPU_ENGINES:  # a client of its own Serve app: measured through the mesh
                continue
            engine = load_engine(name, args.cache_dir or cache)
            bench_alone(engine, 1, 2, 8)  # warm-up
            entry = report["engines"][name]
            entry |= {
                "alone": median_of(
                    [bench_alone(engine, 1, args.requests, args.max_tokens) for _ in repeat]
                ),
                "alone_8": median_of([bench_alone(engine, 8, 32, args.max_tokens) for _ in repeat]),
            }
            if not args.no_grammar and engine.capabilities.grammars:
                entry["grammar"] = bench_grammar(engine, repeats=args.repeats)
            if name == "transformers":
                same = REPLICA_THREADS == BASELINE_THREADS  # then "alone" is the baseline
                baseline = entry["alone"] if same else bench_baseline(engine, args)
                report["baseline"] = {**baseline, "threads": BASELINE_THREADS}
                report["direct"] = entry["alone"]
                if not args.no_scheduler:
                    report["scheduler"] = {
                        "continuous": bench_scheduler(engine, 32, args.max_tokens, True),
                        "static": bench_scheduler(engine, 32, args.max_tokens, False),
                    }
            del engine
    for name in engines:
        model = publish_bench_specialist(base_url, token, name)
        levels = CONCURRENCY if name == "transformers" else ENGINE_CONCURRENCY
        runs = [bench_mesh(base_url, model, args.requests, args.max_tokens, levels) for _ in repeat]
        mesh = {level: median_of([r[level] for r in runs]) for level in runs[0]}
        report["engines"][name]["mesh"] = {k: mesh[k] for k in map(str, ENGINE_CONCURRENCY)}
        if name == "transformers":
            report["mesh"] = mesh
    report["ratios"] = ratios(report)
    report["settings"] = {
        "max_tokens": f"{_max_tokens(0, args.max_tokens)}..{args.max_tokens}, mixed",
        "requests_per_level": f"max({args.requests}, 4 x concurrency)",
        "engine_threads": REPLICA_THREADS,
        "baseline_threads": BASELINE_THREADS,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
    }
    return report


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as ratios; `where_time_goes` splits the mesh's c=1 latency into the
    engine's own and the rest (HTTP, gateway, router, two Serve hops)."""
    out: dict[str, Any] = {}
    direct = report.get("direct")
    if direct and "mesh" in report:
        mesh = report["mesh"]
        out["mesh_c8_tokens_per_s_over_direct"] = round(
            mesh["8"]["tokens_per_s"] / direct["tokens_per_s"], 2
        )
        out["mesh_c1_p50_latency_overhead_pct"] = round(
            100 * (mesh["1"]["p50_ms"] / direct["p50_ms"] - 1), 1
        )
    if "scheduler" in report:
        sched = report["scheduler"]
        out["continuous_over_static_tokens_per_s"] = round(
            sched["continuous"]["tokens_per_s"] / sched["static"]["tokens_per_s"], 2
        )
    engines = {}
    for name, entry in report["engines"].items():
        mesh = entry["mesh"]
        if "alone" not in entry:
            engines[name] = {
                "mesh_c8_over_mesh_c1_tokens_per_s": round(
                    mesh["8"]["tokens_per_s"] / mesh["1"]["tokens_per_s"], 2
                ),
                "mesh_c8_ttft_p50_ms": mesh["8"]["ttft_p50_ms"],
            }
            continue
        alone = entry["alone"]
        row = {
            "mesh_c1_over_alone_c1_latency": round(mesh["1"]["p50_ms"] / alone["p50_ms"], 3),
            "mesh_c1_over_alone_c1_tokens_per_s": round(
                mesh["1"]["tokens_per_s"] / alone["tokens_per_s"], 3
            ),
            "mesh_c8_over_mesh_c1_tokens_per_s": round(
                mesh["8"]["tokens_per_s"] / mesh["1"]["tokens_per_s"], 2
            ),
            "mesh_c8_ttft_p50_ms": mesh["8"]["ttft_p50_ms"],
            "where_time_goes_c1_ms": {
                "engine_p50": alone["p50_ms"],
                "mesh_overhead_p50": round(mesh["1"]["p50_ms"] - alone["p50_ms"], 1),
                "ttft_overhead": round(mesh["1"]["ttft_p50_ms"] - alone["ttft_p50_ms"], 1),
            },
        }
        if direct:
            row["mesh_c1_over_transformers_direct_tokens_per_s"] = round(
                mesh["1"]["tokens_per_s"] / direct["tokens_per_s"], 2
            )
        if report.get("baseline"):
            row["mesh_c1_over_baseline_tokens_per_s"] = round(
                mesh["1"]["tokens_per_s"] / report["baseline"]["tokens_per_s"], 2
            )
        if "grammar" in entry:
            row["grammar_per_token_overhead_pct"] = entry["grammar"]["per_token_overhead_pct"]
        engines[name] = row
    out["engines"] = engines
    return out


def main() -> None:
    global REPLICA_THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running mesh; default: start one")
    parser.add_argument("--token", help="with --url: the mesh's admin token (to publish)")
    parser.add_argument("--engines", default="transformers,onnx", help="comma-separated")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument(
        "--max-tokens", type=int, default=96, help="the longest answer; others are 1/4..3/4"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--cache-dir", help="converted models (default: a temporary folder)")
    parser.add_argument("--no-scheduler", action="store_true", help="skip the in-process part")
    parser.add_argument(
        "--no-grammar", action="store_true", help="skip constrained decoding's overhead"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=REPLICA_THREADS,
        help="engine threads alone and in the mesh (with --url, start the mesh with "
        "MESH_ENGINE_THREADS set to the same number)",
    )
    args = parser.parse_args()
    REPLICA_THREADS = args.threads
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # what the onnx engine reads, as in Ray
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(REPLICA_THREADS)
    if args.url:
        report = run(args, args.url, args.token or os.environ.get("MESH_ADMIN_TOKEN", ""))
    else:
        from mesh.launcher import running_mesh

        token = "bench-admin-token"
        # Logical CPUs are Ray's reservations, not cores: room for the bench-* replicas.
        env = {
            "MESH_ADMIN_TOKEN": token,
            "MESH_RAY_NUM_CPUS": "8",
            "MESH_ENGINE_THREADS": str(REPLICA_THREADS),
        }
        with (
            tempfile.TemporaryDirectory() as home,
            running_mesh(Path(home), env=env, ui=False) as mesh,
        ):
            report = run(args, mesh.base_url, token)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(REPLICA_THREADS))
    main()
