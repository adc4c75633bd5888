"""A small, safe expression language evaluated column-wise over an Arrow table.

Contracts use it for fallback conditions and model features:

    TXN_AMOUNT > 5000 and COUNTRY not in ('US', 'CA')
    CHANNEL == 'E' and startswith(MERCHANT_NAME, 'AMZN')
    coalesce(CASHBACK_AMOUNT, 0) / 100

The text is parsed with `ast.parse(mode="eval")` only to get a syntax tree; nothing is
ever evaluated by Python. Each node must be on a whitelist (boolean and/or/not,
comparisons, `in` with a literal list, + - * / %, unary -, literals, field names and a
few functions); the tree is type-checked against the contract's field types and compiled
into a tree of `pyarrow.compute` calls, so a batch of a million rows costs a few kernel
calls, not a million interpreter steps.

Semantics worth knowing:
- nulls follow SQL: a comparison with null is null, `and`/`or` are Kleene, and the final
  value of a condition treats null as false;
- decimal fields compare exactly with literals (5000.01 is the decimal 5000.01, never a
  float); + - * on decimals stay exact while the result fits 38 digits, / and % give
  float64; division by zero gives null;
- min/max skip nulls (like SQL LEAST/GREATEST in PostgreSQL).

`compiler` checks the tree and compiles it into `terms` (typed sub-expressions);
`functions` holds the functions an expression may call; `columns` finds a field's column
when the expression runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gateway.expressions.columns import MissingColumn
from gateway.expressions.compiler import Compiler
from gateway.expressions.functions import FUNCTIONS
from gateway.expressions.terms import NUMERIC, WORDS, Term, kind_of
from schemas.arrow_buffers import one_array
from schemas.errors import ContractError

if TYPE_CHECKING:
    from schemas.contract import Contract

__all__ = ["FUNCTIONS", "Expression", "compile_condition", "compile_expression", "field_types",
           "schema_field_types"]

MAX_LENGTH = 4_000  # characters; longer texts are refused before parsing
_HYPHEN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*")


@dataclass(frozen=True)
class Expression:
    """A compiled expression: `evaluate(table)` returns one value per row."""

    text: str
    result_type: pa.DataType
    fields_used: frozenset[str]
    where: str
    _run: Callable[[pa.Table], Any]

    @property
    def is_condition(self) -> bool:
        return pa.types.is_boolean(self.result_type)

    def evaluate(self, table: pa.Table, *, keep_nulls: bool = False) -> pa.Array:
        """Values for every row of `table`. A condition's nulls become false unless
        `keep_nulls` (features want them, to map them to NaN or a default)."""
        try:
            out = self._run(table)
        except MissingColumn as exc:
            raise ContractError(f"{self.where}: field {exc.args[0]} is not in the table (columns: "
                                f"{', '.join(table.column_names)})") from None
        out = pa.repeat(out, table.num_rows) if isinstance(out, pa.Scalar) else one_array(out)
        if self.is_condition and not keep_nulls and out.null_count:
            out = out.fill_null(False)
        return out

    def mask(self, table: pa.Table) -> np.ndarray:
        """A condition as a numpy bool array (null counts as false)."""
        return np.asarray(self.evaluate(table).to_numpy(zero_copy_only=False), dtype=bool)


def compile_expression(text: str, fields: Mapping[str, pa.DataType], *, where: str) -> Expression:
    """Parses, checks and compiles `text` against `fields` (name -> Arrow type). Every
    problem is a ContractError that starts with `where` and names the expression."""
    if not isinstance(text, str):
        raise ContractError(f"{where}: expected an expression (a string), found {type(text).__name__} {text!r}")
    source = text.strip()
    if not source:
        raise ContractError(f"{where}: the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ContractError(f"{where}: the expression is {len(source)} characters long; at most {MAX_LENGTH}")
    compiler = Compiler(source, fields, where)
    hyphenated = _whole_hyphen_name(source, fields)
    # `TXN-AMOUNT` alone is a copybook name written as-is, not a subtraction
    term = compiler.field(hyphenated, source) if hyphenated is not None else compiler.compile(compiler.parse())
    if term.kind not in (*NUMERIC, "bool", "string"):
        compiler.fail(f"the value is {WORDS.get(term.kind, term.kind)}; expected a condition, a number or a string")
    _trial_run(compiler, term, fields)
    return Expression(source, term.type, frozenset(compiler.used), where, term.run)


def _trial_run(compiler: Compiler, term: Term, fields: Mapping[str, pa.DataType]) -> None:
    """Runs the compiled kernels once on two rows of the fields' own types (zeros and
    empty strings, then nulls), so what Arrow refuses only when it sees data (a rounding
    that cannot fit, a cast) fails here, when the contract loads, instead of mid-file."""
    try:
        out = term.run(trial_table(fields))
    except (pa.ArrowException, ArithmeticError, ValueError, TypeError) as exc:
        compiler.fail(f"cannot be evaluated on the contract's field types: {exc}")
    if not isinstance(out, pa.Scalar | pa.Array | pa.ChunkedArray):  # pragma: no cover - a compiler bug
        compiler.fail(f"evaluates to {type(out).__name__}, not a column")


def trial_table(fields: Mapping[str, pa.DataType]) -> pa.Table:
    """Two rows per field name (dotted paths included, as `column` finds them first):
    the type's zero (0, "", false) and null."""
    return pa.table({name: pa.concat_arrays([_zero(typ), pa.nulls(1, typ)]) for name, typ in fields.items()})


