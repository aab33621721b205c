"""Token log-probabilities: the shared helper, both decoders' per-row bookkeeping (entries ride
with the text they show; none for end of sequence or rows that did not ask), and `collect` /
`coalesce` keeping every entry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest
from pydantic import ValidationError

from registry.manifest import GenerationDefaults
from specialists import decoding, onnx_batching
from specialists.engine import (
    GenerationParams,
    Prompt,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    coalesce,
    collect,
)
from specialists.logprobs import sampled_logprobs, token_logprob, token_text

EOS = 0
VOCAB = ["<eos>", "a", "b", "c", " ", "\ufffd"]


class CharTokenizer:
    """Token i is VOCAB[i]; end of sequence decodes to nothing when skipping specials."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and i == EOS))

    def convert_ids_to_tokens(self, token: int) -> str:
        return "âĢ" if VOCAB[token] == "\ufffd" else VOCAB[token]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def test_token_logprob_is_log_softmax_with_sorted_alternatives() -> None:
    logits = np.array([0.5, 3.0, 1.0, 2.0, -1.0, 0.0], dtype=np.float32)
    entry = token_logprob(logits, 2, 3, CharTokenizer())
    expected = _log_softmax(logits)
    assert entry.token == "b" and entry.bytes == [ord("b")]
    assert entry.logprob == pytest.approx(expected[2])
    assert [t.token for t in entry.top_logprobs] == ["a", "c", "b"]
    assert [t.logprob for t in entry.top_logprobs] == pytest.approx(expected[[1, 3, 2]])
    assert all(isinstance(t, TopLogprob) and t.bytes for t in entry.top_logprobs)
    every = token_logprob(logits, 1, 6, CharTokenizer()).top_logprobs
    assert np.exp([t.logprob for t in every]).sum() == pytest.approx(1.0)


def test_no_alternatives_ties_and_huge_k() -> None:
    tokenizer = CharTokenizer()
    logits = np.array([0.0, 2.0, 2.0, 1.0, 0.0, 0.0])
    assert token_logprob(logits, 1, 0, tokenizer).top_logprobs == []
    top = token_logprob(logits, 1, 20, tokenizer).top_logprobs
    assert len(top) == len(VOCAB), "k is capped at the vocabulary"
    assert [t.token for t in top[:2]] == ["a", "b"], "ties: the lower id first, as argmax"
    extreme = token_logprob(np.array([1e4, -1e4, 0, 0, 0, 0]), 0, 1, tokenizer)
    assert extreme.logprob == pytest.approx(0.0) and np.isfinite(extreme.logprob)


def test_sampled_logprobs_only_when_asked_and_never_for_eos() -> None:
    tokenizer, logits = CharTokenizer(), np.arange(6, dtype=np.float32)
    assert sampled_logprobs(logits, 3, None, tokenizer, {EOS}) == []
    assert sampled_logprobs(logits, EOS, 2, tokenizer, {EOS}) == []
    [entry] = sampled_logprobs(logits, 3, 2, tokenizer, {EOS})
    assert isinstance(entry, TokenLogprob) and len(entry.top_logprobs) == 2
    torch = pytest.importorskip("torch")
    [same] = sampled_logprobs(torch.arange(6, dtype=torch.bfloat16), 3, 2, tokenizer, {EOS})
    assert same.logprob == pytest.approx(entry.logprob, abs=1e-6)


def test_token_bytes_of_a_partial_character() -> None:
    class ByteFallback(CharTokenizer):
        def convert_ids_to_tokens(self, token: int) -> str:
            return "<0xE2>"

    assert token_text(CharTokenizer(), 1) == ("a", [97])
    assert token_text(CharTokenizer(), 5) == ("\ufffd", [0xE2, 0x80]), "byte-level BPE"
    assert token_text(ByteFallback(), 5) == ("\ufffd", [0xE2]), "SentencePiece byte fallback"


def test_params_bounds_and_merge() -> None:
    assert GenerationParams().logprobs is None
    assert GenerationParams(logprobs=0).logprobs == 0
    for bad in (-1, 21):
        with pytest.raises(ValidationError):
            GenerationParams(logprobs=bad)
    assert GenerationParams.merge(GenerationDefaults(), logprobs=5).logprobs == 5


def _entry(token: str) -> TokenLogprob:
    return TokenLogprob(token=token, logprob=-0.5, bytes=list(token.encode()))


