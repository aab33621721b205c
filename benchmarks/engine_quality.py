"""The onnx engine against the transformers engine on the same specialist: prints ONE JSON object.

- `agreement`: on 50 fixed prompts, greedy (no repetition penalty), the fraction whose first
  32 tokens are identical on both engines, and the mean length of the identical prefix (tokens
  of each answer's text, re-encoded with the model's tokenizer);
- `perplexity`: of both models on a fixed English text (transformers: one forward pass; onnx:
  the engine's graph and KV cache, one token at a time);
- `speed`: each engine alone through its own `stream()`: one stream (128 new tokens, greedy)
  tokens/s and time to first token, and 8 concurrent streams' total tokens/s; medians of
  `--repeats`, with torch and onnxruntime capped at the same `--threads`.

The machine may be shared: `loadavg` before and after says how quiet it was.

    python benchmarks/engine_quality.py [--threads 2] [--prompts 50] [--repeats 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain recursion in one sentence.",
    "Give me three tips for sleeping better.",
    "Translate 'good morning' into Spanish.",
    "What is 17 times 23?",
    "Write a Python function that reverses a string.",
    "Summarize the plot of Romeo and Juliet.",
    "What causes the seasons on Earth?",
    "Name five animals that live in the ocean.",
    "How do I make a cup of tea?",
    "What is photosynthesis?",
    "Write a limerick about a cat.",
    "Why is the sky blue?",
    "What is the difference between weather and climate?",
    "Describe a sunset in two sentences.",
    "List the planets of the solar system.",
    "What is a prime number?",
    "How does a bicycle work?",
    "Tell me a fun fact about octopuses.",
    "What should I pack for a weekend camping trip?",
    "Explain what a database index is.",
    "Write a short thank-you note to a teacher.",
    "How many continents are there?",
    "What is the boiling point of water in Fahrenheit?",
    "Suggest a name for a bakery.",
    "What does HTTP stand for?",
    "Give an example of a metaphor.",
    "How can I improve my handwriting?",
    "What is the largest mammal?",
    "Write a SQL query that counts rows in a table named users.",
    "Explain the rules of tic-tac-toe.",
    "What is the Pythagorean theorem?",
    "Why do leaves change color in autumn?",
    "Write an opening line for a mystery novel.",
    "What are the primary colors?",
    "How do vaccines work?",
    "Recommend a good habit for the morning.",
    "What is the speed of light?",
    "Describe the taste of a lemon.",
    "What is machine learning?",
    "How do I say thank you in Japanese?",
    "Write a two-line poem about the moon.",
    "What is the main ingredient of guacamole?",
    "Explain what inflation means in economics.",
    "What is the tallest mountain in the world?",
    "Give me a riddle.",
    "How does a refrigerator keep food cold?",
    "What is the difference between a virus and a bacterium?",
    "Plan a simple vegetarian dinner.",
]
LONG_PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a car engine works, step by step.",
    "Write an essay about the history of the ocean and its creatures.",
    "Describe the history of the Roman Empire at length.",
    "Tell me everything about the planets of the solar system.",
    "Explain in detail how computers work, from transistors to software.",
    "Write a long poem about autumn leaves falling in a quiet town.",
    "Describe a journey across a desert, day by day, in detail.",
]
# Paragraphs, each wrapped here for reading and joined back into one line.
TEXT = "\n".join(
    " ".join(paragraph.split())
    for paragraph in """
The history of bread is as old as agriculture itself. Some of the earliest farmers in the
Fertile Crescent ground wild grains between stones, mixed the flour with water and baked flat
cakes on hot rocks. Over thousands of years bakers learned that dough left to rest would rise,
because wild yeasts and bacteria in the air fed on its sugars and released gas. Leavened bread
spread across Egypt, Greece and Rome, where public bakeries sold loaves to city dwellers who had
no ovens of their own.

