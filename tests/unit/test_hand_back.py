"""A specialist that cannot answer a routed query hands it back: who answers next, and how a
tool engine declines (or, pinned, answers with its decline)."""

from __future__ import annotations

import asyncio

import pytest

from mesh.trace_view import trace_root
from registry import parse_manifest
from registry.errors import HandedBackError
from router.decision import RouteDecision, RouteTarget
from specialists.engine import ChatMessage, EngineRequest, TextDelta
from specialists.tool_engine import ToolEngine
from specialists.tools.registry import Declined
from tests.conftest import manifest_data
from ui.chat import attribution

LIVE = {"math", "code", "writing", "general"}


def decision(*targets: tuple[str, float], threshold: float = 0.5) -> RouteDecision:
    return RouteDecision(
        targets=[RouteTarget(name=n, score=s) for n, s in targets],
        mode="single",
        threshold=threshold,
        reason="best match",
    )


def test_the_next_candidate_above_its_threshold_answers() -> None:
    first = decision(("math", 0.8), ("general", 0.3), ("code", 0.6), ("writing", 0.55))
    after = first.after_hand_back("math", "not arithmetic", LIVE, fallback="general")
    assert after is not None
    assert after.chosen == "code" and after.mode == "single"
    assert [h.name for h in after.handed_back] == ["math"]
    assert after.handed_back[0].reason == "not arithmetic"
    assert "math handed the query back (not arithmetic)" in after.reason
    assert "math" not in [t.name for t in after.targets]


def test_a_candidate_below_its_own_threshold_or_not_live_is_skipped() -> None:
    first = decision(("math", 0.9), ("code", 0.7), ("writing", 0.6))
    first.targets[1].threshold = 0.75  # code's own threshold: 0.7 is not its query
    after = first.after_hand_back("math", "no", LIVE - {"writing"}, fallback="general")
    assert after is not None and after.chosen == "general" and after.mode == "fallback"
    assert "fallback" in after.reason


def test_a_conversation_thread_does_not_follow_the_decliner() -> None:
    first = decision(("math", 0.9), ("code", 0.7)).model_copy(update={"follow_up_of": "math"})
    first.targets[1].threshold = 0.65
    after = first.after_hand_back("math", "no", LIVE, fallback="general")
    assert after is not None and after.follow_up_of is None
    assert after.threshold == 0.65  # the threshold compared is the new first target's


def test_two_hand_backs_in_a_row_are_both_recorded() -> None:
    first = decision(("math", 0.9), ("code", 0.7))
    second = first.after_hand_back("math", "not arithmetic", LIVE, fallback="general")
    assert second is not None and second.chosen == "code"
    third = second.after_hand_back("code", "not code", LIVE, fallback="general")
    assert third is not None and third.chosen == "general"
    assert [h.name for h in third.handed_back] == ["math", "code"]


def test_nobody_left_means_no_hand_back() -> None:
    first = decision(("math", 0.9), ("general", 0.1))
    assert first.after_hand_back("math", "no", {"math"}, fallback="general") is None
    fallback = decision(("general", 0.1))
    assert fallback.after_hand_back("general", "no", LIVE, fallback="general") is None


# -- the tool engine -------------------------------------------------------------------------
async def _declining_tool(text: str, ctx: object) -> str:
    raise Declined(f"cannot evaluate: {text!r} is not mine")


def _engine() -> ToolEngine:
    model = {"engine": "tool", "source": "math"}
    engine = ToolEngine(parse_manifest(manifest_data(name="decliner", model=model)))
    engine.function = _declining_tool
    return engine


async def _deltas(engine: ToolEngine, request: EngineRequest) -> list[TextDelta]:
    return [delta async for delta in engine.stream(request)]


@pytest.mark.parametrize("may_hand_back", [True, False])
def test_a_declining_tool_hands_back_only_when_the_caller_allows_it(may_hand_back: bool) -> None:
    chat = [ChatMessage(role="user", content="a haiku, please")]
    request = EngineRequest(messages=chat, may_hand_back=may_hand_back)
    if may_hand_back:
        with pytest.raises(HandedBackError, match="is not mine") as raised:
            asyncio.run(_deltas(_engine(), request))
        assert raised.value.error_type == "handed_back"
        return
    deltas = asyncio.run(_deltas(_engine(), request))  # pinned or asked: nobody else answers
    assert "".join(d.text for d in deltas) == "cannot evaluate: 'a haiku, please' is not mine"
    assert deltas[-1].finish_reason == "stop"


def test_the_footer_and_the_trace_tree_start_from_the_decliner() -> None:
    first = decision(("math", 0.9), ("general", 0.1))
    after = first.after_hand_back("math", "not *arithmetic* <b>", LIVE, fallback="general")
    assert after is not None
    info = {"specialist": "general", "decision": after.model_dump(mode="json")}
    footer = attribution(info)
    assert "answered by **general**" in footer
    assert "handed back by math: not \\*arithmetic\\* &lt;b&gt;" in footer  # text, not markup
    assert trace_root(info) == "math"
    assert trace_root({"specialist": "code", "decision": first.model_dump(mode="json")}) == "code"


def test_an_answer_cut_inside_a_code_fence_still_shows_its_footer_as_markdown() -> None:
    from ui.chat import with_footer

    assert (
        with_footer("```python\nprint(1)", "\n\n---\n*x*") == "```python\nprint(1)\n```\n\n---\n*x*"
    )
    assert with_footer("```a```", "|f") == "```a```|f"


def test_a_request_needing_a_feature_goes_to_the_best_candidate_declaring_it() -> None:
    routed = decision(("math", 0.9), ("code", 0.7), ("writing", 0.6))
    able = {"code", "writing", "general"}
    kept = routed.model_copy(update={"targets": routed.targets[1:]})
    assert kept.restricted_to(able, "structured_output", LIVE, "general") is kept
    moved = routed.restricted_to(able, "structured_output", LIVE, "general")
    assert moved is not None and moved.chosen == "code" and moved.mode == "single"
    assert "math does not serve structured_output: next candidate code" in moved.reason
    below = decision(("math", 0.9), ("code", 0.4))  # code is under the threshold
    fallback = below.restricted_to(able, "structured_output", LIVE, "general")
    assert fallback is not None and fallback.chosen == "general" and fallback.mode == "fallback"
    assert below.restricted_to({"code"}, "tools", LIVE, "general") is None, "nobody able fits"