def test_collect_and_coalesce_keep_every_entry_in_order() -> None:
    deltas = [TextDelta(text=t, logprobs=[_entry(t)]) for t in "abcdef"]
    deltas.append(TextDelta(text="", finish_reason="stop", completion_tokens=7))
    assert [e.token for e in collect(deltas).logprobs] == list("abcdef")

    async def source() -> AsyncIterator[TextDelta]:
        for delta in deltas:
            yield delta

    async def merged() -> list[TextDelta]:
        return [d async for d in coalesce(source(), interval_s=10.0)]

    out = asyncio.run(merged())
    assert len(out) < len(deltas), "deltas were merged"
    assert [e.token for d in out for e in d.logprobs] == list("abcdef")
    assert collect(out).logprobs == collect(deltas).logprobs


# -- the decoders' bookkeeping -----------------------------------------------------------
def _logits(token: int) -> np.ndarray:
    logits = np.zeros(len(VOCAB), dtype=np.float32)
    logits[token] = 5.0
    return logits


GREEDY = GenerationParams(temperature=0.0, repetition_penalty=1.0, max_tokens=10, stop=["c "])


def test_onnx_rows_send_entries_with_their_text() -> None:
    sent: list[TextDelta | BaseException] = []
    asked = onnx_batching.Row(
        [1], GREEDY.model_copy(update={"logprobs": 1}), sent.append, threading.Event()
    )
    plain: list[TextDelta | BaseException] = []
    other = onnx_batching.Row([1], GREEDY, plain.append, threading.Event())
    tokenizer = CharTokenizer()
    for token in (1, 3, 2, 3, 4):  # "a", "c" (held: it may start "c "), "b", "c ", stop
        for row in (asked, other):
            assert onnx_batching.sample(_logits(token), row, tokenizer, {EOS}) == token
    deltas = [d for d in sent if isinstance(d, TextDelta)]
    assert [d.text for d in deltas] == ["a", "cb", ""]
    assert [[e.token for e in d.logprobs] for d in deltas] == [["a"], ["c", "b"], ["c", " "]]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].completion_tokens == 5
    assert all(e.top_logprobs[0].token == e.token for d in deltas for e in d.logprobs)
    assert [d.text for d in plain if isinstance(d, TextDelta)] == ["a", "cb", ""]
    assert all(not d.logprobs for d in plain if isinstance(d, TextDelta))


def test_transformers_rows_report_no_entry_for_eos() -> None:
    torch = pytest.importorskip("torch")
    tokenizer = CharTokenizer()
    params = GREEDY.model_copy(update={"logprobs": 2, "stop": []})
    asked = decoding._new_row(Prompt(ids=[1], params=params), threading.Event(), "cpu")
    plain = decoding._new_row(Prompt(ids=[1], params=GREEDY), threading.Event(), "cpu")
    deltas: dict[int, list[TextDelta]] = {id(asked): [], id(plain): []}
    for token in (2, 3, EOS):
        for row in (asked, plain):
            logits = torch.from_numpy(_logits(token))
            chosen, delta = decoding._next_delta(logits, row, tokenizer, {EOS})
            assert chosen == token and row.error is None
            deltas[id(row)].append(delta)
    result = collect(deltas[id(asked)])
    assert result.text == "bc" and result.finish_reason == "stop"
    assert [e.token for e in result.logprobs] == ["b", "c"], "no entry for end of sequence"
    assert result.completion_tokens == len(result.logprobs) + 1
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in result.logprobs)
    assert all(e.top_logprobs[0].logprob == e.logprob for e in result.logprobs)
    alone = collect(deltas[id(plain)])
    assert alone.logprobs == [] and alone.text == result.text


# -- the deployment -----------------------------------------------------------------------
def test_a_specialist_returns_its_engines_logprobs_whole_and_streamed() -> None:
    from specialists.deployment import SpecialistDeployment, SpecialistRequest
    from specialists.engine import ChatMessage, Engine, EngineCapabilities, EngineRequest
    from tests.conftest import manifest_data

    class Spelling(Engine):
        name = "spelling"
        capabilities = EngineCapabilities(logprobs=True)

        def load(self) -> None:
            pass

        async def stream(
            self, request: EngineRequest, cancel: threading.Event | None = None
        ) -> AsyncIterator[TextDelta]:
            for letter in "abc":
                yield TextDelta(text=letter, logprobs=[_entry(letter)])
            yield TextDelta(text="", finish_reason="stop", prompt_tokens=2, completion_tokens=4)

    deployment = SpecialistDeployment(manifest_data(), engine=Spelling)
    request = SpecialistRequest(
        messages=[ChatMessage(role="user", content="spell")],
        params=GenerationParams(logprobs=1),
    )

    async def both() -> tuple[list[str], list[str]]:
        whole = await deployment.chat(request)
        streamed = [d async for d in deployment.chat_stream(request)]
        return [e.token for e in whole.logprobs], [e.token for e in collect(streamed).logprobs]

    assert asyncio.run(both()) == (list("abc"), list("abc"))
