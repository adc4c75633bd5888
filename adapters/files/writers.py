"""Record writers for output files: CSV, JSON Lines, Parquet and fixed-width records.

Each writer takes Arrow tables chunk by chunk (memory stays flat) and writes to the file
object it was given; callers create that file safely and make the result durable and
atomic (`schemas.safefiles.NewFile`: temp file + checked rename).
Fixed-width output is the input record's own bytes followed by the scored fields encoded
in the same code page, so the legacy side reads back exactly what it sent, plus the score.
"""

from __future__ import annotations

import io
from typing import IO, Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.arrow_buffers import value_buffers
from schemas.codepages import CodePage
from schemas.errors import ConfigError
from schemas.jsonl import fragments, write_jsonl

Format = Literal["csv", "jsonl", "fixed", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "fixed", "parquet")


class RecordWriter(Protocol):
    def write(self, table: pa.Table, raw: np.ndarray | None = None) -> None: ...

    def close(self) -> None: ...


def flat_for_csv(table: pa.Table) -> pa.Table:
    """Groups become GROUP.FIELD columns; arrays become their JSON text."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            table = table.set_column(i, f.name, fragments(table.column(i).combine_chunks()))
    return table


class _ArrowFileWriter:
    """A pyarrow writer opened on the first chunk, whose schema every later chunk is cast
    to (a chunk of all-null values must not change a column's type mid-file)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def _open(self, schema: pa.Schema) -> Any:
        raise NotImplementedError

    def _prepare(self, table: pa.Table) -> pa.Table:
        return table

    def _empty(self) -> None:
        raise NotImplementedError

    def write(self, table: pa.Table, raw: np.ndarray | None = None) -> None:
        table = self._prepare(table)
        if self._writer is None:
            self._schema = table.schema
            self._writer = self._open(table.schema)
        if table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            self._empty()
        else:
            self._writer.close()


class CsvWriter(_ArrowFileWriter):
    def _open(self, schema: pa.Schema) -> pacsv.CSVWriter:
        return pacsv.CSVWriter(self.sink, schema)

    def _prepare(self, table: pa.Table) -> pa.Table:
        return flat_for_csv(table)

    def _empty(self) -> None:
        pass  # an empty CSV file


class ParquetWriter(_ArrowFileWriter):
    def _open(self, schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(self.sink, schema)

    def _empty(self) -> None:
        pq.write_table(pa.table({}), self.sink)


class JsonlWriter:
    def __init__(self, sink: IO[bytes]) -> None:
        self._fh = sink

    def write(self, table: pa.Table, raw: np.ndarray | None = None) -> None:
        write_jsonl(table, self._fh)

    def close(self) -> None:
        self._fh.flush()


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
            parts.append(self._text(table.column(name).combine_chunks(), width))
        if self.newline:
            parts.append(np.full((table.num_rows, 1), 0x0A, dtype=np.uint8))
        return np.hstack(parts)

    def write(self, table: pa.Table, raw: np.ndarray | None = None) -> None:
        if raw is None:
            raise ConfigError("fixed-width output needs the input records' bytes")
        self._fh.write(self.rows(table, raw).tobytes())

    def close(self) -> None:
        self._fh.flush()


def open_writer(sink: IO[bytes], fmt: str, *, page: CodePage | None = None,
                fixed_columns: dict[str, int] | None = None) -> RecordWriter:
    """A writer of `fmt` records into `sink`; its `close()` completes the format (Parquet's
    footer) and flushes, and leaves closing `sink` to its owner."""
    if fmt == "csv":
        return CsvWriter(sink)
    if fmt == "jsonl":
        return JsonlWriter(sink)
    if fmt == "parquet":
        return ParquetWriter(sink)
    if fmt == "fixed":
        if page is None or fixed_columns is None:
            raise ConfigError("fixed-width output needs the code page and the output columns")
        return FixedWriter(sink, page, fixed_columns)
    raise ConfigError(f"unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}")
