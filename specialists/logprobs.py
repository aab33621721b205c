"""Token log-probabilities (OpenAI's `logprobs` / `top_logprobs`) from one row of raw logits,
shared by the decoders (`specialists.decoding`, `specialists.onnx_batching`).

The values are "raw", as vLLM reports them by default: log_softmax of the model's own logits
for the step, before repetition penalty, temperature, top_p and the grammar mask. They are
computed only for rows that ask (`GenerationParams.logprobs` not None).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection
from functools import cache
from typing import Any

import numpy as np

from specialists.engine import TokenLogprob, TopLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback
# Each tokenizer's token texts and bytes by id, filled as tokens are reported.
_texts: weakref.WeakKeyDictionary[Any, dict[int, tuple[str, list[int]]]] = (
    weakref.WeakKeyDictionary()
)


def sampled_logprobs(
    logits: Any, token: int, top: int | None, tokenizer: Any, eos_ids: Collection[int]
) -> list[TokenLogprob]:
    """A decode step's entry for `TextDelta.logprobs`: none when the row did not ask (`top` is
    None) or sampled end of sequence (OpenAI reports no entry for it). `logits` is the row's
    raw logits, numpy or torch."""
    if top is None or token in eos_ids:
        return []
    if hasattr(logits, "detach"):  # a torch row, possibly on an accelerator
        logits = logits.detach().float().cpu().numpy()
    return [token_logprob(logits, token, top, tokenizer)]


def token_logprob(logits: np.ndarray, token: int, top: int, tokenizer: Any) -> TokenLogprob:
    """`token`'s log-probability under `logits` and the `top` most likely tokens, most likely
    first (ties: the lower id first, as argmax picks)."""
    scores = np.asarray(logits, dtype=np.float64).reshape(-1)
    peak = scores.max()
    logprobs = scores - (peak + np.log(np.exp(scores - peak).sum()))
    best: list[TopLogprob] = []
    top = min(top, logprobs.size)
    if top > 0:
        ids = np.argpartition(-logprobs, top - 1)[:top]
        ids = ids[np.lexsort((ids, -logprobs[ids]))]
        best = [_entry(TopLogprob, tokenizer, int(i), logprobs[i]) for i in ids]
    return _entry(TokenLogprob, tokenizer, token, logprobs[token], top_logprobs=best)


def _entry(kind: Any, tokenizer: Any, token: int, logprob: Any, **more: Any) -> Any:
    text, raw = token_text(tokenizer, token)
    return kind(token=text, logprob=float(logprob), bytes=raw, **more)


def token_text(tokenizer: Any, token: int) -> tuple[str, list[int]]:
    """A token's text and its bytes. A token holding part of a character decodes to U+FFFD;
    its bytes are then its own (byte-level BPE or SentencePiece byte fallback) when the
    tokenizer's vocabulary says them."""
    try:
        known = _texts.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        known = {}
    found = known.get(token)
    if found is None:
        text = tokenizer.decode([token])
        raw = None
        if "\ufffd" in text and hasattr(tokenizer, "convert_ids_to_tokens"):
            raw = _piece_bytes(tokenizer.convert_ids_to_tokens(token))
        found = known[token] = (text, raw if raw is not None else list(text.encode("utf-8")))
    return found


def _piece_bytes(piece: Any) -> list[int] | None:
    """The bytes a vocabulary entry stands for, when it says them."""
    if not isinstance(piece, str) or not piece:
        return None
    if match := _BYTE_TOKEN.fullmatch(piece):
        return [int(match.group(1), 16)]
    table = byte_decoder()
    if all(char in table for char in piece):
        return [table[char] for char in piece]
    return None


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable character standing for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}
