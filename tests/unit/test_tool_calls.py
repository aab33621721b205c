"""Tool calling's pure parts: which grammar and prompt a request gets, how earlier calls and
results are rendered, and how a choice's text becomes OpenAI `tool_calls` (whole or streamed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from mesh.protocol import ChatCompletionRequest
from mesh.tool_calls import CLOSE, OPEN, ToolCallReader, parse_call

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
PICK_TIME = {"type": "function", "function": {"name": "get_time"}}
LOOKAHEAD = {"type": "string", "pattern": "(?=x)"}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
USER = [{"role": "user", "content": "Weather in Paris?"}]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": USER, **fields})


def test_the_choice_decides_the_mode_grammar_and_what_the_model_is_shown() -> None:
    auto = request(tools=[WEATHER, TIME])
    assert auto.tool_mode == "auto" and auto.needs == ["tools"]
    grammar = auto.grammar()
    assert grammar is not None and grammar.kind == "lark" and "TEXT" in (grammar.lark or "")
    shown = auto.chat()[0]
    assert shown["role"] == "system" and "get_weather" in shown["content"]
    named = request(tools=[WEATHER, TIME], tool_choice=PICK_TIME)
    assert named.tool_mode == "call" and "get_weather" not in named.chat()[0]["content"]
    assert "TEXT" not in (named.grammar().lark or "")  # type: ignore[union-attr]
    none = request(tools=[WEATHER], tool_choice="none")
    assert none.grammar() is None and none.needs == [] and none.chat()[0]["role"] == "user"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tools": [WEATHER, WEATHER]}, "names must be unique"),
        ({"tool_choice": "required"}, "only allowed when tools are given"),
        (
            {"tools": [WEATHER], "tool_choice": {**PICK_TIME, "function": {"name": "x"}}},
            "named 'x'",
        ),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "cannot be combined"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "should match pattern"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "string", "pattern": "(?=x)"},
                        },
                    }
                ]
            },
            "unusable schema",
        ),
        ({"functions": [{"name": "f"}]}, "functions is not supported"),
    ],
)
def test_unusable_tool_requests_are_refused_by_name(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        request(**fields)


def test_earlier_calls_and_results_are_rendered_as_the_model_writes_and_reads_them() -> None:
    body = request(
        messages=[
            *USER,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        ],
        tools=[WEATHER],
    )
    chat = body.chat()
    rendered = f'{OPEN}{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}{CLOSE}'
    assert chat[2] == {"role": "assistant", "content": rendered}
    assert chat[3]["role"] == "user" and chat[3]["content"].startswith(
        '<tool_response id="call_1">'
    )
    assert body.query() == "Weather in Paris?", "routing still reads the user's turn"


def test_a_complete_call_becomes_tool_calls_and_a_cut_one_stays_text() -> None:
    text = f'{OPEN}{{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}{CLOSE}'
    message, finish = ToolCallReader("call").message(text, "stop")
    assert finish == "tool_calls" and message["content"] is None
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    cut, finish = ToolCallReader("call").message(text[:20], "length")
    assert finish == "length" and cut["content"] == text[:20] and "tool_calls" not in cut
    assert parse_call(text[:-1]) is None


def test_streamed_auto_answers_hold_only_what_could_be_the_marker() -> None:
    reader = ToolCallReader("auto")
    assert reader.feed("<to") == [] and reader.feed("ol_") == []
    assert reader.feed('call>{"name": "get_time", "arguments": {}}') == []
    last, finish = reader.finish("stop") if reader.feed(CLOSE) == [] else ([], "")
    assert finish == "tool_calls" and last[0]["tool_calls"][0]["index"] == 0
    plain = ToolCallReader("auto")
    assert plain.feed("<") == [] and plain.feed("b>bold") == [{"content": "<b>bold"}]
    assert plain.feed(" text") == [{"content": " text"}]
    assert ToolCallReader("auto").finish("stop") == ([], "stop")
