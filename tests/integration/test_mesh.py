"""End to end through HTTP against one running mesh: real Ray Serve, Redis and models."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from typer.testing import CliRunner

from mesh.cli import app
from tests.integration.conftest import RunningMesh, get_json, wait_for

pytestmark = pytest.mark.slow
SHORT = {"max_tokens": 24, "temperature": 0.0}


@pytest.fixture(scope="module")
def client(mesh: RunningMesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.base_url}/v1", api_key="unused", timeout=300)


def _mesh_info(completion: object) -> dict:
    extra = completion.model_extra or {}  # type: ignore[attr-defined]
    return dict(extra["mesh"])


def test_routed_answer_is_not_empty(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": "Why is the sky blue?"}], **SHORT
    )
    assert completion.choices[0].message.content.strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    info = _mesh_info(completion)
    assert info["decision"]["mode"] in ("single", "fallback")
    assert info["specialist"] == completion.model


def test_streamed_answer_is_not_empty(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mesh",
        messages=[{"role": "user", "content": "Write a haiku about rain."}],
        stream=True,
        **SHORT,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert (chunks[0].model_extra or {}).get("mesh"), "first chunk carries the route decision"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks), "usage only when stream_options asks for it"


def test_include_usage_adds_one_last_chunk_with_the_usage(client: openai.OpenAI) -> None:
    """OpenAI's shape: every other chunk carries no usage, so a client that sums usage over
    chunks (LangChain's stream_usage) counts it once."""
    chunks = list(
        client.chat.completions.create(
            model="general",
            messages=[{"role": "user", "content": "Write a haiku about rain."}],
            stream=True,
            stream_options={"include_usage": True},
            **SHORT,
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 0 < last.usage.completion_tokens <= SHORT["max_tokens"]
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert [c for c in chunks if c.usage is not None] == [last]


def test_coding_question_routes_to_code(client: openai.OpenAI, mesh: RunningMesh) -> None:
    question = "How do I write a Python function to merge two sorted lists?"
    completion = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": question}], **SHORT
    )
    info = _mesh_info(completion)
    assert info["specialist"] == "code"
    assert info["decision"]["targets"][0]["name"] == "code"
    dry_run = httpx.post(f"{mesh.base_url}/v1/route", json={"text": question}, timeout=30).json()
    assert dry_run["targets"][0]["name"] == "code"


MAGIC = "What is the value of magic_function(3)?"  # looks like math; is not arithmetic


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_hands_back_what_it_cannot_answer(
    client: openai.OpenAI, mesh: RunningMesh, stream: bool
) -> None:
    """`math` is the router's choice but declines: the next candidate (or the fallback)
    answers, and the decision and the trace say so."""
    dry_run = httpx.post(f"{mesh.base_url}/v1/route", json={"text": MAGIC}, timeout=30).json()
    assert dry_run["targets"][0]["name"] == "math", dry_run["reason"]
    messages = [{"role": "user", "content": MAGIC}]
    if stream:
        chunks = list(
            client.chat.completions.create(model="mesh", messages=messages, stream=True, **SHORT)
        )
        info = dict((chunks[0].model_extra or {})["mesh"])
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        events = [(c.model_extra or {}).get("mesh", {}).get("trace_event") for c in chunks]
        trace = [e for e in events if e]
    else:
        completion = client.chat.completions.create(model="mesh", messages=messages, **SHORT)
        info, text = _mesh_info(completion), completion.choices[0].message.content or ""
        trace = info["trace"]
    assert info["specialist"] != "math" and text.strip()
    decision = info["decision"]
    assert [h["name"] for h in decision["handed_back"]] == ["math"]
    assert "not an arithmetic expression" in decision["handed_back"][0]["reason"]
    assert decision["targets"][0]["name"] == info["specialist"]
    hand_backs = [e for e in trace if e["kind"] == "hand_back"]
    assert hand_backs == [
        {**hand_backs[0], "from": "math", "to": info["specialist"], "kind": "hand_back"}
    ]
    assert "cannot evaluate" not in text


@pytest.mark.parametrize(("model", "text"), [("math", MAGIC), ("mesh", f"@math {MAGIC}")])
def test_a_pinned_tool_answers_with_its_decline(
    client: openai.OpenAI, model: str, text: str
) -> None:
    """Pinned by `model` or by an @mention, nobody else may answer: the tool's own reply."""
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **SHORT
    )
    assert completion.choices[0].message.content == (
        "cannot evaluate: not an arithmetic expression"
    )
    info = _mesh_info(completion)
    assert info["specialist"] == "math" and info["decision"]["mode"] == "pinned"
    assert info["decision"]["handed_back"] == []


COMPOUND = "What is 17*23? Then write a haiku about it."


def test_a_compound_question_is_answered_part_by_part(client: openai.OpenAI) -> None:
    """Each part goes to its own specialist, in order, and the parts are traced."""
    completion = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": COMPOUND}], **SHORT
    )
    info = _mesh_info(completion)
    decision = info["decision"]
    assert decision["mode"] == "compound", decision["reason"]
    assert [p["specialist"] for p in decision["parts"]] == ["math", "writing"]
    assert [p["text"] for p in decision["parts"]] == ["What is 17*23?", "write a haiku about it."]
    answer = completion.choices[0].message.content or ""
    first, _, second = answer.partition("\n\n")
    assert "391" in first and second.strip()
    parts = [e for e in info["trace"] if e["kind"] == "part"]
    assert [e["to"] for e in parts] == ["math", "writing"]
    assert "391" in parts[1]["content"]  # the haiku part saw the first answer, as data

    stream = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": COMPOUND}], stream=True, **SHORT
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "391" in text.partition("\n\n")[0]

    alone = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": COMPOUND}], n=2, **SHORT
    )
    whole = _mesh_info(alone)["decision"]
    assert whole["mode"] == "single" and "answered whole: n > 1" in whole["reason"]


