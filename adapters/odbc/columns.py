"""The contract's columns and the comparison with what a table or query really has.

A table source reads the contract's elementary fields as columns named by their keys:
PIC X as text, numbers as `numeric_type` makes them. `compare_columns` (and
`source_columns`, which adds the source's key and timestamp columns) refuse a run whose
source lacks a column or has one of another type, naming every difference at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from adapters.odbc.connection import ColumnInfo
from adapters.odbc.identifiers import Dialect
from schemas.contract import Contract
from schemas.errors import ConfigError
from schemas.fields import numeric_type
from schemas.layout import Category, Elementary


class SchemaDriftError(ConfigError):
    """The source's columns no longer match the contract: the run does not start."""


@dataclass(frozen=True)
class ContractColumn:
    key: str
    type: pa.DataType
    field: Elementary

    @property
    def described(self) -> str:
        pic = self.field.picture.text if self.field.picture else self.field.usage.value.upper()
        usage = "" if self.field.usage.value == "display" else f" {self.field.usage.value.upper()}"
        return f"{arrow_name(self.type)} (PIC {pic}{usage})"


def contract_columns(contract: Contract) -> list[ContractColumn]:
    """A table source's columns: the contract's elementary fields by key, PIC X as text and
    numbers as `numeric_type` makes them (int64 or an exact decimal)."""
    out: list[ContractColumn] = []
    for f in contract.layout.elementary():
        if f.is_filler:
            continue
        if f.occurs or any(a.occurs for a in f.ancestors()):
            raise ConfigError(f"contract {contract.name}: {f.path} is inside OCCURS, which a table row cannot hold")
        typ = pa.string() if f.category == Category.TEXT else numeric_type(f)
        out.append(ContractColumn(f.key, typ, f))
    keys = [c.key.lower() for c in out]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"contract {contract.name}: field names repeat (REDEFINES?); a table needs unique columns")
    return out


def arrow_name(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_integer(t):
        return "integer"
    return "text" if pa.types.is_string(t) else str(t)


def _compatible(want: pa.DataType, col: ColumnInfo, dialect: Dialect) -> bool:
    if pa.types.is_string(want):
        return col.family == "text"
    if pa.types.is_integer(want):
        return col.family == "integer" or (col.family == "decimal" and (col.scale or 0) == 0)
    if pa.types.is_decimal(want):
        if col.family == "text":
            return dialect == Dialect.SQLITE  # SQLite has no exact decimal type: decimals live as text
        if col.family == "integer":
            return want.scale == 0
        return col.family == "decimal" and (col.scale is None or col.scale == want.scale)
    if pa.types.is_floating(want):
        return col.family in ("float", "decimal")
    return False


def compare_columns(expected: list[ContractColumn], actual: list[ColumnInfo], *, what: str, contract: Contract,
                    dialect: Dialect) -> dict[str, ColumnInfo]:
    """contract key -> the source's column (names compared without case); every missing
    column and every type mismatch in one SchemaDriftError."""
    by_name = {c.name.lower(): c for c in actual}
    problems: list[str] = []
    found: dict[str, ColumnInfo] = {}
    who = f"contract {contract.name} v{contract.version}"
    for want in expected:
        col = by_name.get(want.key.lower())
        if col is None:
            problems.append(f"{what} has no column {want.key}, which {who} needs as {want.described}")
        elif not _compatible(want.type, col, dialect):
            problems.append(f"column {want.key}: {who} expects {want.described}, {what} has {col.shown}")
        else:
            found[want.key] = col
    if problems:
        raise SchemaDriftError("schema drift, run refused: " + "; ".join(problems))
    return found


def source_columns(expected: list[ContractColumn], actual: list[ColumnInfo], *, what: str, contract: Contract,
                   dialect: Dialect, key: str | None, timestamp: str | None) -> dict[str, ColumnInfo]:
    """`compare_columns`, plus the source's key and timestamp columns (which the contract
    may not hold); the timestamp column must be a timestamp or a date."""
    found = compare_columns(expected, actual, what=what, contract=contract, dialect=dialect)
    by_name = {c.name.lower(): c for c in actual}
    for role, col in (("key", key), ("timestamp", timestamp)):
        if col is None or col in found:
            continue
        info = by_name.get(col.lower())
        if info is None:
            raise SchemaDriftError(f"{what} has no column {col}, the source's {role} column")
        found[col] = info
    if timestamp:
        ts = found[timestamp]
        ok = ts.family in ("timestamp", "date") or (dialect == Dialect.SQLITE and ts.family == "text")
        if not ok:
            raise SchemaDriftError(f"column {timestamp}: a timestamp column must be a timestamp or date, "
                                   f"{what} has {ts.shown}")
    return found


__all__ = ["ContractColumn", "SchemaDriftError", "arrow_name", "compare_columns", "contract_columns",
           "source_columns"]
