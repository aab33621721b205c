from __future__ import annotations

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
