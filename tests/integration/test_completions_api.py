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
