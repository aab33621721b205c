"""Router lessons: labelled queries learnt from traffic, reviewed by an operator, in Redis.

Traffic proposes (a thumbs-up on a routed answer confirms its specialist; a request pinned with
`model="<name>"` names one); nothing proposed changes routing until an operator accepts it with
`mesh router review`, which can also relabel a proposal or add a correction of its own. The
router's background refit fits on the artifact's labelled queries plus the accepted lessons,
whenever the accepted set's version moves (`LiveRouter.poll_lessons`).

Bounded: at most `MAX_LESSONS` proposals wait for review (new ones are dropped beyond it; an
operator's accept or reject makes room) and a text longer than `MAX_TEXT_CHARS` is not proposed.
One hash holds every lesson (`mesh:router:lessons`, id -> JSON), a set the pending ids (for the
cap); `mesh:router:lessons:version` counts changes of the accepted set, so a router can tell in
one GET whether to refit. A damaged entry is skipped with a warning, never fatal.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry import keys
from registry.errors import InvalidRequestError, NotFoundError
from registry.redis_server import redis_errors
from registry.router_artifacts import LabelledQuery

logger = logging.getLogger(__name__)

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


def new_lesson(
    text: str, label: str | None, source: Source, status: Status = "pending"
) -> Lesson | None:
    """A lesson seen now for the stripped `text`; None when that is empty or too long."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT_CHARS:
        return None
    return Lesson(
        id=lesson_id(text, label),
        text=text,
        label=label,
        source=source,
        status=status,
        first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class LessonStore:
    def __init__(self, client: Any, url: str = "redis") -> None:
        self.client = client
        self.url = url

    def propose(self, text: str, label: str | None, source: Source) -> Lesson | None:
        """Add a pending lesson, or count one more sighting of it; None when it is not kept
        (empty or too long a text, or the store full)."""
        lesson = new_lesson(text, label, source)
        if lesson is None:
            return None

        def add(pipe: Any) -> Lesson | None:
            known = _parse(pipe.hget(keys.ROUTER_LESSONS, lesson.id))
            if known is None and pipe.scard(keys.ROUTER_LESSONS_PENDING) >= MAX_LESSONS:
                return None
            kept = lesson if known is None else known.model_copy(update={"seen": known.seen + 1})
            pipe.multi()
            pipe.hset(keys.ROUTER_LESSONS, lesson.id, kept.model_dump_json())
            if kept.status == "pending":
                pipe.sadd(keys.ROUTER_LESSONS_PENDING, lesson.id)
            return kept

        with redis_errors(self.url):
            result: Lesson | None = self.client.transaction(
                add, keys.ROUTER_LESSONS, keys.ROUTER_LESSONS_PENDING, value_from_callable=True
            )
        return result

    def lessons(self, status: Status | None = None) -> list[Lesson]:
        """Lessons (of one status), most often seen first."""
        with redis_errors(self.url):
            raw = self.client.hvals(keys.ROUTER_LESSONS)
        parsed = (_parse(item) for item in raw)
        found = [x for x in parsed if x is not None and (status is None or x.status == status)]
        return sorted(found, key=lambda lesson: (-lesson.seen, lesson.first_seen, lesson.id))

    def decide(self, ids: list[str], status: Status) -> list[Lesson]:
        """Accept or reject lessons by id (all or none: an unknown id changes nothing)."""
        return self._write(ids, lambda lesson: lesson.model_copy(update={"status": status}))

    def correct(self, text: str, label: str | None, replaces: str | None = None) -> Lesson:
        """An operator's own lesson, accepted at once; `replaces` (a lesson id) is rejected in
        the same transaction, which is how a wrong proposal is relabelled."""
        lesson = new_lesson(text, label, "correction", "accepted")
        if lesson is None:
            raise InvalidRequestError(
                f"a lesson's text must have 1 to {MAX_TEXT_CHARS} characters", param="text"
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
        chosen = [lesson for item in raw if (lesson := _parse(item)) is not None]
        queries = [
            LabelledQuery(text=lesson.text, label=lesson.label)
            for lesson in sorted(chosen, key=lambda lesson: lesson.id)
            if lesson.status == "accepted"
        ]
        return int(version or 0), queries

    def _write(self, ids: list[str], change: Any, extra: Lesson | None = None) -> list[Lesson]:
        def update(pipe: Any) -> list[Lesson]:
            found = [_parse(raw) for raw in pipe.hmget(keys.ROUTER_LESSONS, ids)] if ids else []
            missing = [i for i, lesson in zip(ids, found, strict=True) if lesson is None]
            if missing:
                raise NotFoundError(f"no lesson with id {', '.join(missing)}", param="id")
            before = [lesson for lesson in found if lesson is not None]
            after = [change(lesson) for lesson in before]
            moved = any(
                (old.status == "accepted") != (new.status == "accepted")
                for old, new in zip(before, after, strict=True)
            )
            pipe.multi()
            for lesson in after + ([extra] if extra else []):
                pipe.hset(keys.ROUTER_LESSONS, lesson.id, lesson.model_dump_json())
                if lesson.status == "pending":
                    pipe.sadd(keys.ROUTER_LESSONS_PENDING, lesson.id)
                else:
                    pipe.srem(keys.ROUTER_LESSONS_PENDING, lesson.id)
            if moved or extra is not None:
                pipe.incr(keys.ROUTER_LESSONS_VERSION)
            return after

        with redis_errors(self.url):
            result: list[Lesson] = self.client.transaction(
                update, keys.ROUTER_LESSONS, keys.ROUTER_LESSONS_PENDING, value_from_callable=True
            )
        return result


def _parse(raw: str | None) -> Lesson | None:
    """A stored lesson, or None when absent or damaged (logged: one bad entry blocks nothing)."""
    if raw is None:
        return None
    try:
        return Lesson.model_validate_json(raw)
    except ValidationError as error:
        logger.warning("skipping a damaged router lesson: %s", error.errors()[0]["msg"])
        return None
