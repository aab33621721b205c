"""Small contracts behind the API features: what an adapter specialist can do, how a tool
round leaves the request's bounds, and a grammar crossing process boundaries."""

from __future__ import annotations

from registry.manifest import load_manifest
from specialists.adapter_pool import PoolClientEngine
from specialists.context import MeshContext
from specialists.engine import GenerationParams
from specialists.grammar import Grammar
from specialists.messages import Bounds, ContextState


def test_an_adapter_specialist_can_do_what_its_pool_engine_can() -> None:
    extract = load_manifest("specialists/catalog/extract.yaml")
    capabilities = PoolClientEngine(extract).capabilities
    assert capabilities.grammars and capabilities.logprobs and not capabilities.adapters


def test_after_a_tool_round_the_answer_keeps_only_the_fan_out_left() -> None:
    from mesh.specialist_tools import _what_is_left

    state = ContextState(bounds=Bounds(max_fanout=3, max_hops=3), path=["general"])
    ctx = MeshContext(state, "general", ["math"])
    ctx.asked = 2
    assert _what_is_left(ctx).bounds.max_fanout == 1
    ctx.asked = 3
    left = _what_is_left(ctx).bounds
    assert left.max_hops == 0, "no fan-out left: the answer may ask nobody"


def test_a_grammar_survives_a_json_round_trip() -> None:
    params = GenerationParams(grammar=Grammar(kind="json_schema", json_schema={"type": "object"}))
    again = GenerationParams.model_validate_json(params.model_dump_json())
    assert again.grammar == params.grammar
