"""Field extraction: a short text and a list of keys in, one compact JSON object out.

The answer has exactly the requested keys, in the requested order; values are copied from the text
(counts and amounts as JSON numbers), null when the text does not say. Training texts come from
`TRAIN_KINDS`; evaluation only from `HELD_OUT_KINDS` (new kinds of text, new keys, new layouts),
half of it asked in request phrasings training never shows.
"""

from __future__ import annotations

import json
import random

from specialists.tasks.common import chat_record, held_out_splits, pick_phrasing
from specialists.tasks.extract_kinds import HELD_OUT_KINDS, TRAIN_KINDS, Kind
from specialists.training.records import ChatRecord

METRIC = "json_fields"

SYSTEM_PROMPT = (
    "Extract the requested fields from the text. Reply with one JSON object with exactly "
    "those keys; copy values from the text; use null for a field the text does not give."
)

# Chosen by measurement: on 24 training-split texts the base scored 0.135 with this prompt
# against 0.05 with a longer rule list (it copied the example's keys and nested its objects).
BASE_SYSTEM_PROMPT = """Reply with only a flat one-line JSON object (no nesting) that has \
exactly the requested keys and no others. Copy each value from the text; use null if the text \
does not give it; write amounts and counts as numbers.
Example: text "Order 12 mugs for $30.50, ask for Ken Ito." with keys customer, quantity, total, \
phone gives {"customer": "Ken Ito", "quantity": 12, "total": 30.5, "phone": null}"""

REQUESTS: tuple[tuple[str, ...], tuple[str, ...]] = (
    (
        "{text}\n\nExtract these fields as JSON: {keys}",
        "Extract these fields as JSON: {keys}\n\n{text}",
        "Text:\n{text}\n\nFields: {keys}",
    ),
    (
        "Read the message below and give me {keys} as a JSON object.\n\n{text}",
        "{text}\n\nReturn JSON with the keys {keys}.",
    ),
)


def make_record(rng: random.Random, kind: Kind, *, evaluation: bool) -> ChatRecord:
    """One text of `kind` and a request for 3-5 of its keys (some may be absent: null)."""
    values = kind.make(rng)
    index = rng.randrange(len(kind.templates))
    template = kind.templates[index]
    text = template.format(**{key: shown for key, (shown, _) in values.items()})
    present = [key for key in kind.keys if "{" + key + "}" in template]
    keys = rng.sample(kind.keys, rng.randint(3, min(5, len(kind.keys))))
    if len(set(keys) & set(present)) < 2:  # ask mostly about what the text says
        keys = keys[:1] + [key for key in rng.sample(present, 3) if key != keys[0]][:2]
    keys.sort(key=kind.keys.index)
    answer = {key: values[key][1] if key in present else None for key in keys}
    request, phrasing = pick_phrasing(rng, *REQUESTS, evaluation=evaluation)
    user = request.format(text=text, keys=", ".join(keys))
    check = {"domain": kind.name, "template": f"{index}.{phrasing}"}
    return chat_record(SYSTEM_PROMPT, user, json.dumps(answer, ensure_ascii=False), check)


def make_splits(n_train: int, n_eval: int, seed: int) -> tuple[list[ChatRecord], list[ChatRecord]]:
    """(train, eval): train over `TRAIN_KINDS`, eval over `HELD_OUT_KINDS` only."""
    return held_out_splits(make_record, TRAIN_KINDS, HELD_OUT_KINDS, n_train, n_eval, seed)
