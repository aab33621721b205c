"""A third-party engine, installed as a package beside the mesh (tests/plugins/echo_engine, its
`mesh.engines` entry point), is used from a published manifest by name; a name no installed
package registers is refused at publish, before anything is stored."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import manifest_data
from tests.integration.conftest import ADMIN_TOKEN, RunningMesh, get_json, wait_for

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
QUESTION = "plugins plug in by name"


def echo_manifest(engine: str = "echo") -> dict:
    return manifest_data(
        name="echoer",
        owner="plugin-team",
        description="Repeats what it is told, through the test plugin's engine.",
        model={"engine": engine, "source": "org/no-weights"},
        resources={"num_cpus": 0.05},
    )


def test_a_plugin_engine_serves_a_published_specialist(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/specialists"
    created = httpx.post(url, json=echo_manifest(), headers=ADMIN, timeout=60)
    assert created.status_code == 201, created.text
    try:
        models = lambda: {m["id"] for m in get_json(f"{mesh.base_url}/v1/models")["data"]}  # noqa: E731
        wait_for(lambda: "echoer" in models(), 180, "echoer live")
        body = {"model": "echoer", "messages": [{"role": "user", "content": QUESTION}]}
        answer = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == QUESTION

        chunks = []
        with httpx.stream(
            "POST",
            f"{mesh.base_url}/v1/chat/completions",
            json={**body, "stream": True, "max_tokens": 2},
            timeout=60,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line.removeprefix("data: ")))
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        text = "".join(choice["delta"].get("content") or "" for choice in choices)
        assert text == "plugins plug", "max_tokens reaches a plugin engine"
        assert choices[-1]["finish_reason"] == "length"
    finally:
        httpx.delete(f"{url}/echoer/install", headers=ADMIN, timeout=60)


def test_an_unregistered_engine_is_refused_at_publish(mesh: RunningMesh) -> None:
    url = f"{mesh.base_url}/v1/specialists"
    refused = httpx.post(url, json=echo_manifest("no-such-engine"), headers=ADMIN, timeout=60)
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert "model.engine: unknown engine 'no-such-engine'" in message
    assert "echo" in message and "transformers" in message, "the known engines are named"
    path = httpx.post(url, json=echo_manifest("mesh_echo_engine:EchoEngine"), headers=ADMIN)
    assert path.status_code == 400 and "model.engine" in path.json()["error"]["message"]
    assert httpx.get(f"{url}/echoer", timeout=30).status_code in (200, 404)
