"""One request's failure stays in that request: rows of a real decode batch (the tiny random
model) fail alone; panels name a bad aggregator; the query cache stays bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mesh.panel import check_aggregator, run_panel
from mesh.protocol import MeshOptions
from registry import parse_manifest
from registry.errors import InvalidRequestError, MeshError, NotFoundError, UnavailableError
from router.cache import EmbeddingCache
from specialists import decoding
from specialists.decoding import BatchDecoder, torch_seed
from specialists.engine import BatchEngine, ChatMessage, GenerationParams, Prompt
from specialists.messages import ContextState
from specialists.scheduler import BatchScheduler
from tests.conftest import manifest_data


class TinyEngine(BatchEngine):
    """The real `BatchDecoder` over the tiny random Llama (no prefix cache, no artifacts)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(parse_manifest(manifest_data()))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def load(self) -> None: ...

    def prepare(self, messages: list[ChatMessage], params: GenerationParams) -> Prompt:
        chat = [m.model_dump() for m in messages]
        encoded: Any = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True
        )
        return Prompt(ids=[int(i) for i in encoded["input_ids"]], params=params)

    def new_batch(self) -> BatchDecoder:
        return BatchDecoder(self.model, self.tokenizer, {int(self.tokenizer.eos_token_id)})


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> TinyEngine:
    return TinyEngine(tiny_model_dir)


def _prompt(engine: TinyEngine, text: str = "hello", **params: Any) -> Prompt:
    """A prompt whose params skip validation, as a bug upstream of the engine would send."""
    values = {**GenerationParams(max_tokens=12, temperature=0.0).model_dump(), **params}
    chat = [ChatMessage(role="user", content=text)]
    return engine.prepare(chat, GenerationParams.model_construct(**values))


async def _answer(scheduler: BatchScheduler, prompt: Prompt) -> str | BaseException:
    """The streamed text, or the error the request's own stream raised."""
    try:
        deltas = [delta async for delta in scheduler.stream(prompt)]
    except Exception as error:
        return error
    assert deltas[-1].finish_reason in ("stop", "length")
    return "".join(d.text for d in deltas)


def _alone(engine: TinyEngine, prompt: Prompt) -> str | BaseException:
    return asyncio.run(_answer(BatchScheduler(engine), prompt))


def test_a_seed_beyond_int64_fails_its_row_and_the_batch_answers_the_others(
    engine: TinyEngine,
) -> None:
    good, bad = _prompt(engine, "first"), _prompt(engine, "second", seed=2**64)

    async def main() -> list[str | BaseException]:
        scheduler = BatchScheduler(engine)
        answers = await asyncio.gather(*(_answer(scheduler, p) for p in (good, bad, good)))
        assert scheduler.snapshot().failed == 1
        return answers

    first, error, third = asyncio.run(main())
    assert isinstance(error, InvalidRequestError) and error.param == "seed"
    assert first == third == _alone(engine, good), "the others answer as if alone"


def test_negative_int64_seeds_map_to_torch_seeds_and_repeat() -> None:
    assert torch_seed(-1) == 2**64 - 1
    assert torch_seed(-(2**63)) == 2**63
    assert torch_seed(2**63 - 1) == 2**63 - 1
    with pytest.raises(InvalidRequestError):
        torch_seed(2**63)


def test_a_negative_seed_samples_reproducibly(engine: TinyEngine) -> None:
    prompt = _prompt(engine, temperature=1.0, top_p=0.9, seed=-7)
    first = _alone(engine, prompt)
    assert isinstance(first, str) and first == _alone(engine, prompt)


