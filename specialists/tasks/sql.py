"""Text-to-SQL over generated SQLite tables: a question about one table, answered by one query.

Each record's user turn is the table's CREATE TABLE and a question; the answer is one SQL
statement in a fixed house style (upper-case keywords, single-quoted text, a closing `;`), and
`check["db"]` holds the table with its rows so `sql_execution` can run both queries and compare
results. Evaluation records also carry `check["db_alt"]`, `ALT_DBS` more scripts with the same
table and other rows, so a query must be right rather than lucky on one small table (test-suite
execution accuracy, Zhong et al. 2020). The query shapes (filters, COUNT, AVG/SUM/MIN/MAX, ORDER
BY ... LIMIT, GROUP BY, AND) are ones a 135M model can learn; evaluation is held out by structure:
tables from `HELD_OUT_DOMAINS` only, and half its questions in phrasings training never shows.
What this trades away: one table per query (no joins) and questions that quote values exactly as
stored.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from specialists.tasks.common import chat_record, held_out_splits, pick_phrasing
from specialists.tasks.sql_domains import HELD_OUT_DOMAINS, TRAIN_DOMAINS, Column, Domain, Kind
from specialists.training.records import ChatRecord

METRIC = "sql_execution"

SYSTEM_PROMPT = (
    "You write SQLite queries. Answer the question about the given table with one SQL "
    "statement and nothing else."
)

# Chosen by measurement: on 24 training-split questions the base scored 0.125 with this prompt
# against 0.04 with a longer rule list and a Schema/Question/Answer example (which it echoed).
BASE_SYSTEM_PROMPT = """You are an expert at SQLite. Given a CREATE TABLE statement and a \
question, reply with one SQL query that answers the question, and nothing else.
Use only the columns in the table; the question writes column names with spaces instead of \
underscores. Select only the columns the question asks for. Quote text values with single \
quotes. Use COUNT(*) for "how many", AVG/SUM/MIN/MAX for average/total/minimum/maximum, \
ORDER BY ... DESC LIMIT n for "the n with the highest", GROUP BY for "for each".
For example, for the table pets (name TEXT, species TEXT, age INTEGER) and the question "List \
the name of pets whose species is Cat and whose age is greater than 3.", the answer is:
SELECT name FROM pets WHERE species = 'Cat' AND age > 3;"""

Row = dict[str, Any]
Fields = dict[str, Any]
Equal = tuple[Column, str]  # WHERE column = 'value'
Compare = tuple[Column, str, Any]  # WHERE column > number (or <)
Phrasings = tuple[tuple[str, ...], tuple[str, ...]]  # (training, held out)

# Extra databases per evaluation record for `sql_execution` to check a prediction on as well.
ALT_DBS = 2

COMPARISONS: dict[str, Phrasings] = {
    ">": (("greater than", "more than", "above"), ("over", "higher than")),
    "<": (("less than", "below", "under"), ("lower than", "smaller than")),
}
AGGREGATES: dict[str, Phrasings] = {
    "AVG": (("average",), ("mean",)),
    "SUM": (("total",), ("combined",)),
    "MIN": (("minimum", "lowest"), ("smallest",)),
    "MAX": (("maximum", "highest"), ("largest",)),
}
EXTREMES: dict[str, Phrasings] = {
    "DESC": (("highest", "largest"), ("greatest",)),
    "ASC": (("lowest", "smallest"), ("least",)),
}

QUESTIONS: dict[str, Phrasings] = {
    "select_eq": ((
        "List the {show} of {noun} whose {col} is {value}.",
        "What are the {show} of the {noun} with {col} {value}?",
        "Show the {show} of all {noun} where the {col} is {value}.",
    ), ("Which {noun} have {value} as their {col}? Give the {show}.",)),
    "select_cmp": ((
        "List the {show} of {noun} with {col} {cmp} {number}.",
        "Which {noun} have a {col} {cmp} {number}? Show the {show}.",
        "Show the {show} of {noun} whose {col} is {cmp} {number}.",
    ), ("I need the {show} of each of the {noun} whose {col} is {cmp} {number}.",)),
    "count_all": ((
        "How many {noun} are there?", "Count the {noun}.", "What is the total number of {noun}?",
    ), ("Tell me how many {noun} the table holds.",)),
    "count_eq": ((
        "How many {noun} have {col} {value}?",
        "Count the {noun} whose {col} is {value}.",
        "What is the number of {noun} with {col} equal to {value}?",
    ), ("For {col} {value}, how many {noun} are there?",)),
    "count_cmp": ((
        "How many {noun} have a {col} {cmp} {number}?",
        "Count the {noun} with {col} {cmp} {number}.",
    ), ("What number of {noun} have their {col} {cmp} {number}?",)),
    "aggregate": ((
        "What is the {agg} {col} of all {noun}?",
        "Find the {agg} {col} across all {noun}.",
        "Compute the {agg} {col} of the {noun}.",
    ), ("Across every one of the {noun}, what is the {agg} {col}?",)),
    "aggregate_eq": ((
        "What is the {agg} {col} of {noun} whose {col2} is {value}?",
        "Find the {agg} {col} of the {noun} with {col2} {value}.",
    ), ("Among {noun} with {col2} {value}, what is the {agg} {col}?",)),
    "top_n": ((
        "Show the {show} of the {n} {noun} with the {extreme} {col}.",
        "Which {n} {noun} have the {extreme} {col}? Give the {show}.",
    ), ("Give me the {show} for the {n} {noun} whose {col} is {extreme}.",)),
    "group_count": ((
        "How many {noun} are there for each {col}?",
        "Count the {noun} in each {col}.",
        "For every {col}, show the number of {noun}.",
    ), ("Break down the number of {noun} by {col}.",)),
    "group_aggregate": ((
        "What is the {agg} {col} of {noun} for each {col2}?",
        "For each {col2}, show the {agg} {col} of the {noun}.",
    ), ("Group the {noun} by {col2} and give the {agg} {col} of each group.",)),
    "select_and": ((
        "List the {show} of {noun} whose {col2} is {value} and whose {col} is {cmp} {number}.",
        "Which {noun} have {col2} {value} and a {col} {cmp} {number}? Show the {show}.",
    ), ("Find the {show} of {noun} with {col2} {value} where the {col} is also {cmp} {number}.",)),
}  # fmt: skip

SHAPE_WEIGHTS = {
    "select_eq": 2.0, "select_cmp": 2.0, "count_all": 0.5, "count_eq": 1.5, "count_cmp": 1.0,
    "aggregate": 1.5, "aggregate_eq": 1.0, "top_n": 1.5, "group_count": 1.0,
    "group_aggregate": 1.0, "select_and": 1.5,
}  # fmt: skip


class _Table:
    """One generated table: a domain, its rows, and the draws a question needs."""

    def __init__(self, rng: random.Random, domain: Domain) -> None:
        self.rng, self.domain = rng, domain
        count = rng.randint(8, 14)
        columns = {c.name: c.values(rng, count) for c in domain.columns}
        self.rows: list[Row] = [{n: v[i] for n, v in columns.items()} for i in range(count)]
        # The query's filters, noted (without drawing) for the alternative databases.
        self.equal: Equal | None = None
        self.compare: Compare | None = None

    def script(self) -> str:
        """CREATE TABLE plus INSERTs: what `check["db"]` holds."""
        return script(self.domain, self.rows)

    def pick(self, *kinds: Kind) -> Column:
        return self.rng.choice(self.domain.of_kind(*kinds))

    def shown(self, *exclude: Column) -> tuple[str, str]:
        """Columns to select, as (SQL list, phrase): a label, sometimes with one more column
        (never one the question filters or sorts on)."""
        first = self.pick("label")
        picked = [first]
        others = [c for c in self.domain.columns if c is not first and c not in exclude]
        if others and self.rng.random() < 0.3:
            picked.append(self.rng.choice(others))
        return ", ".join(c.name for c in picked), " and ".join(c.phrase for c in picked)

    def category_value(self, column: Column) -> str:
        return str(self.rng.choice([r[column.name] for r in self.rows]))

    def threshold(self, column: Column, rows: list[Row] | None = None) -> tuple[str, Any]:
        """An operator and a stored value that leaves some rows in and some out."""
        values = sorted(r[column.name] for r in self.rows)
        op = self.rng.choice((">", "<"))
        if rows is None:
            return op, values[self.rng.randint(1, len(values) - 2)]
        inside = [r[column.name] for r in rows]
        options = [v for v in values if (v < max(inside) if op == ">" else v > min(inside))]
        return op, self.rng.choice(options)


def script(domain: Domain, rows: list[Row]) -> str:
    values = ", ".join(
        "(" + ", ".join(literal(r[c.name]) for c in domain.columns) + ")" for r in rows
    )
    return f"{domain.schema()}\nINSERT INTO {domain.table} VALUES {values};"


def literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


# -- query shapes: each returns (question fields, SQL) -----------------------------------------
def _select_eq(t: _Table) -> tuple[Fields, str]:
    col = t.pick("category")
    value = t.category_value(col)
    t.equal = col, value
    cols, show = t.shown(col)
    sql = f"SELECT {cols} FROM {t.domain.table} WHERE {col.name} = {literal(value)};"
    return {"show": show, "col": col.phrase, "value": value}, sql


def _select_cmp(t: _Table) -> tuple[Fields, str]:
    col = t.pick("integer", "real")
    op, number = t.threshold(col)
    t.compare = col, op, number
    cols, show = t.shown(col)
    sql = f"SELECT {cols} FROM {t.domain.table} WHERE {col.name} {op} {number};"
    return {"show": show, "col": col.phrase, "op": op, "number": number}, sql


def _count_all(t: _Table) -> tuple[Fields, str]:
    return {}, f"SELECT COUNT(*) FROM {t.domain.table};"


def _count_eq(t: _Table) -> tuple[Fields, str]:
    col = t.pick("category")
    value = t.category_value(col)
    t.equal = col, value
    sql = f"SELECT COUNT(*) FROM {t.domain.table} WHERE {col.name} = {literal(value)};"
    return {"col": col.phrase, "value": value}, sql


def _count_cmp(t: _Table) -> tuple[Fields, str]:
    col = t.pick("integer", "real")
    op, number = t.threshold(col)
    t.compare = col, op, number
    sql = f"SELECT COUNT(*) FROM {t.domain.table} WHERE {col.name} {op} {number};"
    return {"col": col.phrase, "op": op, "number": number}, sql


def _aggregate(t: _Table) -> tuple[Fields, str]:
    col, fn = t.pick("integer", "real"), t.rng.choice(tuple(AGGREGATES))
    return {"col": col.phrase, "fn": fn}, f"SELECT {fn}({col.name}) FROM {t.domain.table};"


def _aggregate_eq(t: _Table) -> tuple[Fields, str]:
    col, fn, where = t.pick("integer", "real"), t.rng.choice(tuple(AGGREGATES)), t.pick("category")
    value = t.category_value(where)
    t.equal = where, value
    sql = f"SELECT {fn}({col.name}) FROM {t.domain.table} WHERE {where.name} = {literal(value)};"
    return {"col": col.phrase, "fn": fn, "col2": where.phrase, "value": value}, sql


def _top_n(t: _Table) -> tuple[Fields, str]:
    col, order, n = t.pick("integer", "real"), t.rng.choice(("DESC", "ASC")), t.rng.randint(2, 5)
    cols, show = t.shown(col)
    sql = f"SELECT {cols} FROM {t.domain.table} ORDER BY {col.name} {order} LIMIT {n};"
    return {"show": show, "col": col.phrase, "order": order, "n": n}, sql


def _group_count(t: _Table) -> tuple[Fields, str]:
    col = t.pick("category")
    sql = f"SELECT {col.name}, COUNT(*) FROM {t.domain.table} GROUP BY {col.name};"
    return {"col": col.phrase}, sql


def _group_aggregate(t: _Table) -> tuple[Fields, str]:
    col, fn, group = t.pick("integer", "real"), t.rng.choice(tuple(AGGREGATES)), t.pick("category")
    sql = f"SELECT {group.name}, {fn}({col.name}) FROM {t.domain.table} GROUP BY {group.name};"
    return {"col": col.phrase, "fn": fn, "col2": group.phrase}, sql


def _select_and(t: _Table) -> tuple[Fields, str]:
    where, col = t.pick("category"), t.pick("integer", "real")
    value = t.category_value(where)
    op, number = t.threshold(col, [r for r in t.rows if r[where.name] == value])
    t.equal, t.compare = (where, value), (col, op, number)
    cols, show = t.shown(col, where)
    sql = (
        f"SELECT {cols} FROM {t.domain.table} WHERE {where.name} = {literal(value)} "
        f"AND {col.name} {op} {number};"
    )
    fields = {"show": show, "col": col.phrase, "col2": where.phrase, "value": value}
    return fields | {"op": op, "number": number}, sql


SHAPES: dict[str, Callable[[_Table], tuple[Fields, str]]] = {
    "select_eq": _select_eq, "select_cmp": _select_cmp, "count_all": _count_all,
    "count_eq": _count_eq, "count_cmp": _count_cmp, "aggregate": _aggregate,
    "aggregate_eq": _aggregate_eq, "top_n": _top_n, "group_count": _group_count,
    "group_aggregate": _group_aggregate, "select_and": _select_and,
}  # fmt: skip


# -- alternative databases (evaluation only) -------------------------------------------------------
def alt_rng(db: str, sql: str, index: int) -> random.Random:
    """The draws for alternative database `index` of one record: seeded from the record itself,
    never from the split's stream, so adding them changes no other record or field."""
    digest = hashlib.sha256(f"{db}\n{sql}\n{index}".encode()).hexdigest()
    return random.Random(int(digest, 16))


