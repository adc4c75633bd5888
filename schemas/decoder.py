"""Decode a batch of fixed-layout records (an N x record-length byte matrix) into a nested
Arrow table: groups become structs, OCCURS become lists cut to their DEPENDING ON count.

Every elementary field is decoded once for all records and all of its OCCURS slots
together; decode failures come back as `FieldErrors` (rows, slots, reasons) so callers
can build reject records with the field, its byte offset and its raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import columnless_table, empty_structs
from schemas.codepages import CodePage
from schemas.errors import ContractError
from schemas.fields import REASON_TEXT, Decoded, DecodeOptions, Reason, decode_field
from schemas.layout import Category, Elementary, Group, Layout, Node


@dataclass
class _Dim:
    count: int  # OCCURS maximum
    stride: int  # bytes of one occurrence
    node: Node
    depending: np.ndarray | None = None  # per-record counts, already clipped to [0, count]


@dataclass
class FieldErrors:
    """Decode failures of one field: parallel arrays over the failing slots."""

    field: Elementary
    rows: np.ndarray  # record index within the batch
    offsets: np.ndarray  # byte offset of the failing value within its record
    slots: np.ndarray  # (n, depth) OCCURS indexes, depth 0 outside OCCURS
    reasons: np.ndarray  # Reason codes

    def path_of(self, i: int) -> str:
        """Dotted path with OCCURS indexes, e.g. METADATA.ACCOUNT_DETAIL[3].ACCOUNT_TYPE_N."""
        chain = [n for n in reversed([self.field, *self.field.ancestors()]) if n.level > 0]
        slots = iter(self.slots[i])
        return ".".join(f"{n.key}[{int(next(slots))}]" if n.occurs else n.key for n in chain)

    def reason_of(self, i: int) -> str:
        return REASON_TEXT.get(Reason(int(self.reasons[i])), "invalid value")


@dataclass
class DecodedBatch:
    table: pa.Table
    errors: list[FieldErrors] = field(default_factory=list)
    # chunk row of every table row, when the table holds fewer rows than the chunk (header
    # and trailer records split off, rejected records filtered out); None: one to one
    source_rows: np.ndarray | None = None

    def chunk_rows(self) -> np.ndarray:
        return np.arange(self.table.num_rows) if self.source_rows is None else self.source_rows

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def bad_rows(self) -> np.ndarray:
        """Sorted unique record indexes that have at least one decode error outside
        REDEFINES views (a record of another type fails in the views that are not its own)."""
        errors = [e.rows for e in self.errors if not e.field.in_redefines]
        if not errors:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(errors))


class RecordDecoder:
    """Decodes batches for one layout, encoding and set of options."""

    def __init__(self, layout: Layout, page: CodePage, options: DecodeOptions | None = None,
                 *, report_redefines: bool = False) -> None:
        self.layout = layout
        self.page = page
        self.options = options or DecodeOptions()
        self.report_redefines = report_redefines
        self.top = layout.single_record()
        self._check_depending()

    def _check_depending(self) -> None:
        for n in self.layout.walk():
            if n.depending_on:
                target = self.layout.find(n.depending_on)
                if any(a.occurs for a in (target, *target.ancestors())):
                    raise ContractError(
                        f"{n.name} OCCURS DEPENDING ON {n.depending_on}: a count inside another OCCURS "
                        "is not supported")
                found = _not_a_count(target)
                if found:
                    raise ContractError(
                        f"{n.name} OCCURS DEPENDING ON {n.depending_on}: the count must be a whole number "
                        f"(PIC 9 without V), found {found}")

    def decode(self, matrix: np.ndarray, lengths: np.ndarray | None = None) -> DecodedBatch:
        """matrix: uint8 (N, width >= record length, zero-padded); lengths: bytes present per
        record when records may be shorter than the layout (variable-length files)."""
        if matrix.ndim != 2:
            raise ValueError("matrix must be 2-D")
        need = self.layout.record_length
        if matrix.shape[1] < need:
            pad = np.zeros((matrix.shape[0], need - matrix.shape[1]), dtype=np.uint8)
            matrix = np.hstack([matrix, pad])
            if lengths is None:
                lengths = np.full(matrix.shape[0], need - pad.shape[1], dtype=np.int64)
        run = _Run(self, matrix, lengths)
        children = [c for c in self.top.children if not c.is_filler] if isinstance(self.top, Group) else []
        arrays = [run.build(c, []) for c in children]
        table = pa.Table.from_arrays(arrays, names=[c.key for c in children]) if arrays else columnless_table(run.n)
        return DecodedBatch(table, run.errors)


def _not_a_count(node: Node) -> str | None:
    """What an OCCURS DEPENDING ON target is when it cannot hold a number of occurrences
    (text, a float, decimal places, a group); None when it can."""
    if not isinstance(node, Elementary):
        return "a group"
    if node.picture is None:  # COMP-1 / COMP-2
        return f"a {node.usage.value} field"
    if node.category == Category.TEXT or node.scale > 0:
        return f"PIC {node.picture.text}"
    return None


def _copy_of_columns(matrix: np.ndarray, start: int, size: int) -> np.ndarray:
    """matrix[:, start:start + size] as its own C-ordered array. Copied as one `size`-byte
    item per row: numpy copies a narrow uint8 slice byte by byte, 1.5-4x slower."""
    block = matrix[:, start: start + size]
    n, width = block.shape
    if width <= 1 or n == 0 or block.strides[1] != 1:
        return np.ascontiguousarray(block)
    return np.ascontiguousarray(block.view(f"V{width}")).view(np.uint8).reshape(n, width)


class _Run:
    def __init__(self, decoder: RecordDecoder, matrix: np.ndarray, lengths: np.ndarray | None) -> None:
        self.d = decoder
        self.matrix = matrix
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.n = matrix.shape[0]
        self.errors: list[FieldErrors] = []
        self._counts: dict[str, np.ndarray] = {}

    def build(self, node: Node, dims: list[_Dim]) -> pa.Array:
        inner = dims
        if node.occurs:
            depending = self._depending(node)
            # OCCURS DEPENDING ON: as many slots as the largest count in this batch, not the
            # declared maximum (a 1 TO 20000 table of 3 items decodes 3 slots)
            count = node.occurs if depending is None else int(depending.max(initial=0))
            inner = [*dims, _Dim(count, node.size, node, depending)]
        if isinstance(node, Elementary):
            arr = self._elementary(node, inner)
        else:
            assert isinstance(node, Group)
            kids = [c for c in node.children if not c.is_filler]
            arrays = [self.build(c, inner) for c in kids]
            names = [c.key for c in kids]
            arr = pa.StructArray.from_arrays(arrays, names=names) if arrays else empty_structs(
                self.n * prod(d.count for d in inner))
        if node.occurs:
            arr = self._wrap_list(arr, inner[-1], self.n * prod(d.count for d in dims))
        return arr

    def _depending(self, node: Node) -> np.ndarray | None:
        if not node.depending_on:
            return None
        key = node.depending_on.upper()
        if key not in self._counts:
            target = self.d.layout.find(node.depending_on)
            assert isinstance(target, Elementary)
            values = self._decode_slots(target, []).values.fill_null(0)
            if pa.types.is_decimal(values.type):  # 19 digits and more: clipped before the int64 cast
                low, high = pa.scalar(0, values.type), pa.scalar(np.iinfo(np.int32).max, values.type)
                values = pc.max_element_wise(pc.min_element_wise(values, high), low)
            counts = np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False))
            self._counts[key] = counts
        assert node.occurs is not None
        return np.clip(self._counts[key], node.occurs_min, node.occurs)

    def _slot_offsets(self, f: Elementary, dims: list[_Dim]) -> np.ndarray:
        offs = np.array([f.offset], dtype=np.int64)
        for d in dims:
            offs = (offs[:, None] + np.arange(d.count, dtype=np.int64)[None, :] * d.stride).ravel()
        return offs

    def _decode_slots(self, f: Elementary, dims: list[_Dim]) -> Decoded:
        size = f.size
        offs = self._slot_offsets(f, dims)
        if len(offs) == 1:
            block = _copy_of_columns(self.matrix, int(offs[0]), size)
        else:
            idx = offs[:, None] + np.arange(size, dtype=np.int64)[None, :]
            block = self.matrix[:, idx].reshape(self.n * len(offs), size)
        avail = None
        if self.lengths is not None:
            avail = (self.lengths[:, None] - offs[None, :]).ravel()
        return decode_field(block, avail, f, self.d.page, self.d.options)

    def _elementary(self, f: Elementary, dims: list[_Dim]) -> pa.Array:
        decoded = self._decode_slots(f, dims)
        if decoded.reasons is not None and (self.d.report_redefines or not f.in_redefines):
            self._collect_errors(f, dims, decoded.reasons)
        return decoded.values

    def _collect_errors(self, f: Elementary, dims: list[_Dim], reasons: np.ndarray) -> None:
        flat = np.flatnonzero(reasons)
        if flat.size == 0:
            return
        shape = (self.n, *[d.count for d in dims])
        idx = np.unravel_index(flat, shape)
        rows = idx[0]
        slots = np.stack(idx[1:], axis=1) if dims else np.zeros((flat.size, 0), dtype=np.int64)
        keep = np.ones(flat.size, dtype=bool)
        for j, d in enumerate(dims):
            if d.depending is not None:
                keep &= slots[:, j] < d.depending[rows]
        offsets = np.full(flat.size, f.offset, dtype=np.int64)
        for j, d in enumerate(dims):
            offsets += slots[:, j] * d.stride
        if keep.any():
            self.errors.append(FieldErrors(f, rows[keep], offsets[keep], slots[keep], reasons[flat[keep]]))

    def _wrap_list(self, values: pa.Array, dim: _Dim, outer_len: int) -> pa.Array:
        k = dim.count
        if dim.depending is None:
            offsets = np.arange(0, outer_len * k + 1, k, dtype=np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), values)
        per_outer = outer_len // self.n if self.n else 0
        counts = np.repeat(dim.depending, per_outer)
        keep = (np.arange(k)[None, :] < counts[:, None]).ravel()
        kept = values.filter(pa.array(keep))
        offsets = np.zeros(outer_len + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), kept)


def column_by_path(table: pa.Table, path: str) -> pa.ChunkedArray | pa.Array:
    """The column of a decoded table at a layout path (`RECORD.GROUP.FIELD`): nested
    groups are struct columns, and the 01 record's name is not a column when the table
    was collapsed to its fields."""
    parts = path.split(".")
    names = table.column_names
    while parts and parts[0] not in names:
        parts = parts[1:]
    if not parts:
        raise KeyError(path)
    col: Any = table.column(parts[0])
    for p in parts[1:]:
        col = pc.struct_field(col, p)
    return col
