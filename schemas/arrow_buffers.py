"""Zero-copy views of an Arrow string or binary array's buffers, for the numpy passes that
read many short values at once (byte lengths, fixed-width patterns, first and last bytes),
and arrays built straight from buffers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def one_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """`column` as one array: its only chunk as it is. pyarrow's `combine_chunks` copies
    even a single chunk (measured: 0.09 s for 5 million int64s), and a batch's columns
    usually have one."""
    if isinstance(column, pa.Array):
        return column
    if column.num_chunks == 1:
        return column.chunk(0)
    return column.combine_chunks()


def value_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data): value i is data[offsets[i]:offsets[i + 1]]. The n + 1 offsets are
    absolute positions in `data` (a sliced array does not start at 0)."""
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    dtype = np.dtype(np.int64 if wide else np.int32)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=dtype, count=len(arr) + 1, offset=arr.offset * dtype.itemsize)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def empty_structs(length: int) -> pa.StructArray:
    """`length` values of a struct without fields (a group whose items are all FILLER):
    one validity-free buffer list, no per-value Python object."""
    return pa.StructArray.from_buffers(pa.struct([]), length, [None])


def columnless_table(num_rows: int) -> pa.Table:
    """A table without columns that still has `num_rows` rows (pa.table({}) has none): a
    record whose fields are all FILLER is still a record to account for."""
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(empty_structs(num_rows))])
