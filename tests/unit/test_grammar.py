"""Constrained decoding with llguidance on the real SmolLM2 tokenizer (no model): the mask
admits exactly what the grammar allows, a completed grammar ends the row, and an unusable
schema is the request's error. Random schemas are walked token by token and must validate."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from benchmarks.random_schemas import random_schemas
from registry import InvalidRequestError
from specialists.catalog import SMOLLM2_SOURCE
from specialists.engine import GenerationParams
from specialists.grammar import Grammar, GrammarCompiler
from specialists.sources import resolve_source

pytestmark = pytest.mark.slow  # reads the offline SmolLM2 tokenizer (a few seconds)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    source = resolve_source(SMOLLM2_SOURCE)
    return AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)


@pytest.fixture(scope="module")
def compiler(tokenizer: Any) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, {tokenizer.eos_token_id})


def test_the_mask_admits_the_schema_and_the_grammar_ends_the_row(
    tokenizer: Any, compiler: GrammarCompiler
) -> None:
    row = compiler.start(Grammar(kind="json_schema", json_schema=PERSON))
    first = row.allowed(len(tokenizer))
    assert first[tokenizer.encode('{"', add_special_tokens=False)[0]]
    assert not first[tokenizer.encode("Sure", add_special_tokens=False)[0]]
    assert not first[tokenizer.eos_token_id], "no end before the object is complete"
    for token in tokenizer.encode('{"name":"Al","age":3}', add_special_tokens=False):
        assert not row.complete
        assert row.allowed(len(tokenizer))[token]
        row.accept(token)
    assert row.complete


def test_logits_longer_than_the_vocabulary_never_sample_the_padding(
    compiler: GrammarCompiler, tokenizer: Any
) -> None:
    row = compiler.start(Grammar(kind="json_object"))
    logits = np.zeros(len(tokenizer) + 64, dtype=np.float32)
    logits[-1] = 100.0  # a padding row of the embedding the model likes best
    restricted = row.restrict(logits)
    assert np.isneginf(restricted[-64:]).all()
    assert int(restricted.argmax()) < len(tokenizer)


def test_unusable_or_oversized_schemas_are_the_requests_error(compiler: GrammarCompiler) -> None:
    with pytest.raises(InvalidRequestError, match="unusable schema") as raised:
        Grammar(kind="json_schema", json_schema={"type": "string", "pattern": "(?=a)"}).check()
    assert raised.value.param == "response_format"
    with pytest.raises(InvalidRequestError, match="the limit is"):
        compiler.start(Grammar(kind="json_schema", json_schema={"enum": ["x" * 70_000]}))


def test_a_grammar_drops_the_manifests_stops_but_keeps_the_requests() -> None:
    from registry.manifest import GenerationDefaults

    defaults = GenerationDefaults(stop=["\n\n"])
    assert GenerationParams.merge(defaults, stop=["END"]).stop == ["\n\n", "END"]
    grammar = Grammar(kind="json_object")
    assert GenerationParams.merge(defaults, stop=["END"], grammar=grammar).stop == ["END"]


def _walk(
    compiler: GrammarCompiler, tokenizer: Any, schema: dict[str, Any], seed: int, short: Any
) -> str:
    """A random token sequence the grammar allows, mostly of short tokens (structure rather
    than long words), ending as soon as the grammar may: a model that always obeys the mask."""
    rng = np.random.default_rng(seed)
    row = compiler.start(Grammar(kind="json_schema", json_schema=schema))
    eos = tokenizer.eos_token_id
    tokens: list[int] = []
    for _ in range(3000):
        allowed = row.allowed(len(tokenizer))
        if allowed[eos]:
            break
        preferred = allowed & short if rng.random() < 0.9 else allowed
        choices = np.flatnonzero(preferred if preferred.any() else allowed)
        token = int(rng.choice(choices))
        row.accept(token)
        tokens.append(token)
        if row.complete:
            break
    return str(tokenizer.decode(tokens))


def test_one_hundred_random_schemas_only_ever_yield_valid_json(
    compiler: GrammarCompiler, tokenizer: Any
) -> None:
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    short = np.array([len(piece or "") <= 2 for piece in pieces])
    for i, schema in enumerate(random_schemas(100, seed=7)):
        text = _walk(compiler, tokenizer, schema, i, short)
        jsonschema.validate(json.loads(text), schema)