A modern bakery works on the same principles, although machines now do most of the kneading.
Flour, water, salt and yeast are mixed into a dough, which is folded and stretched until its
gluten forms an elastic network. The dough then ferments for several hours. During this time the
yeast produces carbon dioxide and alcohol, and enzymes break starch into simpler sugars that
give the crust its color. Finally the loaves are shaped, proofed once more and baked in a hot
oven, where the water in the dough turns to steam and the crumb sets.

Computers, by contrast, are a recent invention. The first electronic machines filled whole rooms
and were programmed by plugging cables into panels. Today a phone in a pocket holds billions of
transistors, and software written in high level languages is translated into the simple
instructions that a processor executes one after another, millions of times each second.
""".strip().split("\n\n")
)
COMPARE_TOKENS = 32
SPEED_TOKENS = 128


def engines(threads: int, cache: Path) -> tuple[Any, Any, dict[str, float]]:
    import torch

    from registry import parse_manifest
    from specialists.catalog import SMOLLM2_SOURCE
    from specialists.onnx_engine import OnnxGenAIEngine
    from specialists.transformers_engine import TransformersEngine

    torch.set_num_threads(threads)
    data = {
        "name": "bench",
        "version": "1.0.0",
        "description": "Benchmark specialist.",
        "owner": "bench",
        "examples": ["one", "two", "three"],
        "model": {"source": SMOLLM2_SOURCE},
        "system_prompt": "You are a helpful assistant.",
    }
    load: dict[str, float] = {}
    started = time.monotonic()
    reference = TransformersEngine(parse_manifest(data))
    reference.load()
    load["transformers"] = time.monotonic() - started
    data["model"] = {"engine": "onnx", "source": SMOLLM2_SOURCE}
    started = time.monotonic()
    onnx = OnnxGenAIEngine(parse_manifest(data), cache_dir=cache, intra_op_threads=threads)
    onnx.load()
    load["onnx_first"] = time.monotonic() - started
    return reference, onnx, load


async def timed(engine: Any, prompt: str, params: Any) -> tuple[str, int, float, float]:
    """(text, completion tokens, time to first delta, total time) of one streamed answer."""
    from specialists.engine import ChatMessage, EngineRequest

    request = EngineRequest(messages=[ChatMessage(role="user", content=prompt)], params=params)
    started = time.perf_counter()
    first, text, tokens = 0.0, "", 0
    async for delta in engine.stream(request):
        first = first or time.perf_counter() - started
        text += delta.text
        tokens = delta.completion_tokens or tokens
    return text, tokens, first, time.perf_counter() - started


async def answers(engine: Any, prompts: list[str], params: Any) -> list[str]:
    results = await asyncio.gather(*(timed(engine, p, params) for p in prompts))
    return [text for text, *_ in results]


def same_prompts(reference: Any, onnx: Any, prompts: list[str]) -> float:
    """The fraction of prompts both engines turn into the same token ids (chat template and
    system prompt): what the agreement below rests on."""
    from specialists.engine import ChatMessage, GenerationParams

    params = GenerationParams()
    chats = [[ChatMessage(role="user", content=p)] for p in prompts]
    same = [reference.prepare(c, params).ids == onnx.prepare(c, params) for c in chats]
    return sum(same) / len(same)


def agreement(tokenizer: Any, ours: list[str], theirs: list[str]) -> dict[str, float]:
    prefixes = []
    for a, b in zip(ours, theirs, strict=True):
        x = tokenizer.encode(a, add_special_tokens=False)[:COMPARE_TOKENS]
        y = tokenizer.encode(b, add_special_tokens=False)[:COMPARE_TOKENS]
        pairs = enumerate(zip(x, y, strict=False))
        prefixes.append(next((i for i, (p, q) in pairs if p != q), min(len(x), len(y))))
    identical = sum(a == b for a, b in zip(ours, theirs, strict=True))
    return {
        "identical_fraction": identical / len(ours),
        "mean_identical_prefix_tokens": statistics.fmean(prefixes),
    }


async def measure(engine: Any, prompts: list[str], repeats: int) -> tuple[list[str], Any]:
    """Greedy answers to `prompts`, then speed: in one event loop (an engine's scheduler
    lives in the loop that first used it)."""
    from specialists.engine import GenerationParams

    greedy = GenerationParams(max_tokens=COMPARE_TOKENS, temperature=0.0, repetition_penalty=1.0)
    return await answers(engine, prompts, greedy), await speed(engine, repeats)


async def speed(engine: Any, repeats: int) -> dict[str, Any]:
    from specialists.engine import GenerationParams

    params = GenerationParams(max_tokens=SPEED_TOKENS, temperature=0.0, repetition_penalty=1.0)
    await timed(engine, "Hi", params.model_copy(update={"max_tokens": 4}))  # warm up
    singles, ttfts, batches = [], [], []
    for _ in range(repeats):
        _, tokens, first, total = await timed(engine, LONG_PROMPTS[0], params)
        singles.append(tokens / total)
        ttfts.append(first)
        started = time.perf_counter()
        results = await asyncio.gather(*(timed(engine, p, params) for p in LONG_PROMPTS))
        batches.append(sum(r[1] for r in results) / (time.perf_counter() - started))
    return {
        "single_tok_s": round(statistics.median(singles), 1),
        "ttft_ms": round(1000 * statistics.median(ttfts), 1),
        "batch8_tok_s": round(statistics.median(batches), 1),
        "ttft_ms_runs": [round(1000 * x, 1) for x in ttfts],
        "single_tok_s_runs": [round(x, 1) for x in singles],
        "batch8_tok_s_runs": [round(x, 1) for x in batches],
    }


def perplexity_transformers(engine: Any, ids: list[int]) -> float:
    import torch

    with torch.inference_mode():
        tensor = torch.tensor([ids])
        loss = engine.model(input_ids=tensor, labels=tensor).loss
    return math.exp(float(loss))


def perplexity_onnx(engine: Any, ids: list[int]) -> float:
    """Next-token log-likelihoods from the engine's own graph and KV cache, one token at a
    time as decoding feeds them (its LM head gives the last position's logits)."""
    import numpy as np

    from specialists.onnx_batching import forced_logits

    nll = 0.0
    for logits, target in zip(forced_logits(engine.graph, ids[:-1]), ids[1:], strict=True):
        values = logits.astype(np.float64)
        top = values.max()
        nll += top + math.log(np.exp(values - top).sum()) - values[target]
    return math.exp(nll / (len(ids) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="ONNX cache (default: temp).")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        reference, onnx, load = engines(args.threads, args.cache or Path(tmp))
        prompts = PROMPTS[: args.prompts]
        # onnx first: torch's idle OpenMP threads must not be what it is measured against
        ours, our_speed = asyncio.run(measure(onnx, prompts, args.repeats))
        theirs, their_speed = asyncio.run(measure(reference, prompts, args.repeats))
        ids = reference.tokenizer(TEXT)["input_ids"]
        alike = same_prompts(reference, onnx, prompts)
        result = {
            "threads": args.threads,
            "prompts": len(prompts),
            "compare_tokens": COMPARE_TOKENS,
            "prompts_tokenized_alike": alike,
            "agreement": agreement(reference.tokenizer, ours, theirs),
            "perplexity": {
                "tokens": len(ids),
                "transformers": round(perplexity_transformers(reference, ids), 3),
                "onnx": round(perplexity_onnx(onnx, ids), 3),
            },
            "speed": {"transformers": their_speed, "onnx": our_speed},
            "onnx_precision": onnx.built.record["identity"]["precision"],
            "load_s": {k: round(v, 1) for k, v in load.items()},
            "loadavg": {"before": before, "after": os.getloadavg()},
            "cpus": os.cpu_count(),
        }
        onnx.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
