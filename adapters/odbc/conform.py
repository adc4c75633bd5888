"""Fetched rows into the contract's Arrow types, with the rows that do not fit as rejects.

Each column is cast safely to the contract's type (a value that does not fit rejects its
row rather than the batch), then the contract's rules (required, pattern, min/max, allowed
values) are checked as they are for files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.odbc.columns import ContractColumn, arrow_name
from adapters.odbc.connection import ColumnInfo
from schemas.arrow_buffers import one_array
from schemas.contract import Contract
from schemas.stream import PII_WITHHELD, Reject
from schemas.validate import violations


def conform(raw: pa.Table, first: int, *, contract: Contract, expected: list[ContractColumn],
            source: dict[str, ColumnInfo], key: str | None, timestamp: str | None) -> tuple[pa.Table, list[Reject]]:
    """Raw columns -> the contract's names and types, extra key/timestamp columns after
    them; rows that do not fit a type or break a rule become rejects. `source` maps each
    contract key (and the key and timestamp columns) to the source's column; `first` is
    the record number of the first row."""
    columns: dict[str, pa.ChunkedArray] = {}
    bad: dict[int, list[tuple[str, str]]] = {}
    key_values = raw.column(source[key].name) if key else None
    pii = {node.key for node, rules in contract.rules.values() if rules.pii}  # their values are never quoted
    for c in expected:
        col = raw.column(source[c.key].name)
        if pa.types.is_string(col.type) and source[c.key].type_name.lower() in ("char", "bpchar", "nchar"):
            col = pc.utf8_rtrim(col, characters=" ")  # CHAR(n) pads with blanks; the pad is not data
        cast, failures = _cast(col, c.type)
        for row, why in failures:
            shown = f"the value does not fit {arrow_name(c.type)} {PII_WITHHELD}" if c.key in pii else why
            bad.setdefault(row, []).append((c.key, shown))
        columns[c.key] = cast
    for extra in (key, timestamp):
        if extra and extra not in columns:
            columns[extra] = raw.column(source[extra].name)
    table = pa.table(columns)
    for node, rules in contract.rules.values():
        col = one_array(table.column(node.key))
        for mask, why in violations(node, rules, col):
            for i in np.flatnonzero(mask).tolist():
                shown = f"{why} {PII_WITHHELD}" if rules.pii else f"{why}: {col[i].as_py()!r}"
                bad.setdefault(i, []).append((node.key, shown))
    if not bad:
        return table, []
    rejects = []
    for row in sorted(bad):
        prefix = "" if key_values is None or key in pii else f"{key}={key_values[row].as_py()!r}: "
        for col_name, why in bad[row]:
            rejects.append(Reject(first + row, 0, f"{prefix}{why}", col_name))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(bad)] = False
    return table.filter(pa.array(keep)), rejects


def _cast(col: pa.ChunkedArray, typ: pa.DataType) -> tuple[pa.ChunkedArray, list[tuple[int, str]]]:
    """Safe cast to the contract's type; on failure, the rows that do not fit (as nulls
    in the result) with why."""
    if col.type == typ:
        return col, []
    source = col
    if pa.types.is_integer(col.type) and pa.types.is_decimal(typ):
        source = col.cast(pa.decimal128(38, typ.scale))  # int64 -> decimal needs room first
    try:
        return source.cast(typ), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = source.to_pylist()
    out: list[Any] = []
    failures: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        try:
            out.append(None if v is None else pa.scalar(v, source.type).cast(typ).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.append(None)
            failures.append((i, f"{v!r} does not fit {arrow_name(typ)}"))
    return pa.chunked_array([pa.array(out, typ)]), failures


__all__ = ["conform"]
