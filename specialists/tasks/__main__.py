"""`python -m specialists.tasks NAME --out DIR`: write a task's train.jsonl and eval.jsonl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from registry.errors import MeshError
from specialists.tasks import get_task, structure_overlap, task_names
from specialists.training.records import write_records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m specialists.tasks", description="Generate a task's train and eval sets."
    )
    parser.add_argument("name", help=f"one of: {', '.join(task_names())}")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--train", type=int, default=2000, help="training records (2000)")
    parser.add_argument("--eval", type=int, default=120, help="evaluation records (120)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 0 or args.eval < 0:
        parser.error("--train and --eval must be 0 or more")
    try:
        task = get_task(args.name)
    except MeshError as error:
        print(f"Error: {error.message}", file=sys.stderr)
        return 1
    train, held_out = task.make_splits(args.train, args.eval, args.seed)
    if overlap := structure_overlap(train, held_out):  # a generator bug, never expected
        print(f"Error: eval shares domains with train: {sorted(overlap)}", file=sys.stderr)
        return 1
    write_records(args.out / "train.jsonl", train)
    write_records(args.out / "eval.jsonl", held_out)
    print(f"{task.name}: {len(train)} train, {len(held_out)} eval records in {args.out} "
          f"(metric {task.metric})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
