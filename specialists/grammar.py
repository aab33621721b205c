"""Constrained decoding: a request's output is held to a grammar (a JSON schema, or a Lark
grammar such as a tool call), token by token, so it always parses.

The grammar engine is llguidance (the Guidance project's Rust parser, also inside
onnxruntime-genai and vLLM): it computes the set of tokens the grammar allows next in tens of
microseconds on a 49k vocabulary, lazily, with no per-schema index to build, and has no torch
dependency. Chosen over xgrammar and outlines-core by `benchmarks/grammar.py` (per-token mask
time, compile time, and correctness on randomized nested schemas; see docs/api.md).

Each decode loop applies it the same way, per row, so rows with and without a grammar share
one batch: before sampling, the row's `TokenConstraint.allowed` masks the logits; after, the
sampled token is `accept`ed; when the grammar is `complete` the row stops ("stop").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import InvalidRequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

MAX_GRAMMAR_CHARS = 64_000  # a schema or grammar, serialized: parsing is bounded by its size
# JSON as the grammar writes it: compact (`{"a":1,"b":2}`), no whitespace anywhere, so a model
# cannot wander into endless whitespace (a known failure of small models under JSON grammars).
JSON_STYLE: JsonCompileOptions = {"whitespace_flexible": False}


class Grammar(BaseModel):
    """What a request's output must match. `json_object`: any JSON object; `json_schema`: a
    JSON Schema (draft 2020-12 subset, as llguidance supports it); `lark`: a Lark grammar
    (llguidance's dialect, which may embed `%json{...}` schemas: how tool calls are held)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["json_object", "json_schema", "lark"]
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    lark: str | None = None
    param: str = Field(
        "response_format", description="The request field an invalid grammar is blamed on."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Grammar:
        if self.kind == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema grammar needs its schema")
        if self.kind == "lark" and not self.lark:
            raise ValueError("a lark grammar needs its text")
        return self

    def compiled(self) -> str:
        """The grammar as llguidance takes it, checked; raises `InvalidRequestError` if it is
        too big or llguidance cannot use it (unsupported keywords, look-around in patterns...)."""
        import llguidance

        grammar = self.unchecked()
        try:
            error = llguidance.LLMatcher.validate_grammar(grammar, limits=parser_limits())
        except Exception as raised:  # whatever the parser says of a client's schema is a 400
            error = f"{type(raised).__name__}: {raised}"
        if error and not error.startswith("WARNING"):
            raise InvalidRequestError(f"unusable schema: {error.strip()[:500]}", param=self.param)
        return grammar

    def unchecked(self) -> str:
        """The grammar as llguidance takes it, bounded in size but not yet checked: building a
        matcher checks it (so a replica does not parse it twice)."""
        import llguidance

        try:
            if self.kind == "lark":
                source = self.lark or ""
            else:
                schema = self.json_schema if self.kind == "json_schema" else {"type": "object"}
                source = json.dumps(schema)
        except (ValueError, RecursionError):  # nested past what JSON text can say
            raise InvalidRequestError("the schema nests too deeply", param=self.param) from None
        if len(source) > MAX_GRAMMAR_CHARS:  # before any parsing
            raise InvalidRequestError(
                f"the schema is {len(source)} characters; the limit is {MAX_GRAMMAR_CHARS}",
                param=self.param,
            )
        try:
            if self.kind == "lark":
                return str(llguidance.LLMatcher.grammar_from_lark(source))
            return str(llguidance.LLMatcher.grammar_from_json_schema(source, defaults=JSON_STYLE))
        except Exception as raised:  # whatever the parser says of a client's schema is a 400
            message = f"unusable schema: {type(raised).__name__}: {raised}"[:520]
            raise InvalidRequestError(message, param=self.param) from None

    def check(self) -> None:
        """Fail now (a 400 at the gateway) rather than in the specialist's replica."""
        self.compiled()


def parser_limits() -> Any:
    """llguidance's default resource limits (lexer fuel, Earley items per step, grammar size),
    with terse errors: a verbose one would echo the row's own tokens to the client."""
    import llguidance

    return llguidance.LLParserLimits(verbose_errors=False)


class TokenConstraint:
    """One row's grammar state: which tokens may come next, and whether it is complete."""

    def __init__(self, matcher: Any, vocab_size: int, eos_ids: Iterable[int]) -> None:
        self._matcher = matcher
        self._vocab = vocab_size
        self._eos = sorted(eos_ids)

    def allowed(self, size: int) -> np.ndarray:
        """A boolean mask of `size` tokens (the model's logits, which may be longer than the
        tokenizer's vocabulary: the extra rows are never allowed): what the grammar accepts
        next, end of sequence only once the grammar is satisfied."""
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        n = min(size, self._vocab)
        mask = np.unpackbits(bits, count=n, bitorder="little").view(bool)
        if n < size:
            mask = np.concatenate([mask, np.zeros(size - n, dtype=bool)])
        self._raise_if_broken()
        if not mask.any():  # cannot happen for a valid grammar; never sample from nothing
            raise InvalidRequestError("the grammar allows no next token", param="response_format")
        return mask

    def restrict(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` with every token the grammar forbids at -inf."""
        return np.where(self.allowed(logits.shape[-1]), logits, logits.dtype.type(-np.inf))

    def accept(self, token: int) -> None:
        """Advance past the sampled token (end of sequence included)."""
        if token in self._eos:
            return
        if not self._matcher.consume_token(token):
            self._raise_if_broken()

    @property
    def complete(self) -> bool:
        """The grammar is satisfied and allows nothing more: the row is done."""
        return bool(self._matcher.is_stopped()) and not self._matcher.is_error()

    def _raise_if_broken(self) -> None:
        if self._matcher.is_error():
            raise InvalidRequestError(
                f"constrained decoding failed: {self._matcher.get_error()}",
                param="response_format",
            )


class GrammarCompiler:
    """An engine's grammar support: its tokenizer as llguidance reads it (built once, on the
    first constrained request: about 0.4 s for a 49k vocabulary), and new row constraints."""

    def __init__(self, hf_tokenizer: Any, eos_ids: Iterable[int], vocab_size: int | None = None):
        self._hf_tokenizer = hf_tokenizer
        self._eos = sorted(eos_ids)
        self._vocab_size = vocab_size
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                import llguidance.hf

                self._tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=self._eos or None
                )
            return self._tokenizer

    def start(self, grammar: Grammar) -> TokenConstraint:
        """A fresh constraint for one row; an unusable grammar is that request's 400 (the
        matcher checks the grammar as it builds it)."""
        import llguidance

        tokenizer = self._llg_tokenizer()
        matcher = llguidance.LLMatcher(
            tokenizer, grammar.unchecked(), log_level=0, limits=parser_limits()
        )
        if matcher.is_error():
            raise InvalidRequestError(
                f"unusable schema: {matcher.get_error()[:500]}", param=grammar.param
            )
        return TokenConstraint(matcher, tokenizer.vocab_size, self._eos)
