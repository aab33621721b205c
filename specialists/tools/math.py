"""Exact arithmetic and algebra with sympy, without ever `eval`-ing the input.

Input is parsed with Python's `ast` and only numbers, arithmetic operators, a few named
functions and single-letter variables are turned into sympy objects; anything else is refused.
That keeps `__import__('os')`-style input, and sympy's own eval-based parser, out of reach.

The whitelist is checked in the replica (cheap, no sympy); the evaluation itself runs in a
worker process with a wall-clock and memory limit (`sandbox.py`), because a short input can
still ask for `factorial(100000)` or `solve(x**100 + x + 1)`. Results are size-checked before
they are computed where the size can be known (powers, factorials) and after every operation.
"""

from __future__ import annotations

import ast
import asyncio
import math
import re
from typing import Any

from specialists.context import MeshContext
from specialists.tools.arithmetic import find_arithmetic
from specialists.tools.registry import Declined
from specialists.tools.sandbox import Sandbox, SandboxError

MAX_INPUT_CHARS = 500
MAX_EXPONENT = 10_000
MAX_DIGITS = 10_000  # an integer result with more digits is refused
MAX_FACTORIAL = 1_000
MAX_EXACT_BITS = 3_322  # ~1000 digits; longer results are shown approximated, with a length
MAX_ANSWER_CHARS = 2_000
MAX_PER_REQUEST = 3  # expressions evaluated for one free-text request
DECLINE = "cannot evaluate"
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
    (r"%\s*of\b", "/100*"),
]
COMMAND = re.compile(r"^\s*(solve|compute|calculate|evaluate|what is|what's|simplify)\b:?", re.I)
_BITS_PER_DIGIT = 3.3219280948873626


class MathError(ValueError):
    """The input is not arithmetic or algebra this tool accepts, or its result is too large."""


def normalise(text: str) -> str:
    """Plain-text operators to Python's: 2^8 -> 2**8, 'times' -> *, the times sign -> *."""
    text = text.strip().rstrip("?.!").replace("^", "**")
    text = text.replace("\u00d7", "*").replace("\u00f7", "/").replace("\u2212", "-")
    for pattern, operator in WORD_OPERATORS:
        text = re.sub(pattern, operator, text, flags=re.IGNORECASE)
    return text


def find_expressions(text: str) -> list[str]:
    """Arithmetic in free text ('what is 17*23?' -> ['17*23']), for planning delegations."""
    return find_arithmetic(text)


def prepare(text: str) -> str:
    """The Python-syntax source `evaluate` works on; refuses overlong input before parsing."""
    if len(text) > MAX_INPUT_CHARS * 4:
        raise MathError(f"expression longer than {MAX_INPUT_CHARS} characters")
    source = COMMAND.sub("", normalise(text)).strip()
    if len(source) > MAX_INPUT_CHARS:
        raise MathError(f"expression longer than {MAX_INPUT_CHARS} characters")
    if source.count("=") > 1:
        raise MathError("not an arithmetic expression")
    return source


def check(text: str) -> None:
    """The whitelist alone, without sympy: cheap enough to run in the replica itself."""
    for part in prepare(text).split("="):
        _check(_parse(part).body)


def evaluate(text: str) -> str:
    """'17*23' -> '391'; 'x**2 - 4 = 0' -> 'x = -2, 2'; '1/3 + 1/6' -> '1/2'.

    Raises MathError and nothing else: sympy's own errors become a reason, not a traceback.
    """
    try:
        answer = _evaluate(prepare(text))
    except MathError:
        raise
    except (MemoryError, OverflowError):
        raise MathError("result too large") from None
    except RecursionError:
        raise MathError("expression nested too deeply") from None
    except (ArithmeticError, TypeError, ValueError, AttributeError, NotImplementedError):
        raise MathError("not an arithmetic expression") from None
    if len(answer) > MAX_ANSWER_CHARS:
        raise MathError("result too large")
    return answer


def _evaluate(source: str) -> str:
    import sympy

    if "=" in source:
        left, right = (to_sympy(part) for part in source.split("="))
        equation = sympy.Eq(left, right)
        symbols = sorted(equation.free_symbols, key=str)
        if not symbols:
            return "true" if bool(sympy.simplify(left - right) == 0) else "false"
        solutions = sympy.solve(equation, symbols[0])
        if not solutions:
            return "no solution"
        return f"{symbols[0]} = " + ", ".join(_show(s) for s in solutions)
    return _show(sympy.simplify(to_sympy(source)))


