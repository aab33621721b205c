"""The engine contract, checked the same way for every registered engine (built-in, optional
and the third-party test plugin): greedy determinism, max_tokens, stop strings, cancel, deadline,
concurrent streams, and errors. Engines are driven directly through `stream(request, cancel)`,
as `SpecialistDeployment` drives them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import InvalidRequestError, ManifestError, SpecialistManifest, parse_manifest
from registry.errors import MeshError
from specialists.catalog import SMOLLM2_SOURCE
from specialists.engine import (
    ChatMessage,
    Engine,
    EngineRequest,
    GenerationParams,
    TextDelta,
)
from specialists.engine_registry import engine_class, engine_names
from specialists.sources import SourceOptions
from tests.conftest import manifest_data, seed_onnx_cache

pytestmark = pytest.mark.slow

# Every engine this project registers, plus the test plugin's; a new registered engine must be
# added here (test_every_registered_engine_is_under_contract fails until it is).
CONTRACT_ENGINES = ["transformers", "onnx", "tool", "echo", "vllm"]
# Engines that need GPU workers and an extra (`.[gpu]`): on a CPU machine they must refuse to
# load with a clear error (tested below); benchmarks/gpu_check.sh runs them for real on a GPU.
GPU_ENGINES = {"vllm"}
RUNNABLE = [name for name in CONTRACT_ENGINES if name not in GPU_ENGINES]

QUESTION = "Name three colours of the rainbow and say why the sky is blue."
GREEDY = GenerationParams(max_tokens=24, temperature=0.0, repetition_penalty=1.0)


def _manifest(engine: str) -> SpecialistManifest:
    if engine == "tool":
        model = {"engine": "tool", "source": "math"}
    else:
        model = {"engine": engine, "source": SMOLLM2_SOURCE}
    return parse_manifest(manifest_data(name=f"contract-{engine}", model=model))


def _chat(text: str = QUESTION) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


async def _deltas(
    engine: Engine, request: EngineRequest, cancel: threading.Event | None = None
) -> list[TextDelta]:
    return [delta async for delta in engine.stream(request, cancel)]


def _run(
    engine: Engine, params: GenerationParams = GREEDY, text: str = QUESTION
) -> list[TextDelta]:
    return asyncio.run(_deltas(engine, EngineRequest(messages=_chat(text), params=params)))


def _text(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


@pytest.fixture(scope="module")
def engines(
    engine_plugin: Path, onnx_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """One loaded engine per runnable registered engine (loading is the slow part)."""
    cache = seed_onnx_cache(onnx_cache, tmp_path_factory.mktemp("engine-cache"))
    options = SourceOptions(cache_dir=str(cache))
    loaded: dict[str, Engine] = {}
    for name in engine_names():
        if name in GPU_ENGINES:
            continue
        engine = engine_class(name)(_manifest(name), options)
        engine.load()
        loaded[name] = engine
    yield loaded


def test_every_registered_engine_is_under_contract(engine_plugin: Path) -> None:
    assert set(engine_names()) == set(CONTRACT_ENGINES)


@pytest.mark.parametrize("name", sorted(GPU_ENGINES))
def test_gpu_engines_refuse_clearly_without_their_extra(name: str) -> None:
    engine = engine_class(name)(_manifest(name), SourceOptions())
    with pytest.raises(MeshError) as error:
        engine.load()
    assert "gpu" in str(error.value).lower()


def _engine(engines: dict, name: str) -> Engine:
    return engines[name]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", RUNNABLE)
def test_greedy_answers_are_deterministic_and_end_with_one_final_delta(
    engines: dict, name: str
) -> None:
    engine = _engine(engines, name)
    first, second = _run(engine), _run(engine)
    assert _text(first) == _text(second) and _text(first).strip()
    final = first[-1]
    assert final.finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in first[:-1])
    assert final.prompt_tokens > 0 and final.completion_tokens > 0
    engine.health()


@pytest.mark.parametrize("name", RUNNABLE)
def test_max_tokens_and_stop_strings_cut_generated_answers(engines: dict, name: str) -> None:
    engine = _engine(engines, name)
    full = _text(_run(engine))
    short = _run(engine, GREEDY.model_copy(update={"max_tokens": 3}))
    stop = full.strip()[8:14]
    stopped = _run(engine, GREEDY.model_copy(update={"stop": [stop]}))
    if engine.capabilities.exact:  # a tool's answer is exact: never cut
        assert _text(short) == _text(stopped) == full
        return
    assert short[-1].finish_reason == "length" and short[-1].completion_tokens == 3
    assert full.startswith(_text(short))
    assert all(stop not in d.text for d in stopped), "a stop string never leaks, even split"
    assert _text(stopped) == full[: full.index(stop)]
    assert stopped[-1].finish_reason == "stop"


@pytest.mark.parametrize("name", RUNNABLE)
def test_cancel_and_deadline_end_a_request_early(engines: dict, name: str) -> None:
    engine = _engine(engines, name)
    cancel = threading.Event()
    cancel.set()
    request = EngineRequest(messages=_chat(), params=GREEDY.model_copy(update={"max_tokens": 64}))
    cancelled = asyncio.run(_deltas(engine, request, cancel))
    assert cancelled[-1].finish_reason == "cancelled"

    late = EngineRequest(
        messages=_chat(),
        params=GREEDY.model_copy(update={"max_tokens": 64, "max_time_s": 0.05}),
        arrived=time.monotonic() - 1,  # its deadline has passed already
    )
    deltas = asyncio.run(_deltas(engine, late))
    if engine.capabilities.exact:
        assert deltas[-1].finish_reason == "stop"
    else:
        assert deltas[-1].finish_reason == "length"
        assert deltas[-1].completion_tokens <= 2


@pytest.mark.parametrize("name", RUNNABLE)
def test_concurrent_streams_each_get_their_own_answer(engines: dict, name: str) -> None:
    engine = _engine(engines, name)
    questions = [QUESTION, "What is the capital of France?", "Say hello in Spanish."]
    alone = [_text(_run(engine, text=q)) for q in questions]

    async def together() -> list[str]:
        requests = [EngineRequest(messages=_chat(q), params=GREEDY) for q in questions]
        results = await asyncio.gather(*(_deltas(engine, r) for r in requests))
        return [_text(r) for r in results]

    assert asyncio.run(together()) == alone


@pytest.mark.parametrize("name", RUNNABLE)
def test_errors_are_clear_and_stay_in_their_request(engines: dict, name: str) -> None:
    engine = _engine(engines, name)
    if engine.capabilities.exact:  # a tool takes any text; its errors are at load
        broken = parse_manifest(manifest_data(model={"engine": name, "source": "no-such-tool"}))
        with pytest.raises(ManifestError, match="unknown tool"):
            engine_class(name)(broken).load()
        return
    huge = "word " * 20_000

    async def mixed() -> tuple[BaseException | None, str]:
        bad = _deltas(engine, EngineRequest(messages=_chat(huge), params=GREEDY))
        good = _deltas(engine, EngineRequest(messages=_chat(), params=GREEDY))
        results = await asyncio.gather(bad, good, return_exceptions=True)
        error = results[0] if isinstance(results[0], BaseException) else None
        assert not isinstance(results[1], BaseException)
        return error, _text(results[1])

    error, answer = asyncio.run(mixed())
    assert isinstance(error, InvalidRequestError) and error.param == "messages"
    assert answer == _text(_run(engine)), "the good request is untouched by the bad one"
