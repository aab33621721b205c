"""Deciding when a specialist asks another, and feeding the answers back safely.

A 135M model will not emit tool calls reliably, so the runtime plans the obvious delegations
itself (arithmetic in the request goes to `math`). Models that can, may also emit a directive
on its own line:

    {"mesh_ask": {"to": "math", "content": "17*23"}}

Directives are read only from the specialist's own output, and one that also appears in
anything it received (the user's message, quoted data) is ignored, verbatim or re-spelled with
other spacing, key order or escapes: a user cannot smuggle a delegation in by getting the model
to echo it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from specialists.messages import Trust, quote_data
from specialists.tools.math import DECLINE, find_expressions

# No nested quantifiers and no braces inside: each match attempt stops at the next brace, so
# scanning is linear even on '{"mesh_ask":{' * 5000.
DIRECTIVE = re.compile(r'\{\s*"mesh_ask"\s*:\s*\{[^{}]*\}\s*\}')
MAX_PLANNED = 3
MAX_DIRECTIVE_SCAN = 200  # directives looked at in one output; a model asks for a few at most

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
        for part in dict.fromkeys(find(text))  # the same question once
    ]
    return planned[:MAX_PLANNED]


def parse_directives(output: str, received: list[str]) -> list[PlannedAsk]:
    """Directives in the model's own output that did not come from what it received."""
    squashed = [_squash(text) for text in received]
    echoed = {_key(directive) for text in received for directive in _directives(text)}
    found: list[PlannedAsk] = []
    for match in itertools.islice(DIRECTIVE.finditer(output), MAX_DIRECTIVE_SCAN):
        raw = _squash(match.group(0))
        directive = _parse_directive(match.group(0))
        if directive is None or _key(directive) in echoed or any(raw in t for t in squashed):
            continue
        found.append(directive)
        if len(found) == MAX_PLANNED:
            break
    return found


def strip_directives(output: str) -> str:
    """The output without directive lines (the user sees the answer, not the plumbing)."""
    return DIRECTIVE.sub("", output).strip()


def _directives(text: str) -> list[PlannedAsk]:
    """All of them, uncapped: padding received text with decoys must not hide the real one."""
    parsed = (_parse_directive(match.group(0)) for match in DIRECTIVE.finditer(text))
    return [directive for directive in parsed if directive is not None]


def _parse_directive(raw: str) -> PlannedAsk | None:
    try:
        directive = _Directive.model_validate(json.loads(raw)["mesh_ask"])
    except (ValueError, TypeError, KeyError, ValidationError):
        return None
    return PlannedAsk(to=directive.to, content=directive.content)


def _key(directive: PlannedAsk) -> tuple[str, str]:
    """What makes two directives the same request, whatever their spelling."""
    return directive.to.strip().lower(), _squash(directive.content)


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
    """Make sure exact tool results reach the user even if a small model garbles them.

    A tool that declined ("cannot evaluate: ...") has no exact result to cite.
    """
    missing = [
        f"{asked} = {result}"
        for source, asked, result in exact
        if not result.startswith(DECLINE) and _value(result) not in answer
    ]
    if not missing:
        return answer
    sources = sorted({source for source, _, _ in exact})
    return f"{answer.rstrip()}\n\n(exact, from {', '.join(sources)}: {'; '.join(missing)})"


def _value(result: str) -> str:
    """The number to look for in the answer: '391', 'x = 4' -> '4', '≈ 1.99E+3010 (3011 digits)'."""
    exact, _, approx = result.split("=")[-1].partition("\u2248")
    return exact.strip() or approx.strip()


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)
