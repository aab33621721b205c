"""Learning from traffic: how much routing improves when live labelled queries join the fit.

For each seed, `make_routing_set.py --k 20` (via `benchmarks.router_quality.routing_set`) writes
a routing task. Its test rows are shuffled: the first half is a traffic stream, the second half
is held out and never fitted on. A router fitted on the small calibration set (`val`) replays the
stream in chunks, and each chunk yields lessons under one of two policies, run separately from
the same starting router:

- `corrections`: every query the current router got wrong (in scope and routed elsewhere or to
  the fallback, or out of scope and routed to a specialist), labelled by an operator;
- `confirmations`: every query routed right to a specialist, confirmed by a thumbs-up.

When the accepted lessons reach a checkpoint (0, 25, 50, 100, 200, and `all` at the end), a
fresh router is fitted on `val` plus exactly that many lessons (the first ones, in stream order),
scored on the held-out half, and routes the rest of the stream. Reported per policy and
checkpoint: mean, min and max over seeds of in-scope accuracy, out-of-scope AUROC and recall,
how many seeds reached it, and the accuracy gain over checkpoint 0 (paired per seed).

    OMP_NUM_THREADS=1 python benchmarks/router_traffic.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router import Encoder, Router

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = (0, 25, 50, 100, 200)
POLICIES = ("corrections", "confirmations")
METRICS = ("accuracy", "oos_auroc", "oos_accuracy")
# Context per checkpoint: lessons labelled out of scope, and the fitted global threshold, which
# shows how the lessons move the operating point.
CONTEXT = ("lessons", "oos_lessons", "stream_seen", "threshold")

Lesson = tuple[str, str | None]
Result = dict[str, float | int | None]


@dataclass(frozen=True)
class Settings:
    method: str
    oos_recall: float
    chunk: int
    lessons_as: str = "training"  # what the mesh does; "calibration": mixed into `val`


@dataclass(frozen=True)
class Task:
    """One seed's data, and an unfitted router whose index and query cache every refit shares,
    so the examples and queries are encoded once per seed, not once per refit."""

    blank: Router
    val: list[Lesson]
    stream: list[Lesson]
    held: list[Lesson]


def load_task(folder: Path, seed: int, encoder: Encoder, method: str) -> Task:
    """Split the test rows with the seed: first half traffic, second half held out."""
    from registry.router_artifacts import LexicalSpec
    from router import Router
    from router.evaluate import read_examples, read_labelled
    from router.lexical import for_method, with_lexical

    examples = read_examples(folder / "examples.jsonl")
    val = read_labelled(folder / "val.jsonl", set(examples))
    test = list(zip(*read_labelled(folder / "test.jsonl", set(examples)), strict=True))
    random.Random(seed).shuffle(test)
    half = len(test) // 2
    routing = with_lexical(encoder, for_method(method, LexicalSpec()))  # the mesh's default
    blank = Router.from_examples(examples, method=method, encoder=routing)  # type: ignore[arg-type]
    return Task(blank, list(zip(*val, strict=True)), test[:half], test[half:])


def refit(task: Task, lessons: list[Lesson], settings: Settings) -> Router:
    """A fresh router fitted on val and the lessons (as head training rows, the way the mesh
    refits, or mixed into the calibration set); `clone(fitted=False)` of the blank router is
    `Router.from_examples` without encoding the examples again."""
    from registry.router_artifacts import OperatingPoint

    router = task.blank.clone(task.blank.index, fitted=False)
    target = OperatingPoint(oos_recall=settings.oos_recall)
    if settings.lessons_as == "training":  # `Router.fit(lessons=...)`: they train the head only
        texts, labels = [t for t, _ in task.val], [lab for _, lab in task.val]
        router.fit(texts, labels, target, lessons=lessons)
    else:
        rows = task.val + lessons
        router.fit([t for t, _ in rows], [lab for _, lab in rows], target)
    return router


def score(router: Router, held: list[Lesson], lessons: list[Lesson], seen: int) -> Result:
    """The held-out metrics of one checkpoint, with how far into the stream it was reached."""
    from router.evaluate import evaluate

    report = evaluate(
        router,
        [text for text, _ in held],
        [label for _, label in held],
        fitted=True,
        latency_samples=0,
    )
    return {
        "lessons": len(lessons),
        "oos_lessons": sum(label is None for _, label in lessons),
        "stream_seen": seen,
        "threshold": round(router.threshold, 4),
        "accuracy": report.accuracy,
        "oos_auroc": report.oos_auroc,
        "oos_accuracy": report.oos_accuracy,
    }


def lessons_from(policy: str, rows: list[Lesson], router: Router) -> list[Lesson]:
    """Route a chunk with the current router; keep what the policy's feedback would label."""
    decisions = router.route_batch([text for text, _ in rows])
    lessons: list[Lesson] = []
    for (text, label), decision in zip(rows, decisions, strict=True):
        predicted = None if decision.fallback else decision.chosen
        if policy == "corrections" and predicted != label:
            lessons.append((text, label))
        elif policy == "confirmations" and predicted is not None and predicted == label:
            lessons.append((text, predicted))
    return lessons


