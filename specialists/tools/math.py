"""Exact arithmetic and algebra with sympy, without ever `eval`-ing the input.

Input is parsed with Python's `ast` and only numbers, arithmetic operators, a few named
functions and single-letter variables are turned into sympy objects; anything else is refused.
That keeps `__import__('os')`-style input, and sympy's own eval-based parser, out of reach.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from specialists.context import MeshContext

MAX_INPUT_CHARS = 500
MAX_EXPONENT = 10_000
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "log", "exp", "abs", "factorial", "gcd", "lcm")
CONSTANTS = ("pi", "e")
WORD_OPERATORS = [
    (r"\bdivided by\b", "/"),
    (r"\bover\b", "/"),
    (r"\btimes\b", "*"),
    (r"\bmultiplied by\b", "*"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bto the power of\b", "**"),
    (r"\bsquared\b", "**2"),
    (r"\bcubed\b", "**3"),
]
EXPRESSION = re.compile(r"[\d\.\s\(\)]*\d[\d\.\s\(\)]*(?:[-+*/^%][\d\.\s\(\)]*\d[\d\.\s\(\)]*)+")


class MathError(ValueError):
    """The input is not arithmetic or algebra this tool accepts."""


def normalise(text: str) -> str:
    """Plain-text operators to Python's: 2^8 -> 2**8, 'times' -> *, the times sign -> *."""
    text = text.strip().rstrip("?.!").replace("^", "**")
    text = text.replace("\u00d7", "*").replace("\u00f7", "/")
    for pattern, operator in WORD_OPERATORS:
        text = re.sub(pattern, operator, text, flags=re.IGNORECASE)
    return text


def find_expressions(text: str) -> list[str]:
    """Arithmetic in free text ('what is 17*23?' -> ['17*23']), for planning delegations."""
    found = EXPRESSION.findall(normalise(text).replace("**", "^"))
    return [candidate.strip().replace("^", "**") for candidate in found if candidate.strip()]


def evaluate(text: str) -> str:
    """'17*23' -> '391'; 'x**2 - 4 = 0' -> 'x = -2, 2'; '1/3 + 1/6' -> '1/2'."""
    import sympy

    source = normalise(text)
    if len(source) > MAX_INPUT_CHARS:
        raise MathError(f"expression longer than {MAX_INPUT_CHARS} characters")
    source = re.sub(
        r"^(solve|compute|calculate|evaluate|what is|simplify)\b:?", "", source, flags=re.I
    )
    if source.count("=") == 1:
        left, right = (to_sympy(part) for part in source.split("="))
        equation = sympy.Eq(left, right)
        symbols = sorted(equation.free_symbols, key=str)
        if not symbols:
            return "true" if bool(sympy.simplify(left - right) == 0) else "false"
        solutions = sympy.solve(equation, symbols[0])
        return (
            f"{symbols[0]} = " + ", ".join(_show(s) for s in solutions)
            if solutions
            else "no solution"
        )
    value = sympy.simplify(to_sympy(source))
    return _show(value)


def _show(value: Any) -> str:
    import sympy

    if value.is_Integer or value.is_Rational or value.free_symbols:
        return str(value)
    numeric = sympy.N(value, 15)
    exact = str(value)
    return f"{exact} ≈ {numeric}" if exact != str(numeric) else exact


def to_sympy(source: str) -> Any:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        raise MathError(f"not an arithmetic expression: {source.strip()[:80]!r}") from None
    return _convert(tree.body)


def _convert(node: ast.AST) -> Any:
    import sympy

    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return (
            sympy.Rational(str(node.value))
            if isinstance(node.value, float)
            else sympy.Integer(node.value)
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _convert(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _convert(node.left), _convert(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise MathError("division by zero")
            return left / right
        if isinstance(node.op, ast.Mod):
            return sympy.Mod(left, right)
        if isinstance(node.op, ast.Pow):
            if right.is_number and abs(right) > MAX_EXPONENT:
                raise MathError(f"exponent larger than {MAX_EXPONENT}")
            return left**right
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return sympy.pi if node.id == "pi" else sympy.E
        if len(node.id) == 1 and node.id.isalpha():
            return sympy.Symbol(node.id)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        function = {"abs": sympy.Abs}.get(node.func.id) or getattr(sympy, node.func.id)
        return function(*(_convert(arg) for arg in node.args))
    raise MathError(f"unsupported input: {ast.unparse(node)[:80]!r}")


async def run(text: str, ctx: MeshContext) -> str:
    """The `math` specialist: the exact result, or a clear message saying what it cannot do."""
    try:
        return evaluate(text)
    except MathError as error:
        expressions = find_expressions(text)
        if expressions and expressions[0] != normalise(text):
            return "; ".join(f"{e} = {evaluate(e)}" for e in expressions)
        return f"cannot evaluate: {error}"
