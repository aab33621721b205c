"""Tool calling against the real mesh, as clients use it: the official `openai` client (every
`tool_choice`, streamed and not, a follow-up turn with `role: tool`) and LangChain's
`bind_tools`. Arguments are held to the tool's schema by constrained decoding."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow

WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": WEATHER_ARGS,
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now in a time zone."},
}
CLIENT_MATH = {"type": "function", "function": {"name": "math"}}  # clashes with the specialist
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def client(mesh: RunningMesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.base_url}/v1", api_key="unused", timeout=300)


def _call(client: openai.OpenAI, **options: Any) -> Any:
    settings = {
        "model": "general",
        "messages": ASK,
        "tools": [WEATHER, CLOCK],
        "max_tokens": 100,  # a call is held to its schema; the budget must fit it
        "temperature": 0,
    }
    return client.chat.completions.create(**{**settings, **options})


def test_required_returns_a_call_whose_arguments_validate(client: openai.OpenAI) -> None:
    choice = _call(client, tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    if call.function.name == "get_weather":
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_ARGS)


def test_a_named_function_is_the_one_called_streamed_too(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    (call,) = _call(client, tool_choice=named).choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_ARGS)
    chunks = list(_call(client, tool_choice=named, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed = [t for d in deltas for t in d.tool_calls or []]
    assert streamed and streamed[0].function.name == "get_weather"
    arguments = "".join(t.function.arguments or "" for t in streamed)
    jsonschema.validate(json.loads(arguments), WEATHER_ARGS)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_auto_answers_text_or_a_valid_call_and_none_never_calls(client: openai.OpenAI) -> None:
    auto = _call(client, tool_choice="auto").choices[0]
    if auto.finish_reason == "tool_calls":
        assert auto.message.tool_calls[0].function.name in ("get_weather", "get_time")
    else:
        assert auto.message.content and not auto.message.tool_calls
    none = _call(client, tool_choice="none").choices[0]
    assert none.finish_reason in ("stop", "length") and not none.message.tool_calls


def test_a_follow_up_with_the_tools_result_is_answered(client: openai.OpenAI) -> None:
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "21 degrees and sunny"},
    ]
    answer = _call(client, messages=messages, tool_choice="none").choices[0]
    assert answer.message.content and answer.message.content.strip()


def test_tool_requests_only_reach_specialists_declaring_tools(mesh: RunningMesh) -> None:
    body = {"model": "writing", "messages": ASK, "tools": [WEATHER]}
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools" and "does not serve tools" in error["message"]


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str = Field(max_length=40)


def test_langchain_bind_tools_invoke_and_stream(mesh: RunningMesh) -> None:
    llm = ChatOpenAI(
        base_url=f"{mesh.base_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model="general",
        max_tokens=60,  # type: ignore[call-arg]
        temperature=0,
        timeout=300,
    )
    bound = llm.bind_tools([GetWeather], tool_choice="GetWeather")
    message = bound.invoke("Weather in Lima?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls and message.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)
    chunks = list(bound.stream("Weather in Oslo?"))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert total.tool_calls and total.tool_calls[0]["name"] == "GetWeather"


def _trace(completion: Any) -> list[dict[str, Any]]:
    return list((completion.model_extra or {})["mesh"]["trace"])


def test_a_specialist_offered_as_a_tool_is_asked_and_traced(client: openai.OpenAI) -> None:
    """The planner (general) must call `math` through the tool interface; the mesh asks it
    (traced as kind 'tool', bounded like any ask) and general answers with the result."""
    options = {
        "model": "general",
        "messages": [{"role": "user", "content": "What is 17 * 23? Use the calculator."}],
        "tool_choice": {"type": "function", "function": {"name": "math"}},
        "max_tokens": 120,
        "temperature": 0,
        "extra_body": {"mesh": {"tools": ["math"]}},
    }
    completion = client.chat.completions.create(**options)
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert choice.message.content and choice.message.content.strip()
    (event,) = [e for e in _trace(completion) if e["kind"] == "tool"]
    assert event["from"] == "general" and event["to"] == "math" and event["hop"] == 1
    streamed = list(client.chat.completions.create(**options, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text.strip()
    events = [
        (c.model_extra or {}).get("mesh", {}).get("trace_event") for c in streamed if not c.choices
    ]
    assert any(e and e["kind"] == "tool" and e["to"] == "math" for e in events)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "general", "mesh": {"tools": ["nobody"]}}, 404, "mesh"),
        ({"model": "writing", "mesh": {"tools": ["math"]}}, 400, "tools"),
        ({"model": "general", "n": 2, "mesh": {"tools": ["math"]}}, 400, "n"),
        ({"model": "general", "tools": [CLIENT_MATH], "mesh": {"tools": ["math"]}}, 400, "mesh"),
    ],
)
def test_specialist_tools_that_cannot_be_offered_are_refused(
    mesh: RunningMesh, body: dict[str, Any], status: int, param: str
) -> None:
    request = {"messages": ASK, **body}
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=request, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
