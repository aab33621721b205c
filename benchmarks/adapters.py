"""LoRA specialists on one base, served two ways: memory and latency (prints JSON; not a test).

N adapter specialists (random LoRA r=8 on q_proj/v_proj, saved with peft into a temp dir and
uploaded into the artifact area of an embedded Redis, as `mesh register` does: manifests name
`artifact:<id>`, pinned by sha256) on the offline SmolLM2-135M base, on Ray Serve:
  dedicated: `model.share_base: false`: N replicas, each the base with its adapter merged in;
  shared:    `model.share_base: true`: one pool replica holding the base and N adapters
             (`@serve.multiplexed`), plus N weightless specialist replicas that forward to it.
Memory is each replica process's RSS and USS (psutil; USS excludes pages shared with other
processes) after warm-up requests. Latency is measured through the specialists' handles (what
the gateway calls): sequential requests round-robin over the specialists, then N at once (one
per specialist). Replicas fetch the adapters from Redis into a cache folder in the temp dir (the
mesh's `SourceOptions`); the first deploy fetches them, the second reuses the verified copies.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adapters.py [--adapters 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specialists.sources import SourceOptions

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "Write two sentences about the sea.",
    "Give three tips for learning to cook.",
    "Explain what a compiler does.",
    "Describe a quiet morning in a small town.",
]


def make_adapters(count: int, folder: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialists.catalog import SMOLLM2_SOURCE
    from specialists.sources import resolve_source

    source = resolve_source(SMOLLM2_SOURCE)
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian"
        )
        path = folder / f"adapter-{i}"
        get_peft_model(base, config).save_pretrained(str(path))
        paths.append(path)
    return paths


def upload_adapters(folders: list[Path], sources: SourceOptions) -> list[str]:
    """Upload each adapter folder into the artifact area; returns their `artifact:<id>` names."""
    from registry.manifest import ARTIFACT_SCHEME

    store = sources.store("model.adapter")
    return [ARTIFACT_SCHEME + store.upload_dir(folder) for folder in folders]


def manifests(
    adapters: list[str], share_base: bool, num_cpus: float, sources: SourceOptions
) -> list[Any]:
    """The specialists' manifests, pinned as publishing pins them (`model.sha256`)."""
    from registry import parse_manifest
    from registry.artifacts import pin_artifacts
    from specialists.catalog import SMOLLM2_SOURCE

    store = sources.store("model.adapter")
    return [
        pin_artifacts(
            parse_manifest(
                {
                    "name": f"lora-{i}",
                    "version": "1.0.0",
                    "description": "benchmark adapter specialist",
                    "owner": "bench",
                    "examples": ["one", "two", "three"],
                    "model": {
                        "source": SMOLLM2_SOURCE,
                        "adapter": adapter,
                        "share_base": share_base,
                    },
                    "resources": {"num_cpus": num_cpus},
                }
            ),
            store,
        )
        for i, adapter in enumerate(adapters)
    ]


def deploy(specs: list[Any], sources: SourceOptions) -> list[str]:
    """Deploy the pool (if any) and the specialists; returns every app name deployed."""
    from ray import serve

    from specialists.adapter_pool import build_pool_app, pool_configs
    from specialists.deployment import app_name, build_specialist_app

    apps = []
    for name, config in pool_configs(specs).items():
        serve.run(build_pool_app(config, sources), name=name, route_prefix=None)
        apps.append(name)
    for spec in specs:
        serve.run(build_specialist_app(spec, sources), name=app_name(spec.name), route_prefix=None)
        apps.append(app_name(spec.name))
    return apps


def ask(name: str, question: str, max_tokens: int) -> tuple[float, int]:
    from ray import serve

    from specialists.deployment import SpecialistRequest, app_name
    from specialists.engine import ChatMessage, GenerationParams

    request = SpecialistRequest(
        messages=[ChatMessage(role="user", content=question)],
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.0),
    )
    start = time.perf_counter()
    result = serve.get_app_handle(app_name(name)).chat.remote(request).result()
    return (time.perf_counter() - start) * 1000, result.completion_tokens


def replica_memory(apps: list[str]) -> dict[str, Any]:
    import psutil

    from mesh.controller import _replica_details

    details = _replica_details()
    per_app: dict[str, dict[str, float]] = {}
    for app in apps:
        for replica in details.get(app, []):
            info = psutil.Process(replica.pid).memory_full_info()
            entry = per_app.setdefault(app, {"rss_mb": 0.0, "uss_mb": 0.0})
            entry["rss_mb"] += info.rss / 2**20
            entry["uss_mb"] += info.uss / 2**20
    rounded = {app: {k: round(v, 1) for k, v in m.items()} for app, m in per_app.items()}
    return {
        "replicas": sum(len(details.get(app, [])) for app in apps),
        "total_rss_mb": round(sum(m["rss_mb"] for m in per_app.values()), 1),
        "total_uss_mb": round(sum(m["uss_mb"] for m in per_app.values()), 1),
        "per_app": rounded,
    }


def run_mode(
    specs: list[Any], sources: SourceOptions, rounds: int, max_tokens: int
) -> dict[str, Any]:
    from ray import serve

    started = time.perf_counter()
    apps = deploy(specs, sources)
    names = [spec.name for spec in specs]
    for name in names:  # warm-up: loads adapters into the pool, first forward allocations
        ask(name, QUESTIONS[0], 4)
    ready_s = time.perf_counter() - started
    sequential = [
        ask(names[i % len(names)], QUESTIONS[i % len(QUESTIONS)], max_tokens)
        for i in range(rounds * len(names))
    ]
    with ThreadPoolExecutor(len(names)) as pool:
        concurrent: list[tuple[float, int]] = []
        wall = 0.0
        for r in range(rounds):
            question = QUESTIONS[(r + 1) % len(QUESTIONS)]
            start = time.perf_counter()
            concurrent += pool.map(lambda n, q=question: ask(n, q, max_tokens), names)
            wall += time.perf_counter() - start
    memory = replica_memory(apps)
    for app in apps:
        serve.delete(app)
    return {
        "deploy_and_warm_s": round(ready_s, 1),
        "memory": memory,
        "sequential": _latency(sequential),
        f"concurrent_{len(names)}": {
            **_latency(concurrent),
            "tokens_per_s": round(sum(t for _, t in concurrent) / wall, 1),
        },
    }


def _latency(samples: list[tuple[float, int]]) -> dict[str, float]:
    times = sorted(ms for ms, _ in samples)
    tokens = sum(t for _, t in samples)
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(times[-1], 1),
        "ms_per_token": round(sum(times) / max(tokens, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-cpus", type=float, default=0.5, help="per specialist replica")
    args = parser.parse_args()

    import ray
    from ray import serve

    from mesh.launcher import free_port
    from registry.redis_server import EmbeddedRedis
    from specialists.sources import SourceOptions

    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis", port=free_port()) as server,
    ):
        sources = SourceOptions(redis_url=server.url, cache_dir=str(Path(tmp) / "cache"))
        adapters = upload_adapters(make_adapters(args.adapters, Path(tmp)), sources)
        dedicated = manifests(adapters, False, args.num_cpus, sources)
        shared = manifests(adapters, True, args.num_cpus, sources)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start()
        try:
            result = {
                "adapters": args.adapters,
                "max_tokens": args.max_tokens,
                "num_cpus_per_replica": args.num_cpus,
                "dedicated": run_mode(dedicated, sources, args.rounds, args.max_tokens),
                "shared": run_mode(shared, sources, args.rounds, args.max_tokens),
            }
        finally:
            serve.shutdown()
            ray.shutdown()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
