"""One input file as a `Source`: its records in chunks, decoded against the contract.

Each batch carries its position: where reading stands in the file after it (byte offset,
record number, VB block end) and the running control totals of every record read so
far (header, trailer, detail count, hash sums). Acknowledging a batch commits that
position (the driver's checkpoint, stored only after the outputs are durable); a source
opened with a committed position seeks there and reads on, and the trailer check at the
end still covers the whole file. The next chunk is decoded in a worker thread while the
driver scores and writes the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapters.base import SourceBatch
from schemas.contract import Contract, ControlReport
from schemas.records import DEFAULT_BATCH_SIZE, ReadPosition
from schemas.reject_rate import DEFAULT_REJECT_LIMIT, RejectLimit
from schemas.stream import DecodedChunk

Commit = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class FileBatch(SourceBatch):
    """A SourceBatch with what a file knows besides: each record's byte offset, and how
    far into the file reading stands (for progress)."""

    record_offsets: np.ndarray | None = None
    bytes_read: int = 0


def file_batch(dc: DecodedChunk) -> FileBatch:
    """The detail records that passed (with their own bytes, record numbers and offsets)
    and the rejects of one decoded chunk."""
    rows = dc.batch.chunk_rows()
    raw, offsets, numbers = _at(dc.chunk.matrix, rows), _at(dc.chunk.offsets, rows), _at(dc.record_numbers(), rows)
    return FileBatch(table=dc.table, rejects=dc.rejects, raw=raw, record_numbers=numbers,
                     record_offsets=offsets, bytes_read=dc.chunk.end.offset)


def _at(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array[rows]` for ascending `rows` (a chunk's kept rows): a view where they are one
    run, as in every chunk without a header, a trailer or a reject (no copy of its bytes)."""
    n = len(rows)
    if n and int(rows[-1]) - int(rows[0]) == n - 1:  # ascending and unique: a run
        return array[int(rows[0]): int(rows[0]) + n]
    return array[rows]


class FileSource:
    reads_ahead = True  # the next chunk is decoded in a worker thread while this one is scored

    def __init__(self, contract: Contract, path: Path, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 position: dict[str, Any] | None = None, commit: Commit | None = None,
                 reject_limit: RejectLimit = DEFAULT_REJECT_LIMIT, name: str | None = None) -> None:
        self.contract = contract
        self.name = name  # how messages name the file (default: its path)
        self.path = path
        self.batch_size = batch_size
        self.reject_limit = reject_limit
        self.position = position  # where to resume (a committed batch position), None: the top
        self.commit = commit
        self.exhausted = False
        self.report = ControlReport()
        self._chunks: Iterator[DecodedChunk] | None = None
        self._next_chunk: asyncio.Future[tuple[DecodedChunk | None, dict[str, Any]]] | None = None

    async def connect(self) -> None:
        start = None
        self.report = ControlReport()  # the control totals; final once the source is exhausted
        if self.position is not None:
            start = ReadPosition(**self.position["read"])
            self.report = ControlReport.resumed(self.position["control"])
        self._chunks = self.contract.decode_file(self.path, batch_size=self.batch_size, start=start,
                                                 report=self.report, reject_limit=self.reject_limit, name=self.name)
        self.exhausted = False

    def _read(self) -> tuple[DecodedChunk | None, dict[str, Any]]:
        assert self._chunks is not None
        dc = next(self._chunks, None)
        # taken now: decoding the next chunk moves the running totals on
        totals = self.report.running_totals()
        position = {"read": dataclasses.asdict(dc.chunk.end), "control": totals} if dc is not None else {}
        return dc, position

    async def read_batch(self) -> FileBatch | None:
        if self.exhausted:
            return None
        pending = self._next_chunk or asyncio.ensure_future(asyncio.to_thread(self._read))
        self._next_chunk = None
        dc, position = await pending
        if dc is None:
            self.exhausted = True
            return None
        self._next_chunk = asyncio.ensure_future(asyncio.to_thread(self._read))
        batch = file_batch(dc)
        batch.position = position
        if self.commit is not None:
            commit = self.commit

            async def ack() -> None:
                await commit(position)

            batch.ack = ack
        return batch

    async def close(self) -> None:
        if self._next_chunk is not None:  # a worker thread is inside the generator: let it finish
            with contextlib.suppress(Exception):  # its error belongs to a batch nobody will read
                await self._next_chunk
            self._next_chunk = None
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self._chunks = None


__all__ = ["FileBatch", "FileSource", "file_batch"]
