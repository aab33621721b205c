"""`/v1/embeddings`' pure parts: what a body may ask for, and the encoder's limits."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from mesh.protocol import MAX_EMBEDDING_INPUTS, EmbeddingRequest, embedding_body
from registry.errors import InvalidRequestError, NotFoundError
from router.embeddings import EmbeddingBatch, embed


class WordEncoder:
    """Two-dimensional vectors; a token per word plus the two special tokens."""

    name = "tiny-encoder"
    max_tokens = 6

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(text.split()) + 2 for text in texts]

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": [1, 2, 3]}, "token arrays"),
        ({"input": [[1, 2], [3]]}, "token arrays"),
        ({"input": []}, "at least one"),
        ({"input": ["fine", "  "]}, "must not be empty"),
        ({"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, f"at most {MAX_EMBEDDING_INPUTS}"),
        ({"input": "x", "dimensions": 64}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_bodies_are_refused_by_name(body: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EmbeddingRequest.model_validate(body)


def test_one_text_or_many() -> None:
    assert EmbeddingRequest.model_validate({"input": "hi"}).texts() == ["hi"]
    assert EmbeddingRequest.model_validate({"input": ["a", "b"]}).texts() == ["a", "b"]


def test_embed_counts_tokens_and_names_the_model() -> None:
    batch = embed(WordEncoder(), ["one two", "three"])
    assert batch.model == "tiny-encoder" and batch.tokens == [4, 3]
    assert np.allclose(np.linalg.norm(np.array(batch.vectors), axis=1), 1.0)
    assert embed(WordEncoder(), ["x"], model="tiny-encoder").model == "tiny-encoder"


def test_an_input_longer_than_the_encoder_reads_is_refused_not_truncated() -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[1\] is 7 tokens; tiny-encoder"):
        embed(WordEncoder(), ["short", "one two three four five"])


def test_an_unknown_embedding_model_is_a_404_naming_the_available_ones() -> None:
    with pytest.raises(NotFoundError, match="Available: mesh, tiny-encoder"):
        embed(WordEncoder(), ["x"], model="text-embedding-3-small")


def test_base64_is_little_endian_float32_as_openai_clients_read_it() -> None:
    batch = EmbeddingBatch(model="m", vectors=[[0.5, -0.25]], tokens=[3])
    body = embedding_body(batch, "base64")
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == [0.5, -0.25]
    assert embedding_body(batch, "float")["data"][0]["embedding"] == [0.5, -0.25]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
