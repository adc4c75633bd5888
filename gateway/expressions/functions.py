"""The functions an expression may call. `compile_call` checks the call itself (a known
name, plain arguments, how many); each builder then checks its arguments' types and
returns the `Term` that runs the matching `pyarrow.compute` kernel."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from gateway.expressions.terms import BOOL, FLOAT64, NUMERIC, WORDS, Term, probe

if TYPE_CHECKING:
    from gateway.expressions.compiler import Compiler

# (fewest, most) arguments where a function takes other than exactly one; 99: any number
_ARITY = {"min": (2, 99), "max": (2, 99), "coalesce": (2, 99), "round": (1, 2),
          "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2)}
MAX_ROUND_DIGITS = 38  # the widest decimal: more places than any number type holds
INT64_DIGITS = 19
FLOAT_WITHOUT_FRACTION = float(2**52)  # from here on every float64 is a whole number


def compile_call(compiler: Compiler, node: ast.Call) -> Term:
    if not isinstance(node.func, ast.Name):
        compiler.refuse(node, "method calls", "use a function such as lower(x) or startswith(x, 'p')")
    name = node.func.id
    if name.startswith("__"):
        compiler.refuse(node.func, "names starting with '__'")
    if name not in FUNCTIONS:
        close = difflib.get_close_matches(name, FUNCTIONS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        compiler.fail(f"unknown function {name}; {hint}allowed: {', '.join(FUNCTIONS)}")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        compiler.refuse(node, "keyword or starred arguments", f"call {name}(...) with plain arguments")
    low, high = _ARITY.get(name, (1, 1))
    if not low <= len(node.args) <= high:
        count = str(low) if low == high else f"{low} to {high}" if high < 99 else f"{low} or more"
        compiler.fail(f"{name}() takes {count} argument{'s' if high > 1 else ''}, found {len(node.args)}")
    args = [compiler.term(a) for a in node.args]
    return _BUILDERS[name](compiler, name, args, compiler.src(node))


def _abs(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = compiler.require(args[0], name, NUMERIC)
    return Term(x.type, lambda t: pc.abs(x.run(t)), src)


def _min_max(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    terms = compiler.unify([compiler.require(a, name, NUMERIC) for a in args])
    fn = pc.min_element_wise if name == "min" else pc.max_element_wise
    return Term(terms[0].type, lambda t: fn(*[a.run(t) for a in terms], skip_nulls=True), src)


def _len(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = compiler.require(args[0], name, ("string",))
    return Term(pa.int64(), lambda t: pc.cast(pc.utf8_length(x.run(t)), pa.int64()), src)


def _lower_upper(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = compiler.require(args[0], name, ("string",))
    fn = pc.utf8_lower if name == "lower" else pc.utf8_upper
    return Term(pa.string(), lambda t: fn(x.run(t)), src)


def _substring_test(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = compiler.require(args[0], name, ("string",))
    pattern = args[1]
    if not (pattern.is_literal and pattern.kind == "string"):
        compiler.fail(f"{name}() needs a string literal as its second argument, found {pattern.src}")
    fn = {"startswith": pc.starts_with, "endswith": pc.ends_with, "contains": pc.match_substring}[name]
    text = pattern.literal
    return Term(BOOL, lambda t: fn(x.run(t), pattern=text), src)


def _is_null(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = args[0]
    return Term(BOOL, lambda t: pc.is_null(x.run(t), nan_is_null=True), src)


def _coalesce(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    kinds = {a.kind for a in args}
    if kinds <= set(NUMERIC):
        terms = compiler.unify(args)
    elif len(kinds) == 1 and kinds <= {"string", "bool"}:
        terms = args
    else:
        words = ", ".join(f"{a.src} ({WORDS.get(a.kind, a.kind)})" for a in args)
        compiler.fail(f"coalesce() needs arguments of one type, found {words}")
    return Term(terms[0].type, lambda t: pc.coalesce(*[a.run(t) for a in terms]), src)


def _round(compiler: Compiler, name: str, args: list[Term], src: str) -> Term:
    x = compiler.require(args[0], name, NUMERIC)
    digits = 0
    if len(args) == 2:
        if not (args[1].is_literal and args[1].kind == "int"):
            compiler.fail(f"round() needs a whole-number literal for its digits, found {args[1].src}")
        digits = int(args[1].literal)
    if not -MAX_ROUND_DIGITS <= digits <= MAX_ROUND_DIGITS:
        # Arrow computes 10**digits: a huge count hangs or crashes it before any data is seen
        compiler.fail(f"round() to {digits} digits: the digits must be between {-MAX_ROUND_DIGITS} and "
                      f"{MAX_ROUND_DIGITS}")
    whole = x.type.precision - x.type.scale if x.kind == "decimal" else INT64_DIGITS if x.kind == "int" else None
    if whole is not None and digits <= -whole:
        # Arrow refuses to round to a place left of all the type's digits (every value would be 0)
        compiler.fail(f"round() to {digits} digits: {x.src} has at most {whole} whole digits, so every value "
                      f"would round to 0; the digits must be between {1 - whole} and {MAX_ROUND_DIGITS}")
    typ = probe(lambda v: pc.round(v, ndigits=digits), x.type) or FLOAT64
    if typ == FLOAT64 and x.kind != "float":
        x = compiler.cast(x, FLOAT64)
    if pa.types.is_floating(typ) and digits > 0:
        return Term(typ, partial(_round_float, x.run, digits), src)
    return Term(typ, lambda t: pc.round(x.run(t), ndigits=digits, round_mode="half_to_even"), src)


def _round_float(values_of: Callable[[pa.Table], Any], digits: int, table: pa.Table) -> Any:
    """Rounds floats to `digits` > 0 places. Arrow scales by 10**digits first and fails the
    whole batch when that overflows (1e300 to 10 places); floats of 2**52 and more hold no
    fraction, so they are left as they are and never scaled."""
    values = values_of(table)
    whole = pc.greater_equal(pc.abs(values), FLOAT_WITHOUT_FRACTION)
    rounded = pc.round(pc.if_else(whole, 0.0, values), ndigits=digits, round_mode="half_to_even")
    return pc.if_else(whole, values, rounded)


_BUILDERS: dict[str, Callable[[Compiler, str, list[Term], str], Term]] = {
    "abs": _abs, "coalesce": _coalesce, "contains": _substring_test, "endswith": _substring_test,
    "is_null": _is_null, "len": _len, "lower": _lower_upper, "max": _min_max, "min": _min_max, "round": _round,
    "startswith": _substring_test, "upper": _lower_upper,
}
FUNCTIONS = tuple(_BUILDERS)  # in this order in "allowed: ..." messages