INDEPENDENT = "What is 17*23? Also, write a haiku about the sea."


def test_independent_parts_are_answered_without_each_other(client: openai.OpenAI) -> None:
    """A part that does not point back is asked beside the first, so it sees no earlier
    answer; the answers still come in the query's order."""
    completion = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": INDEPENDENT}], **SHORT
    )
    info = _mesh_info(completion)
    decision = info["decision"]
    assert decision["mode"] == "compound", decision["reason"]
    assert [p["specialist"] for p in decision["parts"]] == ["math", "writing"]
    parts = [e for e in info["trace"] if e["kind"] == "part"]
    assert sorted(e["to"] for e in parts) == ["math", "writing"]
    haiku = next(e for e in parts if e["to"] == "writing")
    assert "391" not in haiku["content"] and "earlier parts" not in haiku["content"]
    first, _, second = (completion.choices[0].message.content or "").partition("\n\n")
    assert "391" in first and second.strip()


def test_router_status_shows_what_serves(mesh: RunningMesh) -> None:
    """`GET /v1/router` (what the UI's Mesh tab shows): no artifact yet, so frozen defaults."""
    status = httpx.get(f"{mesh.base_url}/v1/router", timeout=30).json()
    assert {"general", "code", "math"} <= set(status["specialists"])
    assert status["artifact"] is None and status["degraded"] is False
    assert isinstance(status["generation"], int)


def test_embeddings_come_from_the_routers_encoder(client: openai.OpenAI, mesh: RunningMesh) -> None:
    """The official client (base64 by default) and a float request get the same vectors."""
    texts = ["How do I sort a list in Python?", "Sorting a Python list", "A recipe for bread"]
    result = client.embeddings.create(model="mesh", input=texts)
    vectors = np.array([row.embedding for row in result.data])
    assert vectors.shape == (3, 384) and result.model == "all-MiniLM-L6-v2"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3
    assert result.usage.prompt_tokens > len(" ".join(texts).split())
    floats = httpx.post(
        f"{mesh.base_url}/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": texts[0], "encoding_format": "float"},
        timeout=60,
    ).json()
    assert np.allclose(floats["data"][0]["embedding"], vectors[0], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": ["fine", "word " * 400]}, 400, "input[1] is"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "Available: mesh"),
        ({"input": [7, 8]}, 400, "token arrays"),
        ({"input": "x", "dimensions": 8}, 400, "dimensions"),
    ],
)
def test_bad_embedding_requests_are_clear_errors(
    mesh: RunningMesh, body: dict, status: int, message: str
) -> None:
    response = httpx.post(f"{mesh.base_url}/v1/embeddings", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


SAMPLED: dict = {
    "model": "general",
    "messages": [{"role": "user", "content": "Name a colour and a fruit."}],
    "seed": 7,
    "temperature": 1.0,
    "max_tokens": 16,
}


def test_n_choices_are_seeded_one_apart_and_reproducible(client: openai.OpenAI) -> None:
    first, again = (client.chat.completions.create(n=3, **SAMPLED) for _ in range(2))
    texts = [choice.message.content or "" for choice in first.choices]
    assert [choice.index for choice in first.choices] == [0, 1, 2]
    assert all(text.strip() for text in texts) and len(set(texts)) >= 2, texts
    assert [choice.message.content for choice in again.choices] == texts  # same seed, same n
    assert first.usage is not None and 3 <= first.usage.completion_tokens <= 48


def test_n_streamed_choices_interleave_with_their_own_index(client: openai.OpenAI) -> None:
    options = {"stream": True, "stream_options": {"include_usage": True}}
    chunks = list(client.chat.completions.create(n=2, **SAMPLED, **options))
    texts, finished = ["", ""], [None, None]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finished[choice.index] = choice.finish_reason or finished[choice.index]
    assert all(text.strip() for text in texts) and all(finished), (texts, finished)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 2 <= usage.completion_tokens <= 32
    unstreamed = client.chat.completions.create(n=2, **SAMPLED)
    assert [c.message.content for c in unstreamed.choices] == texts  # same seeds, same samples


def test_pinned_model_answers(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "Write a Python function to sort a list."}],
        **SHORT,
    )
    info = _mesh_info(completion)
    assert info["specialist"] == "general"
    assert info["decision"]["mode"] == "pinned"