def _zero(typ: pa.DataType) -> pa.Array:
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.array([""], typ)
    if pa.types.is_boolean(typ):
        return pa.array([False], typ)
    if pa.types.is_decimal(typ):
        return pa.array([Decimal(0)], typ)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return pa.array([0], typ)
    return pa.nulls(1, typ)


def compile_condition(text: str, fields: Mapping[str, pa.DataType], *, where: str) -> Expression:
    """Like `compile_expression`, and the result must be true/false."""
    expr = compile_expression(text, fields, where=where)
    if not expr.is_condition:
        raise ContractError(f"{where}: must be a condition (true/false), but {text!r} is "
                            f"{WORDS.get(kind_of(expr.result_type), str(expr.result_type))} ({expr.result_type})")
    return expr


def field_types(contract: Contract) -> dict[str, pa.DataType]:
    """Names an expression may use for a contract's detail records, with their Arrow types:
    every leaf column of the decoded table outside OCCURS, by dotted path (GROUP.FIELD)
    and, when the name is unique, by its own key."""
    layout = contract.layout
    empty = np.zeros((0, layout.record_length), dtype=np.uint8)
    return schema_field_types(contract.spec.decoder().decode(empty).table.schema)


def schema_field_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """`field_types` for any table schema: structs are walked, lists (OCCURS) skipped."""
    out: dict[str, pa.DataType] = {}
    leaves: dict[str, list[str]] = {}

    def walk(prefix: str, fields: Sequence[pa.Field]) -> None:
        for f in fields:
            path = f"{prefix}.{f.name}" if prefix else f.name
            if pa.types.is_struct(f.type):
                walk(path, [f.type.field(i) for i in range(f.type.num_fields)])
            elif not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                      or pa.types.is_fixed_size_list(f.type)):
                out[path] = f.type
                leaves.setdefault(f.name, []).append(path)

    walk("", list(schema))
    for name, paths in leaves.items():
        if len(paths) == 1 and name not in out:
            out[name] = out[paths[0]]
    return out


def _whole_hyphen_name(source: str, fields: Mapping[str, pa.DataType]) -> str | None:
    """The field a whole expression names when it is one hyphenated copybook name
    (TXN-AMOUNT, a field TXN_AMOUNT), else None."""
    if "-" not in source or not _HYPHEN_NAME.fullmatch(source):
        return None
    name = source.replace("-", "_")
    if name in fields:
        return name
    upper = [k for k in fields if k.upper() == name.upper()]
    return upper[0] if len(upper) == 1 else None
