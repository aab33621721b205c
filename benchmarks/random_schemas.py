"""Randomized JSON Schemas (and instances of them) for testing and benchmarking constrained
decoding: `random_schemas(n, seed)` for a reproducible set, `random_instance(rng, schema)` for a
value that satisfies one.

The schemas are the shapes structured-output requests have, nested: objects (`properties`, a
`required` subset, `additionalProperties: false`), arrays (`items`, sometimes `minItems` /
`maxItems`), string and number enums, strings (sometimes `minLength` / `maxLength`; never
`format` or `pattern`), integers and numbers (sometimes `minimum` / `maximum`), booleans, null,
and now and then an `anyOf` of two simple types. The top level is always an object. Every
schema is valid draft 2020-12 and within what llguidance supports (`specialists.grammar`);
the same seed always gives the same schemas.

    from benchmarks.random_schemas import random_instance, random_schemas
    schemas = random_schemas(100, seed=0)
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["random_instance", "random_schema", "random_schemas"]

# Property names and enum values: plain words, so schemas read like real ones.
WORDS = (
    "id",
    "name",
    "title",
    "kind",
    "status",
    "count",
    "score",
    "price",
    "tags",
    "items",
    "owner",
    "email",
    "city",
    "country",
    "note",
    "label",
    "color",
    "size",
    "level",
    "enabled",
    "active",
    "created",
    "rank",
    "weight",
    "height",
    "width",
    "depth",
    "value",
    "unit",
    "author",
    "summary",
    "priority",
    "category",
    "version",
    "parent",
    "child",
    "source",
    "target",
    "mode",
    "limit",
)
SIMPLE_TYPES = ("string", "integer", "number", "boolean", "null")
# Characters of generated strings: letters, digits, space, and a few that JSON must escape
# or that take more than one UTF-8 byte (tokens then split inside a character).
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789"
SPECIAL = ['"', "\\", "\n", "\t", "é", "ß", "→", "日"]
# Instances: how long an unbounded array or string gets.
MAX_ITEMS = 3
MAX_STRING = 12
INT_RANGE = 1000


# -- schemas ------------------------------------------------------------------------------
def random_schemas(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random schemas, the same ones for the same `seed`."""
    rng = random.Random(seed)
    return [random_schema(rng) for _ in range(n)]


def random_schema(rng: random.Random, depth: int = 3) -> dict[str, Any]:
    """One random schema whose top level is an object, nested at most `depth` levels below
    it (objects and arrays only down to `depth`, simple types at the bottom)."""
    return _object(rng, max(depth, 0))


def _node(rng: random.Random, depth: int) -> dict[str, Any]:
    """Any schema: a container while `depth` allows one (less likely the deeper it is)."""
    if depth > 0 and rng.random() < 0.45:
        return _object(rng, depth - 1) if rng.random() < 0.5 else _array(rng, depth - 1)
    roll = rng.random()
    if roll < 0.12:
        return _enum(rng)
    if roll < 0.20:
        first, second = rng.sample(SIMPLE_TYPES, 2)
        return {"anyOf": [_simple(rng, first), _simple(rng, second)]}
    return _simple(rng, rng.choice(SIMPLE_TYPES))


def _object(rng: random.Random, depth: int) -> dict[str, Any]:
    names = rng.sample(WORDS, rng.randint(1, 5))
    properties = {name: _node(rng, depth) for name in names}
    required = [name for name in names if rng.random() < 0.6]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _array(rng: random.Random, depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": _node(rng, depth)}
    if rng.random() < 0.4:
        low = rng.randint(0, 2)
        schema["minItems"] = low
        if rng.random() < 0.7:
            schema["maxItems"] = low + rng.randint(0, 3)
    elif rng.random() < 0.3:
        schema["maxItems"] = rng.randint(1, 4)
    return schema


def _enum(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.6:
        return {"type": "string", "enum": rng.sample(WORDS, rng.randint(2, 4))}
    values: list[int | float] = []
    size = rng.randint(2, 4)
    while len(values) < size:
        value: int | float
        if rng.random() < 0.6:
            value = rng.randint(-50, 50)
        else:  # quarters; whole ones as ints (JSON "2": grammars spell a constant one way)
            quarter = rng.randint(-500, 500) / 4
            value = int(quarter) if quarter.is_integer() else quarter
        if value not in values:
            values.append(value)
    return {"type": "number", "enum": values}


def _simple(rng: random.Random, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if kind == "string":
        if rng.random() < 0.3:
            schema["maxLength"] = rng.randint(1, 16)
            if rng.random() < 0.3:
                schema["minLength"] = rng.randint(0, schema["maxLength"])
        elif rng.random() < 0.1:
            schema["minLength"] = rng.randint(1, 4)
    elif kind in ("integer", "number") and rng.random() < 0.4:
        low: float = rng.randint(-100, 100)
        if kind == "number" and rng.random() < 0.5:
            low += 0.5
        if rng.random() < 0.7:
            schema["minimum"] = low
        if rng.random() < 0.7:
            schema["maximum"] = low + rng.randint(0, 200)
    return schema


# -- instances ----------------------------------------------------------------------------
def random_instance(rng: random.Random, schema: dict[str, Any]) -> Any:
    """A random value valid under `schema` (one of this module's): objects keep the schema's
    property order (constrained decoders emit properties in that order) and include every
    required property and about half of the optional ones."""
    if "anyOf" in schema:
        return random_instance(rng, rng.choice(schema["anyOf"]))
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema["type"]
    if kind == "object":
        required = set(schema.get("required", []))
        return {
            name: random_instance(rng, sub)
            for name, sub in schema["properties"].items()
            if name in required or rng.random() < 0.5
        }
    if kind == "array":
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", max(low, MAX_ITEMS))
        return [random_instance(rng, schema["items"]) for _ in range(rng.randint(low, high))]
    if kind == "string":
        low = schema.get("minLength", 0)
        high = schema.get("maxLength", max(low, MAX_STRING))
        length = rng.randint(low, high)
        return "".join(
            rng.choice(SPECIAL) if rng.random() < 0.05 else rng.choice(ALPHABET)
            for _ in range(length)
        )
    if kind == "integer":
        low, high = _bounds(schema)
        return rng.randint(int(-(-low // 1)), int(high // 1))
    if kind == "number":
        low, high = _bounds(schema)
        first, last = int(-(-low // 1)), int(high // 1)
        if first <= last and rng.random() < 0.3:  # integral numbers are numbers too
            return rng.randint(first, last)
        value = round(rng.uniform(low, high), 2)
        return min(max(value, low), high)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise ValueError(f"not a schema of this module: {schema}")


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if low is None:
        low = -INT_RANGE if high is None else high - INT_RANGE
    if high is None:
        high = low + 2 * INT_RANGE if "minimum" in schema else INT_RANGE
    return low, high
