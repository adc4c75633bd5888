"""Fast path for the patterns contracts use most: fixed-length, anchored sequences of
ASCII literals and character classes (`^[0-9]{16}$`, `^[A-Z]{2}$`, `^TX[0-9]{10}$`).

Such a pattern becomes a table of allowed bytes, 256 entries for each position, checked
with one numpy gather over the whole column. Python's own regex parser decides what the pattern means,
so the fast path cannot disagree with it; anything it cannot express (alternation,
variable repeats, non-ASCII, ...) returns None and the caller uses the regex engine.
"""

from __future__ import annotations

import functools
import re
import re._constants as sc
import re._parser as sp
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import value_buffers

_MAX_POSITIONS = 256


def _class_table(items: list[tuple[Any, Any]]) -> np.ndarray | None:
    table = np.zeros(256, dtype=bool)
    negate = False
    for op, av in items:
        if op is sc.NEGATE:
            negate = True
        elif op is sc.LITERAL and av < 128:
            table[av] = True
        elif op is sc.RANGE and av[1] < 128:
            table[av[0]: av[1] + 1] = True
        elif op is sc.CATEGORY and av is sc.CATEGORY_DIGIT:
            table[0x30:0x3A] = True
        else:
            return None
    if negate:
        table[:128] = ~table[:128]
        table[128:] = False  # stay within ASCII: non-ASCII data takes the regex path
    return table


def _one(op: Any, av: Any) -> np.ndarray | None:
    if op is sc.LITERAL:
        return _class_table([(op, av)])
    if op is sc.IN:
        return _class_table(list(av))
    return None


@functools.lru_cache(maxsize=256)
def fixed_pattern(pattern: str) -> np.ndarray | None:
    """The allowed bytes per position (positions x 256, bool), or None when the pattern
    needs the regex engine."""
    try:
        items = list(sp.parse(pattern))
    except re.error:
        return None
    if len(items) < 2 or items[0] != (sc.AT, sc.AT_BEGINNING) or items[-1] != (sc.AT, sc.AT_END):
        return None
    tables: list[np.ndarray] = []
    for op, av in items[1:-1]:
        if op in (sc.MAX_REPEAT, sc.MIN_REPEAT):
            low, high, sub = av
            if low != high or len(sub) != 1:
                return None
            table = _one(*next(iter(sub)))
            if table is None:
                return None
            tables.extend([table] * low)
        else:
            table = _one(op, av)
            if table is None:
                return None
            tables.append(table)
        if len(tables) > _MAX_POSITIONS:
            return None
    if not tables:
        return None
    stacked = np.stack(tables)
    stacked.flags.writeable = False  # cached: shared by every caller
    return stacked


def _matrix_matches(block: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Per row of an n x width byte matrix: is every byte allowed at its position? Positions
    in a row that allow one range of bytes (`[0-9]{10}`, `TX`) are checked together with
    one subtraction and compare (5x faster than a table lookup per position); others are
    looked up in their own tables."""
    n, width = block.shape
    good = np.ones(n, dtype=bool)
    lo = 0
    while lo < width:
        hi = lo + 1
        while hi < width and np.array_equal(tables[hi], tables[lo]):
            hi += 1
        allowed = np.flatnonzero(tables[lo])
        if allowed.size and allowed[-1] - allowed[0] + 1 == allowed.size:  # one range of bytes
            over = np.subtract(block[:, lo:hi], np.uint8(allowed[0])) > np.uint8(allowed[-1] - allowed[0])
            good[np.flatnonzero(over) // (hi - lo)] = False
        else:
            for j in range(lo, hi):
                good &= tables[j][block[:, j]]
        lo = hi
    return good


def match_fixed(col: pa.Array, tables: np.ndarray, pattern: str) -> np.ndarray:
    """Per row: does the string match? Nulls count as matching (`required` handles them).
    Rows with non-ASCII text (where bytes are not chars) go to the regex engine."""
    arr = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
    n = len(arr)
    width = len(tables)
    offsets, data = value_buffers(arr)
    offsets = offsets.astype(np.int64)
    ok = (offsets[1:] - offsets[:-1]) == width
    rows = np.flatnonzero(ok)
    if rows.size:
        if rows.size == n and offsets[-1] - offsets[0] == n * width:
            # every value has the pattern's length: the buffer is an n x width matrix as it is
            good = _matrix_matches(data[offsets[0]: offsets[-1]].reshape(n, width), tables)
        else:
            # a column of bytes per position, each looked up in its own table (one gather over
            # n x width indices costs five times as much)
            starts = offsets[rows]
            good = tables[0][data[starts]]
            for j in range(1, width):
                good &= tables[j][data[starts + j]]
        ok[rows] = good
    used = data[offsets[0]:offsets[-1]] if n else data[:0]
    if used.size and used.max() >= 0x80:  # some row is not ASCII: find which
        ascii_rows = np.asarray(pc.string_is_ascii(arr).fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
        other = np.flatnonzero(~ascii_rows)
        found = pc.match_substring_regex(arr.take(pa.array(other)), pattern)
        ok[other] = np.asarray(found.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
    if arr.null_count:
        ok |= ~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return ok

