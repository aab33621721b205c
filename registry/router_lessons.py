"""Router lessons: labelled queries learnt from traffic, reviewed by an operator, in Redis.

Traffic proposes (a thumbs-up on a routed answer confirms its specialist; a request pinned with
`model="<name>"` names one); nothing proposed changes routing until an operator accepts it with
`mesh router review`, which can also relabel a proposal or add a correction of its own. The
router's background refit fits on the artifact's labelled queries plus the accepted lessons,
whenever the accepted set's version moves (`LiveRouter.poll_lessons`).

Bounded: at most `MAX_LESSONS` proposals are kept (new ones are dropped beyond it; an operator
rejects or accepts to make room) and a text longer than `MAX_TEXT_CHARS` is not proposed.
One hash holds them (`mesh:router:lessons`, id -> JSON); `mesh:router:lessons:version` counts
changes of the accepted set, so a router can tell in one GET whether to refit.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from registry import keys
from registry.errors import InvalidRequestError, NotFoundError
from registry.redis_server import redis_errors
from registry.router_artifacts import LabelledQuery

MAX_LESSONS = 2_000
MAX_TEXT_CHARS = 1_000
Source = Literal["thumbs_up", "pin", "correction"]
Status = Literal["pending", "accepted", "rejected"]


class Lesson(BaseModel):
    """One proposed labelled query; `label` None means no specialist should answer it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="sha256 of text and label, 12 hex: one lesson per pair.")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    label: str | None
    source: Source
    status: Status = "pending"
    seen: int = Field(1, ge=1, description="How many times traffic proposed it.")
    first_seen: str


def lesson_id(text: str, label: str | None) -> str:
    return hashlib.sha256(f"{text}\0{label or ''}".encode()).hexdigest()[:12]


class LessonStore:
    def __init__(self, client: Any, url: str = "redis") -> None:
        self.client = client
        self.url = url

    def propose(self, text: str, label: str | None, source: Source) -> Lesson | None:
        """Add a pending lesson, or count one more sighting of it; None when it is not kept
        (empty or too long a text, or the store full)."""
        text = text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            return None
        lesson = Lesson(
            id=lesson_id(text, label),
            text=text,
            label=label,
            source=source,
            first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        )

        def add(pipe: Any) -> Lesson | None:
            raw = pipe.hget(keys.ROUTER_LESSONS, lesson.id)
            if raw is None and pipe.hlen(keys.ROUTER_LESSONS) >= MAX_LESSONS:
                return None
            kept = lesson
            if raw is not None:
                known = Lesson.model_validate_json(raw)
                kept = known.model_copy(update={"seen": known.seen + 1})
            pipe.multi()
            pipe.hset(keys.ROUTER_LESSONS, lesson.id, kept.model_dump_json())
            return kept

        with redis_errors(self.url):
            result: Lesson | None = self.client.transaction(
                add, keys.ROUTER_LESSONS, value_from_callable=True
            )
        return result

    def lessons(self, status: Status | None = None) -> list[Lesson]:
        """Lessons (of one status), most often seen first."""
        with redis_errors(self.url):
            raw = self.client.hvals(keys.ROUTER_LESSONS)
        found = [Lesson.model_validate_json(item) for item in raw]
        found = [lesson for lesson in found if status is None or lesson.status == status]
        return sorted(found, key=lambda lesson: (-lesson.seen, lesson.first_seen, lesson.id))

    def decide(self, ids: list[str], status: Status) -> list[Lesson]:
        """Accept or reject lessons by id (all or none: an unknown id changes nothing)."""
        return self._write(ids, lambda lesson: lesson.model_copy(update={"status": status}))

    def correct(self, text: str, label: str | None, replaces: str | None = None) -> Lesson:
        """An operator's own lesson, accepted at once; `replaces` (a lesson id) is rejected in
        the same transaction, which is how a wrong proposal is relabelled."""
        text = text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            raise InvalidRequestError(
                f"a lesson's text must have 1 to {MAX_TEXT_CHARS} characters", param="text"
            )
        lesson = Lesson(
            id=lesson_id(text, label),
            text=text,
            label=label,
            source="correction",
            status="accepted",
            first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        reject = [replaces] if replaces else []
        self._write(
            reject,
            lambda old: old.model_copy(update={"status": "rejected"}),
            extra=lesson,
        )
        return lesson

    def version(self) -> int:
        """Changes of the accepted set so far: a router fitted at another version is stale."""
        with redis_errors(self.url):
            value = self.client.get(keys.ROUTER_LESSONS_VERSION)
        return int(value or 0)

    def accepted(self) -> tuple[int, list[LabelledQuery]]:
        """(version, accepted lessons as labelled queries), read together."""
        with redis_errors(self.url), self.client.pipeline(transaction=True) as pipe:
            pipe.get(keys.ROUTER_LESSONS_VERSION)
            pipe.hvals(keys.ROUTER_LESSONS)
            version, raw = pipe.execute()
        chosen = [Lesson.model_validate_json(item) for item in raw]
        queries = [
            LabelledQuery(text=lesson.text, label=lesson.label)
            for lesson in sorted(chosen, key=lambda lesson: lesson.id)
            if lesson.status == "accepted"
        ]
        return int(version or 0), queries

    def _write(self, ids: list[str], change: Any, extra: Lesson | None = None) -> list[Lesson]:
        def update(pipe: Any) -> list[Lesson]:
            found = pipe.hmget(keys.ROUTER_LESSONS, ids) if ids else []
            missing = [i for i, raw in zip(ids, found, strict=True) if raw is None]
            if missing:
                raise NotFoundError(f"no lesson with id {', '.join(missing)}", param="id")
            before = [Lesson.model_validate_json(raw) for raw in found]
            after = [change(lesson) for lesson in before]
            moved = any(
                (old.status == "accepted") != (new.status == "accepted")
                for old, new in zip(before, after, strict=True)
            )
            pipe.multi()
            for lesson in after + ([extra] if extra else []):
                pipe.hset(keys.ROUTER_LESSONS, lesson.id, lesson.model_dump_json())
            if moved or extra is not None:
                pipe.incr(keys.ROUTER_LESSONS_VERSION)
            return after

        with redis_errors(self.url):
            result: list[Lesson] = self.client.transaction(
                update, keys.ROUTER_LESSONS, value_from_callable=True
            )
        return result
