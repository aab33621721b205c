"""Directive parsing on hostile text: it never raises, never obeys a directive the model was
shown (however it is re-spelled), and stays linear on brace floods."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specialists.delegation import (
    DIRECTIVE,
    MAX_PLANNED,
    PlannedAsk,
    parse_directives,
    strip_directives,
)

BOUNDED = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
FRAGMENTS = (
    '{"mesh_ask":', '{"mesh_ask": {', '"to": "math"', '"content": "2+2"', "{", "}", ",", ":",
    " ", "\n", '"', "\\", '{"to": "code", "content": "x"}', "mesh_ask", "}}",
)  # fmt: skip
soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join)
names = st.sampled_from(["math", "code", "writing", "Math", " math "])
contents = st.text(max_size=30)


def directive(to: str, content: str, *, style: int = 0) -> str:
    """The same directive in a few spellings a model might echo back."""
    if style == 1:
        return json.dumps({"mesh_ask": {"content": content, "to": to}}, ensure_ascii=False)
    if style == 2:
        return json.dumps({"mesh_ask": {"to": to, "content": content}}, separators=(",", ":"))
    return json.dumps({"mesh_ask": {"to": to, "content": content}})


def keys_in(text: str) -> set[tuple[str, str]]:
    """Every well-formed directive in a text, as the parser would compare them."""
    found = set()
    for match in DIRECTIVE.finditer(text):
        try:
            body = json.loads(match.group(0))["mesh_ask"]
            found.add((str(body["to"]).strip().lower(), "".join(str(body["content"]).split())))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def key(ask: PlannedAsk) -> tuple[str, str]:
    return ask.to.strip().lower(), "".join(ask.content.split())


@BOUNDED
@given(st.text(max_size=2_000) | soup, st.lists(st.text(max_size=200) | soup, max_size=3))
def test_parsing_never_raises_on_any_text(output: str, received: list[str]) -> None:
    asks = parse_directives(output, received)
    assert len(asks) <= MAX_PLANNED
    assert isinstance(strip_directives(output), str)


@BOUNDED
@given(soup, st.lists(soup, max_size=3))
def test_no_returned_directive_appears_in_what_was_received(
    output: str, received: list[str]
) -> None:
    shown = set().union(*(keys_in(text) for text in received))
    assert not {key(ask) for ask in parse_directives(output, received)} & shown


@BOUNDED
@given(names, contents, st.integers(0, 2), st.text(max_size=50), st.text(max_size=50))
def test_an_echoed_directive_is_ignored_however_it_is_spelled(
    to: str, content: str, style: int, before: str, after: str
) -> None:
    shown = f"{before}{directive(to, content)}{after}"
    echoed = f"Sure!\n{directive(to.upper(), content, style=style)}\n"
    assert parse_directives(echoed, [shown]) == []


def test_the_models_own_directives_are_kept_up_to_the_limit() -> None:
    output = "\n".join(directive("math", f"{n}*{n}") for n in range(10))
    asks = parse_directives(output, ["What is 2*2?"])
    assert [a.content for a in asks] == ["0*0", "1*1", "2*2"][:MAX_PLANNED]
    assert strip_directives(output) == ""


@pytest.mark.parametrize(
    "flood",
    [
        '{"mesh_ask":{' * 5_000,
        '{"mesh_ask": {' + " " * 30_000,
        "{ " * 16_000,
        '{"mesh_ask": {"to": "math", "content": "' + "a" * 30_000,
        '{"mesh_ask":{}}' * 2_000,
        directive("math", "2+2") * 1_000,
    ],
)
def test_brace_floods_parse_in_linear_time(flood: str) -> None:
    started = time.perf_counter()
    parse_directives(flood, [flood])
    strip_directives(flood)
    assert time.perf_counter() - started < 0.5
