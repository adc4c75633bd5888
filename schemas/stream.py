"""Decode a whole file chunk by chunk: framing -> column-wise decode -> reject records.

`decode_file` yields one `DecodedChunk` per chunk of records, so memory stays flat.
Each chunk carries the decoded table (every record of the chunk, bad fields null) and
the reject entries: one per bad field (field path, byte offsets, raw bytes, reason)
and one per record the framing could not cut out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from schemas.decoder import DecodedBatch, RecordDecoder
from schemas.records import DEFAULT_BATCH_SIZE, Framing, ReadPosition, RecordChunk, read_records

RAW_QUOTE_BYTES = 64  # a reject quotes at most this many bytes: a garbage file must not multiply
PII_WITHHELD = "(value withheld, pii field)"  # ends the reason of a reject of a field the contract marks pii


def quoted_raw(raw: bytes, length: int | None = None) -> dict[str, Any]:
    """How a reject shows its bytes: hex of at most RAW_QUOTE_BYTES; when there were more
    (`length`, or the bytes given), `raw_truncated` and the full `raw_length` say so."""
    full = len(raw) if length is None else length
    out: dict[str, Any] = {"raw": raw[:RAW_QUOTE_BYTES].hex().upper()}
    if full > RAW_QUOTE_BYTES:
        out.update(raw_truncated=True, raw_length=full)
    return out


@dataclass
class Reject:
    """One reason a record is rejected. `record` counts from 1 in file order. Only the
    first RAW_QUOTE_BYTES of `raw` are kept; `raw_length` says how many there were."""

    record: int
    record_offset: int
    reason: str
    field: str | None = None
    field_offset: int | None = None
    length: int | None = None
    raw: bytes = b""
    raw_length: int | None = None
    # the field lies in a REDEFINES view, which may not be the record's own: reported, but a
    # record of another type fails there by design, so the reject rate does not count it
    other_view: bool = dataclasses.field(default=False, compare=False)
    # the field is pii: its bytes stay here (the record's accounting) but are never written out
    pii: bool = dataclasses.field(default=False, compare=False)
    # a dead letter's lgw-error (decode, validation, crash): set by the real-time scorer;
    # a file's rejects file does not write it
    kind: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.raw_length is None:
            self.raw_length = len(self.raw)
        self.raw = bytes(self.raw[:RAW_QUOTE_BYTES])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record, "record_offset": self.record_offset}
        if self.field is not None:
            out.update(field=self.field, field_offset=self.field_offset,
                       offset=self.record_offset + (self.field_offset or 0), length=self.length)
        if self.pii:
            out.update(raw=None, raw_withheld="pii")
        else:
            out.update(quoted_raw(self.raw, self.raw_length))
        out["reason"] = self.reason
        return out


@dataclass
class DecodedChunk:
    chunk: RecordChunk
    batch: DecodedBatch
    rejects: list[Reject] = field(default_factory=list)

    @property
    def table(self) -> pa.Table:
        return self.batch.table

    def record_numbers(self) -> np.ndarray:
        """1-based file record number of every row of the table."""
        rows = self.chunk.row_numbers
        if rows is not None:
            return np.asarray(rows) + 1
        return self.chunk.start_index + 1 + np.arange(self.chunk.num_rows)


def field_rejects(chunk: RecordChunk, batch: DecodedBatch, numbers: np.ndarray) -> list[Reject]:
    out: list[Reject] = []
    for errs in batch.errors:
        size = errs.field.size
        for i in range(len(errs.rows)):
            row = int(errs.rows[i])
            off = int(errs.offsets[i])
            raw = bytes(chunk.matrix[row, off: off + size])
            out.append(Reject(int(numbers[row]), int(chunk.offsets[row]), errs.reason_of(i),
                              errs.path_of(i), off, size, raw, other_view=errs.field.in_redefines))
    out.sort(key=lambda r: (r.record, r.field_offset or 0))
    return out


class BatchDecoder(Protocol):
    def decode(self, matrix: np.ndarray, lengths: np.ndarray | None = None) -> DecodedBatch: ...


def decode_file(path: str | os.PathLike[str], decoder: BatchDecoder, framing: Framing,
                batch_size: int = DEFAULT_BATCH_SIZE, *, check_encoding: bool = True,
                start: ReadPosition | None = None,
                first_chunk_records: int | None = None, records: int | None = None) -> Iterator[DecodedChunk]:
    """`start`: resume where an earlier read's chunk ended (`dc.chunk.end`);
    `first_chunk_records`: a smaller first chunk (see `read_records`); `records`: stop
    after this many (fixed-length only: a partition of a file)."""
    from schemas.sniff import check_encoding as sniff

    first = True
    for chunk in read_records(path, framing, batch_size, start, first_chunk_records=first_chunk_records,
                              records=records):
        batch = decoder.decode(chunk.matrix, chunk.lengths)
        detail = decoder if isinstance(decoder, RecordDecoder) else getattr(decoder, "detail", None)
        if first and check_encoding and isinstance(detail, RecordDecoder):
            sniff(detail, chunk, batch.bad_rows())
        first = False
        dc = DecodedChunk(chunk, batch)
        numbers = dc.record_numbers()
        dc.rejects = field_rejects(chunk, batch, numbers)
        dc.rejects.extend(Reject(r.index + 1, r.offset, r.reason, raw=r.raw) for r in chunk.rejects)
        yield dc


def no_records(path: str | os.PathLike[str], name: str | None = None) -> str:
    """What is said of an input (shown as `name`, default its path) without any record."""
    size = os.path.getsize(path)
    return f"{name or path}: no records in its {size:,} bytes" + (" (the file is empty)" if size == 0 else "")
