"""Compound questions on HWU64: how often both parts are answered, how often a single query is
split wrongly. Prints ONE JSON object.

For each seed, 100 compound queries join two in-scope test queries of different scenarios the
ways people join requests ("A. Then B", "A and then B", "A, and also B", "First A, then B",
"A; B", "A? Also, B", "A. After that, B", "A plus B"), and 100 single queries are other
in-scope test queries. The router (fitted on the seed's calibration set) routes each one:
- `detected`: a compound query got a compound decision;
- `both_right`: its parts went, in order, to the two scenarios it was built from;
- `<set>_split_wrongly`: a single query got a compound decision, for three sets of single
  queries: plain test queries, two queries of one scenario joined like a compound one, and a
  query with a polite tail no specialist owns ("... Thank you so much").

    OMP_NUM_THREADS=1 python benchmarks/router_compound.py [--seeds 0 1 2 3 4]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = (
    "{a}. Then {b}",
    "{a} and then {b}",
    "{a}, and also {b}",
    "First {a}, then {b}",
    "{a}; {b}",
    "{a}? Also, {b}",
    "{a}. After that, {b}",
    "{a} plus {b}",
)
TAILS = (
    "{a}. Thank you so much",
    "{a}. I need this quickly, please",
    "{a}, and then thanks a lot",
    "{a}. Also, thank you for your help",
)
N = 100
# The mesh's fallback answers what nobody owns; a piece routed to it never splits a query, so
# it is the router's fallback here and no compound query is built from its queries.
FALLBACK = "general"


def build_sets(test: list[tuple[str, str | None]], seed: int) -> dict[str, list[Any]]:
    """Rows (text, labels) of each set; the single queries are disjoint from the pairs.

    `single`: plain test queries. `single_joined`: two queries of one scenario joined like a
    compound one (one specialist owns both: not to be split). `single_polite`: a query with a
    tail that no specialist owns ("Thank you so much")."""
    rng = random.Random(seed)
    inside = [(t, lab) for t, lab in test if lab is not None and lab != FALLBACK]
    rng.shuffle(inside)
    single, pool = inside[:N], inside[N:]
    compound: list[Any] = []
    joined: list[Any] = []
    while len(compound) < N or len(joined) < N:
        (a, la), (b, lb) = rng.sample(pool, 2)
        rows = compound if la != lb else joined
        if len(rows) < N:
            template = TEMPLATES[len(rows) % len(TEMPLATES)]
            rows.append((template.format(a=a.rstrip(".?!"), b=b), [la, lb]))
    polite = [
        (TAILS[i % len(TAILS)].format(a=text.rstrip(".?!")), [label])
        for i, (text, label) in enumerate(single)
    ]
    return {
        "compound": compound,
        "single": single,
        "single_joined": joined,
        "single_polite": polite,
    }


def one(folder: Path, seed: int, method: str, encoder: Any) -> dict[str, float]:
    from registry.router_artifacts import LexicalSpec, OperatingPoint
    from router import Router
    from router.evaluate import read_examples, read_labelled
    from router.lexical import for_method, with_lexical

    examples = read_examples(folder / "examples.jsonl")
    router = Router.from_examples(
        examples,
        fallback=FALLBACK,
        method=method,  # type: ignore[arg-type]
        encoder=with_lexical(encoder, for_method(method, LexicalSpec())),
    )
    target = OperatingPoint(oos_recall=0.8) if method == "linear" else None
    router.fit(*read_labelled(folder / "val.jsonl", set(examples)), target)
    test = list(zip(*read_labelled(folder / "test.jsonl", set(examples)), strict=True))
    sets = build_sets(test, seed)
    decided = {name: router.route_batch([text for text, _ in rows]) for name, rows in sets.items()}
    both = [
        d.mode == "compound" and [p.specialist for p in d.parts] == labels
        for d, (_, labels) in zip(decided["compound"], sets["compound"], strict=True)
    ]
    result = {
        "detected": sum(d.mode == "compound" for d in decided["compound"]) / N,
        "both_right": sum(both) / N,
    }
    for name in ("single", "single_joined", "single_polite"):
        result[f"{name}_split_wrongly"] = sum(d.mode == "compound" for d in decided[name]) / N
    return result


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data/hwu64")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["knn", "linear"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from benchmarks.router_quality import routing_set
    from router import SentenceTransformerEncoder

    torch.set_num_threads(1)
    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = [routing_set(args.data.resolve(), s, Path(tmp)) for s in args.seeds]
        for method in args.methods:
            runs = [one(f, s, method, encoder) for f, s in zip(folders, args.seeds, strict=True)]
            results[method] = {
                key: {
                    "mean": round(statistics.mean(r[key] for r in runs), 3),
                    "min": round(min(r[key] for r in runs), 3),
                    "max": round(max(r[key] for r in runs), 3),
                }
                for key in runs[0]
            }
    print(
        json.dumps(
            {
                "data": "HWU64 make_routing_set.py --k 20, test queries",
                "seeds": args.seeds,
                "n_compound": N,
                "n_single": N,
                "templates": list(TEMPLATES),
                "results": results,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
