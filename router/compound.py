"""Compound questions: "What is 17*23? Then write a haiku about it." asks two specialists.

`split_parts` cuts a query where people join two requests: a sentence end followed by another
sentence, or a joining phrase ("then", "and then", "and also", "after that", "also", "plus").
It never cuts at a bare "and" ("rock and roll", "salt and pepper"), and a piece of fewer than
`MIN_WORDS` words stays with its neighbour ("Thanks.", "Please."). `Router` then routes every
piece and calls the query compound only when at least two pieces confidently belong to
different specialists (`compound_parts`); otherwise the whole query routes as before.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

MAX_PARTS = 3
MIN_WORDS = 3
MAX_CHARS = 2_000  # longer texts are documents, not requests to split

# A joining phrase after a clause ("..., then write", "... and also tell me").
_JOINER = re.compile(
    r"(?:,|;|:)?\s+(?:and\s+then|and\s+also|after\s+that|then|also|plus)\s*[,:]?\s+",
    re.IGNORECASE,
)
# A sentence end followed by the next sentence.
_SENTENCE = re.compile(r"(?<=[.?!;])\s+(?=\S)")
# A joining word that starts a sentence ("Then write ...", "Also, ...").
_LEADING = re.compile(
    r"^(?:and\s+then|and\s+also|after\s+that|then|also|plus|and|next|finally|first)\b[,:]?\s*",
    re.IGNORECASE,
)


class DecisionPart(BaseModel):
    """One piece of a compound query and the specialist it routes to."""

    text: str
    specialist: str
    score: float = Field(description="The piece's top score (same scale as the decision's).")


def split_parts(text: str) -> list[str]:
    """The query's pieces in order ([text] when it has one); at most `MAX_PARTS`."""
    if len(text) > MAX_CHARS:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        pieces.extend(_JOINER.split(sentence))
    cleaned = [kept for piece in pieces if (kept := _LEADING.sub("", piece).strip())]
    merged: list[str] = []
    for piece in cleaned:
        if merged and (len(piece.split()) < MIN_WORDS or len(merged[-1].split()) < MIN_WORDS):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    if len(merged) > MAX_PARTS:
        merged = [*merged[: MAX_PARTS - 1], " ".join(merged[MAX_PARTS - 1 :])]
    return merged or [text]


def compound_parts(pieces: list[tuple[str, str | None, float]]) -> list[DecisionPart] | None:
    """Pieces (text, confident specialist or None, score) -> the parts to answer, or None when
    the query is not compound. Neighbouring pieces of one specialist are joined; a piece no
    specialist is confident about joins the part before it (or after it, when first)."""
    parts: list[DecisionPart] = []
    pending = ""
    for text, specialist, score in pieces:
        if specialist is None:
            if parts:
                parts[-1] = parts[-1].model_copy(update={"text": f"{parts[-1].text} {text}"})
            else:
                pending = f"{pending} {text}".strip()
            continue
        if parts and parts[-1].specialist == specialist:
            last = parts[-1]
            parts[-1] = last.model_copy(
                update={"text": f"{last.text} {text}", "score": max(last.score, score)}
            )
        else:
            parts.append(
                DecisionPart(text=f"{pending} {text}".strip(), specialist=specialist, score=score)
            )
            pending = ""
    return parts if len(parts) >= 2 else None
