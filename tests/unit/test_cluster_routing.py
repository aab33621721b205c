"""Routing that knows the cluster (`router.cluster`): states, saturation and the tie-break."""

from __future__ import annotations

from mesh.controller import ReplicaInfo, availability, replica_counts
from router.cluster import SpecialistLoad, is_ready, load_note, prefer_ready
from router.decision import RouteDecision, RouteTarget

LIVE = ["code", "general", "math", "writing"]


def running(replicas: int = 1, per_replica: int = 8) -> SpecialistLoad:
    return SpecialistLoad(state="running", replicas={"running": replicas}, per_replica=per_replica)


def panel(*names: str) -> RouteDecision:
    targets = [
        RouteTarget(name=n, score=0.61 - i * 0.01, threshold=0.3) for i, n in enumerate(names)
    ]
    return RouteDecision(
        targets=targets,
        mode="panel",
        threshold=0.3,
        reason="panel: tie",
        panel=list(names),
    )


def single(*names: str) -> RouteDecision:
    targets = [RouteTarget(name=n, score=0.6 - i * 0.2, threshold=0.3) for i, n in enumerate(names)]
    return RouteDecision(targets=targets, mode="single", threshold=0.3, reason="best")


def test_tie_with_one_saturated_goes_to_the_one_with_room() -> None:
    loads = {"code": running(), "general": running()}
    decision = prefer_ready(
        panel("code", "general"), loads, {"code": 8, "general": 1}, LIVE, "general"
    )
    assert decision is not None
    assert decision.mode == "single" and decision.chosen == "general" and decision.panel == []
    assert "code saturated (8 open on 1 replica x 8)" in decision.reason
    assert decision.reason.endswith("general answers alone")
    by_name = {t.name: t for t in decision.targets}
    assert by_name["code"].state == "running" and by_name["code"].open_requests == 8
    assert by_name["general"].open_requests == 1


def test_tie_with_both_ready_stays_a_panel_and_both_saturated_too() -> None:
    loads = {"code": running(), "general": running(2)}
    easy = prefer_ready(panel("code", "general"), loads, {"code": 2, "general": 9}, LIVE, None)
    assert easy is not None and easy.mode == "panel" and easy.panel == ["code", "general"]
    assert "cluster" not in easy.reason
    busy = prefer_ready(panel("code", "general"), loads, {"code": 8, "general": 16}, LIVE, None)
    assert busy is not None and busy.mode == "panel"  # nobody has room: no reason to drop one


def test_warm_member_wins_over_a_cold_one() -> None:
    loads = {
        "code": SpecialistLoad(state="scaled_to_zero"),
        "general": running(),
        "writing": running(),
    }
    decision = prefer_ready(panel("code", "general", "writing"), loads, {}, LIVE, None)
    assert decision is not None
    assert decision.mode == "panel" and decision.panel == ["general", "writing"]
    assert decision.chosen == "general"
    assert "code scaled to zero" in decision.reason


def test_pending_specialist_is_never_chosen() -> None:
    why = "waiting for resources: needs GPU 1 per replica; the largest node has GPU 0"
    loads = {"code": SpecialistLoad(state="pending", note=why), "general": running()}
    moved = prefer_ready(single("code", "general"), loads, {}, LIVE, "general")
    assert moved is not None and moved.chosen == "general"
    assert f"cluster: code pending ({why}): next candidate general" in moved.reason
    # Nobody else above threshold: the fallback answers.
    alone = RouteDecision(
        targets=[RouteTarget(name="code", score=0.6, threshold=0.3)],
        mode="single",
        threshold=0.3,
        reason="best",
    )
    fell = prefer_ready(alone, loads, {}, LIVE, "general")
    assert fell is not None and fell.mode == "fallback" and fell.chosen == "general"
    # The fallback cannot run either: nobody can answer.
    loads["general"] = SpecialistLoad(state="pending")
    assert prefer_ready(alone, loads, {}, LIVE, "general") is None


def test_pending_panel_member_drops_out() -> None:
    loads = {"code": SpecialistLoad(state="pending"), "general": running()}
    decision = prefer_ready(panel("code", "general"), loads, {}, LIVE, None)
    assert decision is not None and decision.mode == "single" and decision.chosen == "general"


def test_pinned_and_plain_decisions_are_only_annotated() -> None:
    loads = {"code": running(), "general": running()}
    pinned = RouteDecision(
        targets=[RouteTarget(name="code", score=1.0)], mode="pinned", threshold=0.0, reason="pin"
    )
    kept = prefer_ready(pinned, loads, {"code": 99}, LIVE, "general")
    assert kept is not None and kept.chosen == "code" and kept.targets[0].open_requests == 99
    plain = prefer_ready(single("code", "general"), loads, {"code": 99}, LIVE, "general")
    assert plain is not None and plain.chosen == "code" and plain.reason == "best"


