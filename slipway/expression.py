"""Expressions in a problem file (`label.expression`, an aggregate's `of`): data, not code.

A problem file may come from object storage or a URL, so whoever can write it must not be able to
run code in the pods that read it. pandas' `DataFrame.eval` is no sandbox (an `@name` reaches the
caller's globals, attributes and calls are allowed), so an expression is parsed with `ast` and
checked against a short list of what a label or an aggregate needs:

- column names declared in the problem, and numeric, string or true/false constants;
- arithmetic on numbers (`+ - * / // % **`, unary `-`);
- comparisons (`== != < <= > >=`, chained as in Python), strings compared only with strings;
- `and`, `or`, `not` and their pandas spellings `&`, `|`, `~`, on true/false values.

Anything else (a call, an attribute, a subscript, an `@` name, a lambda, a comprehension) is refused
with the offending part named. The checked tree is then evaluated here on pandas Series, with the
semantics `DataFrame.eval` gave: `&` and `|` bind like `and` and `or` (pandas rewrites them so), a
missing term in a nullable column gives a missing result, and numbers are numpy scalars, so a
constant power overflows instead of building a huge integer.
"""

from __future__ import annotations

import ast
import io
import itertools
import operator
import tokenize
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

MAX_LENGTH = 1_000  # characters: a label or an aggregate is short; a longer text is no expression we need

Kind = Literal["number", "string", "bool", "timestamp"]
COLUMN_KINDS: dict[str, Kind] = {"integer": "number", "float": "number", "string": "string", "timestamp": "timestamp"}

ALLOWED = "column names, numbers, strings, arithmetic, comparisons and and/or/not"

_ARITHMETIC: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_BOOLEAN: dict[type, Callable[[Any, Any], Any]] = {ast.And: operator.and_, ast.Or: operator.or_}


class ExpressionError(ValueError):
    """An expression is not one Slipway evaluates: the message names the offending part."""


def check_expression(text: str, columns: Mapping[str, str], expected: tuple[Kind, ...]) -> None:
    """Refuses `text` unless it uses only what the module docstring lists, over `columns` (name to the
    problem's column type), and gives one of the `expected` kinds (a label: bool; an aggregate: number)."""
    tree = _parse(text)
    kind = _walk(_Checker(text, {name: COLUMN_KINDS[kind] for name, kind in columns.items()}), tree, text)
    if kind not in expected:
        raise ExpressionError(f"{text!r} gives a {kind} per row, expected {' or '.join(expected)}")


def evaluate(text: str, frame: pd.DataFrame) -> Any:
    """The value of `text` on `frame`'s columns: a Series where it uses a column, else a scalar.

    The text is checked for allowed syntax again (a Problem may be built in code, not loaded), but not
    for kinds: the caller checks what it got.
    """
    tree = _parse(text)
    _walk(_Checker(text, None), tree, text)
    return _evaluate(tree.body, frame)


def columns_of(text: str) -> set[str]:
    """The column names an expression reads (a step reads only those columns of a large file)."""
    return {node.id for node in ast.walk(_parse(text)) if isinstance(node, ast.Name)}


def _walk(checker: _Checker, tree: ast.Expression, text: str) -> Kind:
    try:
        return checker.kind(tree.body)
    except RecursionError:
        raise ExpressionError(f"{text[:40]!r}... is nested too deeply") from None


def _parse(text: str) -> ast.Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("is empty; expected an expression over the columns, like `tips > 0.2 * fare`")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is {len(text):,} characters long; expressions are at most {MAX_LENGTH:,}")
    try:
        return ast.parse(_pandas_syntax(text), mode="eval")
    except ExpressionError:
        raise
    except (SyntaxError, ValueError, tokenize.TokenError, MemoryError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc) or type(exc).__name__
        raise ExpressionError(f"{text!r} is not a valid expression: {reason}") from None


def _pandas_syntax(text: str) -> str:
    """`&` and `|` as `and` and `or`, as pandas' eval reads them, so `a > 1 & b < 2` means what it says;
    an `@` (pandas' way to reach the caller's variables) is refused outright."""
    tokens = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.OP and token.string == "@":
            raise ExpressionError(f"{text!r} uses '@': local variables are not allowed; use {ALLOWED}")
        if token.type == tokenize.OP and token.string in ("&", "|"):
            token = token._replace(type=tokenize.NAME, string=" and " if token.string == "&" else " or ")
        tokens.append((token.type, token.string))
    return tokenize.untokenize(tokens)


