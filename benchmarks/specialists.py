"""Fine-tuned catalog specialists against their base: prints ONE JSON object.

For each catalog specialist made by `mesh finetune` from a task generator (`specialists/tasks`),
on the task's held-out split (schemas / record types and phrasings never seen in training):
- `finetuned`: the catalog adapter on SmolLM2-135M-Instruct with the specialist's own prompt;
- `base`: the same base without the adapter, with the best prompt we could write for it (the
  task's `BASE_SYSTEM_PROMPT`: precise instructions and a worked example);
- `base_same_prompt` (with `--same-prompt`): the base with the specialist's own short prompt;
- `routing_accuracy`: how often the router, indexing the whole catalog's manifests, sends the
  held-out prompts to this specialist.
Scores are 0-1 (mean over records), greedy decoding; `gain_points` = 100 x (finetuned - base).
All adapters sit on one loaded base (peft named adapters), so every row is measured on the same
weights in the same process.

    python benchmarks/specialists.py [--n 120] [--threads 2] [--tasks sql,extract]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EVAL_SEED = 0  # the seed the catalog's training data was generated with (its eval split)


def catalog_manifests() -> dict[str, Any]:
    from specialists.catalog import load_catalog

    return {m.name: m for m in load_catalog()}


def routing_accuracy(manifests: dict[str, Any], name: str, queries: list[str]) -> float:
    from router.index import index_examples
    from router.router import Router

    router = Router.from_examples(index_examples(manifests), "general")
    decisions = router.route_batch(queries)
    return sum(d.chosen == name for d in decisions) / len(decisions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=120, help="Held-out records per task.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default="sql,extract")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--same-prompt", action="store_true", help="Also score the base with the short prompt."
    )
    args = parser.parse_args()

    import torch

    from specialists.catalog import SMOLLM2_SOURCE
    from specialists.evaluation.runner import LocalGenerator, evaluate
    from specialists.sources import adapter_folder
    from specialists.tasks import get_task
    from specialists.transformers_engine import attach_adapter, check_adapter_folder

    torch.set_num_threads(args.threads)
    manifests = catalog_manifests()
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    base = LocalGenerator(SMOLLM2_SOURCE, threads=args.threads)
    model = base.model
    for name in names:
        folder = check_adapter_folder(adapter_folder(manifests[name].model.adapter or ""))
        model = attach_adapter(model, folder, name)
    tuned = LocalGenerator.from_loaded(model, base.tokenizer)

    report: dict[str, Any] = {}
    for name in names:
        task, manifest = get_task(name), manifests[name]
        _, held_out = task.make_splits(0, args.n, EVAL_SEED)
        began = time.monotonic()
        model.set_adapter(name)
        finetuned = evaluate(
            held_out, tuned, task.metric, max_tokens=args.max_tokens,
            system_prompt=manifest.system_prompt,
        )  # fmt: skip
        with model.disable_adapter():
            best = evaluate(
                held_out, tuned, task.metric, max_tokens=args.max_tokens,
                system_prompt=task.base_system_prompt,
            )  # fmt: skip
            same = None
            if args.same_prompt:
                same = evaluate(
                    held_out, tuned, task.metric, max_tokens=args.max_tokens,
                    system_prompt=manifest.system_prompt,
                )  # fmt: skip
        report[name] = {
            "metric": task.metric,
            "base": round(best.score, 4),
            "finetuned": round(finetuned.score, 4),
            "n": len(held_out),
            "gain_points": round(100 * (finetuned.score - best.score), 1),
            "base_same_prompt": round(same.score, 4) if same else None,
            "routing_accuracy": round(
                routing_accuracy(manifests, name, [r.user_text() for r in held_out]), 4
            ),
            "seconds": round(time.monotonic() - began, 1),
        }
    report["mean_gain_points"] = round(statistics.mean(report[n]["gain_points"] for n in names), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
