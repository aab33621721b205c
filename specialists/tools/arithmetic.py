"""Finds the arithmetic in free text, in one left-to-right pass, for the planner to delegate.

Why not one big regex: the old pattern backtracked cubically on digit runs (700 digits took
about 2 s, on the replica's event loop, for every request). Here a regex of simple atoms splits
the text into tokens (linear), and a two-state walk (expect an operand / after an operand)
reads each token at most twice, so a 32k-character prompt costs milliseconds.

Precision first, because a false delegation pastes a wrong "exact" answer into the reply:
`*`, `^`, word operators ("times", "divided by") and functions are rarely anything but
arithmetic, while a bare `-`, `/` or `x` between numbers is usually a phone number, date,
range, score or code, so those need a cue: a question word just before ("what is", "compute",
"how much is"), `=` just after, or a question that is nothing but the expression (a `+` running
into a noun, "Room 3+2 layout", needs a cue too). What this trades away: algebra with
variables, spelled-out numbers and "the sum of 3 and 4" stay with the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

MAX_SCAN_CHARS = 65_536  # prompts are capped at 32k characters upstream; never scan more
MAX_EXPRESSIONS = 8
MAX_EXPRESSION_TOKENS = 64
MAX_EXPRESSION_CHARS = 200

# Simple atoms only: no nested quantifiers, so matching is linear in the text.
_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<grouped>[0-9]{1,3}(?:,[0-9]{3}){1,4}(?:\.[0-9]+)?(?![\w,]))"  # 1,234,567.5
    r"|(?P<chunk>\w+(?:['\u2019.]\w+)*)"  # words, numbers, 3.14, v1.2.3, what's
    r"|(?P<power>\*\*)"
    r"|(?P<char>.)",
    re.DOTALL,
)
_DIGIT = re.compile(r"[0-9]")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_GLUED_TIMES = re.compile(r"([0-9]+(?:\.[0-9]+)?)[x\u00d7]([0-9]+(?:\.[0-9]+)?)")

STRONG_SYMBOLS = {"*": "*", "**": "**", "^": "**", "\u00d7": "*", "\u00f7": "/", "+": "+"}
WEAK_SYMBOLS = {"-": "-", "\u2212": "-", "/": "/"}
STRONG_WORDS = {"plus": "+", "minus": "-", "times": "*"}
WEAK_WORDS = {"x": "*", "over": "/", "mod": "%", "modulo": "%"}
POSTFIX_WORDS = {"squared": "**2", "cubed": "**3"}
FUNCTIONS = {"sqrt", "sin", "cos", "tan", "log", "exp", "abs", "factorial", "gcd", "lcm"}
# Several words that read as one operator; the first word is the key.
PHRASES: dict[str, list[tuple[tuple[str, ...], str, str]]] = {
    "divided": [(("divided", "by"), "op", "/")],
    "multiplied": [(("multiplied", "by"), "op", "*")],
    "raised": [
        (("raised", "to", "the", "power", "of"), "op", "**"),
        (("raised", "to"), "op", "**"),
    ],
    "to": [(("to", "the", "power", "of"), "op", "**")],
    "square": [(("square", "root", "of"), "prefix", "sqrt")],
    "percent": [(("percent", "of"), "percent", "/100*")],
    "%": [(("%", "of"), "percent", "/100*")],
}

# A question word this close before a `-`/`/` expression makes it a calculation.
CUES = {
    "what", "what's", "whats", "compute", "calculate", "calc", "evaluate", "eval", "solve",
    "simplify", "much", "work", "figure", "find", "tell", "subtract", "divide", "quick",
    "estimate", "check", "total", "sum", "add",
}  # fmt: skip
FILLERS = {
    "is", "the", "of", "result", "value", "answer", "to", "me", "out", "for", "please", "just",
    "exactly", "does", "do", "it", "be", "would", "will", "you", "can", "could", "now", "so",
    "quickly", "again", "question", "hey", "ok", "okay", "s",
}  # fmt: skip
# Words that may follow a `-`/`/` expression ("10-20 people" is a range, "10-2 then" is not).
FOLLOWERS = {
    "and", "then", "for", "please", "equal", "equals", "is", "in", "exactly", "now", "again",
    "thanks", "thank", "so", "but", "or", "if", "to", "mean", "give", "gives", "make", "makes",
    "come", "comes",
}  # fmt: skip
_OPEN_OK = set("([{\"'`$\u20ac\u00a3\u00a5=")
_CLOSE_OK = set("?!;)]}\"'`=")


class Token(NamedTuple):
    kind: str  # num op weak percent prefix postfix func ( ) comma word id punct
    value: str  # lower-cased word, or the Python spelling of an operator
    start: int
    end: int
    spaced: bool  # whitespace right before this token


def find_arithmetic(text: str, limit: int = MAX_EXPRESSIONS) -> list[str]:
    """Arithmetic in free text, in Python syntax for `evaluate`: "what's 12 x 7" -> '12 * 7'."""
    text = text[:MAX_SCAN_CHARS]
    if not _DIGIT.search(text):
        return []
    tokens = tokenize(text)
    found: list[str] = []
    for start, end in _candidates(tokens):
        if _is_arithmetic(text, tokens, start, end):
            found.append(render(tokens, start, end))
            if len(found) >= limit:
                break
    return found


def tokenize(text: str) -> list[Token]:
    """Tokens with multi-word operators joined and unmatched parentheses demoted to punctuation."""
    raw: list[Token] = []
    spaced = False
    for match in _TOKEN.finditer(text):
        group, piece = match.lastgroup, match.group()
        if group == "space":
            spaced = True
            continue
        raw.extend(_classify(group or "char", piece, match.start(), spaced))
        spaced = False
    return _match_parens(_join_phrases(raw))


def _classify(group: str, piece: str, start: int, spaced: bool) -> list[Token]:
    end = start + len(piece)
    if group == "grouped":
        return [Token("num", piece.replace(",", ""), start, end, spaced)]
    if group == "power":
        return [Token("op", "**", start, end, spaced)]
    if group == "char":
        if piece in STRONG_SYMBOLS:
            return [Token("op", STRONG_SYMBOLS[piece], start, end, spaced)]
        if piece in WEAK_SYMBOLS:
            return [Token("weak", WEAK_SYMBOLS[piece], start, end, spaced)]
        kind = {"(": "(", ")": ")", ",": "comma"}.get(piece, "punct")
        return [Token(kind, piece, start, end, spaced)]
    if _NUMBER.fullmatch(piece):
        return [Token("num", piece, start, end, spaced)]
    glued = _GLUED_TIMES.fullmatch(piece)
    if glued:  # 12x7: a weak times, since 1920x1080 and 2x4 are not questions
        left, right = glued.group(1), glued.group(2)
        middle = start + len(left)
        return [
            Token("num", left, start, middle, spaced),
            Token("weak", "*", middle, middle + 1, False),
            Token("num", right, middle + 1, end, False),
        ]
    word = piece.lower().replace("\u2019", "'")
    return [Token("word" if word.replace("'", "").isalpha() else "id", word, start, end, spaced)]


def _join_phrases(tokens: list[Token]) -> list[Token]:
    """'divided by' -> '/', 'square root of' -> sqrt, and single operator words by context."""
    joined: list[Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        phrase = _phrase_at(tokens, i)
        if phrase is not None:
            length, kind, value = phrase
            last = tokens[i + length - 1]
            joined.append(Token(kind, value, token.start, last.end, token.spaced))
            i += length
            continue
        joined.append(_operator_word(tokens, i) if token.kind == "word" else token)
        i += 1
    return joined


def _phrase_at(tokens: list[Token], i: int) -> tuple[int, str, str] | None:
    for words, kind, value in PHRASES.get(tokens[i].value, []):
        window = tokens[i : i + len(words)]
        if len(window) == len(words) and all(
            t.value == w and t.kind in ("word", "punct") for t, w in zip(window, words, strict=True)
        ):
            return len(words), kind, value
    return None


def _operator_word(tokens: list[Token], i: int) -> Token:
    token = tokens[i]
    after = tokens[i + 1] if i + 1 < len(tokens) else None
    if token.value in FUNCTIONS and after is not None and after.kind == "(" and not after.spaced:
        return token._replace(kind="func")
    if token.value in POSTFIX_WORDS:
        return token._replace(kind="postfix", value=POSTFIX_WORDS[token.value])
    if token.value in STRONG_WORDS:
        return token._replace(kind="op", value=STRONG_WORDS[token.value])
    if token.value in WEAK_WORDS:
        return token._replace(kind="weak", value=WEAK_WORDS[token.value])
    return token


def _match_parens(tokens: list[Token]) -> list[Token]:
    """A parenthesis without its partner cannot be part of an expression: make it punctuation."""
    unmatched: list[int] = []
    open_at: list[int] = []
    for index, token in enumerate(tokens):
        if token.kind == "(":
            open_at.append(index)
        elif token.kind == ")":
            if open_at:
                open_at.pop()
            else:
                unmatched.append(index)
    for index in unmatched + open_at:
        token = tokens[index]
        tokens[index] = Token("punct", token.value, token.start, token.end, token.spaced)
    return tokens


def _candidates(tokens: list[Token]) -> Iterator[tuple[int, int]]:
    """Maximal well-formed token spans; each walk resumes where the last one stopped (linear)."""
    i = 0
    while i < len(tokens):
        end, stopped = _walk(tokens, i)
        if end > i:
            yield i, end
        i = max(stopped, i + 1)


def _walk(tokens: list[Token], i: int) -> tuple[int, int]:
    """(end of the longest expression starting at i, index where the walk stopped)."""
    expect_operand, after_unary = True, False
    parens: list[bool] = []  # True for a function call's parentheses, where commas separate args
    good = i
    j = i
    while j < len(tokens):
        token, kind = tokens[j], tokens[j].kind
        following = tokens[j + 1] if j + 1 < len(tokens) else None
        if expect_operand:
            if kind == "num":
                expect_operand = False
            elif kind == "(":
                parens.append(False)
            elif kind == "func" and following is not None and following.kind == "(":
                parens.append(True)
                j += 1
            elif kind == "prefix" and following is not None and following.kind == "num":
                j += 1
                expect_operand = False
            elif _is_unary_minus(token, following) and not after_unary:
                after_unary = True
                j += 1
                continue
            else:
                break
            after_unary = False
        elif kind in ("op", "weak", "percent"):
            expect_operand = True
        elif kind == ")" and parens:
            parens.pop()
        elif kind == "comma" and parens and parens[-1]:
            expect_operand = True
        elif kind != "postfix":
            break
        j += 1
        if not expect_operand and not parens:
            good = j
    return good, j


def _is_unary_minus(token: Token, following: Token | None) -> bool:
    return (
        token.kind == "weak"
        and token.value == "-"
        and following is not None
        and following.kind in ("num", "(")
        and not following.spaced
    )


def _is_arithmetic(text: str, tokens: list[Token], start: int, end: int) -> bool:
    """Whether a well-formed span is a calculation someone asked for, not a code or a date."""
    first, last = tokens[start], tokens[end - 1]
    if end - start > MAX_EXPRESSION_TOKENS or last.end - first.start > MAX_EXPRESSION_CHARS:
        return False
    operators = _binary_operators(tokens, start, end)
    strong = (
        any(tokens[i].kind in ("op", "percent") for i in operators)
        or any(t.kind in ("func", "prefix", "postfix") for t in tokens[start:end])
        or _grouped(tokens, start, operators)
    )
    if not strong and not operators:
        return False
    if not _stands_alone(text, first.start, last.end):
        return False
    only_plus = {tokens[i].value for i in operators} == {"+"}
    if strong and only_plus and _noun_after(tokens, end) and not _cue_before(tokens, start):
        return False  # "3+2 layout", "won 3 + 1 extra time": a plus in a name or a tally
    return strong or _weak_is_arithmetic(tokens, start, end, operators)


def _noun_after(tokens: list[Token], end: int) -> bool:
    """The span runs into a word that is not part of a question ('10-20 people')."""
    after = tokens[end] if end < len(tokens) else None
    return after is not None and after.kind in ("word", "id") and after.value not in FOLLOWERS


def _binary_operators(tokens: list[Token], start: int, end: int) -> list[int]:
    """Indices of operators with an operand on their left (a leading '-' is a sign)."""
    return [i for i in range(start + 1, end) if _is_binary(tokens, i)]


def _grouped(tokens: list[Token], start: int, operators: list[int]) -> bool:
    """Operators inside and outside parentheses, '(70 - 3) / 4': codes and dates do not nest."""
    depth, depths = 0, {}
    for i in range(start, operators[-1] + 1 if operators else start):
        depth += {"(": 1, ")": -1}.get(tokens[i].kind, 0)
        depths[i] = depth
    levels = {depths[i] > 0 for i in operators}
    return levels == {True, False}


def _is_binary(tokens: list[Token], i: int) -> bool:
    return tokens[i].kind in ("op", "weak", "percent") and tokens[i - 1].kind in (
        "num",
        ")",
        "postfix",
    )


def _stands_alone(text: str, start: int, end: int) -> bool:
    """Not glued into a larger token: '9:30-10:15', 'ext.12-3', '5-6%' are not expressions."""
    if start > 0 and not (text[start - 1].isspace() or text[start - 1] in _OPEN_OK):
        return False
    if end >= len(text) or text[end].isspace() or text[end] in _CLOSE_OK:
        return True
    after = text[end + 1] if end + 1 < len(text) else " "
    return text[end] in ".,:" and not after.isalnum()


def _weak_is_arithmetic(tokens: list[Token], start: int, end: int, operators: list[int]) -> bool:
    """`-`, `/` and `x` only with a cue, and never in shapes that are codes, dates or ranges."""
    numbers = [t.value for t in tokens[start:end] if t.kind == "num"]
    if any(len(n) > 1 and n[0] == "0" and n[1] != "." for n in numbers):
        return False  # 2024-01-05, 555-0100, 007
    spaced = all(tokens[i].spaced and tokens[i + 1].spaced for i in operators)
    if len(operators) >= 2 and not spaced and any(len(n.split(".")[0]) >= 3 for n in numbers):
        return False  # 555-123-4567, 12/25/2023, 978-3-16
    if _noun_after(tokens, end):
        return False  # 10-20 people, 9-5 daily
    after = tokens[end] if end < len(tokens) else None
    if after is not None and (after.value == "=" or after.value in ("equals", "equal")):
        return True
    if _cue_before(tokens, start):
        return True
    asked = after is not None and after.value == "?"
    alone = start == 0 or tokens[start - 1].value in (".", "?", "!", ":")
    return asked and (spaced or alone)


def _cue_before(tokens: list[Token], start: int) -> bool:
    """A question word ('what is', 'how much is', 'compute') a few filler words before."""
    for token in reversed(tokens[max(start - 6, 0) : start]):
        if token.kind == "word" and token.value in CUES:
            return True
        if token.kind == "word" and token.value in FILLERS:
            continue
        if token.kind in ("punct", "comma") and token.value in (":", ","):
            continue
        return False
    return False


def render(tokens: list[Token], start: int, end: int) -> str:
    """The span in Python syntax, spaced as the writer spaced it: '12 x 7' -> '12 * 7'."""
    parts: list[str] = []
    i = start
    while i < end:
        token = tokens[i]
        if token.kind == "prefix":
            parts.append(f"{token.value}({tokens[i + 1].value})")
            i += 2
            continue
        if i > start and _is_binary(tokens, i):
            wide = token.spaced or (i + 1 < end and tokens[i + 1].spaced)
            value = "/100 *" if token.kind == "percent" and wide else token.value
            parts.append(f" {value} " if wide and token.kind != "percent" else value)
            if token.kind == "percent" and wide:
                parts.append(" ")
        elif token.kind == "comma":
            parts.append(", ")
        else:
            parts.append(token.value)
        i += 1
    return "".join(parts)
