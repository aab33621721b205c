"""Routing quality on HWU64 (issue #15's goals): prints ONE JSON object.

For each seed, `make_routing_set.py --k 20 --seed S` (in the data folder) writes a routing task:
12 in-scope scenarios with 20 examples each, six scenarios held out entirely as out-of-scope
queries, and a small labelled calibration set (`val`). Every configuration is fitted on `val`
and scored on `test` with the real router code (`Router.fit` + `router.evaluate.evaluate`):

- `baseline`: today's default (knn over the frozen MiniLM, balanced thresholds);
- `linear`: the linear head, which learns the calibration set's out-of-scope queries as a
  "none of them" class, balanced thresholds;
- `linear@oos<R>`: the same at the operating point "reject at least R of the labelled
  out-of-scope queries, best in-scope accuracy".

Reported per configuration: mean, min and max over seeds of in-scope accuracy (a fallback is
wrong), out-of-scope AUROC and out-of-scope recall (share that fell back), whether the goals
(accuracy >= 0.90, AUROC >= 0.93, recall >= 0.80 at once) hold on the mean, and routing p50 over
the encoder alone (one new query at a time, the goal is <= 1.2).

    OMP_NUM_THREADS=1 python benchmarks/router.py --quality ../shared/data/hwu64
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {"accuracy": 0.90, "oos_auroc": 0.93, "oos_accuracy": 0.80}
TARGETS = (0.8, 0.85)


def routing_set(data: Path, seed: int, out: Path) -> Path:
    """Write the seed's task with the data folder's own script; returns its folder."""
    folder = out / f"seed{seed}"
    subprocess.run(
        [
            sys.executable,
            str(data / "make_routing_set.py"),
            "--k",
            "20",
            "--seed",
            str(seed),
            "--out",
            str(folder),
        ],
        check=True,
        capture_output=True,
    )
    return folder


def configurations() -> dict[str, tuple[str, float | None]]:
    """name -> (method, target out-of-scope recall or None for balanced)."""
    configs: dict[str, tuple[str, float | None]] = {
        "baseline": ("knn", None),
        "linear": ("linear", None),
    }
    configs.update({f"linear@oos{t:g}": ("linear", t) for t in TARGETS})
    return configs


def one_seed(folder: Path, encoder: Any) -> dict[str, dict[str, float]]:
    from registry.router_artifacts import OperatingPoint
    from router import Router
    from router.evaluate import evaluate, read_examples, read_labelled

    examples = read_examples(folder / "examples.jsonl")
    val = read_labelled(folder / "val.jsonl", set(examples))
    texts, labels = read_labelled(folder / "test.jsonl", set(examples))
    results = {}
    for name, (method, target) in configurations().items():
        router = Router.from_examples(examples, method=method, encoder=encoder)  # type: ignore[arg-type]
        router.fit(*val, OperatingPoint(oos_recall=target) if target else None)
        report = evaluate(router, texts, labels, fitted=True, latency_samples=0)
        results[name] = {
            "accuracy": report.accuracy,
            "oos_auroc": report.oos_auroc or 0.0,
            "oos_accuracy": report.oos_accuracy or 0.0,
        }
    return results


def latency_ratio(folder: Path, encoder: Any, n: int = 100) -> dict[str, float]:
    """p50 of routing one new query (linear head) over p50 of encoding it alone, interleaved."""
    from router import Router
    from router.evaluate import read_examples, read_labelled

    examples = read_examples(folder / "examples.jsonl")
    router = Router.from_examples(examples, method="linear", encoder=encoder)
    router.fit(*read_labelled(folder / "val.jsonl", set(examples)))
    texts, _ = read_labelled(folder / "test.jsonl", set(examples))
    router.route("warm up")
    route_ms, encode_ms = [], []
    for i, text in enumerate(texts[:n]):
        started = time.perf_counter()
        encoder.encode([f"{text} ({i}e)"])
        encode_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        router.route(f"{text} ({i}r)")
        route_ms.append((time.perf_counter() - started) * 1000)
    route, alone = statistics.median(route_ms), statistics.median(encode_ms)
    return {
        "route_p50_ms": round(route, 2),
        "encoder_p50_ms": round(alone, 2),
        "ratio": round(route / alone, 3),
    }


def summary(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in per_seed[0]:
        stats: dict[str, Any] = {}
        for metric in GOALS:
            values = [seed[name][metric] for seed in per_seed]
            stats[metric] = {
                "mean": round(statistics.mean(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
            }
        stats["goals_met"] = all(stats[m]["mean"] >= goal for m, goal in GOALS.items())
        out[name] = stats
    return out


def run(data: Path, seeds: list[int]) -> dict[str, Any]:
    from router import SentenceTransformerEncoder

    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        folders = [routing_set(data, seed, Path(tmp)) for seed in seeds]
        per_seed = [one_seed(folder, encoder) for folder in folders]
        latency = latency_ratio(folders[0], encoder)
    return {
        "data": "HWU64 make_routing_set.py --k 20",
        "seeds": seeds,
        "encoder": "all-MiniLM-L6-v2 (frozen)",
        "goals": {**{k: f">= {v}" for k, v in GOALS.items()}, "latency_ratio": "<= 1.2"},
        "configurations": {
            k: {"method": m, "oos_recall_target": t} for k, (m, t) in configurations().items()
        },
        "results": summary(per_seed),
        "latency": {**latency, "goal_met": latency["ratio"] <= 1.2},
        "seconds": round(time.perf_counter() - started, 1),
    }
