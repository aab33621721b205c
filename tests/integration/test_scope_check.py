"""An LLM specialist's scope check on a real model (SmolLM2-135M on the transformers engine):
the replica's own path, `SpecialistDeployment` called directly (no Serve needed for this)."""

from __future__ import annotations

import asyncio

import pytest

from registry.errors import HandedBackError
from registry.manifest import HandBackPolicy
from specialists.catalog import SMOLLM2_SOURCE
from specialists.deployment import SpecialistDeployment, SpecialistRequest
from specialists.engine import ChatMessage, EngineRequest, GenerationParams, collect
from specialists.scope_check import in_scope_probability, scope_messages, scope_params
from tests.conftest import manifest_data

pytestmark = pytest.mark.slow

QUERY = "Write a haiku about autumn leaves."


def writer(min_in_scope: float) -> SpecialistDeployment:
    data = manifest_data(
        name="writer",
        description="Creative writing: poems, stories and haiku.",
        model={"engine": "transformers", "source": SMOLLM2_SOURCE},
        hand_back={"min_in_scope": min_in_scope},
    )
    return SpecialistDeployment(data)


@pytest.fixture(scope="module")
def deployments() -> dict[str, SpecialistDeployment]:
    """One model load; the two floors share its engine."""
    always = writer(1.0)
    never = SpecialistDeployment.__new__(SpecialistDeployment)
    never.__dict__.update(always.__dict__)
    never.manifest = always.manifest.model_copy(
        update={"hand_back": HandBackPolicy(min_in_scope=1e-6)}
    )
    return {"always": always, "never": never}


def ask(deployment: SpecialistDeployment, may_hand_back: bool = True) -> str:
    request = SpecialistRequest(
        messages=[ChatMessage(role="user", content=QUERY)],
        params=GenerationParams(max_tokens=8, temperature=0.0),
        may_hand_back=may_hand_back,
    )
    return asyncio.run(deployment.chat(request)).text


def test_the_real_model_gives_an_in_scope_probability(
    deployments: dict[str, SpecialistDeployment],
) -> None:
    deployment = deployments["always"]
    request = EngineRequest(
        messages=scope_messages(deployment.manifest, QUERY), params=scope_params(30.0)
    )

    async def first_token() -> list:  # type: ignore[type-arg]
        result = collect([d async for d in deployment.engine.stream(request)])
        return result.logprobs

    logprobs = asyncio.run(first_token())
    assert len(logprobs) == 1 and len(logprobs[0].top_logprobs) == 20
    probability = in_scope_probability(logprobs[0].top_logprobs)
    assert probability is not None and 0 < probability < 1  # "yes" and "no" both near the top


def test_below_the_floor_the_real_specialist_hands_back(
    deployments: dict[str, SpecialistDeployment],
) -> None:
    with pytest.raises(HandedBackError, match=r"writer declined: its model rates the query"):
        ask(deployments["always"])
    assert ask(deployments["always"], may_hand_back=False)  # nobody else: it answers


def test_above_the_floor_the_real_specialist_answers(
    deployments: dict[str, SpecialistDeployment],
) -> None:
    assert ask(deployments["never"])
