"""Records from fields: the walk over the layout that encodes every elementary field
and scatters its bytes into the (N, record length) matrix, then the file framing.

OCCURS lists write their elements; the remaining slots of a fixed OCCURS are filled as if
null (so they decode cleanly), those past an OCCURS DEPENDING ON count are left as spaces
(the decoder never reads them; mainframe files have them so). A REDEFINES area is written
from the first (redefined) view; a redefining view is written instead only where it has a
value and every earlier view is empty (null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import one_array
from schemas.codepages import CodePage
from schemas.decoder import RecordDecoder
from schemas.encode.encoded import Problem, problem_text
from schemas.encode.fields import encode_field
from schemas.encode.numbers import non_null, unscaled
from schemas.layout import Elementary, Group, Layout, Node

if TYPE_CHECKING:
    from schemas.contract import RecordSpec


def norm_key(name: str) -> str:
    """A layout key or column name as both are matched: '-' and '_' alike, any case."""
    return name.replace("-", "_").upper()


@dataclass
class _Dim:
    count: int
    stride: int


class RecordEncoder:
    """Encodes Arrow tables shaped like `RecordDecoder`'s output for one record spec."""

    def __init__(self, spec: RecordSpec) -> None:
        self.spec = spec
        self.layout: Layout = spec.layout
        self.page: CodePage = spec.page
        self.float_format = spec.options.float_format
        self.top = self.layout.single_record()
        framing = spec.framing
        self.width = framing.record_length if framing.format == "F" and framing.record_length else \
            self.layout.record_length
        self._schema: pa.Schema | None = None

    @property
    def schema(self) -> pa.Schema:
        """The decoder's output schema (the shape `encode` expects)."""
        if self._schema is None:
            blank = np.zeros((1, self.layout.record_length), dtype=np.uint8)
            self._schema = RecordDecoder(self.layout, self.page).decode(blank).table.schema
        return self._schema

    def encode(self, table: pa.Table) -> tuple[np.ndarray, list[dict[str, Any]]]:
        run = _Run(self, table.num_rows)
        columns = run.columns(table)
        run.prepare_counts(columns)
        kids = [c for c in self.top.children if not c.is_filler] if isinstance(self.top, Group) else []
        n = table.num_rows
        run.children(kids, columns, [], np.ones(n, dtype=bool), np.ones(n, dtype=bool))
        matrix = run.matrix
        if self.width > matrix.shape[1]:
            pad = np.full((n, self.width - matrix.shape[1]), self.page.space, dtype=np.uint8)
            matrix = np.hstack([matrix, pad])
        elif self.width < matrix.shape[1]:
            matrix = np.ascontiguousarray(matrix[:, : self.width])
        run.problems.sort(key=lambda p: (p[0], p[1]))
        return matrix, [{"row": r, "field": path, "reason": why} for r, _, path, why in run.problems]


