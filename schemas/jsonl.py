"""Arrow table -> JSON Lines, built column-wise with pyarrow compute.

Every value becomes a JSON fragment in one vectorised pass per column; structs and
lists are joined element-wise; the lines come out as one buffer. Decimals are written
as exact JSON numbers (never through float), nulls as null. Only strings that need
escaping go through Python's json module.
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import empty_structs

_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _fill_null(arr: pa.Array) -> pa.Array:
    return pc.fill_null(arr, "null") if arr.null_count else arr


def fragments(arr: pa.Array) -> pa.Array:
    """A string array with the JSON text of every value (null -> 'null')."""
    typ = arr.type
    if pa.types.is_struct(typ):
        return _struct(arr)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _list(arr)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _string(arr)
    if pa.types.is_floating(typ):
        finite = pc.is_finite(arr)
        as_text = pc.cast(pc.if_else(finite, arr, pa.scalar(None, typ)), pa.string())
        return _fill_null(as_text)
    if pa.types.is_boolean(typ):
        return _fill_null(pc.if_else(arr, "true", "false"))
    if pa.types.is_integer(typ) or pa.types.is_decimal(typ):
        return _fill_null(pc.cast(arr, pa.string()))
    if pa.types.is_binary(typ) or pa.types.is_fixed_size_binary(typ):
        return _fill_null(pc.binary_join_element_wise('"', pc.cast(pc.cast(arr, pa.binary()), pa.string()), '"', ""))
    return _fill_null(_string(pc.cast(arr, pa.string())))


def _string(arr: pa.Array) -> pa.Array:
    arr = arr.cast(pa.string()) if pa.types.is_large_string(arr.type) else arr
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    needs = pc.match_substring_regex(arr, _NEEDS_ESCAPE)
    if pc.any(needs).as_py():
        idx = np.flatnonzero(needs.fill_null(False).to_numpy(zero_copy_only=False))
        escaped = [json.dumps(v, ensure_ascii=False) for v in arr.take(pa.array(idx)).to_pylist()]
        mask = np.zeros(len(arr), dtype=bool)
        mask[idx] = True
        quoted = pc.replace_with_mask(quoted, pa.array(mask), pa.array(escaped, pa.string()))
    return _fill_null(quoted)


def _struct(arr: pa.StructArray) -> pa.Array:
    typ = arr.type
    if typ.num_fields == 0:
        return pa.array(["{}"] * len(arr), pa.string())
    columns = [(typ.field(i).name, pc.struct_field(arr, [i])) for i in range(typ.num_fields)]
    joined = pc.binary_join_element_wise("{", *member_parts(columns), "}", "")
    if arr.null_count:
        joined = pc.if_else(arr.is_null(), "null", joined)
    return joined


def member_parts(columns: list[tuple[str, pa.Array]]) -> list[str | pa.Array]:
    """The members of a JSON object per row, without the braces ('"a":1,"b":"x"'), as
    parts for pc.binary_join_element_wise: a caller joins them into a larger object
    in the same call."""
    parts: list[str | pa.Array] = []
    for i, (name, values) in enumerate(columns):
        parts.append(("," if i else "") + json.dumps(name, ensure_ascii=False) + ":")
        parts.append(fragments(values))
    return parts


def _list(arr: pa.ListArray) -> pa.Array:
    values = fragments(arr.flatten())
    offsets = pc.subtract(arr.offsets, arr.offsets[0])
    lists = pa.ListArray.from_arrays(offsets, values)
    joined = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
    if arr.null_count:
        joined = pc.if_else(arr.is_null(), "null", joined)
    return joined


def lines(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """One JSON object text per row (no newline)."""
    batch = table.combine_chunks() if isinstance(table, pa.Table) else table
    if isinstance(batch, pa.Table):
        batch = batch.to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist([], batch.schema)
    struct = pa.StructArray.from_arrays(batch.columns, names=batch.schema.names) if batch.num_columns else \
        empty_structs(batch.num_rows)
    return _struct(struct)


def write_jsonl(table: pa.Table | pa.RecordBatch, out: IO[bytes]) -> None:
    if table.num_rows == 0:
        return
    text = pc.binary_join_element_wise(lines(table), "\n", "")
    text = text.cast(pa.string())
    offsets = text.buffers()[1]
    data = text.buffers()[2]
    first = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=text.offset * 4)[0])
    last = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=(text.offset + len(text)) * 4)[0])
    out.write(memoryview(data)[first:last])
