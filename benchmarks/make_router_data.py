"""Build the router's labelled evaluation set from MMLU, deterministically.

MMLU subcategories become specialists; their examples come from the `dev`/`val` splits, the
held-out test queries from `test`. Four subcategories are never installed and serve as
out-of-scope queries: two for calibration (`val.jsonl`), two others for testing (`test.jsonl`),
so thresholds are never tuned on the very domains they are tested against.

    python benchmarks/make_router_data.py [--mmlu /work/shared/data/mmlu] [--out DIR]

Writes `examples.jsonl` ({"specialist", "text"}), `val.jsonl` and `test.jsonl` ({"text",
"label"}, label null = out of scope). Same inputs, same bytes out.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MMLU = Path("/work/shared/data/mmlu")
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "router"
IN_SCOPE = [
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "health",
    "history",
    "law",
    "math",
    "philosophy",
    "physics",
    "politics",
    "psychology",
]
OOS_VAL = ["culture", "engineering"]
OOS_TEST = ["geography", "other"]
N_EXAMPLES = 20
N_VAL = 10
N_TEST = 40
N_OOS_VAL = 40
N_OOS_TEST = 130
MAX_CHARS = 400
SEED = 0


def clean(text: str) -> str:
    """One line, at most MAX_CHARS (cut at a word boundary): queries, not essays."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= MAX_CHARS:
        return text
    return text[:MAX_CHARS].rsplit(" ", 1)[0]


def questions(mmlu: Path, split: str, subject: str) -> list[str]:
    path = mmlu / split / f"{subject}_{split}.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [clean(row[0]) for row in csv.reader(handle) if row and row[0].strip()]
    return sorted(set(rows))


def round_robin(pools: list[list[str]], n: int) -> list[str]:
    """Take n items alternating between pools, so every subject of a subcategory shows up."""
    out: list[str] = []
    iters: list[Iterator[str]] = [iter(pool) for pool in pools]
    while len(out) < n and iters:
        for it in list(iters):
            item = next(it, None)
            if item is None:
                iters.remove(it)
            elif len(out) < n:
                out.append(item)
    return out


def shuffled(items: list[str], rng: random.Random) -> list[str]:
    items = list(items)
    rng.shuffle(items)
    return items


def specialist_name(subcategory: str) -> str:
    return subcategory.replace(" ", "-")


def build(mmlu: Path) -> dict[str, list[dict[str, str | None]]]:
    subjects: dict[str, list[str]] = {}
    for subject, (subcategory,) in json.loads((mmlu / "categories.json").read_text())[
        "subcategories"
    ].items():
        subjects.setdefault(subcategory, []).append(subject)
    rng = random.Random(SEED)
    examples: list[dict[str, str | None]] = []
    val: list[dict[str, str | None]] = []
    test: list[dict[str, str | None]] = []
    for subcategory in IN_SCOPE:
        name = specialist_name(subcategory)
        train_pools = [
            shuffled(questions(mmlu, "dev", s) + questions(mmlu, "val", s), rng)
            for s in sorted(subjects[subcategory])
        ]
        chosen = round_robin(train_pools, N_EXAMPLES)
        examples += [{"specialist": name, "text": text} for text in chosen]
        rest = [[t for t in pool if t not in set(chosen)] for pool in train_pools]
        val += [{"text": t, "label": name} for t in round_robin(rest, N_VAL)]
        test_pools = [
            shuffled(questions(mmlu, "test", s), rng) for s in sorted(subjects[subcategory])
        ]
        test += [{"text": t, "label": name} for t in round_robin(test_pools, N_TEST)]
    for subcategories, split, n, out in (
        (OOS_VAL, "val", N_OOS_VAL, val),
        (OOS_TEST, "test", N_OOS_TEST, test),
    ):
        pools = [
            shuffled(questions(mmlu, split, s), rng)
            for sub in subcategories
            for s in sorted(subjects[sub])
        ]
        out += [{"text": t, "label": None} for t in round_robin(pools, n)]
    return {"examples": examples, "val": val, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu", type=Path, default=DEFAULT_MMLU)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in build(args.mmlu).items():
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    main()