def test_traffic_proposes_router_lessons_for_review(
    client: openai.OpenAI, mesh: RunningMesh
) -> None:
    """A thumbs-up on a routed answer and a pinned request become pending lessons; nothing
    changes routing until an operator accepts them."""
    routed_question = "How do I reverse a linked list in Python, step by step?"
    routed = client.chat.completions.create(
        model="mesh", messages=[{"role": "user", "content": routed_question}], **SHORT
    )
    pinned_question = "Tell me a short fact about owls."
    client.chat.completions.create(
        model="writing", messages=[{"role": "user", "content": pinned_question}], **SHORT
    )
    rated = wait_for(
        lambda: _rate_up(mesh, routed.id), timeout_s=30, what="the routed answer's usage record"
    )
    assert rated["lesson"] is not None and rated["specialist"] == _mesh_info(routed)["specialist"]

    def pending() -> dict[str, dict] | None:
        result = CliRunner().invoke(app, ["router", "review", "--json"], env=mesh.env)
        assert result.exit_code == 0, result.output
        found = {x["text"]: x for x in json.loads(result.stdout)["lessons"]}
        return found if pinned_question in found else None

    found = wait_for(pending, timeout_s=30, what="the pinned request's lesson")
    assert found[pinned_question]["label"] == "writing"
    assert found[pinned_question]["source"] == "pin"
    assert found[routed_question]["source"] == "thumbs_up"
    assert found[routed_question]["status"] == "pending"


def _rate_up(mesh: RunningMesh, completion_id: str) -> dict | None:
    response = httpx.post(
        f"{mesh.base_url}/v1/feedback", json={"id": completion_id, "rating": "up"}, timeout=30
    )
    return response.json() if response.status_code == 200 else None


def test_models_lists_the_catalog(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"mesh", "general", "code", "writing"} <= ids


def test_unknown_model_is_openai_404(client: openai.OpenAI, mesh: RunningMesh) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(
            model="no-such-specialist", messages=[{"role": "user", "content": "hi"}]
        )
    assert "no-such-specialist" in str(error.value)
    body = httpx.post(
        f"{mesh.base_url}/v1/chat/completions",
        json={"model": "no-such-specialist", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    ).json()
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["param"] == "model"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "mesh", "messages": []},
        {"model": "mesh"},
        {"model": "mesh", "messages": [{"role": "user", "content": "   "}]},
        {"model": "mesh", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "mesh", "messages": [{"role": "user", "content": "x" * 40_000}]},
        {"model": "mesh", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    ],
)
def test_bad_requests_are_400(mesh: RunningMesh, body: dict) -> None:
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_prompt_beyond_model_context_is_400_naming_the_limit(mesh: RunningMesh) -> None:
    # Under the gateway's character limit, over SmolLM2's 8192-token context.
    body = {"model": "general", "messages": [{"role": "user", "content": "ab " * 9_000}]}
    response = httpx.post(f"{mesh.base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    assert "8192-token context" in response.json()["error"]["message"]
    streamed = httpx.post(
        f"{mesh.base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=120
    )
    assert streamed.status_code == 400


def test_healthz_reports_every_specialist(mesh: RunningMesh) -> None:
    health = get_json(f"{mesh.base_url}/healthz")
    assert health["status"] == "ok"
    assert {"general", "code", "writing"} <= set(health["specialists"])
    assert all(s["status"] == "RUNNING" for s in health["specialists"].values())


def test_cli_ask_and_list_against_the_mesh(mesh: RunningMesh) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["ask", "Write a Python function that reverses a string", "--json"], env=mesh.env
    )
    assert result.exit_code == 0, result.output
    assert '"specialist": "code"' in result.output
    result = runner.invoke(app, ["ask", "hello", "--specialist", "nope"], env=mesh.env)
    assert result.exit_code == 1
    assert "does not exist" in result.output
    result = runner.invoke(app, ["list"], env=mesh.env)
    assert result.exit_code == 0
    assert "* general" in result.output


def test_ui_is_served(mesh: RunningMesh) -> None:
    response = httpx.get(f"{mesh.base_url}/ui/", timeout=30, follow_redirects=True)
    assert response.status_code == 200
    assert "gradio" in response.text.lower()


def test_register_goes_live_without_restart(mesh: RunningMesh, client: openai.OpenAI) -> None:
    before = get_json(f"{mesh.base_url}/healthz")["specialists"]
    manifest = Path(__file__).resolve().parents[2] / "examples" / "cooking.yaml"
    result = CliRunner().invoke(app, ["register", str(manifest)], env=mesh.env)
    assert result.exit_code == 0, result.output

    def live() -> bool:
        return "cooking" in {m.id for m in client.models.list()}

    wait_for(live, timeout_s=300, what="cooking to go live")
    completion = client.chat.completions.create(
        model="mesh",
        messages=[{"role": "user", "content": "How long should I roast potatoes in the oven?"}],
        **SHORT,
    )
    assert _mesh_info(completion)["specialist"] == "cooking"
    assert completion.choices[0].message.content.strip()
    after = get_json(f"{mesh.base_url}/healthz")["specialists"]
    for name in before:
        assert after[name]["status"] == "RUNNING", f"{name} kept running"
