"""Router lessons from traffic, in a real Redis: proposed by thumbs-ups and pins, reviewed by an
operator (`mesh router review`), fitted on by the live router's background refit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli.router import router_app
from registry import Registry
from registry.errors import NotFoundError
from registry.router_artifacts import RouterArtifactStore
from registry.router_lessons import MAX_TEXT_CHARS, LessonStore, lesson_id
from router.live import LiveRouter, LiveRouterOptions
from tests.integration.test_router_artifacts import mesh_env  # noqa: F401  (fixture)
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder
from tests.unit.test_router_artifact import INSTALLED

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def lessons(registry: Registry) -> LessonStore:
    return registry.lessons


def test_proposals_count_sightings_and_skip_what_cannot_teach(lessons: LessonStore) -> None:
    first = lessons.propose("python code please", "code", "pin")
    again = lessons.propose("  python code please ", "code", "pin")
    assert first is not None and again is not None and again.id == first.id
    assert again.seen == 2 and again.status == "pending"
    assert lessons.propose("", "code", "pin") is None
    assert lessons.propose("x" * (MAX_TEXT_CHARS + 1), "code", "pin") is None
    other = lessons.propose("python code please", "writing", "thumbs_up")
    assert other is not None and other.id != first.id  # another label, another lesson
    assert [x.id for x in lessons.lessons("pending")] == [first.id, other.id]  # most seen first
    assert lessons.version() == 0  # nothing accepted: routing unchanged


def test_accepting_moves_the_version_and_unknown_ids_change_nothing(
    lessons: LessonStore,
) -> None:
    good = lessons.propose("a story poem", "writing", "thumbs_up")
    bad = lessons.propose("soup recipe", "code", "pin")
    assert good and bad
    with pytest.raises(NotFoundError, match="nope"):
        lessons.decide([good.id, "nope"], "accepted")
    assert lessons.version() == 0 and lessons.lessons("accepted") == []
    lessons.decide([good.id], "accepted")
    lessons.decide([bad.id], "rejected")
    assert lessons.version() == 1  # a rejection of a pending lesson moves nothing
    fixed = lessons.correct("soup recipe", None, replaces=bad.id)
    assert fixed.status == "accepted" and fixed.source == "correction"
    version, accepted = lessons.accepted()
    assert version == 2
    assert {(q.text, q.label) for q in accepted} == {
        ("a story poem", "writing"),
        ("soup recipe", None),
    }


def test_a_thumbs_up_proposes_the_routed_query(registry: Registry) -> None:
    registry.stats.record(
        "code", routed=True, latency_ms=5, error=False, response_id="r1", query="fix my python"
    )
    registry.stats.record("code", routed=False, latency_ms=5, error=False, response_id="r2")
    assert registry.stats.query_of("r1") == "fix my python"
    assert registry.stats.query_of("r2") is None  # pinned answers keep no query


def test_review_is_for_the_operator_and_relabels(
    mesh_env: tuple[Registry, Path],  # noqa: F811
) -> None:
    registry, _ = mesh_env
    proposal = registry.lessons.propose("hello python", "general", "pin")
    assert proposal is not None
    for env, message in (
        ({"MESH_ADMIN_TOKEN": "", "MESH_TOKEN": ""}, "needs the admin token"),
        ({"MESH_TOKEN": "wrong-token"}, "not valid"),
    ):
        refused = runner.invoke(router_app, ["review"], env=env)
        assert refused.exit_code == 1 and message in refused.output, refused.output
    owner_token = registry.tokens.create("someone")
    as_owner = runner.invoke(router_app, ["review", "--token", owner_token])
    assert as_owner.exit_code == 1 and "not an owner's token" in as_owner.output

    listed = runner.invoke(router_app, ["review"])
    assert listed.exit_code == 0 and proposal.id in listed.output and "pin" in listed.output
    unknown = runner.invoke(router_app, ["review", "--relabel", f"{proposal.id}=nobody"])
    assert unknown.exit_code == 1 and "not an installed specialist" in unknown.output
    result = runner.invoke(router_app, ["review", "--relabel", f"{proposal.id}=code", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["changed"] == 1 and shown["version"] == 1 and shown["lessons"] == []
    added = runner.invoke(router_app, ["review", "--add", "soup", "--as", "none"])
    assert added.exit_code == 0 and "accepted lessons at version 2" in added.output
    version, accepted = registry.lessons.accepted()
    assert version == 2
    assert {(q.text, q.label) for q in accepted} == {("hello python", "code"), ("soup", None)}
    assert registry.lessons.lessons("rejected")[0].id == proposal.id
    alone = runner.invoke(router_app, ["review", "--add", "soup"])
    assert alone.exit_code == 1 and "go together" in alone.output


def test_the_live_router_refits_on_accepted_lessons(registry: Registry, tmp_path: Path) -> None:
    store = RouterArtifactStore(registry.client, registry.url)
    options = LiveRouterOptions(home=tmp_path, fallback="general", method="linear", refit_delay_s=0)
    live = LiveRouter(options, store=store, lessons=registry.lessons, frozen=BagOfWordsEncoder)
    live.start()
    live.update(INSTALLED, EXAMPLES)
    assert not live.stale() and live.poll_lessons() == 0
    before = live.router.route("python story").chosen
    registry.lessons.correct("python story", "writing")
    registry.lessons.correct("python story story", "writing")
    assert live.poll_lessons() == 2 and live.stale()
    assert live.refit()
    record = store.current()
    assert record is not None and record.lessons_version == 2 and record.n_lessons == 2
    assert record.labelled == []  # the operator's calibration set stays as it was
    assert not live.stale()
    assert live.router.route("python story").chosen == "writing" != before
    assert lesson_id("python story", "writing") in {x.id for x in registry.lessons.lessons()}


def test_the_cap_counts_pending_lessons_only(
    lessons: LessonStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry import router_lessons

    monkeypatch.setattr(router_lessons, "MAX_LESSONS", 2)
    first = lessons.propose("python code one", "code", "pin")
    second = lessons.propose("python code two", "code", "pin")
    assert first and second
    assert lessons.propose("python code three", "code", "pin") is None  # full
    assert lessons.propose("python code one", "code", "pin") is not None  # a sighting still counts
    lessons.decide([first.id], "rejected")
    assert lessons.propose("python code three", "code", "pin") is not None  # room again


def test_a_damaged_lesson_is_skipped_not_fatal(registry: Registry) -> None:
    registry.lessons.correct("a story poem", "writing")
    registry.client.hset("mesh:router:lessons", "broken", "{not json")
    assert [x.text for x in registry.lessons.lessons()] == ["a story poem"]
    assert registry.lessons.accepted()[1][0].text == "a story poem"


def live_router(registry: Registry, home: Path, method: str) -> LiveRouter:
    store = RouterArtifactStore(registry.client, registry.url)
    options = LiveRouterOptions(home=home, fallback="general", method=method, refit_delay_s=0)  # type: ignore[arg-type]
    live = LiveRouter(options, store=store, lessons=registry.lessons, frozen=BagOfWordsEncoder)
    live.start()
    return live


def test_a_restart_with_a_linear_artifact_serves_it_without_refitting(
    registry: Registry, tmp_path: Path
) -> None:
    """A linear head is loaded before any specialist is indexed (it used to fail the start on
    the empty index's dimension), and lessons fitted already do not refit again."""
    first = live_router(registry, tmp_path, "linear")
    first.update(INSTALLED, EXAMPLES)
    registry.lessons.correct("python story", "writing")
    first.poll_lessons()
    assert first.refit()
    restarted = live_router(registry, tmp_path, "linear")
    assert restarted.record == first.record and not restarted.degraded
    restarted.update(INSTALLED, EXAMPLES)
    assert not restarted.stale()
    assert restarted.router.route("python story").chosen == "writing"


def test_methods_without_a_head_do_not_refit_for_lessons(
    registry: Registry, tmp_path: Path
) -> None:
    live = live_router(registry, tmp_path, "knn")
    live.update(INSTALLED, EXAMPLES)
    registry.lessons.correct("python story", "writing")
    assert live.poll_lessons() == 1 and not live.stale()
