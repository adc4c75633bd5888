"""The text field encoder (PIC X / PIC A): a whole column translated through the code
page in one gather and placed in its fields in one scatter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codepages import CodePage
from schemas.encode.encoded import Encoded, Problem
from schemas.layout import Elementary


def _string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 of length M+1 from 0, UTF-8 data) of a string array."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = arr.fill_null("")
    n = len(arr)
    kind = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=kind)[arr.offset: arr.offset + n + 1].astype(np.int64)
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0]: offsets[-1]]
    return offsets - offsets[0], data


_LOOKUPS: dict[str, np.ndarray] = {}


def _lookup(page: CodePage) -> np.ndarray:
    """Code point -> byte (-1: not in the page) as a dense table up to the page's highest
    code point plus one (-1), so translating a column is a single gather."""
    table = _LOOKUPS.get(page.name)
    if table is None:
        table = np.full(max(page.from_unicode) + 2, -1, dtype=np.int16)
        table[list(page.from_unicode)] = list(page.from_unicode.values())
        _LOOKUPS[page.name] = table
    return table


def encode_text(arr: pa.Array, f: Elementary, page: CodePage) -> Encoded:
    """PIC X/A: the whole column's characters translated in one gather through the code
    page's table, then put in place in the (M, size) block in one scatter."""
    n, size = len(arr), f.size
    problems = np.zeros(n, dtype=np.uint8)
    if n == 0 or pa.types.is_null(arr.type):
        return Encoded(np.full((n, size), page.space, dtype=np.uint8))
    offsets, data = _string_parts(arr)
    if page.multibyte:  # UTF-8 records: the field size counts bytes
        units = data
        lens = np.diff(offsets)
        missing = np.zeros(len(units), dtype=bool)
    else:
        points = np.frombuffer(data.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
        leads = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])  # one UTF-8 lead byte a character
        lens = leads[offsets[1:]] - leads[offsets[:-1]]
        table = _lookup(page)
        codes = table[np.minimum(points, len(table) - 1)]
        missing = codes < 0
        units = codes.astype(np.uint8)
    problems[lens > size] = Problem.TOO_LONG
    if missing.any():
        rows = np.repeat(np.arange(n), lens)
        problems[np.unique(rows[missing])] = Problem.BAD_CHAR
    ok = problems == 0
    if ok.all() and (lens == size).all():  # every value fills its field (e.g. decoded with --trim none)
        block = units.reshape(n, size)
    else:  # each character's place in the flattened block: its row's start, then its position
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        shift = np.arange(n, dtype=np.int64) * size - starts + ((size - lens) if f.justified_right else 0)
        flat = np.arange(len(units), dtype=np.int64) + np.repeat(shift, lens)
        if not ok.all():
            keep = np.repeat(ok, lens)
            flat, units = flat[keep], units[keep]
        flat_block = np.full(n * size, page.space, dtype=np.uint8)
        flat_block[flat] = units
        block = flat_block.reshape(n, size)
    details = None
    if not ok.all():
        details = {}
        values = arr.to_pylist()
        for i in np.flatnonzero(~ok):  # error path only
            if problems[i] == Problem.TOO_LONG:
                unit = "bytes" if page.multibyte else "characters"
                details[int(i)] = f"value is {int(lens[i])} {unit}, the field holds {size}"
            else:
                bad = next(c for c in str(values[i]) if ord(c) not in page.from_unicode)
                details[int(i)] = f"character {bad!r} (U+{ord(bad):04X}) has no byte in {page.name}"
    return Encoded(block, problems if problems.any() else None, details)
