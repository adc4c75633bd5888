"""The encodings record files need besides what pyarrow does: CSV's flat columns and
fixed-width records. The formats themselves are listed in `adapters.files.formats`;
files are rendered chunk by chunk by `adapters.files.sink.Renderer`, the one place
that picks an encoder by format.

Fixed-width output is the input record's own bytes followed by the scored fields encoded
in the same code page, so the legacy side reads back exactly what it sent, plus the score.
"""

from __future__ import annotations

import io
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import one_array, value_buffers
from schemas.codepages import CodePage
from schemas.errors import ConfigError
from schemas.jsonl import fragments


def flat_for_csv(table: pa.Table) -> pa.Table:
    """Groups become GROUP.FIELD columns; arrays become their JSON text."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            table = table.set_column(i, f.name, fragments(one_array(table.column(i))))
    return table


class FixedWriter:
    """Input record bytes + the appended scored fields, each right-padded text of a fixed
    width in the input's code page (numbers as plain decimal text, e.g. 0.873421)."""

    def __init__(self, sink: IO[bytes] | None, page: CodePage, columns: dict[str, int], newline: bool = False) -> None:
        self.page = page
        self.columns = columns  # output column -> width in bytes
        self.newline = newline
        # no sink: only `rows` is used (real-time replies are built in memory)
        self._fh: IO[bytes] = sink if sink is not None else io.BytesIO()
        self._ascii_to_page = np.zeros(256, dtype=np.uint8)
        for b in range(128):
            self._ascii_to_page[b] = page.from_unicode.get(b, page.space)

    def _text(self, col: pa.Array, width: int) -> np.ndarray:
        text = pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col
        text = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(text, ""), 0, width), width, " ")
        offsets, data = value_buffers(text)
        body = data[offsets[0]: offsets[-1]]
        if body.size != len(text) * width:  # non-ASCII text: encode per value (rare)
            body = np.frombuffer(b"".join(self.page.encode_text(v) for v in text.to_pylist()), dtype=np.uint8)
            return body.reshape(len(text), width)
        return self._ascii_to_page[body].reshape(len(text), width)

    def rows(self, table: pa.Table, raw: np.ndarray) -> np.ndarray:
        """The output records as an (n, width) byte matrix: input bytes + scored fields."""
        parts = [raw]
        for name, width in self.columns.items():
            parts.append(self._text(one_array(table.column(name)), width))
        if self.newline:
            parts.append(np.full((table.num_rows, 1), 0x0A, dtype=np.uint8))
        return np.hstack(parts)

    def write(self, table: pa.Table, raw: np.ndarray | None = None) -> None:
        if raw is None:
            raise ConfigError("fixed-width output needs the input records' bytes")
        self._fh.write(self.rows(table, raw).tobytes())

    def close(self) -> None:
        self._fh.flush()