def _value_at(column: Column, slot: int) -> Any:
    """The `slot`-th value `column` can hold, counting up from `low` (as `Column.values` does)."""
    value = column.low + slot * column.step
    return int(value) if column.kind == "integer" else round(value, 2)


def _categories(rng: random.Random, column: Column, value: str, count: int) -> list[str]:
    """`count` cells of `column` with `value` at least twice and other values at least twice."""
    others = rng.sample([w for w in column.words[0] if w != value], rng.randint(1, 3))
    cells = [value, value, others[0], rng.choice(others)]
    cells += [rng.choice([value, *others]) for _ in range(count - len(cells))]
    rng.shuffle(cells)
    return cells


def _numbers(
    rng: random.Random, compare: Compare, groups: list[list[int]], count: int
) -> list[Any]:
    """Distinct cells for the compared column. The threshold itself sits in a row of the first
    group (so `>=` is not `>`), and every group has rows that pass and rows that fail the
    comparison (so a filter on the wrong column, or no filter, returns other rows)."""
    column, op, number = compare
    last, at_slot = (round((x - column.low) / column.step) for x in (column.high, number))
    above, below = range(at_slot + 1, last + 1), range(at_slot)
    passing, failing = (above, below) if op == ">" else (below, above)
    need = 2 if len(groups) == 1 else 1
    at = rng.choice(groups[0])
    pinned = {at: False}
    for group in groups:
        for wanted in (True, False):
            room = len(passing) if wanted else len(failing) + 1
            for _ in range(need - (not wanted and at in group)):
                free = [i for i in group if i not in pinned]
                if free and sum(v is wanted for v in pinned.values()) < room:
                    pinned[rng.choice(free)] = wanted
    passes = [pinned.get(i, rng.random() < 0.5) for i in range(count)]
    # Each side holds distinct values: flip rows nothing pinned until both sides have room.
    loose = [i for i in range(count) if i not in pinned]
    rng.shuffle(loose)
    for i in loose:
        if sum(passes) > len(passing) and passes[i]:
            passes[i] = False
        elif count - sum(passes) > len(failing) + 1 and not passes[i]:
            passes[i] = True
    high = iter(rng.sample(passing, sum(passes)))
    low = iter(rng.sample(failing, count - sum(passes) - 1))
    cells = [at_slot if i == at else next(high) if passes[i] else next(low) for i in range(count)]
    return [_value_at(column, slot) for slot in cells]


