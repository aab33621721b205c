"""`/v1/embeddings`: the router's frozen encoder (all-MiniLM-L6-v2 by default) serving clients.

The frozen encoder, not the router's fine-tuned one: a client stores these vectors, so they must
not change when the router refits to the installed specialists. Inputs longer than the encoder
reads are refused (sentence-transformers would truncate them silently).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from registry.errors import InvalidRequestError, NotFoundError
from router.encoder import Encoder

ROUTED_ALIAS = "mesh"  # `model: "mesh"` means the mesh's own encoder, as for chat


class EmbeddingBatch(BaseModel):
    """Vectors for a list of texts, with what each one cost in the encoder's tokens."""

    model: str
    vectors: list[list[float]]
    tokens: list[int] = Field(description="Tokens per input, special tokens included.")


def encoder_name(encoder: Encoder) -> str:
    return str(getattr(encoder, "name", type(encoder).__name__))


def embed(encoder: Encoder, texts: list[str], model: str = ROUTED_ALIAS) -> EmbeddingBatch:
    """L2-normalised vectors for `texts`; an unknown `model` is a 404, an input longer than
    the encoder reads a 400 naming it."""
    name = encoder_name(encoder)
    if model not in (ROUTED_ALIAS, name):
        raise NotFoundError(
            f"The embedding model '{model}' is not served here. Available: {ROUTED_ALIAS}, {name}",
            param="model",
        )
    counts = getattr(encoder, "token_counts", None)
    tokens = counts(texts) if counts else [len(t.split()) for t in texts]
    limit = getattr(encoder, "max_tokens", None)
    for index, count in enumerate(tokens):
        if limit is not None and count > limit:
            raise InvalidRequestError(
                f"input[{index}] is {count} tokens; {name} reads at most {limit}", param="input"
            )
    vectors = encoder.encode(texts)
    return EmbeddingBatch(model=name, vectors=vectors.tolist(), tokens=tokens)
