"""Cutting a large chunk into row slices for work that runs on several cores at once
(pyarrow's CSV writer, an ONNX session's `run`: both release the GIL, each runs on one
thread)."""

from __future__ import annotations

import os

CORES = max(1, min(os.cpu_count() or 1, 4))


def row_slices(rows: int, min_rows: int) -> list[tuple[int, int]]:
    """(start, length) of up to CORES slices of `rows`, none under `min_rows` (fewer rows
    are not worth the hop to another thread); one slice when that is all it takes."""
    if rows == 0:
        return [(0, 0)]
    step = -(-rows // max(1, min(CORES, rows // max(1, min_rows))))
    return [(lo, min(step, rows - lo)) for lo in range(0, rows, step)]
