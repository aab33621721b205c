"""Deciding when a specialist asks another, and feeding the answers back safely.

A 135M model will not emit tool calls reliably, so the runtime plans the obvious delegations
itself (arithmetic in the request goes to `math`). Models that can, may also emit a directive
on its own line:

    {"mesh_ask": {"to": "math", "content": "17*23"}}

Directives are read only from the specialist's own output, and one that also appears in
anything it received (the user's message, quoted data) is ignored: a user cannot smuggle a
delegation in by getting the model to echo it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from specialists.messages import Trust, quote_data
from specialists.tools.math import find_expressions

DIRECTIVE = re.compile(r'\{\s*"mesh_ask"\s*:\s*\{[^{}]*\}\s*\}')
MAX_PLANNED = 3

# receiver name -> finds what in a request that receiver should handle
PLANNERS: dict[str, Callable[[str], list[str]]] = {"math": find_expressions}


class PlannedAsk(BaseModel):
    to: str
    content: str


class _Directive(BaseModel):
    to: str
    content: str


def plan(text: str, can_message: list[str]) -> list[PlannedAsk]:
    """Delegations the runtime makes on the specialist's behalf, before it answers."""
    planned = [
        PlannedAsk(to=receiver, content=part)
        for receiver, find in PLANNERS.items()
        if receiver in can_message
        for part in find(text)
    ]
    return planned[:MAX_PLANNED]


def parse_directives(output: str, received: list[str]) -> list[PlannedAsk]:
    """Directives in the model's own output that did not come from what it received."""
    found = []
    for match in DIRECTIVE.finditer(output):
        raw = match.group(0)
        if any(_squash(raw) in _squash(text) for text in received):
            continue
        try:
            directive = _Directive.model_validate(json.loads(raw)["mesh_ask"])
        except (ValueError, ValidationError):
            continue
        found.append(PlannedAsk(to=directive.to, content=directive.content))
    return found[:MAX_PLANNED]


def strip_directives(output: str) -> str:
    return DIRECTIVE.sub("", output).strip()


def with_data(messages: list[dict[str, str]], blocks: list[str]) -> list[dict[str, str]]:
    """Append quoted data to the last user turn; the system prompt is never touched."""
    if not blocks:
        return messages
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        return [*messages, {"role": "user", "content": "\n\n".join(blocks)}]
    updated = dict(messages[last_user])
    updated["content"] = updated["content"] + "\n\n" + "\n\n".join(blocks)
    return [*messages[:last_user], updated, *messages[last_user + 1 :]]


def data_block(source: str, trust: Trust, asked: str, answer: str) -> str:
    return quote_data(source, trust, f"{asked} -> {answer}")


def cite_missing(answer: str, exact: list[tuple[str, str, str]]) -> str:
    """Make sure exact tool results reach the user even if a small model garbles them."""
    missing = [
        f"{asked} = {result}" for source, asked, result in exact if _value(result) not in answer
    ]
    if not missing:
        return answer
    sources = sorted({source for source, _, _ in exact})
    return f"{answer.rstrip()}\n\n(exact, from {', '.join(sources)}: {'; '.join(missing)})"


def _value(result: str) -> str:
    return result.split("=")[-1].split("\u2248")[0].strip()


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)