def encode_table(table: pa.Table, spec: RecordSpec) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The inverse of `RecordDecoder.decode`: an (N, record length) uint8 matrix and the
    problems per row ({"row", "field", "reason"}); a row with problems is still encoded,
    its bad fields filled as if null."""
    return RecordEncoder(spec).encode(table)


def _struct_children(arr: pa.Array) -> dict[str, pa.Array]:
    """A struct's children by normalized name, with the struct's own nulls pushed down."""
    arr = one_array(arr)
    if not pa.types.is_struct(arr.type):
        return {}
    kids = arr.flatten()
    return {norm_key(arr.type.field(i).name): kids[i] for i in range(arr.type.num_fields)}


def _lengths(arr: pa.Array) -> np.ndarray:
    lengths = pc.list_value_length(arr)
    return np.asarray((lengths.fill_null(0) if lengths.null_count else lengths).to_numpy(zero_copy_only=False),
                      dtype=np.int64)


class _Run:
    def __init__(self, encoder: RecordEncoder, n: int) -> None:
        self.e = encoder
        self.n = n
        self.matrix = np.full((n, encoder.layout.record_length), encoder.page.space, dtype=np.uint8)
        self.problems: list[tuple[int, int, str, str]] = []  # (row, byte offset, path, reason)
        self.counts: dict[int, np.ndarray] = {}  # id(OCCURS DEPENDING ON node) -> count per record
        self.overrides: dict[int, pa.Array] = {}  # id(count field) -> values with nulls filled in

    # ---- input shape
    def columns(self, table: pa.Table) -> dict[str, pa.Array]:
        cols = {norm_key(name): one_array(table.column(i)) for i, name in enumerate(table.column_names)}
        top = self.e.top
        kid_keys = {norm_key(c.key) for c in top.children} if isinstance(top, Group) else set()
        wrapper = cols.get(norm_key(top.key))
        if top.level == 1 and wrapper is not None and len(cols) == 1 and norm_key(top.key) not in kid_keys:
            return _struct_children(wrapper)  # the 01 record's own name wraps the fields
        return cols

    def lookup(self, columns: dict[str, pa.Array], node: Node) -> pa.Array | None:
        """A node's column when no OCCURS sits above it (one value per record)."""
        chain = [a for a in reversed([node, *node.ancestors()]) if a is not self.e.top and a.level > 0]
        arr: pa.Array | None = None
        level: dict[str, pa.Array] = columns
        for i, a in enumerate(chain):
            if i < len(chain) - 1 and a.occurs:
                return None
            arr = level.get(norm_key(a.key))
            if arr is None:
                return None
            level = _struct_children(arr) if i < len(chain) - 1 else {}
        return arr

    def prepare_counts(self, columns: dict[str, pa.Array]) -> None:
        """OCCURS DEPENDING ON: a null count field takes its list's length; the count (clipped
        to the OCCURS bounds, as the decoder clips it) says how many elements come back."""
        for node in self.e.layout.walk():
            if not node.depending_on or any(a.occurs for a in node.ancestors()):
                continue
            assert node.occurs is not None
            target = self.e.layout.find(node.depending_on)
            lists = self.lookup(columns, node)
            lengths = _lengths(lists) if lists is not None else np.zeros(self.n, dtype=np.int64)
            given = self.lookup(columns, target)
            if given is None or len(given) != self.n:
                given = pa.nulls(self.n, pa.int64())
            ints, valid, problems = unscaled(given, 0)
            known = valid & (problems == 0)
            if isinstance(target, Elementary) and (~valid).any() and not problems.any() \
                    and id(target) not in self.overrides:
                self.overrides[id(target)] = pa.array(np.where(valid, ints, lengths).astype(np.int64), pa.int64())
            counts = np.where(known, ints, lengths)
            counts = np.minimum(np.maximum(counts, node.occurs_min), node.occurs)
            self.counts[id(node)] = np.asarray(counts).astype(np.int64)

    # ---- walking the layout
    def children(self, kids: list[Node], arrays: dict[str, pa.Array], dims: list[_Dim],
                 present: np.ndarray, write: np.ndarray) -> None:
        """Encodes siblings; each REDEFINES set picks one view per record (slot) to write."""
        sets: list[list[Node]] = []
        by_name: dict[str, list[Node]] = {}
        for kid in kids:
            views = by_name.get(kid.redefines.upper()) if kid.redefines else None
            if views is None:
                views = [kid]
                sets.append(views)
            else:
                views.append(kid)
            by_name[kid.name.upper()] = views
        m = len(present)
        for views in sets:
            if len(views) == 1:
                self.node(views[0], arrays.get(norm_key(views[0].key)), dims, present, write)
                continue
            has = [self.has_value(v, arrays.get(norm_key(v.key)), m) for v in views]
            taken = has[0].copy()
            won = np.zeros(m, dtype=bool)
            masks = []
            for h in has[1:]:
                win = h & ~taken
                masks.append(win)
                taken |= win
                won |= win
            for view, mask in zip(views, [~won, *masks], strict=True):
                self.node(view, arrays.get(norm_key(view.key)), dims, present, write & mask)

    def has_value(self, node: Node, arr: pa.Array | None, m: int) -> np.ndarray:
        """Per record (slot): does this view carry any non-null value?"""
        if arr is None:
            return np.zeros(m, dtype=bool)
        valid = non_null(arr)
        if node.occurs:
            return valid & (_lengths(arr) > 0)
        if isinstance(node, Elementary):
            return valid
        assert isinstance(node, Group)
        kids = _struct_children(arr)
        acc = np.zeros(m, dtype=bool)
        for c in node.children:
            if not c.is_filler:
                acc |= self.has_value(c, kids.get(norm_key(c.key)), m)
        return valid & acc

    def node(self, node: Node, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
             write: np.ndarray) -> None:
        if node.occurs:
            arr, present = self.expand(node, arr, dims, present, write)
            write = np.repeat(write, node.occurs)
            if node.depending_on:  # slots past the count stay spaces, as mainframe files have them
                write &= present
            dims = [*dims, _Dim(node.occurs, node.size)]
        if isinstance(node, Elementary):
            self.elementary(node, arr, dims, present, write)
            return
        assert isinstance(node, Group)
        kids = [c for c in node.children if not c.is_filler]
        if kids and not node.in_redefines:
            null = ~non_null(arr) if arr is not None else np.ones(len(present), dtype=bool)
            for flat in np.flatnonzero(present & write & null):
                self.report(node, dims, int(flat), "missing group (null or absent)")
        self.children(kids, _struct_children(arr) if arr is not None else {}, dims, present, write)

    def expand(self, node: Node, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
               write: np.ndarray) -> tuple[pa.Array | None, np.ndarray]:
        """A list column -> one value per OCCURS slot (null where the list has no element)."""
        k = node.occurs
        assert k is not None
        outer = len(present)
        lengths = _lengths(arr) if arr is not None else np.zeros(outer, dtype=np.int64)
        shown = present & write
        for flat in np.flatnonzero((lengths > k) & shown):
            self.report(node, dims, int(flat), f"{int(lengths[flat])} elements, OCCURS allows at most {k}")
        taken = np.minimum(lengths, k)
        counts = self.counts.get(id(node))
        if counts is not None and self.n:
            expected = np.repeat(counts, outer // self.n)
            for flat in np.flatnonzero((taken != expected) & (lengths <= k) & shown):
                self.report(node, dims, int(flat),
                            f"{node.depending_on} says {int(expected[flat])} elements, the list has "
                            f"{int(lengths[flat])}")
        slot = np.arange(k)
        inner_present = (present[:, None] & (slot[None, :] < taken[:, None])).ravel()
        if arr is None or not inner_present.any():
            return None, inner_present
        values = arr.flatten()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if outer else np.zeros(0, dtype=np.int64)
        idx = (starts[:, None] + slot[None, :]).ravel()
        idx = np.where(inner_present, idx, 0)
        return values.take(pa.array(idx, pa.int64(), mask=~inner_present)), inner_present

    def elementary(self, f: Elementary, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
                   write: np.ndarray) -> None:
        m = len(present)
        arr = self.overrides.get(id(f), arr)
        if arr is None:
            arr = pa.nulls(m, pa.string() if f.is_text else pa.int64())
        arr = one_array(arr)
        enc = encode_field(arr, f, self.e.page, self.e.float_format)  # bad values come back as if null
        if enc.problems is not None:
            for flat in np.flatnonzero((enc.problems != 0) & present & write):
                why = (enc.details or {}).get(int(flat)) or problem_text(Problem(int(enc.problems[flat])), f)
                self.report(f, dims, int(flat), why)
        self.scatter(f, enc.block, dims, write)

    def scatter(self, f: Elementary, block: np.ndarray, dims: list[_Dim], write: np.ndarray) -> None:
        """Writes the field's bytes into every slot through a strided view of the records
        (record, OCCURS slots..., byte), where `write` allows."""
        shape = (self.n, *[d.count for d in dims], f.size)
        strides = (self.matrix.strides[0], *[d.stride for d in dims], 1)
        view = np.lib.stride_tricks.as_strided(self.matrix[:, f.offset:], shape=shape, strides=strides,
                                               writeable=True)
        block = block.reshape(shape)
        if write.all():
            view[...] = block
        else:
            mask = write.reshape(shape[:-1])
            view[mask] = block[mask]

    def report(self, node: Node, dims: list[_Dim], flat: int, reason: str) -> None:
        """One problem at grid position `flat` (record, then OCCURS slots outer to inner)."""
        idx = np.unravel_index(flat, (self.n, *[d.count for d in dims]))
        row, slots = int(idx[0]), iter(int(s) for s in idx[1:])
        chain = [a for a in reversed([node, *node.ancestors()]) if a is not self.e.top and a.level > 0]
        parts = []
        offset = node.offset
        for a in chain:
            slot = next(slots, None) if a.occurs else None
            if slot is None:  # also a list reported before its own slots exist
                parts.append(a.key)
            else:
                parts.append(f"{a.key}[{slot}]")
                offset += slot * a.size
        self.problems.append((row, offset, ".".join(parts), reason))


def frame(matrix: np.ndarray, spec: RecordSpec, *, newline: bool = False) -> bytes:
    """Records -> file bytes: F (optionally newline-terminated), V (IBM RDW: big-endian
    length that counts its own 4 bytes), VB (RDW records in BDW blocks of up to 32,760
    bytes), D (one line per record)."""
    fmt = spec.framing.format
    n, width = matrix.shape
    if fmt == "F":
        if not newline:
            return matrix.tobytes()
        return np.hstack([matrix, np.full((n, 1), 0x0A, dtype=np.uint8)]).tobytes()
    if fmt == "D":
        return np.hstack([matrix, np.full((n, 1), 0x0A, dtype=np.uint8)]).tobytes()
    rdw_len = width + 4
    if rdw_len > 0x7FFF:
        raise ValueError(f"record of {width} bytes is too long for a V/VB RDW")
    rdw = np.array([rdw_len >> 8, rdw_len & 0xFF, 0, 0], dtype=np.uint8)
    records = np.hstack([np.tile(rdw, (n, 1)), matrix])
    if fmt == "V":
        return records.tobytes()
    per_block = max(1, (32760 - 4) // rdw_len)  # IBM's largest block (BLKSIZE 32760)
    out = bytearray()
    for lo in range(0, n, per_block):
        chunk = records[lo: lo + per_block]
        bdw_len = 4 + chunk.size
        out += bytes([bdw_len >> 8, bdw_len & 0xFF, 0, 0]) + chunk.tobytes()
    return bytes(out)
