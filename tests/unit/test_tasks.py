"""Task generators: deterministic, valid records, evaluation held out by structure, references
that really answer (SQL runs and returns rows; JSON values come from the text)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from registry.errors import InvalidRequestError
from specialists.evaluation.metrics import get_metric
from specialists.tasks import TASKS, get_task, structure_overlap, task_names
from specialists.tasks.__main__ import main
from specialists.tasks.extract_kinds import HELD_OUT_KINDS, TRAIN_KINDS
from specialists.tasks.sql import ALT_DBS
from specialists.tasks.sql_domains import HELD_OUT_DOMAINS, TRAIN_DOMAINS
from specialists.training.records import ChatRecord, file_sha256, read_records, write_records

SPLITS = {name: task.make_splits(240, 60, 7) for name, task in TASKS.items()}
SQL_SEED_0 = get_task("sql").make_splits(2000, 120, 0)
# sha256 of the seed-0 SQL files above, as written by `write_records` before evaluation records
# had `check["db_alt"]` (a training run used this training file): the eval file is hashed
# without `db_alt`, so the pin covers its questions, answers, `db`, domains and templates.
SQL_SEED_0_TRAIN_SHA256 = "7630b529a792d8caffbcfc596125d508ac514c4ac741f332f1e2a8fd0cd7d1db"
SQL_SEED_0_EVAL_SHA256 = "d973b87da2f4b5c0d6965fc75e2b1402e7e30c61031af97f0e8bd7ac31b6134e"


def table_of(record: ChatRecord) -> str:
    match = re.search(r"CREATE TABLE (\w+) \(", record.user_text())
    assert match
    return match.group(1)


@pytest.mark.parametrize("name", task_names())
def test_the_same_seed_gives_the_same_records_and_another_seed_others(name: str) -> None:
    task = get_task(name)
    assert task.make_splits(30, 10, 3) == task.make_splits(30, 10, 3)
    assert task.make_splits(30, 10, 3) != task.make_splits(30, 10, 4)


@pytest.mark.parametrize("name", task_names())
def test_records_are_system_user_answer_and_survive_the_jsonl_round_trip(
    name: str, tmp_path: Path
) -> None:
    train, held_out = SPLITS[name]
    assert (len(train), len(held_out)) == (240, 60)
    for record in train + held_out:
        assert [t.role for t in record.messages] == ["system", "user", "assistant"]
        assert record.messages[0].content == TASKS[name].system_prompt
    write_records(tmp_path / "train.jsonl", train)
    assert read_records(tmp_path / "train.jsonl") == train


@pytest.mark.parametrize("name", task_names())
def test_evaluation_shares_no_domain_with_training_and_uses_unseen_phrasings(name: str) -> None:
    train, held_out = SPLITS[name]
    assert not structure_overlap(train, held_out)
    train_phrasings = {r.check["template"] for r in train}
    assert all(".h" not in t for t in train_phrasings)
    assert any(".h" in r.check["template"] for r in held_out)
    assert not {r.user_text() for r in train} & {r.user_text() for r in held_out}


def test_sql_held_out_tables_never_appear_in_training() -> None:
    train, held_out = SPLITS["sql"]
    assert not {d.table for d in TRAIN_DOMAINS} & {d.table for d in HELD_OUT_DOMAINS}
    assert {table_of(r) for r in train} == {d.table for d in TRAIN_DOMAINS}
    assert {table_of(r) for r in held_out} == {d.table for d in HELD_OUT_DOMAINS}
    assert len(TRAIN_DOMAINS) >= 12 and len(HELD_OUT_DOMAINS) >= 5


def test_extract_held_out_kinds_are_new_and_each_asks_for_keys_training_never_used() -> None:
    assert not {k.name for k in TRAIN_KINDS} & {k.name for k in HELD_OUT_KINDS}
    trained_keys = {key for kind in TRAIN_KINDS for key in kind.keys}
    for kind in HELD_OUT_KINDS:
        assert set(kind.keys) - trained_keys, kind.name


def databases(record: ChatRecord) -> list[str]:
    return [record.check["db"], *record.check.get("db_alt", [])]


def one_database(record: ChatRecord) -> ChatRecord:
    """The record as it was before evaluation records had alternative databases."""
    return record.model_copy(update={"check": {"db": record.check["db"]}})


def test_every_reference_query_runs_on_each_of_its_databases_and_returns_rows() -> None:
    train, held_out = SPLITS["sql"]
    for record in train + held_out + SQL_SEED_0[1]:
        for script in databases(record):
            assert script.split("\n")[0] == record.check["db"].split("\n")[0]  # same table
            db = sqlite3.connect(":memory:")
            db.executescript(script)
            rows = db.execute(record.answer).fetchall()
            total = db.execute(f"SELECT COUNT(*) FROM {table_of(record)}").fetchone()[0]
            assert rows, (record.answer, script)
            if " WHERE " in record.answer and "COUNT(*)" not in record.answer:
                assert len(rows) < total, record.answer  # a filter that filters something
        assert record.answer.endswith(";") and record.answer.count(";") == 1


def test_every_sql_reference_scores_one_against_itself() -> None:
    metric = get_metric("sql_execution")
    assert all(metric(r.answer, r) == 1.0 for r in SPLITS["sql"][1] + SQL_SEED_0[1])


def test_only_evaluation_records_carry_alternative_databases() -> None:
    train, held_out = SPLITS["sql"]
    assert not any("db_alt" in r.check for r in train + SQL_SEED_0[0])
    for record in held_out + SQL_SEED_0[1]:
        assert len(record.check["db_alt"]) == ALT_DBS
        assert len(set(databases(record))) == ALT_DBS + 1


def test_alternative_databases_leave_training_and_eval_questions_byte_identical(
    tmp_path: Path,
) -> None:
    train, held_out = SQL_SEED_0
    write_records(tmp_path / "train.jsonl", train)
    assert file_sha256(tmp_path / "train.jsonl") == SQL_SEED_0_TRAIN_SHA256
    without = [
        r.model_copy(update={"check": {k: v for k, v in r.check.items() if k != "db_alt"}})
        for r in held_out
    ]
    write_records(tmp_path / "eval.jsonl", without)
    assert file_sha256(tmp_path / "eval.jsonl") == SQL_SEED_0_EVAL_SHA256


def test_a_query_right_by_luck_on_one_database_scores_zero_on_all_of_them() -> None:
    metric = get_metric("sql_execution")
    record = SQL_SEED_0[1][21]
    assert record.answer == "SELECT name FROM museums WHERE city = 'Leeds' AND opened_year > 1846;"
    # Text sorts above numbers in SQLite, so `city > 1846` keeps every Leeds row; in `db` every
    # Leeds museum opened after 1846, in the alternative databases one opened in 1846.
    lucky = "SELECT name FROM museums WHERE city = 'Leeds' AND city > 1846;"
    assert metric(lucky, one_database(record)) == 1.0
    assert metric(lucky, record) == 0.0


def wrong_filters(sql: str) -> list[str]:
    """Common mistakes on a reference's WHERE: a filter dropped, `>=` for `>`, the other
    direction, or the number compared with the category column."""
    wrong = []
    both = re.search(r"WHERE (\w+) = ('[^']*') AND (\w+) ([<>]) ([\d.]+);", sql)
    if both:
        category, value, column, op, number = both.groups()
        wrong += [
            sql.replace(f"{category} = {value} AND ", ""),
            sql.replace(f" AND {column} {op} {number}", ""),
            sql.replace(f"AND {column} {op}", f"AND {category} {op}"),
        ]
    compare = re.search(r" ([<>]) ([\d.]+);", sql)
    if compare:
        op, number = compare.groups()
        wrong += [sql.replace(f" {op} {number}", f" {op}= {number}")]
        wrong += [sql.replace(f" {op} {number}", f" {'<' if op == '>' else '>'} {number}")]
    equal = re.search(r"WHERE (\w+) = ('[^']*');", sql)
    if equal:
        wrong += [sql.replace(f" WHERE {equal[1]} = {equal[2]}", "")]
    return wrong


def test_common_wrong_filters_score_zero_on_every_evaluation_record() -> None:
    metric = get_metric("sql_execution")
    lucky_on_one_database = 0.0
    for record in SPLITS["sql"][1] + SQL_SEED_0[1]:
        for wrong in wrong_filters(record.answer):
            assert metric(wrong, record) == 0.0, (record.answer, wrong)
            lucky_on_one_database += metric(wrong, one_database(record))
    assert lucky_on_one_database  # ones that `db` alone would have passed


def test_extract_answers_have_exactly_the_asked_keys_and_values_from_the_text() -> None:
    train, held_out = SPLITS["extract"]
    nulls = 0
    for record in train + held_out:
        answer = json.loads(record.answer)
        asked = re.search(
            r"(?:JSON: |Fields: |me |keys )([a-z_]+(?:, [a-z_]+)*)", record.user_text()
        )
        assert asked and list(answer) == asked.group(1).split(", ")
        for value in answer.values():
            nulls += value is None
            if isinstance(value, str):
                assert value in record.user_text()
            elif value is not None:
                assert isinstance(value, int | float)
    assert 0 < nulls < len(train + held_out)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(InvalidRequestError, match="known tasks: extract, sql"):
        get_task("poetry")


def test_cli_writes_train_and_eval_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sql", "--out", str(tmp_path), "--train", "5", "--eval", "3"]) == 0
    assert len(read_records(tmp_path / "train.jsonl")) == 5
    assert len(read_records(tmp_path / "eval.jsonl")) == 3
    assert "5 train, 3 eval" in capsys.readouterr().out
    assert main(["nope", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", task_names())
def test_the_eval_split_does_not_depend_on_the_train_size_and_grows_by_appending(
    name: str,
) -> None:
    make = get_task(name).make_splits
    assert make(0, 12, 5)[1] == make(50, 12, 5)[1] == make(50, 20, 5)[1][:12]
    assert make(50, 0, 5)[0] == make(50, 12, 5)[0]
