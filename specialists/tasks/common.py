"""Pieces every task generator shares: seeded randomness, value pools, phrasing choice, records.

Generators are stdlib only and deterministic: the same seed gives the same files on any machine
(string seeds for `random.Random` are hashed with SHA-512, not Python's salted `hash`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

from specialists.training.records import ChatRecord, Turn

T = TypeVar("T")

# Chance that an evaluation item uses one of the phrasings held out of training (the rest use
# training phrasings, so the held-out part measures both new wording and new structure).
HELD_OUT_PHRASING = 0.5

FIRST_NAMES = (
    "Alice", "Omar", "Priya", "Chen", "Lucas", "Fatima", "Noah", "Elena", "Kofi", "Mei",
    "Diego", "Hana", "Ivan", "Zara", "Tomas", "Amara", "Leo", "Sofia", "Yusuf", "Nina",
    "Jonas", "Aiko", "Rafael", "Ingrid",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Khan", "Patel", "Wang", "Silva", "Haddad", "Brown", "Rossi", "Mensah", "Lin",
    "Garcia", "Sato", "Petrov", "Ali", "Becker", "Okafor", "Moreau", "Novak", "Cohen", "Dubois",
    "Larsen", "Kim", "Ortega", "Walsh",
)  # fmt: skip


def split_rng(seed: int, split: str) -> random.Random:
    """An independent, reproducible stream per split, so train and eval never share draws."""
    return random.Random(f"{seed}:{split}")


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def pick_phrasing(
    rng: random.Random, train: Sequence[T], held_out: Sequence[T], *, evaluation: bool
) -> tuple[T, str]:
    """A phrasing and its id ("t2" for training phrasing 2, "h0" for held-out phrasing 0).
    Training draws only training phrasings; evaluation draws a held-out one half the time."""
    if evaluation and held_out and rng.random() < HELD_OUT_PHRASING:
        index = rng.randrange(len(held_out))
        return held_out[index], f"h{index}"
    index = rng.randrange(len(train))
    return train[index], f"t{index}"


def chat_record(
    system: str, user: str, answer: str, check: dict[str, Any] | None = None
) -> ChatRecord:
    return ChatRecord(
        messages=[
            Turn(role="system", content=system),
            Turn(role="user", content=user),
            Turn(role="assistant", content=answer),
        ],
        check=check or {},
    )


def domains_in(records: Sequence[ChatRecord]) -> set[str]:
    """The structural units (SQL schemas, text kinds) a split was built from."""
    return {str(r.check.get("domain")) for r in records}


def structure_overlap(train: Sequence[ChatRecord], held_out: Sequence[ChatRecord]) -> set[str]:
    """Domains that occur in both splits; empty when the evaluation is held out by structure."""
    return domains_in(train) & domains_in(held_out)