def test_load_words_and_readiness() -> None:
    assert is_ready(running(2, 4), 7) and not is_ready(running(2, 4), 8)
    assert not is_ready(SpecialistLoad(state="starting"), 0) and not is_ready(None, 0)
    assert load_note("x", running(3, 4), 2) == "x has room (2 open on 3 replicas x 4)"
    assert load_note("x", None, 0) == "x state unknown"
    assert load_note("x", SpecialistLoad(state="starting"), 0) == "x starting"


def test_controller_states_from_serve() -> None:
    replicas = [
        ReplicaInfo(replica_id="a", state="RUNNING"),
        ReplicaInfo(replica_id="b", state="STARTING"),
        ReplicaInfo(replica_id="c", state="STOPPING"),
        ReplicaInfo(replica_id="d", state="SOMETHING_NEW"),
    ]
    assert replica_counts(replicas) == {"running": 1, "starting": 1, "stopping": 1}
    assert availability("RUNNING", None, {"running": 1}, 0) == "running"
    assert availability("RUNNING", None, {}, 0) == "scaled_to_zero"
    # At zero a specialist waits for the first request even when no node could hold it now:
    # that request is what makes a cluster autoscaler add one.
    assert availability("RUNNING", None, {"starting": 1}, 0) == "starting"
    assert availability("RUNNING", None, {}, 1) == "starting"  # a replica died: coming back
    assert availability("RUNNING", "waiting for resources: ...", {}, 0) == "pending"
    assert availability("PENDING", "waiting", {}, 1) == "pending"
    assert availability("DEPLOYING", None, {}, 1) == "starting"
    assert availability("DEPLOY_FAILED", None, {}, 1) == "failed"


def test_a_panel_member_that_may_not_answer_is_never_chosen() -> None:
    """Only `code` serves what the request needs (`live` is the able ones): a saturated
    `code` still answers rather than `general`, which cannot."""
    loads = {"code": running(), "general": running()}
    decision = prefer_ready(panel("code", "general"), loads, {"code": 8}, ["code"], None)
    assert decision is not None and decision.chosen == "code" and decision.mode == "single"
    assert "general may not answer this request" in decision.reason


def test_a_pending_panel_keeps_the_next_runnable_member_and_says_why_once() -> None:
    loads = {
        "code": SpecialistLoad(state="pending"),
        "general": running(),
        "writing": running(),
    }
    decision = prefer_ready(panel("code", "general", "writing"), loads, {}, LIVE, None)
    assert decision is not None and decision.mode == "panel"
    assert decision.panel == ["general", "writing"] and decision.chosen == "general"
    assert "next candidate" not in decision.reason
    # Every member pending: the next candidate outside the panel answers alone.
    for name in ("general", "writing"):
        loads[name] = SpecialistLoad(state="pending")
    loads["math"] = running()
    wider = panel("code", "general", "writing")
    wider.targets.append(RouteTarget(name="math", score=0.4, threshold=0.3))
    moved = prefer_ready(wider, loads, {}, LIVE, None)
    assert moved is not None and moved.chosen == "math"
    assert moved.mode == "single" and moved.panel == []


def test_a_specialist_being_upgraded_stays_live_as_the_version_its_replicas_run() -> None:
    from mesh.controller import SpecialistState, live_manifests
    from registry import SpecialistManifest
    from specialists.catalog import load_catalog

    old = next(m for m in load_catalog() if m.name == "math")
    new = SpecialistManifest.model_validate({**old.model_dump(mode="json"), "version": "9.0.0"})

    def state(status: str, availability: str) -> dict[str, SpecialistState]:
        return {
            "math": SpecialistState(
                name="math", version="9.0.0", status=status, availability=availability
            )
        }

    was = {"math": old}
    updating = live_manifests(state("DEPLOYING", "running"), {"math": new}, was)
    assert updating == {"math": old}, "the old replica serves until the new one runs"
    waiting = live_manifests(state("PENDING", "running"), {"math": new}, was)
    assert waiting == {"math": old}
    assert live_manifests(state("RUNNING", "running"), {"math": new}, was) == {"math": new}
    # The old replica stopped first: requests wait for the new one (bounded by their deadline).
    assert live_manifests(state("DEPLOYING", "starting"), {"math": new}, was) == {"math": new}
    assert live_manifests(state("DEPLOY_FAILED", "running"), {"math": new}, was) == {}
    assert live_manifests(state("DEPLOYING", "running"), {"math": new}, {}) == {}  # first deploy