def alt_script(table: _Table, sql: str, index: int) -> str:
    """Alternative database `index` for a question about `table`: the same CREATE TABLE, other
    rows, drawn so the reference still returns rows and common wrong filters do not."""
    rng = alt_rng(table.script(), sql, index)
    domain = table.domain
    count = rng.randint(8, 14)
    columns: dict[str, list[Any]] = {c.name: list(c.values(rng, count)) for c in domain.columns}
    groups = [list(range(count))]
    if table.equal:
        column, value = table.equal
        cells = columns[column.name] = _categories(rng, column, value, count)
        groups = [
            [i for i in range(count) if cells[i] == value],
            [i for i in range(count) if cells[i] != value],
        ]
    if table.compare:
        columns[table.compare[0].name] = _numbers(rng, table.compare, groups, count)
    return script(domain, [{n: v[i] for n, v in columns.items()} for i in range(count)])


def make_record(rng: random.Random, domain: Domain, *, evaluation: bool) -> ChatRecord:
    """One question about a freshly generated table of `domain`."""
    table = _Table(rng, domain)
    shape = rng.choices(list(SHAPE_WEIGHTS), weights=list(SHAPE_WEIGHTS.values()))[0]
    fields, sql = SHAPES[shape](table)
    template, phrasing = pick_phrasing(rng, *QUESTIONS[shape], evaluation=evaluation)
    words = {"noun": domain.noun}
    for key, table_of_words in (("op", COMPARISONS), ("fn", AGGREGATES), ("order", EXTREMES)):
        if key in fields:
            word, _ = pick_phrasing(rng, *table_of_words[fields[key]], evaluation=evaluation)
            words[{"op": "cmp", "fn": "agg", "order": "extreme"}[key]] = word
    question = template.format(**fields, **words)
    user = f"Schema:\n{domain.schema()}\nQuestion: {question}"
    check: dict[str, Any] = {
        "db": table.script(),
        "domain": domain.table,
        "template": f"{shape}.{phrasing}",
    }
    if evaluation:  # appended last, from its own draws: the other fields stay as they were
        check["db_alt"] = [alt_script(table, sql, i) for i in range(ALT_DBS)]
    return chat_record(SYSTEM_PROMPT, user, sql, check)


def make_splits(n_train: int, n_eval: int, seed: int) -> tuple[list[ChatRecord], list[ChatRecord]]:
    """(train, eval): train over `TRAIN_DOMAINS`, eval over `HELD_OUT_DOMAINS` only."""
    return held_out_splits(make_record, TRAIN_DOMAINS, HELD_OUT_DOMAINS, n_train, n_eval, seed)
