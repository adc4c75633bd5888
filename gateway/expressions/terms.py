"""Typed, compiled sub-expressions (`Term`) and the type vocabulary the compiler checks
and reports in: kinds (bool, int, decimal, float, string, null) and their words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

NUMERIC = ("int", "decimal", "float")
WORDS = {"bool": "a condition", "int": "a whole number", "decimal": "a decimal number",
         "float": "a floating-point number", "string": "a string", "null": "None"}
_NOT_LITERAL = object()
FLOAT64 = pa.float64()
BOOL = pa.bool_()


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


@dataclass(frozen=True)
class Term:
    """A typed, compiled sub-expression. `literal` holds the Python value of a constant."""

    type: pa.DataType
    run: Callable[[pa.Table], Any]
    src: str
    literal: Any = _NOT_LITERAL

    @property
    def kind(self) -> str:
        return kind_of(self.type)

    @property
    def is_literal(self) -> bool:
        return self.literal is not _NOT_LITERAL


def const(value: Any, typ: pa.DataType, src: str) -> Term:
    scalar = pa.scalar(value, typ)
    return Term(typ, lambda _t: scalar, src, value)


def decimal_shape(term: Term) -> tuple[int, int]:
    """(integer digits, scale) that hold every value of the term exactly."""
    if pa.types.is_decimal(term.type):
        return term.type.precision - term.type.scale, term.type.scale
    if term.is_literal and isinstance(term.literal, int):
        return max(1, len(str(abs(term.literal)))), 0
    return 19, 0  # int64 column: up to 19 digits


def probe(fn: Callable[..., Any], *types: pa.DataType) -> pa.DataType | None:
    """The result type Arrow gives `fn` for these argument types, or None if it refuses."""
    try:
        return fn(*[pa.array([], t) for t in types]).type
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