def replay(
    task: Task, policy: str, start: Router, start_result: Result, settings: Settings
) -> dict[str, Result]:
    """Replay the stream under one policy, refitting only when a checkpoint is reached."""
    results = {"0": start_result}
    pending = [c for c in CHECKPOINTS if c > 0]
    router, lessons = start, []
    for offset in range(0, len(task.stream), settings.chunk):
        rows = task.stream[offset : offset + settings.chunk]
        lessons += lessons_from(policy, rows, router)
        while pending and len(lessons) >= pending[0]:
            n = pending.pop(0)
            router = refit(task, lessons[:n], settings)
            results[str(n)] = score(router, task.held, lessons[:n], offset + len(rows))
    last = results.get(str(len(lessons)))
    if last is None:
        last = score(refit(task, lessons, settings), task.held, lessons, len(task.stream))
    results["all"] = last
    return results


def one_seed(folder: Path, seed: int, encoder: Encoder, settings: Settings) -> dict[str, Any]:
    """Both policies from the same starting router (fitted on val alone)."""
    task = load_task(folder, seed, encoder, settings.method)
    start = refit(task, [], settings)
    start_result = score(start, task.held, [], 0)
    return {p: replay(task, p, start, start_result, settings) for p in POLICIES}


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": round(statistics.mean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def checkpoint_summary(results: list[Result]) -> dict[str, Any]:
    """Over the seeds that reached the checkpoint; a metric that is None is left out."""
    out: dict[str, Any] = {"seeds_reached": len(results)}
    for metric in (*CONTEXT, *METRICS):
        out[metric] = stats([float(v) for r in results if (v := r[metric]) is not None])
    return out


def gain(per_seed: list[dict[str, Result]], name: str) -> float | None:
    """Accuracy at a checkpoint minus at 0, paired: only seeds that reached it count."""
    diffs = [
        float(seed[name]["accuracy"] or 0) - float(seed["0"]["accuracy"] or 0)
        for seed in per_seed
        if name in seed
    ]
    return round(statistics.mean(diffs), 4) if diffs else None


def summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    names = [str(c) for c in CHECKPOINTS] + ["all"]
    out: dict[str, Any] = {}
    for policy in POLICIES:
        runs = [seed[policy] for seed in per_seed]
        out[policy] = {
            "checkpoints": {n: checkpoint_summary([r[n] for r in runs if n in r]) for n in names},
            "gain_accuracy_at_100": gain(runs, "100"),
            "gain_accuracy": {n: gain(runs, n) for n in names[1:]},
        }
    return out


def run(data: Path, seeds: list[int], settings: Settings, threads: int) -> dict[str, Any]:
    from benchmarks.router_quality import routing_set
    from router import SentenceTransformerEncoder

    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            print(f"seed {seed}", file=sys.stderr, flush=True)
            folder = routing_set(data, seed, Path(tmp))
            per_seed.append(one_seed(folder, seed, encoder, settings))
    return {
        "data": f"{data.name} make_routing_set.py --k 20",
        "seeds": seeds,
        "encoder": "all-MiniLM-L6-v2 (frozen)",
        "settings": {
            "method": settings.method,
            "oos_recall_target": settings.oos_recall,
            "chunk": settings.chunk,
            "lessons_as": settings.lessons_as,
            "checkpoints": [*CHECKPOINTS, "all"],
            "threads": threads,
            "split": "test shuffled per seed: first half stream, second half held out",
        },
        "results": summary(per_seed),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    # `python benchmarks/router_traffic.py` puts this folder first on sys.path, where
    # benchmarks/router.py would shadow the `router` package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data/hwu64")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--method", default="linear")
    parser.add_argument("--oos-recall", type=float, default=0.8)
    parser.add_argument("--chunk", type=int, default=50, help="Stream queries per chunk.")
    parser.add_argument(
        "--lessons-as",
        choices=("training", "calibration"),
        default="training",
        help="Lessons train the head only (the mesh) or join the threshold calibration set.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads.")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings(args.method, args.oos_recall, args.chunk, args.lessons_as)
    print(json.dumps(run(args.data.resolve(), args.seeds, settings, args.threads)))


if __name__ == "__main__":
    main()
