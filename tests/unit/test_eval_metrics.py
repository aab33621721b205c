"""Metrics: a reference scores 1 against itself, wrong or hostile answers score 0, and nothing a
prediction does reaches outside its in-memory database or its sandbox."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from registry.errors import InvalidRequestError
from specialists.evaluation.metrics import (
    first_json_object,
    first_statement,
    get_metric,
    metric_names,
    score,
)
from specialists.evaluation.sandbox import run_python
from specialists.training.records import ChatRecord, DataError, Turn

DB = (
    "CREATE TABLE employees (name TEXT, department TEXT, salary INTEGER);\n"
    "INSERT INTO employees VALUES ('Ann', 'Sales', 500), ('Bo', 'Sales', 700), "
    "('Cy', 'Support', 600), ('Di', 'Finance', 900);"
)


def record(answer: str, **check: object) -> ChatRecord:
    return ChatRecord(
        messages=[Turn(role="user", content="q"), Turn(role="assistant", content=answer)],
        check=dict(check),
    )


def sql(answer: str) -> ChatRecord:
    return record(answer, db=DB)


def test_the_registry_lists_its_metrics_and_names_them_when_one_is_unknown() -> None:
    assert {"exact", "json_fields", "sql_execution", "unit_tests"} <= set(metric_names())
    with pytest.raises(InvalidRequestError, match="known metrics: exact, json_fields"):
        get_metric("bleu")


def test_exact_ignores_whitespace_and_case_only() -> None:
    assert score("exact", "  paris\n", record("Paris")) == 1.0
    assert score("exact", "Lyon", record("Paris")) == 0.0


# -- json_fields ---------------------------------------------------------------------------------
REF = '{"name": "Ann Lee", "quantity": 3, "total": 12.5, "email": null}'


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (REF, 1.0),
        ('Sure!\n```json\n{"name": "ann  lee", "quantity": "3", "total": 12.50, "email": null}'
         "\n```", 1.0),
        ('{"name": "Ann Lee", "quantity": 3, "total": 99, "email": null, "extra": 1}', 0.75),
        ('{"name": "Ann Lee", "quantity": 3, "total": 12.5}', 0.75),  # a left-out key is wrong
        ('{"name": "Ann Lee", "quantity": 3, "total": 12.5, "email": "null"}', 0.75),
        ('{"name": "Ann Lee", "quantity": 3, "total": "$12.50", "email": null}', 1.0),
        ("name: Ann Lee, quantity: 3", 0.0),
        ('{"name": "Ann Lee", "quantity": 3', 0.0),
        ("[1, 2]", 0.0),
        ("", 0.0),
    ],
)  # fmt: skip
def test_json_fields_scores_the_share_of_reference_keys_with_equal_values(
    prediction: str, expected: float
) -> None:
    assert score("json_fields", prediction, record(REF)) == pytest.approx(expected)


def test_first_json_object_skips_braces_that_are_not_json() -> None:
    assert first_json_object('{oops} then {"a": 1} and {"b": 2}') == {"a": 1}


def test_a_reference_that_is_not_json_is_a_data_error() -> None:
    with pytest.raises(DataError):
        score("json_fields", "{}", record("not json"))


# -- sql_execution -------------------------------------------------------------------------------
REF_SQL = "SELECT name FROM employees WHERE department = 'Sales';"


@pytest.mark.parametrize(
    "prediction",
    [
        REF_SQL,
        "select name from employees where department='Sales'",
        "```sql\nSELECT name FROM employees WHERE department = 'Sales' ORDER BY name DESC;\n```",
        "SELECT name FROM employees WHERE salary < 800 AND department != 'Support'",
        f"{REF_SQL} DROP TABLE employees;",  # only the first statement counts
    ],
)
def test_sql_with_the_same_rows_scores_one_in_any_order(prediction: str) -> None:
    assert score("sql_execution", prediction, sql(REF_SQL)) == 1.0


def test_sql_order_counts_when_the_reference_orders() -> None:
    reference = sql("SELECT name FROM employees ORDER BY salary DESC LIMIT 2;")
    assert (
        score("sql_execution", "SELECT name FROM employees ORDER BY salary DESC LIMIT 2", reference)
        == 1.0
    )
    assert score("sql_execution", "SELECT name FROM employees WHERE salary > 650", reference) == 0.0


def test_sql_averages_compare_after_rounding() -> None:
    reference = sql("SELECT AVG(salary) FROM employees;")
    assert (
        score("sql_execution", "SELECT SUM(salary) * 1.0 / COUNT(*) FROM employees", reference)
        == 1.0
    )


@pytest.mark.parametrize(
    "prediction",
    [
        "SELECT name FROM employees",
        "SELECT name, salary FROM employees WHERE department = 'Sales'",
        "SELECT nme FROM employees",
        "I think you want the Sales people.",
        "",
        "DROP TABLE employees;",
        "DROP TABLE employees; SELECT name FROM employees",
        "DELETE FROM employees WHERE department != 'Sales';",
        "WITH x AS (SELECT 1) DELETE FROM employees WHERE department != 'Sales'",
        "PRAGMA table_info(employees)",
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT randomblob(2000000000)",
    ],
)
def test_wrong_or_writing_sql_scores_zero(prediction: str) -> None:
    assert score("sql_execution", prediction, sql(REF_SQL)) == 0.0


def test_sql_attach_creates_no_file(tmp_path: Path) -> None:
    target = tmp_path / "stolen.db"
    for attempt in (
        f"ATTACH DATABASE '{target}' AS x",
        f"SELECT * FROM employees; ATTACH '{target}' AS x",
    ):
        assert score("sql_execution", attempt, sql(REF_SQL)) == 0.0
    assert not target.exists()
    with pytest.raises(DataError):  # a db script may not attach files either
        score("sql_execution", REF_SQL, record(REF_SQL, db=f"ATTACH '{target}' AS x; {DB}"))
    assert not target.exists()


def test_a_runaway_query_is_stopped_within_seconds() -> None:
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    started = time.monotonic()
    assert score("sql_execution", forever, sql(REF_SQL)) == 0.0
    assert time.monotonic() - started < 5


MUSEUMS = "CREATE TABLE museums (name TEXT, city TEXT, opened_year INTEGER);\nINSERT INTO museums "
LUCKY_DB = (
    f"{MUSEUMS}VALUES ('Iron', 'Leeds', 1902), ('Lost', 'Leeds', 1850), ('Echo', 'Perth', 1820);"
)
EXPOSING_DB = (
    f"{MUSEUMS}VALUES ('Wild', 'Leeds', 1846), ('Gold', 'Leeds', 1990), ('Ash', 'Porto', 1901);"
)
LEEDS_SQL = "SELECT name FROM museums WHERE city = 'Leeds' AND opened_year > 1846;"
# Text sorts above numbers in SQLite: every Leeds row has `city > 1846`.
LUCKY_SQL = "SELECT name FROM museums WHERE city = 'Leeds' AND city > 1846"


def test_a_query_right_by_luck_on_db_scores_zero_when_an_alternative_db_exposes_it() -> None:
    assert score("sql_execution", LUCKY_SQL, record(LEEDS_SQL, db=LUCKY_DB)) == 1.0
    assert score("sql_execution", LUCKY_SQL, record(LEEDS_SQL, db=LUCKY_DB, db_alt=[])) == 1.0
    suite = record(LEEDS_SQL, db=LUCKY_DB, db_alt=[LUCKY_DB, EXPOSING_DB])
    assert score("sql_execution", LUCKY_SQL, suite) == 0.0
    assert score("sql_execution", LEEDS_SQL, suite) == 1.0
    assert score("sql_execution", f"{LEEDS_SQL.rstrip(';')} ORDER BY name DESC", suite) == 1.0
    assert score("sql_execution", LEEDS_SQL.replace(">", ">="), suite) == 0.0


def test_an_error_on_any_database_scores_zero() -> None:
    # abs() of the smallest integer overflows, but only the alternative db holds one.
    overflow = DB.replace("('Bo', 'Sales', 700)", "('Bo', 'Sales', -9223372036854775808)")
    prediction = "SELECT name FROM employees WHERE department = 'Sales' AND abs(salary) > 0"
    assert score("sql_execution", prediction, sql(REF_SQL)) == 1.0
    assert score("sql_execution", prediction, record(REF_SQL, db=DB, db_alt=[overflow])) == 0.0


def test_a_broken_alternative_db_or_reference_on_it_is_a_data_error() -> None:
    with pytest.raises(DataError):
        score("sql_execution", REF_SQL, record(REF_SQL, db=DB, db_alt=["CREATE TABLE oops ("]))
    with pytest.raises(DataError):  # the reference's table is missing from the alternative
        score("sql_execution", REF_SQL, record(REF_SQL, db=DB, db_alt=["CREATE TABLE t (x);"]))
    for bad in (DB, [1], None):
        with pytest.raises(DataError, match="db_alt"):
            score("sql_execution", REF_SQL, record(REF_SQL, db=DB, db_alt=bad))


def test_a_broken_reference_or_missing_db_is_a_data_error() -> None:
    with pytest.raises(DataError):
        score("sql_execution", REF_SQL, sql("SELECT nothing FROM nowhere;"))
    with pytest.raises(DataError):
        score("sql_execution", REF_SQL, record(REF_SQL))


def test_first_statement_respects_quotes_and_fences() -> None:
    assert first_statement("SELECT 'a;b' FROM t; DROP TABLE t") == "SELECT 'a;b' FROM t"
    assert first_statement("Here:\n```sql\nSELECT 1;\n```\nDone.") == "SELECT 1"
    assert first_statement("The answer is:\nSELECT 2; SELECT 3;") == "SELECT 2"
    assert (
        first_statement("Go with x AS (SELECT 1) SELECT * FROM x")
        == "with x AS (SELECT 1) SELECT * FROM x"
    )
    assert first_statement("DROP TABLE t; SELECT 1") == "SELECT 1"  # the query, not the drop


# -- unit_tests ----------------------------------------------------------------------------------
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


def code(prediction: str) -> float:
    return score("unit_tests", prediction, record("def add(a, b):\n    return a + b", tests=TESTS))


def test_code_that_passes_the_asserts_scores_one_even_in_a_fence() -> None:
    assert code("def add(a, b):\n    return a + b") == 1.0
    assert code("Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nEnjoy!") == 1.0


def test_failing_or_broken_code_scores_zero() -> None:
    assert code("def add(a, b):\n    return a - b") == 0.0
    assert code("def add(a, b) return a + b") == 0.0
    assert code("import sys\nsys.exit(0)") == 0.0  # exits cleanly before the asserts run
    assert code("import os\nos._exit(0)") == 0.0
    assert code("") == 0.0


def test_an_infinite_loop_is_killed_at_the_timeout() -> None:
    started = time.monotonic()
    assert code("while True:\n    pass") == 0.0
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(
    "cheat",
    [
        "import builtins\nbuiltins.exec = lambda *a, **k: None",
        "import builtins\nreal = compile\nbuiltins.compile = lambda *a, **k: real('1', '', 'exec')",
        "import builtins, os\nreal = open\nbuiltins.open = lambda *a, **k: real(os.devnull)",
        "import builtins\nbuiltins.vars = lambda *a: {'add': lambda a, b: a + b}",
    ],
)
def test_rebinding_builtins_does_not_skip_the_tests(cheat: str) -> None:
    assert code(cheat) == 0.0


def test_a_trace_function_cannot_jump_the_runner_past_the_tests() -> None:
    jump = (
        "import sys\n"
        "lines = open('runner.py').read().splitlines()\n"
        "end = next(n for n, line in enumerate(lines, 1) if 'write(1' in line)\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'line' and frame.f_code.co_name == 'main':\n"
        "        frame.f_lineno = end\n"
        "    return tracer\n"
        "frame = sys._getframe()\n"
        "while frame.f_code.co_name != 'main':\n"
        "    frame = frame.f_back\n"
        "frame.f_trace = tracer\n"
        "sys.settrace(tracer)"
    )
    assert code(jump) == 0.0


def test_the_answer_cannot_read_the_nonce_from_stdin_environment_or_argv() -> None:
    leak = (
        "import os, re, sys\n"
        "seen = sys.stdin.read() + ' '.join([*os.environ.values(), *sys.argv])\n"
        "seen += open('/proc/self/environ').read() + open('/proc/self/cmdline').read()\n"
        "print(*re.findall('[0-9a-f]{32}', seen)[-1:], flush=True)\n"
        "os._exit(0)"
    )
    assert code(leak) == 0.0


def test_an_answer_that_forks_in_a_loop_scores_zero_quickly() -> None:
    # Bounded (each child sleeps, the parent goes on), so a regression scores 1, not a fork bomb.
    forks = (
        "import os, time\n"
        "for _ in range(100):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "def add(a, b):\n"
        "    return a + b"
    )
    started = time.monotonic()
    assert code(forks) == 0.0
    assert time.monotonic() - started < 4


@pytest.mark.skipif(
    os.geteuid() != 0, reason="RLIMIT_NPROC counts all of a non-root user's processes"
)
def test_threads_still_work_where_processes_do_not() -> None:
    threads = (
        "import threading\n"
        "done = []\n"
        "workers = [threading.Thread(target=done.append, args=(n,)) for n in range(4)]\n"
        "for worker in workers:\n"
        "    worker.start()\n"
        "for worker in workers:\n"
        "    worker.join()\n"
        "assert sorted(done) == [0, 1, 2, 3]\n"
        "import subprocess\n"
        "try:\n"
        "    subprocess.run(['true'])\n"
        "except OSError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('started a process')"
    )
    result = run_python(threads)
    assert result.passed, result.output


def test_a_main_block_in_the_answer_does_not_run() -> None:
    main = 'if __name__ == "__main__":\n    input()'
    assert code(f"def add(a, b):\n    return a + b\n{main}") == 1.0


def test_a_memory_bomb_fails_instead_of_taking_the_machine() -> None:
    assert code("x = bytearray(4 * 1024 ** 3)\ndef add(a, b):\n    return a + b") == 0.0


def test_the_sandbox_sees_no_secrets_and_writes_in_a_temporary_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_TEST_SECRET", "hunter2")
    result = run_python(
        "import os, sys\n"
        "assert 'MESH_TEST_SECRET' not in os.environ, 'leaked'\n"
        "assert os.getcwd().startswith(__import__('tempfile').gettempdir())\n"
        "assert sys.flags.isolated\n"
        "open('out.txt', 'w').write('ok')"
    )
    assert result.passed, result.output


def test_a_missing_test_suite_is_a_data_error() -> None:
    with pytest.raises(DataError):
        score("unit_tests", "x = 1", record("x = 1"))
