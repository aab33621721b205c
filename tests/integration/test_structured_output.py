"""`response_format` against the real mesh, as clients use it: the official `openai` client
(create, stream and `parse` with a pydantic model) and LangChain's `with_structured_output`.
Output is held to the schema by constrained decoding, so it parses and validates every time;
requests go only to specialists declaring `structured_output`, else a 400 names the field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow

CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "email": {"type": "string", "maxLength": 60},
        "phone": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]},
    },
    "required": ["name", "email", "phone"],
    "additionalProperties": False,
}
SIGNATURE = "Extract name, email, phone as JSON.\n\nBest,\nAna Lee\nana.lee@example.com"


class Contact(BaseModel):
    name: str
    email: str


@pytest.fixture(scope="module")
def client(mesh: RunningMesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.base_url}/v1", api_key="unused", timeout=300)


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "contact", "schema": schema}}


def test_a_json_schema_answer_parses_and_validates(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="extract",
        messages=[{"role": "user", "content": SIGNATURE}],
        response_format=_format(CONTACT),  # type: ignore[arg-type]
        max_tokens=100,
    )
    answer = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(answer, CONTACT)
    assert completion.choices[0].finish_reason == "stop"


def test_a_streamed_json_answer_parses_too(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "Invent a contact card."}],
        response_format=_format(CONTACT),  # type: ignore[arg-type]
        max_tokens=100,
        temperature=0.8,
        seed=3,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), CONTACT)


def test_json_object_mode_and_the_clients_parse_helper(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "Give two colours as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=120,  # room to close the object: a cut one is not JSON (finish "length")
        temperature=0.0,
        seed=0,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    parsed = client.chat.completions.parse(
        model="extract",
        messages=[{"role": "user", "content": SIGNATURE}],
        response_format=Contact,
        max_tokens=80,
    )
    contact = parsed.choices[0].message.parsed
    assert isinstance(contact, Contact) and contact.name


def test_a_routed_request_goes_to_a_specialist_that_declares_the_feature(
    client: openai.OpenAI,
) -> None:
    completion = client.chat.completions.create(
        model="mesh",
        messages=[{"role": "user", "content": "What is 12 * 7? Answer as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=40,
    )
    assert completion.model != "math", "the math tool does not declare structured_output"
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    reason = (completion.model_extra or {})["mesh"]["decision"]["reason"]
    assert "math does not serve structured_output" in reason


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "math"}, "specialist 'math' does not serve structured_output"),
        ({"model": "mesh", "mesh": {"panel": ["general", "code"]}}, "not supported with a panel"),
    ],
)
def test_requests_no_specialist_can_honour_are_refused_by_name(
    mesh: RunningMesh, body: dict[str, Any], message: str
) -> None:
    request = {
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "response_format": {"type": "json_object"},
        **body,
    }
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=request, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "response_format" and message in error["message"]


def test_langchain_with_structured_output(mesh: RunningMesh) -> None:
    llm = ChatOpenAI(
        base_url=f"{mesh.base_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model="extract",
        max_tokens=80,  # type: ignore[call-arg]
        temperature=0,
        timeout=300,
    )
    contact = llm.with_structured_output(Contact, method="json_schema").invoke(SIGNATURE)
    assert isinstance(contact, Contact) and contact.email
    loose = llm.with_structured_output(method="json_mode").invoke(SIGNATURE)
    assert isinstance(loose, dict)
