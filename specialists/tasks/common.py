"""Pieces every task generator shares: seeded randomness, value pools, phrasing choice, records.

Generators are stdlib only and deterministic: the same seed gives the same files on any machine
(string seeds for `random.Random` are hashed with SHA-512, not Python's salted `hash`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from specialists.training.records import ChatRecord, Turn

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

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


class RecordMaker(Protocol[T_contra]):
    def __call__(
        self, rng: random.Random, item: T_contra, /, *, evaluation: bool
    ) -> ChatRecord: ...


def held_out_splits(
    make_record: RecordMaker[T],
    train_pool: Sequence[T],
    held_out_pool: Sequence[T],
    n_train: int,
    n_eval: int,
    seed: int,
) -> tuple[list[ChatRecord], list[ChatRecord]]:
    """(train, eval): train cycles through `train_pool`, eval through `held_out_pool` only,
    each from its own seeded stream (the eval split does not depend on `n_train`)."""
    train_rng, eval_rng = split_rng(seed, "train"), split_rng(seed, "eval")
    train = [
        make_record(train_rng, train_pool[i % len(train_pool)], evaluation=False)
        for i in range(n_train)
    ]
    held_out = [
        make_record(eval_rng, held_out_pool[i % len(held_out_pool)], evaluation=True)
        for i in range(n_eval)
    ]
    train_rng.shuffle(train)
    return train, held_out


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