class _Checker:
    """Walks a parsed expression, refusing any node outside the allowed set; with `columns` it also
    infers each node's kind, so a type mistake is named at load time, before any data is read."""

    def __init__(self, text: str, columns: dict[str, Kind] | None) -> None:
        self.text = text
        self.columns = columns

    def kind(self, node: ast.expr) -> Kind:
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            self._need(node.left, ("number", "bool"), f"the {_symbol(node.op)!r} operator")
            self._need(node.right, ("number", "bool"), f"the {_symbol(node.op)!r} operator")
            return "number"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self._need(node.operand, ("number", "bool"), "unary minus or plus")
            return "number"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            self._need(node.operand, ("bool",), "not (~)")
            return "bool"
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._need(value, ("bool",), "and/or (&, |)")
            return "bool"
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARISONS for op in node.ops):
            return self._compare(node)
        raise self._refuse(node, _describe(node))

    def _name(self, node: ast.Name) -> Kind:
        if self.columns is None:
            return "number"
        if node.id not in self.columns:
            raise ExpressionError(
                f"{self.text!r}: {node.id!r} is not a declared column (declared: {sorted(self.columns)})"
            )
        return self.columns[node.id]

    def _constant(self, node: ast.Constant) -> Kind:
        value = node.value
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            if not np.iinfo(np.int64).min <= value <= np.iinfo(np.int64).max:
                raise self._refuse(node, "an integer outside the 64-bit range")
            return "number"
        if isinstance(value, float):
            return "number"
        if isinstance(value, str):
            return "string"
        raise self._refuse(node, f"a {type(value).__name__} constant")

    def _compare(self, node: ast.Compare) -> Kind:
        operands = [node.left, *node.comparators]
        kinds = [self.kind(operand) for operand in operands]
        if self.columns is not None:
            for (left, right), op in zip(itertools.pairwise(kinds), node.ops, strict=True):
                comparable = {left, right} <= {"number", "bool"} or left == right
                if not comparable:
                    raise ExpressionError(
                        f"{self.text!r}: {_symbol(op)!r} compares a {left} with a {right}; "
                        "compare numbers with numbers, strings with strings"
                    )
                if "string" in (left, right) and not isinstance(op, (ast.Eq, ast.NotEq)):
                    raise ExpressionError(f"{self.text!r}: strings compare only with == and !=, not {_symbol(op)!r}")
        return "bool"

    def _need(self, node: ast.expr, kinds: tuple[Kind, ...], where: str) -> None:
        kind = self.kind(node)
        if self.columns is not None and kind not in kinds:
            raise ExpressionError(
                f"{self.text!r}: {where} needs {' or '.join(kinds)}, got the {kind} {_source(node)!r}"
            )

    def _refuse(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(f"{self.text!r}: {what} ({_source(node)!r}) is not allowed; use {ALLOWED}")


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "a call", ast.Attribute: "an attribute", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a comprehension", ast.JoinedStr: "an f-string", ast.NamedExpr: "an assignment",
        ast.IfExp: "a conditional expression", ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict",
        ast.Set: "a set", ast.Starred: "a starred expression", ast.Await: "await",
        ast.Yield: "yield", ast.YieldFrom: "yield",
    }
    if isinstance(node, ast.BinOp):
        return f"the {_symbol(node.op)!r} operator"
    if isinstance(node, ast.Compare):
        return "a membership or identity test"
    return names.get(type(node), type(node).__name__)


def _symbol(op: ast.AST) -> str:
    symbols = {
        ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
        ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|",
        ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    }
    return symbols.get(type(op), type(op).__name__)


def _source(node: ast.AST) -> str:
    """The part of the expression a node stands for (as Python writes it back), for error messages."""
    return ast.unparse(node)


def _evaluate(node: ast.expr, frame: pd.DataFrame) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in frame.columns:
            columns = sorted(map(str, frame.columns))
            raise ExpressionError(f"{node.id!r} is not a column of the data (columns: {columns})")
        return frame[node.id]
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or isinstance(value, str):
            return value
        return np.int64(value) if isinstance(value, int) else np.float64(value)
    if isinstance(node, ast.BinOp):
        return _ARITHMETIC[type(node.op)](_evaluate(node.left, frame), _evaluate(node.right, frame))
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, frame)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return +operand
        return ~operand if isinstance(operand, pd.Series) else not operand
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(value, frame) for value in node.values]
        result = values[0]
        for value in values[1:]:
            result = _BOOLEAN[type(node.op)](result, value)
        return result
    if isinstance(node, ast.Compare):
        operands = [_evaluate(operand, frame) for operand in (node.left, *node.comparators)]
        result = None
        for (left, right), op in zip(itertools.pairwise(operands), node.ops, strict=True):
            part = _COMPARISONS[type(op)](left, right)
            result = part if result is None else result & part
        return result
    raise ExpressionError(f"{ast.unparse(node)!r} cannot be evaluated")  # unreachable after _Checker
