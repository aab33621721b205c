"""Named metrics: `score(prediction, record) -> float` in [0, 1], the reference being
`record.answer` and anything else a metric needs in `record.check`.

Every metric is strict about what it runs and lenient about surface form: a prediction wrapped in
code fences or followed by chatter still counts if its substance is right, while SQL runs
read-only in memory under a time bound and Python runs in a separate, limited process. A broken
reference (SQL that fails, JSON that does not parse) is the data's fault and raises `DataError`
rather than scoring 0, so a bad eval file is noticed instead of silently lowering every score.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from registry.errors import InvalidRequestError
from specialists.evaluation.sandbox import run_tests
from specialists.training.records import ChatRecord, DataError

Metric = Callable[[str, ChatRecord], float]
METRICS: dict[str, Metric] = {}


def register(name: str) -> Callable[[Metric], Metric]:
    """Add a metric under `name` (a plugin can register more the same way)."""

    def add(metric: Metric) -> Metric:
        METRICS[name] = metric
        return metric

    return add


def metric_names() -> list[str]:
    return sorted(METRICS)


def get_metric(name: str) -> Metric:
    """The metric called `name`; an unknown name is an error that lists the known ones."""
    if name not in METRICS:
        raise InvalidRequestError(
            f"unknown metric {name!r}; known metrics: {', '.join(metric_names())}",
            param="metric",
        )
    return METRICS[name]


def score(name: str, prediction: str, record: ChatRecord) -> float:
    return get_metric(name)(prediction, record)


# -- exact -----------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Whitespace collapsed and case folded: "Paris " and "paris" are the same answer."""
    return " ".join(text.split()).casefold()


@register("exact")
def exact(prediction: str, record: ChatRecord) -> float:
    """1 when the prediction equals the reference up to whitespace and letter case."""
    return float(normalize_text(prediction) == normalize_text(record.answer))


# -- json_fields -----------------------------------------------------------------------------
def first_json_object(text: str) -> dict[str, Any] | None:
    """The first `{...}` in `text` that parses as a JSON object (fences and chatter around it
    are ignored); None when there is none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", "").lstrip("$"))
        except ValueError:
            return None
    return None


def values_match(reference: Any, predicted: Any) -> bool:
    """Light normalisation: text compares like `exact` (trailing '.' ignored); a number matches
    the same number written as a string ("12.50", "$1,250"); null matches only null."""
    if reference is None or predicted is None:
        return reference is None and predicted is None
    if isinstance(reference, bool) or isinstance(predicted, bool):
        return reference is predicted
    if isinstance(reference, int | float):
        number = _number(predicted)
        return number is not None and math.isclose(number, reference, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(reference, str):
        if not isinstance(predicted, str | int | float):
            return False
        return normalize_text(str(predicted)).rstrip(".") == normalize_text(reference).rstrip(".")
    if isinstance(reference, list):
        return (
            isinstance(predicted, list)
            and len(predicted) == len(reference)
            and all(values_match(r, p) for r, p in zip(reference, predicted, strict=True))
        )
    if isinstance(reference, dict):
        return (
            isinstance(predicted, dict)
            and set(predicted) == set(reference)
            and all(values_match(reference[k], predicted[k]) for k in reference)
        )
    return bool(reference == predicted)


@register("json_fields")
def json_fields(prediction: str, record: ChatRecord) -> float:
    """Mean over the reference's keys of a matching value; a key left out is wrong (even when
    the reference is null), extra keys cost nothing, no JSON object scores 0."""
    reference = first_json_object(record.answer)
    if reference is None:
        raise DataError(f"json_fields: the reference is not a JSON object: {record.answer[:80]!r}")
    predicted = first_json_object(prediction)
    if predicted is None:
        return 0.0
    if not reference:
        return 1.0
    hits = sum(
        key in predicted and values_match(reference[key], predicted[key]) for key in reference
    )
    return hits / len(reference)


# -- sql_execution ---------------------------------------------------------------------------
SQL_SECONDS = 2.0
MAX_ROWS = 10_000
_READ_ONLY_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_READ_ONLY_ACTIONS.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))
_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_QUERY_START = re.compile(r"\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\(|AS\b)", re.IGNORECASE)


def first_statement(text: str) -> str:
    """The first query in a prediction: inside a code fence if there is one, from the first
    SELECT (or WITH ... AS) on, up to the first `;` outside quotes. Lead-in chatter ("The answer
    is:") is skipped, so a model is scored on its query, not its manners; text with no query
    comes back whole (and is refused when run)."""
    fence = _FENCE.search(text)
    body = (fence.group(1) if fence else text).strip()
    start = _QUERY_START.search(body)
    body = body[start.start() :] if start else body
    quote = ""
    for i, ch in enumerate(body):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == ";":
            return body[:i].strip()
    return body.strip()


def _open_db(script: str) -> sqlite3.Connection:
    """The record's database in memory; ATTACH is impossible (no files are ever touched)."""
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)
    deadline = time.monotonic() + 5 * SQL_SECONDS
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        db.executescript(script)
    except sqlite3.Error as error:
        db.close()
        raise DataError(f"sql_execution: the record's db script fails: {error}") from None
    db.execute("PRAGMA query_only = ON")
    db.set_authorizer(_read_only)
    return db


