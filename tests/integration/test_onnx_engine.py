"""The onnx engine on the real offline SmolLM2 GGUF: one conversion for the session (two
replicas asking at once convert once), then the engine contract, batching, the cache's
integrity checks and LoRA adapters (unmerged on a shared base, and merged)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import cast

import pytest

from registry import InvalidRequestError, ManifestError, SpecialistManifest, parse_manifest
from specialists import onnx_build
from specialists.catalog import SMOLLM2_SOURCE, load_catalog
from specialists.engine import ChatMessage, EngineRequest, GenerationParams, TextDelta
from specialists.onnx_build import RECORD, ensure_model
from specialists.onnx_engine import OnnxGenAIEngine
from tests.conftest import manifest_data

pytestmark = pytest.mark.slow

QUESTION = "Name three colours of the rainbow and say why the sky is blue."
GREEDY = GenerationParams(max_tokens=24, temperature=0.0, repetition_penalty=1.0)
SQL_QUESTION = (
    "Table: employees(id, name, salary, department)\n"
    "Question: What is the average salary in the sales department?"
)
# What the transformers engine answers with the catalog's `sql` specialist (adapter merged).
SQL_ANSWER = "SELECT AVG(salary) FROM employees;"


def _manifest(name: str = "onnx-demo", **model: object) -> SpecialistManifest:
    spec = {"engine": "onnx", "source": SMOLLM2_SOURCE, **model}
    return parse_manifest(manifest_data(name=name, model=spec, system_prompt="Be kind."))


def _catalog(name: str) -> SpecialistManifest:
    manifest = next(m for m in load_catalog() if m.name == name)
    data = manifest.model_dump(mode="json")
    data["model"]["engine"] = "onnx"
    return parse_manifest(data)


def _bare_base(adapter: SpecialistManifest) -> SpecialistManifest:
    """The adapter specialist's base alone: what a shared-base engine is made for."""
    data = adapter.model_dump(mode="json")
    data["name"] = "sql-base"
    data["model"].pop("adapter")
    data["model"]["sha256"] = {
        k: v for k, v in data["model"]["sha256"].items() if not k.startswith("adapter/")
    }
    return parse_manifest(data)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache, filled by two 'replicas' asking for the same model at once."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    builds: list[str] = []
    original = onnx_build._build_model

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        builds.append(args[0].name)
        return original(*args, **kwargs)

    onnx_build._build_model = counted  # type: ignore[assignment]
    try:
        threads = [
            threading.Thread(target=ensure_model, args=(_manifest(f"replica-{i}"), folder))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        onnx_build._build_model = original  # type: ignore[assignment]
    assert len(builds) == 1, "the second replica waited for the first one's conversion"
    return folder


@pytest.fixture(scope="module")
def engine(cache: Path) -> Iterator[OnnxGenAIEngine]:
    loaded = OnnxGenAIEngine(_manifest(), cache_dir=cache, intra_op_threads=2)
    started = time.monotonic()
    loaded.load()
    assert time.monotonic() - started < 30, "a cached conversion loads without converting"
    yield loaded
    loaded.close()


async def _deltas(
    engine: OnnxGenAIEngine, request: EngineRequest, cancel: threading.Event | None = None
) -> list[TextDelta]:
    return [delta async for delta in engine.stream(request, cancel)]


def _run(
    engine: OnnxGenAIEngine,
    params: GenerationParams = GREEDY,
    text: str = QUESTION,
    adapter: str | None = None,
) -> list[TextDelta]:
    chat = [ChatMessage(role="user", content=text)]
    request = EngineRequest(messages=chat, params=params, adapter=adapter)
    return asyncio.run(_deltas(engine, request))


def _wait_idle(engine: OnnxGenAIEngine, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stats()["running"] == 0


def _text(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


def test_the_cache_records_every_file_by_sha256(engine: OnnxGenAIEngine) -> None:
    assert engine.built is not None
    record = json.loads((engine.built.folder / RECORD).read_text())
    files = {p.name for p in engine.built.folder.iterdir()} - {RECORD}
    assert set(record["files"]) == files
    assert {"model.onnx", "model.onnx.data", "lora.onnx", "genai_config.json"} <= files
    assert record["identity"]["precision"] == "int8"
    assert record["shape"] == {"layers": 30, "kv_heads": 3, "head_dim": 64, "vocab": 49152}


def test_greedy_is_deterministic_with_one_final_delta(engine: OnnxGenAIEngine) -> None:
    first, second = _run(engine), _run(engine)
    assert _text(first) == _text(second) and _text(first).strip()
    assert all(d.finish_reason is None and d.text for d in first[:-1])
    final = first[-1]
    assert final.finish_reason in ("stop", "length")
    assert final.prompt_tokens > 10 and 0 < final.completion_tokens <= GREEDY.max_tokens
    engine.health()


def test_max_tokens_and_stop_strings(engine: OnnxGenAIEngine) -> None:
    full = _text(_run(engine))
    short = _run(engine, GREEDY.model_copy(update={"max_tokens": 3}))
    assert short[-1].finish_reason == "length" and short[-1].completion_tokens == 3
    assert full.startswith(_text(short))
    stop = full.strip()[8:14]
    stopped = _run(engine, GREEDY.model_copy(update={"stop": [stop]}))
    assert all(stop not in d.text for d in stopped), "a stop string never leaks, even split"
    assert _text(stopped) == full[: full.index(stop)]
    assert stopped[-1].finish_reason == "stop"


def test_cancel_deadline_and_a_closed_stream_end_the_row(engine: OnnxGenAIEngine) -> None:
    long = GREEDY.model_copy(update={"max_tokens": 200})
    cancel = threading.Event()
    cancel.set()
    request = EngineRequest(messages=[ChatMessage(role="user", content=QUESTION)], params=long)
    assert asyncio.run(_deltas(engine, request, cancel))[-1].finish_reason == "cancelled"

    async def cancel_midway() -> list[TextDelta]:
        event, seen = threading.Event(), []
        async for delta in engine.stream(request, event):
            seen.append(delta)
            event.set()
        return seen

    midway = asyncio.run(cancel_midway())
    assert midway[-1].finish_reason == "cancelled" and midway[-1].completion_tokens < 10

    late = request.model_copy(
        update={"params": long.model_copy(update={"max_time_s": 0.05}), "arrived": 0.0}
    )
    deltas = asyncio.run(_deltas(engine, late))
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens <= 2

    async def leave_early() -> None:
        stream = cast(AsyncGenerator[TextDelta, None], engine.stream(request))
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(leave_early())
    _wait_idle(engine)  # a stream closed early stops costing compute


def test_concurrent_requests_batch_and_answer_as_alone(engine: OnnxGenAIEngine) -> None:
    questions = [QUESTION, "What is the capital of France?", "Say hello in Spanish.", "Hi!"] * 2
    alone = [_text(_run(engine, text=q)) for q in questions[:4]] * 2
    started = engine.stats()["steps"]

    async def together() -> list[str]:
        requests = [
            EngineRequest(messages=[ChatMessage(role="user", content=q)], params=GREEDY)
            for q in questions
        ]
        results = await asyncio.gather(*(_deltas(engine, r) for r in requests))
        return [_text(r) for r in results]

    assert asyncio.run(together()) == alone, "rows decode exactly as alone"
    steps = engine.stats()["steps"] - started
    assert steps < 2 * GREEDY.max_tokens, f"{steps} steps: the requests shared them"


def test_sampling_settings_are_per_row_and_seeds_repeat(engine: OnnxGenAIEngine) -> None:
    sampled = GenerationParams(max_tokens=24, temperature=0.9, top_p=0.9, seed=7)

    async def mixed() -> list[str]:
        chat = [ChatMessage(role="user", content="Write a short poem about the sea.")]
        requests = [
            EngineRequest(messages=chat, params=sampled),
            EngineRequest(messages=chat, params=GREEDY),
            EngineRequest(messages=chat, params=sampled.model_copy(update={"seed": 8})),
        ]
        return [_text(r) for r in await asyncio.gather(*(_deltas(engine, r) for r in requests))]

    first, second = asyncio.run(mixed()), asyncio.run(mixed())
    assert first[0] == second[0] and first[1] == second[1], "a seed repeats in any batch"
    assert first[0] != first[2]


def test_a_too_long_prompt_fails_alone_before_any_delta(engine: OnnxGenAIEngine) -> None:
    huge = "word " * 20_000

    async def mixed() -> tuple[object, str]:
        bad = _deltas(engine, EngineRequest(messages=[ChatMessage(role="user", content=huge)]))
        good = _deltas(
            engine,
            EngineRequest(messages=[ChatMessage(role="user", content=QUESTION)], params=GREEDY),
        )
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert not isinstance(results[1], BaseException)
        return results[0], _text(results[1])

    error, answer = asyncio.run(mixed())
    assert isinstance(error, InvalidRequestError) and error.param == "messages"
    assert answer == _text(_run(engine))


def test_a_request_joins_a_running_batch_between_steps(engine: OnnxGenAIEngine) -> None:
    """Continuous batching: a late request starts at once, not when the first one ends."""
    long = GREEDY.model_copy(update={"max_tokens": 64})

    async def staggered() -> tuple[float, float]:
        chat = [ChatMessage(role="user", content="Write a long story about a dragon.")]
        first = asyncio.ensure_future(_deltas(engine, EngineRequest(messages=chat, params=long)))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        late = EngineRequest(messages=[ChatMessage(role="user", content="Hi!")], params=GREEDY)
        await _deltas(engine, late)
        waited = time.monotonic() - started
        await first
        return waited, time.monotonic() - started

    waited, rest = asyncio.run(staggered())
    assert waited < rest / 2, "the late request did not wait for the running one"
    _wait_idle(engine)
    assert engine.stats()["cache_mb"] == 0, "an idle engine holds no cache"


def test_a_tampered_cache_file_is_refused(engine: OnnxGenAIEngine, tmp_path: Path) -> None:
    assert engine.built is not None
    original = engine.built.folder
    copy = tmp_path / "cache" / original.name
    shutil.copytree(original, copy, copy_function=os.link)  # hard links: nothing is copied
    config = copy / "genai_config.json"
    text = config.read_text()
    config.unlink()  # a new file: the cached one (a hard link) stays as it was
    config.write_text(text.replace('"num_hidden_layers": 30', '"num_hidden_layers": 29'))
    with pytest.raises(ManifestError, match="does not match its build"):
        OnnxGenAIEngine(_manifest(), cache_dir=tmp_path / "cache").load()
    config.unlink()
    config.write_text(text)
    (copy / "extra.onnx").write_text("not built here")
    with pytest.raises(ManifestError, match="not built with"):
        ensure_model(_manifest(), tmp_path / "cache")


def test_adapters_change_answers_as_the_transformers_engine_does(cache: Path) -> None:
    sql = _catalog("sql")
    shared = OnnxGenAIEngine(_bare_base(sql), cache_dir=cache)
    shared.load()
    name = shared.add_adapter(sql)
    bare = _text(_run(shared, GREEDY.model_copy(update={"max_tokens": 40}), SQL_QUESTION))
    tuned = _run(shared, GREEDY.model_copy(update={"max_tokens": 40}), SQL_QUESTION, name)
    assert _text(tuned) == SQL_ANSWER != bare

    async def both() -> list[str]:  # an adapter's rows and the base's decode side by side
        chat = [ChatMessage(role="user", content=SQL_QUESTION)]
        params = GREEDY.model_copy(update={"max_tokens": 40})
        requests = [EngineRequest(messages=chat, params=params, adapter=a) for a in (None, name)]
        return [_text(r) for r in await asyncio.gather(*(_deltas(shared, r) for r in requests))]

    assert asyncio.run(both()) == [bare, SQL_ANSWER]
    other = _catalog("extract").model_dump(mode="json")
    other["model"].update(source="HuggingFaceTB/SmolLM2-360M-Instruct", sha256={})
    with pytest.raises(ManifestError, match="not on this engine's base"):
        shared.add_adapter(parse_manifest(other))
    shared.retire_adapter(name)
    assert shared.stats()["adapters"] == []
    with pytest.raises(InvalidRequestError, match="not loaded"):
        _run(shared, GREEDY, SQL_QUESTION, name)
    shared.close()

    merged = OnnxGenAIEngine(sql, cache_dir=cache)  # its own adapter, merged at conversion
    merged.load()
    assert _text(_run(merged, GREEDY.model_copy(update={"max_tokens": 40}), SQL_QUESTION)) == (
        SQL_ANSWER
    )
    merged.close()


def test_random_schemas_are_held_token_by_token(engine: OnnxGenAIEngine) -> None:
    """Sixteen random nested schemas decoded at once (with a free row in the same batch): every
    answer that completes validates against its schema; one that runs out of tokens (a small
    model repeating itself inside an array or string) is still a prefix the grammar accepted.
    benchmarks/grammar.py measures the same on 100 schemas."""
    import jsonschema
    import llguidance

    from benchmarks.random_schemas import random_schemas
    from specialists.grammar import Grammar

    schemas = random_schemas(16, seed=5)

    def params(i: int, schema: dict[str, object]) -> GenerationParams:
        grammar = Grammar(kind="json_schema", json_schema=schema)
        return GenerationParams(max_tokens=160, temperature=0.7, seed=i, grammar=grammar)

    def ask(text: str, p: GenerationParams) -> EngineRequest:
        return EngineRequest(messages=[ChatMessage(role="user", content=text)], params=p)

    requests = [
        ask(f"Reply with one short JSON object for this schema: {json.dumps(s)}", params(i, s))
        for i, s in enumerate(schemas)
    ]
    requests.append(ask(QUESTION, GREEDY))

    async def answer_all() -> list[list[TextDelta]]:
        return list(await asyncio.gather(*(_deltas(engine, r) for r in requests)))

    answers = asyncio.run(answer_all())
    assert _text(answers[-1]) == _text(_run(engine)), "the free row answers as if alone"
    assert engine.grammars is not None
    tokenizer = engine.grammars._llg_tokenizer()
    complete = 0
    for schema, deltas in zip(schemas, answers, strict=False):
        text, finish = _text(deltas), deltas[-1].finish_reason
        if finish == "stop":
            jsonschema.validate(json.loads(text), schema)
            complete += 1
            continue
        assert finish == "length"
        grammar = Grammar(kind="json_schema", json_schema=schema).compiled()
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
        assert matcher.validate_tokens(ids) == len(ids), "a cut answer is a valid prefix"
    assert complete >= 12, f"only {complete} of 16 answers completed"


def _assert_logprobs(result, top: int) -> None:  # type: ignore[no-untyped-def]
    """A greedy answer's log-probabilities (no stop strings, no repetition penalty): one entry
    per answer token, end of sequence excluded; the sampled token is the most likely."""
    ends_with_eos = result.finish_reason == "stop"  # no stop strings: "stop" is end of sequence
    assert len(result.logprobs) == result.completion_tokens - int(ends_with_eos)
    for entry in result.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == top
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        if top:
            assert entry.top_logprobs[0].token == entry.token and values[0] == entry.logprob
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    assert "".join(entry.token for entry in result.logprobs) == result.text


def test_logprobs_for_the_rows_that_ask_only(engine: OnnxGenAIEngine) -> None:
    """Concurrent rows with and without log-probabilities: each answers as alone, and only
    the rows that ask get entries (k alternatives each, 0 included)."""
    from specialists.engine import collect

    questions = [QUESTION, "What is the capital of France?", "Say hello in Spanish."]
    alone = [collect(_run(engine, text=q)) for q in questions]
    settings = [GREEDY.model_copy(update={"logprobs": k}) for k in (3, None, 0)]

    async def together() -> list[list[TextDelta]]:
        requests = [
            EngineRequest(messages=[ChatMessage(role="user", content=q)], params=p)
            for q, p in zip(questions, settings, strict=True)
        ]
        return list(await asyncio.gather(*(_deltas(engine, r) for r in requests)))

    results = [collect(deltas) for deltas in asyncio.run(together())]
    for result, expected, params in zip(results, alone, settings, strict=True):
        assert (result.text, result.completion_tokens) == (
            expected.text,
            expected.completion_tokens,
        )
        if params.logprobs is None:
            assert result.logprobs == [] and expected.logprobs == []
        else:
            _assert_logprobs(result, params.logprobs)