def _show(value: Any) -> str:
    """Exact when short; a 15-digit approximation and the digit count when not."""
    import sympy

    if value.is_Rational and max(_bits(value.p), _bits(value.q)) > MAX_EXACT_BITS:
        size = f"{_digits(value.p)} digits" + (f" / {_digits(value.q)}" if value.q != 1 else "")
        return f"\u2248 {sympy.N(value, 15)} ({size})"
    if value.is_Integer or value.is_Rational or value.free_symbols:
        return str(value)
    numeric = sympy.N(value, 15)
    exact = str(value)
    return f"{exact} \u2248 {numeric}" if exact != str(numeric) else exact


def _bits(n: Any) -> int:
    return int(abs(int(n))).bit_length()


def _digits(n: Any) -> int:
    import sympy

    return int(sympy.integer_log(abs(int(n)), 10)[0]) + 1 if n else 1


def _parse(source: str) -> ast.Expression:
    try:
        return ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise MathError("not an arithmetic expression") from None


def _check(node: ast.AST) -> None:
    """Raise MathError unless the tree holds only what `_convert` accepts."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _check(node.operand)
    allowed = ast.Add | ast.Sub | ast.Mult | ast.Div | ast.Mod | ast.Pow
    if isinstance(node, ast.BinOp) and isinstance(node.op, allowed):
        _check(node.left)
        return _check(node.right)
    if isinstance(node, ast.Name) and (
        node.id in CONSTANTS or (len(node.id) == 1 and node.id.isalpha())
    ):
        return
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        for arg in node.args:
            _check(arg)
        return
    raise MathError("not an arithmetic expression")


def to_sympy(source: str) -> Any:
    tree = _parse(source)
    _check(tree.body)
    return _convert(tree.body)


def _convert(node: ast.AST) -> Any:
    import sympy

    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, float):
            return sympy.Rational(str(node.value))
        return _bounded(sympy.Integer(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _convert(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _bounded(_binary(node.op, _convert(node.left), _convert(node.right)))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return sympy.pi if node.id == "pi" else sympy.E
        return sympy.Symbol(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_convert(arg) for arg in node.args]
        too_big = args and args[0].is_number and abs(args[0]) > MAX_FACTORIAL
        if node.func.id == "factorial" and too_big:
            raise MathError("result too large")
        function = {"abs": sympy.Abs}.get(node.func.id) or getattr(sympy, node.func.id)
        return _bounded(function(*args))
    raise MathError("not an arithmetic expression")


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    import sympy

    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div | ast.Mod) and right == 0:
        raise MathError("division by zero")
    if isinstance(op, ast.Div):
        return left / right
    if isinstance(op, ast.Mod):
        return sympy.Mod(left, right)
    if right.is_number and abs(right) > MAX_EXPONENT:
        raise MathError(f"exponent larger than {MAX_EXPONENT}")
    if left == 0 and right.is_number and right.is_negative:
        raise MathError("division by zero")
    if left.is_Rational and right.is_number and right.is_real:
        digits = float(abs(right)) * math.log10(max(abs(int(left.p)), abs(int(left.q)), 1))
        if digits > MAX_DIGITS + 1:
            raise MathError("result too large")
    return left**right


def _bounded(value: Any) -> Any:
    """Refuse a rational with more than MAX_DIGITS digits above or below the line."""
    rational = getattr(value, "is_Rational", False)
    if rational and max(_bits(value.p), _bits(value.q)) > MAX_DIGITS * _BITS_PER_DIGIT:
        raise MathError("result too large")
    return value


_sandbox: Sandbox | None = None


def sandbox() -> Sandbox:
    """The worker pool `run` evaluates in, started on first use (never at import)."""
    global _sandbox
    if _sandbox is None:
        _sandbox = Sandbox(evaluate, warmup="1+1", expected=(MathError,))
    return _sandbox


async def answer(expression: str) -> str:
    """One expression's result from the worker, or 'cannot evaluate: <why>'."""
    try:
        check(expression)
        return await asyncio.to_thread(sandbox().call, expression)
    except (MathError, SandboxError) as error:
        return f"{DECLINE}: {error}"


async def run(text: str, ctx: MeshContext) -> str:
    """The `math` specialist: exact results, or 'cannot evaluate: <why>'. A text with no
    arithmetic in it at all is `Declined` (another specialist should answer it)."""
    try:
        check(text)
    except MathError as error:
        expressions = list(dict.fromkeys(find_expressions(text)))[:MAX_PER_REQUEST]
        if not expressions:
            raise Declined(f"{DECLINE}: {error}") from None
        results: list[str] = []
        for expression in expressions:
            results.append(await answer(expression))
            if results[-1].startswith(f"{DECLINE}: took longer"):
                break  # one slow expression per request: the rest would only hold workers
        return "; ".join(
            f"{e}: {r}" if r.startswith(DECLINE) else f"{e} = {r}"
            for e, r in zip(expressions, results, strict=False)
        )
    return await answer(text)
