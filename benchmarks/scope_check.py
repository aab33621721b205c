"""How well an LLM specialist's own model tells its queries from others' (manifest `hand_back`).

For each catalog LLM specialist, the scope check (`specialists.scope_check`, the exact prompt
and reading the replica uses) rates its own examples (in scope) and every other catalog
specialist's examples (out of scope). Prints ONE JSON object: per specialist the mean
P(in scope) of each group, AUROC (1.0: it always rates its own queries higher; 0.5: chance),
and what share of each group `min_in_scope` 0.5 would hand back; and the time per check.

    OMP_NUM_THREADS=2 python -m benchmarks.scope_check
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import numpy as np

from registry.manifest import SpecialistManifest
from specialists.catalog import load_catalog
from specialists.engine import EngineRequest, collect
from specialists.scope_check import in_scope_probability, scope_messages, scope_params
from specialists.transformers_engine import TransformersEngine

FLOOR = 0.5


def auroc(inside: list[float], outside: list[float]) -> float:
    a, b = np.array(inside)[:, None], np.array(outside)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


async def rate(engine: TransformersEngine, manifest: SpecialistManifest, query: str) -> float:
    request = EngineRequest(messages=scope_messages(manifest, query), params=scope_params(30.0))
    result = collect([delta async for delta in engine.stream(request)])
    first = result.logprobs[0]
    probability = in_scope_probability(first.top_logprobs or [first])
    return 1.0 if probability is None else probability  # no answer: the replica answers


def main() -> None:
    manifests = {m.name: m for m in load_catalog() if m.model.engine != "tool"}
    results: dict[str, Any] = {}
    timings: list[float] = []
    for name, manifest in manifests.items():
        # Each specialist judges with its own weights (its adapter, if any) on this engine.
        model = manifest.model.model_copy(update={"engine": "transformers"})
        engine = TransformersEngine(manifest.model_copy(update={"model": model}))
        engine.load()
        groups: dict[str, list[float]] = {"own": [], "others": []}
        for other, candidate in manifests.items():
            for query in candidate.examples:
                started = time.perf_counter()
                score = asyncio.run(rate(engine, manifest, query))
                timings.append((time.perf_counter() - started) * 1000)
                groups["own" if other == name else "others"].append(score)
        results[name] = {
            "n_own": len(groups["own"]),
            "n_others": len(groups["others"]),
            "mean_own": round(statistics.mean(groups["own"]), 3),
            "mean_others": round(statistics.mean(groups["others"]), 3),
            "auroc": round(auroc(groups["own"], groups["others"]), 3),
            f"own_handed_back_at_{FLOOR}": round(
                sum(s < FLOOR for s in groups["own"]) / len(groups["own"]), 3
            ),
            f"others_handed_back_at_{FLOOR}": round(
                sum(s < FLOOR for s in groups["others"]) / len(groups["others"]), 3
            ),
        }
    print(
        json.dumps(
            {
                "models": {n: m.model.adapter or m.model.source for n, m in manifests.items()},
                "engine": "transformers",
                "specialists": results,
                "check_ms_p50": round(statistics.median(timings), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