def test_a_prompt_that_cannot_prefill_fails_alone_while_a_running_row_goes_on(
    engine: TinyEngine,
) -> None:
    running = _prompt(engine, "a long answer", max_tokens=30)
    broken = Prompt(ids=[len(engine.tokenizer) + 10], params=running.params)  # no such token

    async def main() -> tuple[str | BaseException, str | BaseException]:
        scheduler = BatchScheduler(engine)
        first = asyncio.create_task(_answer(scheduler, running))
        while scheduler.snapshot().steps < 2:
            await asyncio.sleep(0.01)
        late = await _answer(scheduler, broken)
        return await first, late

    first, late = asyncio.run(main())
    assert isinstance(late, MeshError) and late.status_code == 500
    assert "IndexError" in late.message and "len(" not in late.message
    assert first == _alone(engine, running), "the running row never noticed"


def test_a_row_whose_sampling_fails_ends_alone(
    engine: TinyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = decoding._sample

    def flaky(logits: Any, row: Any) -> int:
        if row.prompt.params.top_p == 0.5:
            raise RuntimeError("probability tensor contains nan")
        return real(logits, row)

    monkeypatch.setattr(decoding, "_sample", flaky)
    good, bad = _prompt(engine, "one"), _prompt(engine, "two", top_p=0.5)

    async def main() -> tuple[str | BaseException, str | BaseException]:
        scheduler = BatchScheduler(engine)
        return await asyncio.gather(_answer(scheduler, good), _answer(scheduler, bad))

    first, error = asyncio.run(main())
    assert isinstance(error, MeshError) and "RuntimeError" in error.message
    assert first == _alone(engine, good)


def test_a_failed_forward_pass_fails_its_batch_and_the_next_request_runs(
    engine: TinyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = BatchDecoder.step
    calls = {"n": 0}

    def failing_once(self: BatchDecoder) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return real_step(self)

    monkeypatch.setattr(BatchDecoder, "step", failing_once)
    prompt = _prompt(engine, max_tokens=20)

    async def main() -> tuple[tuple[str | BaseException, ...], str | BaseException]:
        scheduler = BatchScheduler(engine)
        lost = await asyncio.gather(_answer(scheduler, prompt), _answer(scheduler, prompt))
        return lost, await _answer(scheduler, prompt)

    lost, after = asyncio.run(main())
    assert all(isinstance(e, UnavailableError) and "RuntimeError" in e.message for e in lost)
    assert isinstance(after, str) and after


# -- panels ---------------------------------------------------------------------------------
def test_an_aggregator_that_is_not_live_is_a_404_naming_mesh() -> None:
    live = {"code", "writing"}
    with pytest.raises(NotFoundError, match=r"mesh\.aggregator") as raised:
        check_aggregator(MeshOptions(aggregator="ghost"), ["code", "writing"], live)
    assert raised.value.param == "mesh"
    with pytest.raises(InvalidRequestError, match="no panel member"):
        check_aggregator(None, [], live)
    check_aggregator(MeshOptions(aggregator="writing"), ["code"], live)  # live: may aggregate


def test_a_panel_refuses_its_aggregator_before_any_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    from specialists import context

    async def never(*_args: Any) -> Any:
        raise AssertionError("no draft may be sent")

    monkeypatch.setattr(context, "send", never)
    with pytest.raises(NotFoundError):
        asyncio.run(
            run_panel(
                ContextState(),
                ["code", "writing"],
                {"code", "writing"},
                "question",
                options=MeshOptions(panel=["code", "writing"], aggregator="ghost"),
                default_aggregator=None,
                max_tokens=16,
            )
        )


# -- the router's query cache ---------------------------------------------------------------
class _CountingEncoder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_the_query_cache_is_keyed_by_hash_and_bounded() -> None:
    encoder = _CountingEncoder()
    cache = EmbeddingCache(encoder, maxsize=3)  # type: ignore[arg-type]
    long_query = "x" * 100_000
    cache.encode([long_query, "a", long_query])
    cache.encode([long_query])
    assert encoder.seen == [long_query, "a"], "a repeat is a hit"
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache._rows)
    cache.encode([f"q{i}" for i in range(10)])
    assert len(cache) == 3
    assert cache.encode(["\ud800 lone surrogate"]).shape == (1, 2)
