"""The legacy completions route's pure parts: the request becomes a chat request (refusing
what only a raw-text model could do) and chat bodies and chunks become `text_completion`s."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from mesh.legacy_completions import CompletionRequest, text_completion, text_completion_events


def test_a_prompt_becomes_one_user_turn_with_the_same_settings() -> None:
    chat = CompletionRequest(prompt=["Hi"], max_tokens=5, seed=3, n=2).as_chat()
    assert chat.chat() == [{"role": "user", "content": "Hi"}]
    assert (chat.max_tokens, chat.seed, chat.choices) == (5, 3, 2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"echo": True}, "echo is not supported"),
        ({"suffix": "x"}, "suffix is not supported"),
        ({"best_of": 3}, "best_of is not supported"),
        ({"prompt": ["a", "b"]}, "one prompt per call"),
        ({"prompt": [1, 2]}, "valid string"),
    ],
)
def test_what_only_a_raw_text_model_could_do_is_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CompletionRequest.model_validate({"prompt": "Hi", **fields})


def test_chat_bodies_and_chunks_are_reshaped() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    legacy = text_completion(body)
    assert legacy["object"] == "text_completion" and legacy["usage"] == body["usage"]
    (choice,) = legacy["choices"]
    assert choice == {"index": 0, "text": "Hello", "logprobs": None, "finish_reason": "stop"}

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({'id': 'c', 'choices': [choice]})}\n\n"

    async def events():  # type: ignore[no-untyped-def]
        for event in (
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({}, "stop"),
            "data: [DONE]\n\n",
        ):
            yield event

    async def reshape() -> list[str]:
        return [e async for e in text_completion_events(events())]

    out = asyncio.run(reshape())
    assert out[-1] == "data: [DONE]\n\n" and len(out) == 3, "the role-only chunk is dropped"
    first = json.loads(out[0][len("data: ") :])
    assert first["object"] == "text_completion" and first["choices"][0]["text"] == "Hel"
    assert json.loads(out[1][len("data: ") :])["choices"][0]["finish_reason"] == "stop"