def _read_only(action: int, *_: object) -> int:
    """sqlite3 authorizer: reading and functions only (no writes, PRAGMA, ATTACH, DDL)."""
    return sqlite3.SQLITE_OK if action in _READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY


def run_query(db: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only query, within `SQL_SECONDS` and `MAX_ROWS`; sqlite3.Error otherwise.
    Floats are rounded so AVG computed two ways still compares equal."""
    if not re.match(r"\s*(SELECT|WITH)\b", sql, re.IGNORECASE):
        raise sqlite3.DatabaseError("only SELECT or WITH queries are run")
    deadline = time.monotonic() + SQL_SECONDS
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        rows = db.execute(sql).fetchmany(MAX_ROWS + 1)
    finally:
        db.set_progress_handler(None, 0)
    if len(rows) > MAX_ROWS:
        raise sqlite3.DatabaseError(f"more than {MAX_ROWS} rows")
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


@register("sql_execution")
def sql_execution(prediction: str, record: ChatRecord) -> float:
    """1 when the prediction's first statement returns the reference's rows: as a multiset, or
    in order when the reference has ORDER BY. Anything but a read-only query scores 0.

    The rows must match on `check["db"]` and on every script in `check["db_alt"]` (optional: the
    same tables with other rows), so a query that is right by luck on one database, such as a
    filter on the wrong column that happens to keep the same rows, scores 0 (test-suite execution
    accuracy, Zhong et al. 2020). An error on any database scores 0."""
    script = record.check.get("db")
    if not isinstance(script, str):
        raise DataError('sql_execution: the record needs check["db"], a SQL script')
    alternatives = record.check.get("db_alt", [])
    if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
        raise DataError('sql_execution: check["db_alt"] must be a list of SQL scripts')
    ordered = re.search(r"\bORDER\s+BY\b", record.answer, re.IGNORECASE) is not None
    return float(
        all(_same_rows(prediction, record.answer, s, ordered) for s in [script, *alternatives])
    )


def _same_rows(prediction: str, reference: str, script: str, ordered: bool) -> bool:
    """Whether the prediction returns the reference's rows on the database `script` builds."""
    db = _open_db(script)
    try:
        try:
            expected = run_query(db, first_statement(reference))
        except sqlite3.Error as error:
            raise DataError(f"sql_execution: the reference query fails: {error}") from None
        try:
            got = run_query(db, first_statement(prediction))
        except (sqlite3.Error, sqlite3.Warning, OverflowError, MemoryError):
            return False
    finally:
        db.close()
    return got == expected if ordered else Counter(got) == Counter(expected)


# -- unit_tests ------------------------------------------------------------------------------
def code_of(prediction: str) -> str:
    """The Python in a prediction: the first fenced block if any, else the whole text."""
    fence = _FENCE.search(prediction)
    return fence.group(1) if fence else prediction


@register("unit_tests")
def unit_tests(prediction: str, record: ChatRecord) -> float:
    """1 when `check["tests"]` (asserts) all hold against the prediction's code, run in a
    sandboxed subprocess (see `sandbox.run_tests`)."""
    tests = record.check.get("tests")
    if not isinstance(tests, str):
        raise DataError('unit_tests: the record needs check["tests"], Python asserts')
    return float(run_tests(code_of(prediction), tests).passed)
