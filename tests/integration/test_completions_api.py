"""OpenAI's legacy `/v1/completions` against the real mesh with the official client."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(mesh: RunningMesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.base_url}/v1", api_key="unused", timeout=300)


def test_a_prompt_is_answered_as_a_text_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="mesh", prompt="Write a haiku about rain.", max_tokens=12, temperature=0
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text.strip() and completion.choices[0].finish_reason
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 12
    stream = client.completions.create(
        model="general", prompt="Say hello.", max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"echo": True}, "echo"), ({"prompt": ["a", "b"]}, "prompt"), ({"model": "nobody"}, "model")],
)
def test_what_the_route_cannot_do_is_a_clear_error(
    mesh: RunningMesh, fields: dict[str, object], param: str
) -> None:
    body = {"model": "general", "prompt": "Hi", **fields}
    response = httpx.post(f"{mesh.base_url}/v1/completions", json=body, timeout=60)
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["param"] == param


def test_logprobs_come_back_in_openai_shape_streamed_and_not(client: openai.OpenAI) -> None:
    options = {
        "model": "general",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    choice = client.chat.completions.create(**options).choices[0]  # type: ignore[call-overload]
    entries = choice.logprobs.content
    assert entries and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob for e in entries)
    stream = client.chat.completions.create(**options, stream=True)  # type: ignore[call-overload]
    chunks = [c.choices[0] for c in stream if c.choices]
    streamed = [e for c in chunks if c.logprobs for e in c.logprobs.content or []]
    assert [e.token for e in streamed] == [e.token for e in entries], "same tokens, same order"
    legacy = client.completions.create(
        model="general", prompt="Name a colour.", max_tokens=8, temperature=0, logprobs=2
    )
    assert legacy.choices[0].logprobs is not None
    assert legacy.choices[0].logprobs.tokens == [e.token for e in entries]


def test_logprobs_from_a_tool_specialist_are_refused_by_name(mesh: RunningMesh) -> None:
    body = {
        "model": "math",
        "messages": [{"role": "user", "content": "2 + 2"}],
        "logprobs": True,
    }
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "logprobs"
