from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mesh.protocol import ChatCompletionRequest
from registry.errors import MeshError, NotFoundError
from registry.manifest import GenerationDefaults
from specialists.engine import GenerationParams, truncate_at_stop


def test_empty_messages_rejected() -> None:
    with pytest.raises(ValidationError, match="at least one message"):
        ChatCompletionRequest(model="mesh", messages=[])


def test_routed_and_pinned_models() -> None:
    msg = [{"role": "user", "content": "hi"}]
    assert ChatCompletionRequest(model="mesh", messages=msg).routed
    assert ChatCompletionRequest(model="mesh/auto", messages=msg).routed
    assert not ChatCompletionRequest(model="code", messages=msg).routed


def test_content_parts_and_developer_role() -> None:
    request = ChatCompletionRequest(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}],
            },
        ]
    )
    assert request.query() == "hello there"
    assert request.chat()[0] == {"role": "system", "content": "be brief"}


def test_params_clamped_to_manifest_limits() -> None:
    defaults = GenerationDefaults(max_tokens=100, temperature=0.3, stop=["###"])
    params = GenerationParams.merge(defaults, max_tokens=5000, stop=["END"])
    assert params.max_tokens == 100
    assert params.temperature == 0.3
    assert params.stop == ["###", "END"]
    assert GenerationParams.merge(defaults, temperature=0.0).temperature == 0.0


def test_truncate_at_first_stop_sequence() -> None:
    assert truncate_at_stop("abc END def ###", ["###", "END"]) == ("abc ", True)
    assert truncate_at_stop("no stop here", ["###"]) == ("no stop here", False)
    assert truncate_at_stop("text", []) == ("text", False)


def test_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(NotFoundError("gone", param="model")))
    assert isinstance(error, MeshError)
    assert (error.status_code, error.message, error.param) == (404, "gone", "model")


MESSAGES = [{"role": "user", "content": "hi"}]


def _refusal(**fields: Any) -> str:
    """The first validation error of a request with `fields`: 'loc: message'."""
    with pytest.raises(ValidationError) as raised:
        ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})
    first = raised.value.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"seed": 2**64}, "seed: Input should be less than or equal to"),
        ({"seed": -(2**63) - 1}, "seed: Input should be greater than or equal to"),
        ({"seed": True}, "seed: Input should be a valid integer"),
        ({"n": 9}, "n: Value error, n must be between 1 and 8"),
        ({"n": 0}, "n: Value error, n must be between 1 and 8"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop: Value error, at most 4 stop sequences"),
        ({"stop": ""}, "stop: Value error, stop sequences must not be empty"),
        ({"stop": ["ok", "x" * 65]}, "stop: Value error, stop sequences are at most 64"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": 10**7}, "max_tokens: Input should be less than or equal to"),
        ({"user": "u" * 257}, "user: String should have at most 256"),
        ({"presence_penalty": 2.5}, "presence_penalty: Input should be less than or equal to 2"),
        ({"presence_penalty": 0.5}, "presence_penalty: Value error, presence_penalty is not"),
        ({"top_logprobs": 2}, ": Value error, top_logprobs: needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs: Input should be less than"),
        ({"tools": [{"type": "function"}]}, "tools.0.function: Field required"),
        ({"response_format": {"type": "xml"}}, "response_format.type: Input should be"),
        ({"response_format": {"type": "json_schema"}}, "response_format: Value error, type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name: String should match pattern",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "string", "pattern": "(?=a)b"},
                    },
                }
            },
            "response_format: Value error, unusable schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"enum": ["a" * 70_000]}},
                }
            },
            "response_format: Value error, the schema is",
        ),
    ],
)
def test_out_of_range_and_unhonoured_fields_are_refused_by_name(
    fields: dict[str, object], expected: str
) -> None:
    assert _refusal(**fields).startswith(expected)


def test_extreme_int64_seeds_and_no_op_values_are_accepted() -> None:
    for seed in (-(2**63), 2**63 - 1, -1):
        assert ChatCompletionRequest(messages=MESSAGES, seed=seed).seed == seed
    request = ChatCompletionRequest.model_validate(
        {
            "messages": MESSAGES,
            "n": 1,
            "stop": ["a", "b", "c", "d"],
            "logprobs": False,
            "tools": [],
            "response_format": {"type": "text"},
            "presence_penalty": 0,
            "user": "alice",
            "stream_options": {"include_usage": True},
            "metadata": {"team": "x"},
            "store": False,
            "some_future_field": 1,
        }
    )
    assert request.stop_list() == ["a", "b", "c", "d"]


def test_non_text_content_parts_are_refused_not_dropped() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    refusal = _refusal(messages=[{"role": "user", "content": [image]}])
    assert refusal.startswith("messages.0.content: Value error, only text content parts")


def test_engine_params_bound_seed_and_stops() -> None:
    with pytest.raises(ValidationError, match="seed"):
        GenerationParams(seed=2**64)
    with pytest.raises(ValidationError, match="stop"):
        GenerationParams(stop=["x" * 257])
    assert GenerationParams(seed=-(2**63)).seed == -(2**63)


def test_lone_surrogates_are_refused_at_the_boundary() -> None:
    """JSON lets '\\udc00' through; tokenizers, Redis and error bodies cannot encode it."""
    import pydantic

    from mesh.protocol import ChatCompletionRequest
    from registry import parse_manifest
    from registry.errors import ManifestError
    from tests.conftest import manifest_data

    bodies = [
        {"model": "general", "messages": [{"role": "user", "content": "h\udc00i"}]},
        {"model": "nope\udc00", "messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}], "stop": ["\udc00"]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
    ]
    for body in bodies:
        try:
            ChatCompletionRequest.model_validate(body)
        except pydantic.ValidationError as error:
            assert "lone surrogate" in str(error)
        else:
            raise AssertionError(f"accepted {body}")
    try:
        parse_manifest(manifest_data(description="bad \udc00 text"))
    except ManifestError as error:
        assert "lone surrogate" in error.message
    else:
        raise AssertionError("a manifest with a lone surrogate was accepted")


def test_a_check_across_fields_still_names_its_field_in_the_error() -> None:
    """Model-level checks (tools with tool_choice, top_logprobs with logprobs) have no field
    location; the 400 takes its `param` from the message's leading field name."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mesh.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/chat")
    async def chat(body: ChatCompletionRequest) -> dict[str, str]:
        return {"ok": "yes"}

    client = TestClient(app)
    tool = {"type": "function", "function": {"name": "f"}}
    for body, param in (
        ({"tools": [tool, tool]}, "tools"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"n": 99}, "n"),
    ):
        response = client.post("/chat", json={"messages": MESSAGES, **body})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == param and error["message"].startswith(f"{param}: ")
