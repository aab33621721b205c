"""The planner's arithmetic scanner: finds what is arithmetic, leaves codes and dates alone,
never raises, and stays linear on hostile input."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specialists.tools.arithmetic import MAX_EXPRESSIONS, find_arithmetic
from specialists.tools.math import MathError, evaluate

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "planner_set.jsonl"
BOUNDED = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 17*23?", ["17*23"]),
        ("what's 12 x 7", ["12 * 7"]),
        ("17*23 then write a haiku", ["17*23"]),
        ("what is 1/0 and 2+2", ["1/0", "2+2"]),
        ("What is 15% of 80?", ["15/100 * 80"]),
        ("How much is 100 - 37?", ["100 - 37"]),
        ("What is 7 multiplied by 8?", ["7 * 8"]),
        ("2 to the power of 10", ["2 ** 10"]),
        ("5 squared", ["5**2"]),
        ("square root of 144 plus 1", ["sqrt(144) + 1"]),
        ("sqrt(16) + gcd(12, 18)", ["sqrt(16) + gcd(12, 18)"]),
        ("what is 3 * -2", ["3 * -2"]),
        ("1,000 * 12", ["1000 * 12"]),
        ("10 \u00f7 4 and 6 \u00d7 7", ["10 / 4", "6 * 7"]),
        ("3.5 - 1.25 = ?", ["3.5 - 1.25"]),
        ("Estimate: (61158 - 308) / 3", ["(61158 - 308) / 3"]),
    ],
)
def test_arithmetic_is_found_in_python_syntax(text: str, expected: list[str]) -> None:
    assert find_arithmetic(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Call me at 555-1234",
        "(555) 123-4567",
        "+1 415 555 0100",
        "The meeting is on 2024-01-05",
        "Born 12/25/2023",
        "What is 12/25/2023?",
        "Can we meet on 5/6?",
        "I work 9-5 daily",
        "Office hours 9:30-10:15",
        "Can we do 10-11am?",
        "Upgrade to v1.2.3",
        "This needs Python 3.11",
        "Works on 2.0-rc1",
        "We expect 10-20 people",
        "Read pages 3-7",
        "I live at 12 Main St, Apt 4/5",
        "SKU 123-456 is out of stock",
        "ISBN 978-3-16-148410-0",
        "We won 3-1 last night",
        "Mix it 1:3, screen 16:9",
        "1. Buy milk 2. Call mom",
        "The war lasted from 1939-1945.",
        "1920x1080 screen",
        "The room is 12 x 14 ft",
        "Room 3+2 layout, south facing",
        "The score was 3 + 1 after extra time",
        "no numbers here",
    ],
)
def test_codes_dates_and_ranges_are_not_arithmetic(text: str) -> None:
    assert find_arithmetic(text) == []


def test_the_labelled_set_meets_the_precision_and_recall_goals() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    found = [(bool(find_arithmetic(row["text"])), row["arithmetic"]) for row in rows]
    true_positives = sum(1 for got, want in found if got and want)
    predicted = sum(1 for got, _ in found if got)
    actual = sum(1 for _, want in found if want)
    assert actual >= 200 and len(rows) - actual >= 200
    assert true_positives / predicted >= 0.99, "precision"
    assert true_positives / actual >= 0.95, "recall"


# name -> a hostile prompt of about n characters
ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "digits": lambda n: "1" * n,
    "digit-minus": lambda n: "1-" * (n // 2),
    "open-parens": lambda n: "(" * (n - 1) + "1",
    "nested": lambda n: "(" * (n // 2 - 1) + "1+" + ")" * (n // 2 - 1),
    "spaced-digits": lambda n: "1 " * (n // 2),
    "cues": lambda n: "what is 9-5 " * (n // 12),
    "grouped": lambda n: "1,234" * (n // 5),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_a_32k_hostile_prompt_scans_in_linear_time(name: str) -> None:
    # best of three: one slow sample on a loaded machine says nothing about the algorithm
    small = min(_cpu_seconds(ADVERSARIAL[name](8_192)) for _ in range(3))
    full = min(_cpu_seconds(ADVERSARIAL[name](32_768)) for _ in range(3))
    assert full < 1.0
    assert full < 8 * small + 0.1, f"{full:.3f}s for 4x the input of {small:.3f}s"


def test_work_is_capped() -> None:
    assert len(find_arithmetic("2*3 " * 100)) == MAX_EXPRESSIONS
    assert find_arithmetic("1" + "+1" * 200) == []  # longer than any question asks


digit_heavy = st.text(alphabet="0123456789 -/.:,()", max_size=400)
operator_soup = st.text(alphabet="0123456789+-*/^()%=?., x\u00d7\u00f7", max_size=400)
PIECES = (
    "what is", "times", "plus", "divided by", "squared", "% of", "sqrt(", ")", "(", "-", "x",
    "?", "=", "12", "3.5", "007", "1,234", "v1.2", "9:30", " ", "and",
)  # fmt: skip
wordy = st.lists(st.sampled_from(PIECES), max_size=60).map(" ".join)


@BOUNDED
@given(st.text(max_size=2_000) | digit_heavy | operator_soup | wordy)
def test_scanning_never_raises_and_every_result_evaluates_or_fails_cleanly(text: str) -> None:
    for expression in find_arithmetic(text):
        assert len(expression) <= 400
        with contextlib.suppress(MathError):
            assert evaluate(expression)


@BOUNDED
@given(st.text(alphabet="0123456789-+*/( )", min_size=500, max_size=2_000))
def test_scanning_time_grows_linearly_on_random_operator_text(text: str) -> None:
    best = min(_cpu_seconds(text) for _ in range(3))  # one slow sample is the machine's
    assert best < 0.002 * len(text) / 100 + 0.2


def _cpu_seconds(text: str) -> float:
    started = time.process_time()
    find_arithmetic(text)
    return time.process_time() - started
