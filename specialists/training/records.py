"""Chat JSONL: the one file format for fine-tuning data and labelled evaluation sets.

Each line is `{"messages": [...], "check": {...}}`. For training, the loss falls on the assistant
turns. For evaluation, the last message is the reference answer (an assistant turn) and the
prompt is everything before it; `check` carries what a metric needs beyond the reference (the
SQLite database for execution accuracy, the unit tests for code). One format means one reader,
one set of error messages, and an eval file that can also be trained on (or checked for leaks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry.errors import InvalidRequestError

MAX_LINE_BYTES = 256 * 1024
MAX_RECORDS = 1_000_000


class DataError(InvalidRequestError):
    """A data file that cannot be used; the message names the file and line."""


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=64_000)


class ChatRecord(BaseModel):
    """One conversation; the final assistant turn is the target (training) or reference (eval)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Turn] = Field(min_length=2, max_length=64)
    check: dict[str, Any] = Field(
        default_factory=dict, description="Metric inputs beyond the reference answer."
    )

    @model_validator(mode="after")
    def _ends_with_answer(self) -> ChatRecord:
        if self.messages[-1].role != "assistant":
            raise ValueError("the last message must be the assistant's answer")
        if not any(turn.role == "user" for turn in self.messages[:-1]):
            raise ValueError("needs a user message before the answer")
        if any(turn.role == "system" for turn in self.messages[1:]):
            raise ValueError("a system message may only come first")
        return self

    @property
    def prompt(self) -> list[Turn]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1].content

    def user_text(self) -> str:
        """The last user turn: what a router or a person would see as the query."""
        return next(t.content for t in reversed(self.messages) if t.role == "user")


def parse_line(line: str, *, where: str) -> ChatRecord:
    """One JSONL line as a record; errors say `where` (file:line) and what is wrong."""
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise DataError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f'{where}: each line must be an object like {{"messages": [...]}}')
    try:
        return ChatRecord.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "line"
        raise DataError(f"{where}: {field}: {first['msg']}") from None


def read_records(path: Path, *, limit: int = MAX_RECORDS) -> list[ChatRecord]:
    """Every record of a chat JSONL file (blank lines skipped); the first bad line raises."""
    return list(iter_records(path, limit=limit))


def iter_records(path: Path, *, limit: int = MAX_RECORDS) -> Iterator[ChatRecord]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    count = 0
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                count += 1
                if count > limit:
                    raise DataError(f"{path}: more than {limit} records")
                yield parse_line(line, where=f"{path}:{number}")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    if count == 0:
        raise DataError(f"{path}: no records")


def write_records(path: Path, records: list[ChatRecord]) -> None:
    """Write records as JSONL (one object per line, `check` omitted when empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            data = record.model_dump(exclude_defaults=True)
            handle.write(json.dumps(data, ensure_ascii=False) + "\n")


def file_sha256(path: Path) -> str:
    """Provenance pin of a data file (cards record what an adapter was trained on)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
