"""How well and how fast the planner finds arithmetic to delegate to `math`.

Precision and recall of `find_expressions` on the labelled set (benchmarks/data/planner_set.jsonl,
written by make_planner_data.py), the worst scan time over 32k-character adversarial inputs,
and, in the same run for comparison, the regex the scanner replaced on 700 digits. Prints one
JSON object. Usage (pure CPU, no mesh needed):

    OMP_NUM_THREADS=1 python benchmarks/planner.py [--data PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specialists.delegation import parse_directives
from specialists.tools.math import find_expressions

DATA = Path(__file__).parent / "data" / "planner_set.jsonl"
SCAN_CHARS = 32_768
# The pattern find_expressions used before the scanner (cubic backtracking on digit runs).
OLD_EXPRESSION = re.compile(
    r"[\d\.\s\(\)]*\d[\d\.\s\(\)]*(?:[-+*/^%][\d\.\s\(\)]*\d[\d\.\s\(\)]*)+"
)


def adversarial() -> dict[str, str]:
    """Inputs built to hurt a scanner: long runs, deep nesting, operator soup, many cues."""
    n = SCAN_CHARS
    soup = random.Random(0)
    return {
        "digits": "1" * n,
        "digit-minus": "1-" * (n // 2),
        "digit-plus": "1+" * (n // 2),
        "open-parens": "(" * n,
        "nested-then-digit": "(" * (n // 2 - 1) + "1+" + ")" * (n // 2 - 1),
        "digits-with-spaces": "1 " * (n // 2),
        "spaced-sum": "12 + " * (n // 5),
        "grouped-commas": "1,234" * (n // 5),
        "decimal-dots": "9." * (n // 2),
        "cues": "what is 9-5 " * (n // 12),
        "functions": "sqrt(1" * (n // 6),
        "operator-soup": "".join(soup.choice("0123456789+-*/^()., x=?") for _ in range(n)),
        "word-operators": "3 times " * (n // 8),
    }


def timed(function: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> float:
    """Median seconds of `repeats` calls on `clock` (CPU time is steadier on a shared machine)."""
    samples = []
    for _ in range(repeats):
        started = clock()
        function()
        samples.append(clock() - started)
    return statistics.median(samples)


def quality(path: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for row in rows:
        found = bool(find_expressions(row["text"]))
        outcome = {(True, True): "tp", (True, False): "fp", (False, True): "fn"}.get(
            (found, row["arithmetic"]), "tn"
        )
        counts[outcome] += 1
        if outcome in ("fp", "fn"):
            errors[f"{outcome}:{row['kind']}"] += 1
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "counts": {
            "rows": len(rows),
            "arithmetic": tp + fn,
            "not_arithmetic": len(rows) - tp - fn,
            **{key: counts[key] for key in ("tp", "fp", "fn", "tn")},
        },
        "errors_by_kind": dict(sorted(errors.items())),
    }


def speed(repeats: int) -> dict[str, Any]:
    wall, cpu = time.perf_counter, time.process_time
    inputs = adversarial()
    scans = {
        name: timed(lambda t=text: find_expressions(t), repeats, cpu)
        for name, text in inputs.items()
    }
    worst = max(scans, key=lambda name: scans[name])
    flood = '{"mesh_ask":{' * 5000
    return {
        "scan_chars": SCAN_CHARS,
        "worst_input": worst,
        "worst_scan_cpu_s": round(scans[worst], 4),
        "worst_scan_wall_s": round(
            timed(lambda: find_expressions(inputs[worst]), repeats, wall), 4
        ),
        "scan_cpu_s": {name: round(seconds, 4) for name, seconds in scans.items()},
        "directive_flood_cpu_s": round(
            timed(lambda: parse_directives(flood, [flood]), repeats, cpu), 4
        ),
        "new_700_digits_cpu_s": round(timed(lambda: find_expressions("1" * 700), repeats, cpu), 5),
        "old_regex_700_digits_cpu_s": round(
            timed(lambda: OLD_EXPRESSION.findall("1" * 700), 1, cpu), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps({**quality(args.data), **speed(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
