"""Contract validation of decoded records, column-wise: required, min/max, pattern,
enum and 88-level allowed values. A record with any decode error or rule violation
leaves the table and becomes a reject naming the field, its offset, raw bytes and why.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import one_array, value_buffers
from schemas.decoder import column_by_path
from schemas.layout import Elementary
from schemas.patterns import fixed_pattern, match_fixed
from schemas.stream import PII_WITHHELD, DecodedChunk, Reject

if TYPE_CHECKING:
    from schemas.contract import Contract, FieldRules


def _allowed_values(node: Elementary, rules: FieldRules) -> tuple[list[Any], list[tuple[Any, Any]]]:
    values: list[Any] = list(rules.enum or [])
    ranges: list[tuple[Any, Any]] = []
    for cond in node.conditions.values():
        for v in cond:
            if isinstance(v, tuple):
                ranges.append(v)
            else:
                values.append(v)
    if node.is_text:
        values = [str(v) if not isinstance(v, str) else v.strip() for v in values]
    else:  # exact, whatever YAML or the copybook made of the literal
        values = [Decimal(str(v)) for v in values if _is_number(v)]
        ranges = [(Decimal(str(lo)), Decimal(str(hi))) for lo, hi in ranges if _is_number(lo) and _is_number(hi)]
    return values, ranges


def _is_number(v: Any) -> bool:
    try:
        Decimal(str(v))
        return True
    except ArithmeticError:
        return False


def _scalar(value: Any, typ: pa.DataType) -> pa.Scalar:
    if pa.types.is_decimal(typ):
        d = Decimal(str(value))
        return pa.scalar(d, pa.decimal128(38, max(typ.scale, -int(d.as_tuple().exponent))))
    if pa.types.is_integer(typ):
        d = Decimal(str(value))
        if d != d.to_integral_value():
            return pa.scalar(d, pa.decimal128(38, max(0, -int(d.as_tuple().exponent))))
        return pa.scalar(int(d), pa.int64())
    if pa.types.is_floating(typ):
        return pa.scalar(float(value), pa.float64())
    return pa.scalar(str(value), pa.string())


def byte_lengths(col: pa.Array) -> np.ndarray:
    """Each string's length in bytes, read from the offsets buffer: no compute call. A
    string's length in characters is at most this, and zero exactly when this is."""
    return np.diff(value_buffers(col)[0])


def extremes(col: pa.Array) -> tuple[Any, Any]:
    """The column's smallest and largest value (None, None when all null or not ordered)."""
    if col.null_count == 0 and len(col) and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        values = col.to_numpy()  # zero-copy, and cheaper than a compute call on a micro-batch
        return values.min().item(), values.max().item()
    try:
        mm = pc.min_max(col)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return None, None
    return mm["min"].as_py(), mm["max"].as_py()


def _at_least(a: Any, b: Any) -> bool:
    """a >= b when both are numbers; False (build the row mask) when unknown."""
    if a is None or b is None:  # an empty or all-null column: the mask will say
        return False
    try:
        return bool(Decimal(str(a)) >= Decimal(str(b)))
    except ArithmeticError:
        return False


def violations(node: Elementary, rules: FieldRules, col: pa.Array) -> list[tuple[np.ndarray, str]]:
    """(bad row mask, reason) pairs for one field."""
    out: list[tuple[np.ndarray, str]] = []

    def mask(expr: pa.Array) -> np.ndarray:
        return np.asarray(expr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)

    # Each rule is first checked on the column as a whole (its null count, shortest text,
    # min and max): a row mask is built only for a rule the column breaks somewhere. Real-time
    # micro-batches are small, where the fixed cost of each compute call counts.
    text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    if rules.required and (col.null_count or (text and len(col) and byte_lengths(col).min() == 0)):
        missing = col.is_null()
        if text:
            missing = pc.or_kleene(missing, pc.equal(pc.utf8_length(col), 0))
        out.append((mask(missing), "required value is missing (blank or null)"))
    if (rules.min is not None or rules.max is not None) and col.null_count < len(col):
        lo, hi = extremes(col)
        if rules.min is not None and not _at_least(lo, rules.min):
            out.append((mask(pc.less(col, _scalar(rules.min, col.type))), f"below the minimum {rules.min}"))
        if rules.max is not None and not _at_least(rules.max, hi):
            out.append((mask(pc.greater(col, _scalar(rules.max, col.type))), f"above the maximum {rules.max}"))
    if rules.pattern is not None:
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        tables = fixed_pattern(rules.pattern)
        if tables is not None:
            bad = ~match_fixed(text, tables, rules.pattern)
        else:
            bad = mask(pc.invert(pc.match_substring_regex(text, rules.pattern)))
        out.append((bad, f"does not match the pattern {rules.pattern}"))
    values, ranges = _allowed_values(node, rules)
    if values or ranges:
        ok = np.zeros(len(col), dtype=bool)
        if values and node.is_text:
            ok |= mask(pc.is_in(col, value_set=pa.array(values, pa.string())))
        elif values and not pa.types.is_floating(col.type):
            # compare as exact decimals at the finer of the two scales
            scale = max([-int(v.as_tuple().exponent) for v in values] + [getattr(col.type, "scale", 0)])
            exact = pa.decimal128(38, max(scale, 0))
            ok |= mask(pc.is_in(pc.cast(col, exact), value_set=pa.array(values, exact)))
        elif values:
            ok |= mask(pc.is_in(col, value_set=pa.array([float(v) for v in values], col.type)))
        for lo, hi in ranges:
            ok |= mask(pc.and_(pc.greater_equal(col, _scalar(lo, col.type)), pc.less_equal(col, _scalar(hi, col.type))))
        allowed = ", ".join(str(v) for v in values) + "".join(f", {lo}-{hi}" for lo, hi in ranges)
        out.append((~ok & mask(col.is_valid()), f"not one of the allowed values ({allowed.lstrip(', ')})"))
    return out


def validate_chunk(contract: Contract, dc: DecodedChunk) -> None:
    """Adds rule violations to dc.rejects and removes rejected records from dc.table."""
    table = dc.batch.table
    rows_of = dc.batch.chunk_rows()
    numbers = dc.record_numbers()
    pii = {node.path for node, rules in contract.rules.values() if rules.pii}
    for r in dc.rejects:  # the decoder's and the framing's: a pii field's bytes, or a record's holding them
        r.pii = r.field in pii if r.field is not None else bool(pii)
    for path, (node, rules) in contract.rules.items():
        col = column_by_path(table, path)
        col = one_array(col)
        for bad, why in violations(node, rules, col):
            for i in np.flatnonzero(bad):
                row = int(rows_of[i])
                # a pii field's value never leaves in clear: not in rejects, DLQ headers or logs
                reason = f"{why} {PII_WITHHELD}" if rules.pii else f"{why}: {col[int(i)].as_py()!r}"
                raw = bytes(dc.chunk.matrix[row, node.offset: node.offset + node.size])
                dc.rejects.append(Reject(int(numbers[row]), int(dc.chunk.offsets[row]), reason, node.path,
                                         node.offset, node.size, raw, pii=rules.pii))
    if not dc.rejects:
        return
    dc.rejects.sort(key=lambda r: (r.record, r.field_offset or 0))
    bad_numbers = np.array(sorted({r.record for r in dc.rejects}), dtype=np.int64)
    table_numbers = numbers[rows_of]
    keep = ~np.isin(table_numbers, bad_numbers)
    if not keep.all():
        dc.batch.table = table.filter(pa.array(keep))
        dc.batch.source_rows = rows_of[keep]
