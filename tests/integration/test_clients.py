"""Common OpenAI clients against the real mesh, used as their users use them (LangChain's
`ChatOpenAI`; the official `openai` client is in test_mesh.py)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI

from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow
MAX_TOKENS = 16


def _chat(mesh: RunningMesh, model: str, **options: object) -> ChatOpenAI:
    settings: dict[str, object] = {"max_tokens": MAX_TOKENS, "temperature": 0, "timeout": 300}
    return ChatOpenAI(
        base_url=f"{mesh.base_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model=model,
        **{**settings, **options},  # type: ignore[arg-type]
    )


def test_langchain_invoke_is_routed_and_reports_usage(mesh: RunningMesh) -> None:
    question = "How do I write a Python function to merge two sorted lists?"
    message = _chat(mesh, "mesh").invoke(question)
    assert isinstance(message.content, str) and message.content.strip()
    assert message.response_metadata["model_name"] == "code"  # who answered, as OpenAI says
    usage = message.usage_metadata
    assert usage is not None and 0 < usage["output_tokens"] <= MAX_TOKENS


def test_langchain_stream_counts_usage_once(mesh: RunningMesh) -> None:
    """`stream_usage` sends `stream_options.include_usage` and adds usage over every chunk:
    usage in more than one chunk would be counted twice."""
    chunks = list(_chat(mesh, "general", stream_usage=True).stream("Write a haiku about rain."))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert isinstance(total.content, str) and total.content.strip()
    usage = total.usage_metadata
    assert usage is not None and 0 < usage["output_tokens"] <= MAX_TOKENS


def test_langchain_n_generations(mesh: RunningMesh) -> None:
    llm = _chat(mesh, "general", n=2, seed=7, temperature=1.0)
    result = llm.generate([[HumanMessage(content="Name a colour and a fruit.")]])
    texts = [generation.text for generation in result.generations[0]]
    assert len(texts) == 2 and all(text.strip() for text in texts)


def _llama(mesh: RunningMesh, model: str, **options: object):  # type: ignore[no-untyped-def]
    from llama_index.llms.openai_like import OpenAILike

    settings: dict[str, object] = {"max_tokens": MAX_TOKENS, "temperature": 0, "timeout": 300}
    return OpenAILike(
        model=model,
        api_base=f"{mesh.base_url}/v1",
        api_key="unused",
        context_window=2048,
        **{**settings, **options},
    )


def test_llamaindex_openai_like_chat_stream_and_legacy_complete(mesh: RunningMesh) -> None:
    from llama_index.core.llms import ChatMessage

    chat = _llama(mesh, "mesh", is_chat_model=True)
    reply = chat.chat([ChatMessage(role="user", content="Write a haiku about rain.")])
    assert reply.message.content and reply.message.content.strip()
    streamed = "".join(
        r.delta or "" for r in chat.stream_chat([ChatMessage(role="user", content="Say hi.")])
    )
    assert streamed.strip()
    legacy = _llama(mesh, "general", is_chat_model=False)  # /v1/completions
    assert legacy.complete("Name a colour.").text.strip()


def test_llamaindex_structured_prediction_through_tool_calls(mesh: RunningMesh) -> None:
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    llm = _llama(mesh, "general", is_chat_model=True, is_function_calling_model=True, max_tokens=60)
    city = llm.structured_predict(City, PromptTemplate("Name a city in {place}."), place="Peru")
    assert isinstance(city, City) and city.name and city.country
