"""Output files that survive a crash: append, make durable, checkpoint the length; after
a restart cut back to the checkpointed length and go on.

A run writes its records and its rejects to hidden temporary files in the outbox, one
chunk at a time. After each chunk both are flushed and fsynced and their lengths go into
the run's checkpoint; a resumed run truncates them to those lengths, so whatever a
killed process wrote after its last checkpoint disappears and is written again, once.
At the end the files are renamed into place (atomic within the folder). The temporary
files have unpredictable names (kept in the checkpoint) and are created exclusively,
never through a link (`schemas.safefiles`).

Every format is appended chunk by chunk as bytes: JSON Lines, CSV (the header once, then
rows; the column types of the first chunk are pinned and kept in the checkpoint), and
fixed-width records. Parquet cannot be appended to (its footer indexes every row group),
so its chunks are staged as an Arrow IPC stream, which can, and converted to Parquet in
one streaming pass at the end, in row groups of a fixed size: the result does not
depend on where the chunks fell, nor on where a run was interrupted.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from adapters.base import ScoredBatch, SourceBatch
from adapters.files.config import FileRejectsConfig, FileSinkConfig
from adapters.files.direct import ALIGN, DirectAppend
from adapters.files.dropfolder import safe_name
from adapters.files.formats import FORMATS
from adapters.files.writers import FixedWriter, flat_for_csv
from adapters.slices import CORES
from schemas.codepages import CodePage
from schemas.encode.records import encode_table
from schemas.errors import ConfigError
from schemas.jsonl import write_jsonl
from schemas.safefiles import NewFile, create_new, open_existing, publish, remove_stale_temps, temp_name
from schemas.stream import Reject

if TYPE_CHECKING:
    from adapters.registry import BuildContext
    from schemas.contract import RecordSpec

_BLOCK = 1 << 20
_STAGED, _STAGED_PARQUET = ".partial", ".ipc.partial"  # temporary files: records, Parquet's Arrow stream
_IPC_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream marker


class ResumableFile:
    """An append-only file whose durable length is known; reopened after a crash it is
    cut back to that length. Keeps a running sha256 of its content, unless `hashed` is
    False (a one-shot output nobody reads a digest of: 0.1 CPU s per million CSV records)."""

    def __init__(self, path: Path, *, direct: bool = False, hashed: bool = True) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self.hashed = hashed
        self._hash = hashlib.sha256()
        self.length = 0
        # a large output: appended through O_DIRECT where the file system allows (adapters.files.direct)
        self.direct = direct
        self._appender: DirectAppend | None = None

    @classmethod
    def adopting(cls, new: NewFile, *, direct: bool = False, hashed: bool = True) -> ResumableFile:
        """The file a `NewFile` created (with its checks), open and empty."""
        file = cls(new.path, direct=direct, hashed=hashed)
        file._fh = new.fh
        file._start_appending(b"")
        return file

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    def open(self, length: int | None = None) -> None:
        """A new empty file (`length` None), or the existing one cut back to `length`;
        neither through a link."""
        if length is None:
            self._fh = create_new(self.path)
            self._hash = hashlib.sha256()
            self.length = 0
            self._start_appending(b"")
            return
        fh = open_existing(self.path, write=True)
        fh.seek(0, os.SEEK_END)
        if fh.tell() < length:
            fh.close()
            raise OSError(f"{self.path}: {fh.tell()} bytes, the checkpoint says {length} were made durable")
        fh.truncate(length)
        fh.seek(0)
        self._hash = hashlib.sha256()
        left = length if self.hashed else 0  # an unhashed file's content is not read back
        while left:
            block = fh.read(min(_BLOCK, left))
            self._hash.update(block)
            left -= len(block)
        tail = b""
        if self.direct and length % ALIGN:
            fh.seek(length - length % ALIGN)
            tail = fh.read(length % ALIGN)
        fh.seek(length)
        self._fh = fh
        self.length = length
        self._start_appending(tail)

    def _start_appending(self, tail: bytes) -> None:
        """Switches to O_DIRECT appends (a `direct` file, where the file system has them)."""
        if self.direct and self._fh is not None:
            self._fh.flush()
            self._appender = DirectAppend.enable(self._fh.fileno(), self.length, tail)

    def write(self, data: bytes | pa.Buffer) -> None:
        assert self._fh is not None, "open() first"
        if self._appender is not None:
            self._appender.write(data)
        else:
            self._fh.write(data)
        if self.hashed:
            self._hash.update(data)
        self.length += len(data)

    def sync(self) -> int:
        """Flush and fsync; returns the durable length."""
        assert self._fh is not None
        if self._appender is not None:
            self._appender.sync()
        else:
            self._fh.flush()
        os.fsync(self._fh.fileno())
        return self.length

    @property
    def sha256(self) -> str | None:
        return self._hash.hexdigest() if self.hashed else None

    def close(self) -> None:
        if self._fh is not None:
            try:
                if self._appender is not None:
                    self._appender.close()
            finally:
                self._appender = None
                self._fh.close()
                self._fh = None


# --------------------------------------------------------------------------- rendering
def _schema_text(schema: pa.Schema | None) -> str | None:
    return None if schema is None else base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from(text: str | None) -> pa.Schema | None:
    return None if text is None else pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _pinned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    # a chunk whose column is all null must not change the column's type mid-file
    return table if table.schema == schema else table.cast(schema)


class _FixedEncoder(FixedWriter):
    """FixedWriter's record encoding, into memory instead of a file."""

    def __init__(self, page: CodePage, columns: dict[str, int]) -> None:
        self._buffer = io.BytesIO()
        super().__init__(self._buffer, page, columns)

    def encode(self, table: pa.Table, raw: np.ndarray | None) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self.write(table, raw)
        return self._buffer.getvalue()


# rows a CSV slice: each is written into its own buffer, one writer call and one batch. Per
# 100,000 card records, slices of 8,192 rows took 34 CPU ms, of 25,000 rows 42 ms (their
# columns' text and the growing output no longer fit a core's cache), of 2,048 rows 36 ms
_CSV_SLICE_ROWS = 8_192
# a chunk's rendered records: bytes, or parts to write in order: any buffer (bytes,
# pyarrow's), or a CSV slice still being written on the pool (`csv_parts`)
Rendered = bytes | list[pa.Buffer] | list[Future[pa.Buffer]]


@functools.cache
def _csv_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(CORES, thread_name_prefix="lgw-csv")


def _csv_of(table: pa.Table) -> pa.Buffer:
    out = pa.BufferOutputStream()
    if table.num_rows:
        # the slice in one batch: per batch the writer casts every column apart (pyarrow's
        # default of 1,024 rows cost 13 % more CPU)
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, batch_size=table.num_rows))
    return out.getvalue()


def csv_parts(table: pa.Table) -> list[Future[pa.Buffer]]:
    """The rows of `table` as CSV lines, no header, in parts to write one after another,
    each being written on the CSV pool when this returns.

    pyarrow's writer runs on one thread (and releases the GIL): a chunk is cut into slices
    of `_CSV_SLICE_ROWS`, written side by side, one per core (rows do not depend on each
    other: the bytes are the same). The caller does not wait: a batch run scores the next
    chunk while this one's lines are written, and its durable step takes each part when it
    is done. (Rendered while the loop waited, the lines' 0.6 CPU s per million records sat
    on the scoring's path, with a core a third idle.) The parts are pyarrow's own buffers,
    not copied into one `bytes`."""
    pool = _csv_pool()
    n = table.num_rows
    return [pool.submit(_csv_of, table.slice(lo, _CSV_SLICE_ROWS)) for lo in range(0, n, _CSV_SLICE_ROWS)] or \
        [pool.submit(_csv_of, table)]


def rendered_pieces(data: Rendered) -> Iterator[bytes | pa.Buffer]:
    """The buffers of one chunk's rendering, in order (waiting for each part still being written)."""
    for piece in data if isinstance(data, list) else (data,):
        yield piece.result() if isinstance(piece, Future) else piece


class Renderer:
    """Turns a chunk of output records into the bytes appended to the output file."""

    def __init__(self, fmt: str, *, page: CodePage | None = None, fixed_columns: dict[str, int] | None = None,
                 schema: pa.Schema | None = None) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.schema = schema  # csv/parquet: pinned by the first chunk
        self._fixed: _FixedEncoder | None = None
        if fmt == "fixed":
            if page is None or fixed_columns is None:
                raise ConfigError("fixed-width output needs the code page and the output columns")
            self._fixed = _FixedEncoder(page, fixed_columns)

    def render(self, table: pa.Table, raw: np.ndarray | None = None) -> Rendered:
        if self.fmt == "jsonl":
            buf = io.BytesIO()
            write_jsonl(table, buf)
            return buf.getvalue()
        if self.fmt == "fixed":
            assert self._fixed is not None
            return self._fixed.encode(table, raw)
        if self.fmt == "csv":
            table = flat_for_csv(table)
        if self.schema is None:
            self.schema = table.schema
        table = _pinned(table, self.schema)
        if self.fmt == "csv":
            return csv_parts(table)
        return b"".join(batch.serialize().to_pybytes() for batch in table.to_batches())

    def head(self) -> bytes:
        """What the file starts with, before the first chunk: the CSV header line, the
        Arrow stream's schema; nothing for JSON Lines and fixed-width records."""
        if self.schema is None or self.fmt not in ("csv", "parquet"):
            return b""
        if self.fmt == "csv":
            out = pa.BufferOutputStream()
            pacsv.write_csv(self.schema.empty_table(), out, pacsv.WriteOptions(include_header=True))
            return out.getvalue().to_pybytes()
        return self.schema.serialize().to_pybytes()


# --------------------------------------------------------------------------- sink
class OutboxSink:
    """The scored records of one run (a `Sink`): appended to a temporary file in the
    outbox, durable after every `write_batch`, renamed into place by `publish`."""

    publishes_at_end = True  # visible only once the run publishes it: a source's acks wait for that

    def __init__(self, final: Path, fmt: str, *, page: CodePage | None = None,
                 fixed_columns: dict[str, int] | None = None, row_group_size: int = 50_000,
                 encode: Callable[[pa.Table], np.ndarray] | None = None) -> None:
        self.final = final
        self.fmt = fmt
        self.row_group_size = row_group_size
        self.renderer = Renderer(fmt, page=page, fixed_columns=fixed_columns)
        self._suffix = _STAGED_PARQUET if fmt == "parquet" else _STAGED
        self.file = ResumableFile(temp_name(final, self._suffix), direct=True)
        self._pending: Path | None = None if fmt == "parquet" else self.file.path  # what publish renames
        self._adopted = False  # the file came from `over`: no earlier attempt's temporary files to clear
        # fixed-width records from a source without record bytes (a table, JSON messages):
        # the contract's encoder makes them, field by field, as the legacy side lays them out
        self.encode = encode
        self.rows = 0

    @classmethod
    def over(cls, new: NewFile, fmt: str, **kw: Any) -> OutboxSink:
        """A one-shot sink (`lgw score`) writing into a file `create_outputs` made and checked;
        it has no manifest, so no digest of the records is kept."""
        sink = cls(new.final, fmt, **kw)
        sink.file = ResumableFile.adopting(new, direct=True, hashed=False)
        sink._pending = None if fmt == "parquet" else sink.file.path
        sink._adopted = True
        return sink

    def start(self) -> None:
        """A new temporary file; those an earlier attempt left before its first checkpoint go."""
        for suffix in {self._suffix, _STAGED}:
            remove_stale_temps(self.final, suffix)
        self.file.open()

    def staged(self) -> dict[str, str | None]:
        """The temporary files' names, for the checkpoint (they are random)."""
        return {"file": self.file.path.name, "pending": self._pending.name if self._pending else None}

    def adopt(self, staged: dict[str, Any] | None) -> None:
        """Takes over the temporary files a checkpoint names (`staged()`)."""
        legacy = f".{self.final.name}.ipc.partial" if self.fmt == "parquet" else f".{self.final.name}.partial"
        self.file = ResumableFile(_beside(self.final, (staged or {}).get("file"), legacy), direct=True)
        pending = (staged or {}).get("pending")
        if self.fmt != "parquet":
            self._pending = self.file.path
        elif pending or staged is None:
            self._pending = _beside(self.final, pending, f".{self.final.name}.partial")

    # ---- Sink protocol (adapters.base)
    async def open(self, state: dict[str, Any] | None = None) -> None:
        if self.file.is_open and state is None:
            return  # adopted (`over`)
        await asyncio.to_thread(self.start if state is None else functools.partial(self.resume, state))

    def prepare(self, batch: ScoredBatch) -> tuple[Rendered, int]:
        """The records rendered in the file's format (fixed-width: appended to their own bytes)."""
        if self.fmt == "fixed":
            table = batch.table.drop_columns([c for c in ("source_record",) if c in batch.table.column_names])
            raw = batch.raw
            if raw is None and self.encode is not None:
                raw = self.encode(table)
            return self.renderer.render(table, raw), table.num_rows
        return self.renderer.render(batch.table), batch.table.num_rows

    async def write(self, prepared: Sequence[tuple[Rendered, int]]) -> None:
        def append() -> None:
            self.write_rendered([data for data, _ in prepared], sum(rows for _, rows in prepared))
            self.sync()

        await asyncio.to_thread(append)

    async def finish(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.complete)

    async def publish(self) -> None:
        await asyncio.to_thread(self.publish_file)

    async def discard(self) -> None:
        await asyncio.to_thread(self.discard_file)

    async def close(self) -> None:
        self.file.close()

    # resumable parts
    def state(self) -> dict[str, Any]:
        return {"length": self.file.length, "rows": self.rows, "schema": _schema_text(self.renderer.schema),
                **self.staged()}

    def resume(self, state: dict[str, Any]) -> None:
        self.adopt(state if "file" in state else None)
        self.file.open(int(state["length"]))
        self.rows = int(state["rows"])
        self.renderer.schema = _schema_from(state.get("schema"))

    def write_rendered(self, parts: Iterable[Rendered], rows: int) -> None:
        if self.file.length == 0:
            self.file.write(self.renderer.head())
        for data in parts:
            for piece in rendered_pieces(data):
                self.file.write(piece)
        self.rows += rows

    def sync(self) -> None:
        self.file.sync()

    def complete(self) -> dict[str, Any]:
        """Completes the temporary file (Parquet: converts the staged stream) and returns
        what the manifest says of it; call `publish` next."""
        self.file.sync()
        self.file.close()
        if self.fmt != "parquet":
            return self._summary(self.fmt, self.file.length, self.file.sha256)
        return self._parquet()

    def _summary(self, fmt: str, size: int, sha256: str | None) -> dict[str, Any]:
        """What `complete` says of the finished file; its sha256 only where one is kept."""
        done: dict[str, Any] = {"name": self.final.name, "format": fmt, "records": self.rows, "bytes": size}
        if sha256 is not None:
            done["sha256"] = sha256
        return done

    def _parquet(self) -> dict[str, Any]:
        if not self._adopted:
            remove_stale_temps(self.final, _STAGED)  # a conversion interrupted before its publish step
        target = self._pending = temp_name(self.final, _STAGED)
        with open_existing(self.file.path, write=True) as fh:  # close the stream (a resumed file lacks its end)
            fh.seek(0, os.SEEK_END)
            fh.write(_IPC_END)
        with create_new(target) as out:
            if self.renderer.schema is None:  # no chunk at all
                pq.write_table(pa.table({}), out)
            else:
                with open_existing(self.file.path) as staged, pa.ipc.open_stream(staged) as reader, \
                        pq.ParquetWriter(out, self.renderer.schema) as writer:
                    held: list[pa.RecordBatch] = []
                    rows = 0
                    for batch in reader:
                        held.append(batch)
                        rows += batch.num_rows
                        while rows >= self.row_group_size:
                            group = pa.Table.from_batches(held, self.renderer.schema)
                            writer.write_table(group.slice(0, self.row_group_size), self.row_group_size)
                            rest = group.slice(self.row_group_size)
                            held, rows = rest.to_batches(), rest.num_rows
                    if rows:
                        writer.write_table(pa.Table.from_batches(held, self.renderer.schema), self.row_group_size)
            out.flush()
            os.fsync(out.fileno())
        if not self.file.hashed:
            return self._summary("parquet", target.stat().st_size, None)
        digest = hashlib.sha256()
        with open_existing(target) as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
            size = fh.tell()
        return self._summary("parquet", size, digest.hexdigest())

    def publish_file(self) -> None:
        """Renames the finished temporary file into place; idempotent after a crash."""
        assert self._pending is not None, "finish() or adopt() first"
        _publish(self._pending, self.final)
        if self.fmt == "parquet":
            self.file.path.unlink(missing_ok=True)  # the staged stream, kept until now for a resume

    def discard_file(self) -> None:
        self.file.close()
        for p in (self.file.path, self._pending):
            if p is not None:
                p.unlink(missing_ok=True)


class RejectsFile:
    """A run's rejects, one JSON line per bad field or framing problem, resumable."""

    publishes_at_end = True  # visible only once the run publishes it: a source's acks wait for that

    def __init__(self, final: Path) -> None:
        self.final = final
        self.file = ResumableFile(temp_name(final, _STAGED))
        self.records = 0
        self._synced = False  # the file (new, or cut back on resume) made durable as it is

    @classmethod
    def over(cls, new: NewFile) -> RejectsFile:
        """A one-shot rejects file (`lgw score`) in a file `create_outputs` made and checked."""
        rejects = cls(new.final)
        rejects.file = ResumableFile.adopting(new)
        return rejects

    async def open(self, state: dict[str, Any] | None = None) -> None:
        if self.file.is_open and state is None:
            return  # adopted (`over`)
        await asyncio.to_thread(self.open_file, state)

    def open_file(self, state: dict[str, Any] | None = None) -> None:
        """A new temporary file (`state` None), or the checkpointed one cut back."""
        if state is None:
            remove_stale_temps(self.final, _STAGED)  # left by an attempt killed before its first checkpoint
            self.file.open()
        else:
            self.adopt(state)
            self.file.open(int(state["length"]))
            self.records = int(state["records"])

    def staged(self) -> dict[str, str | None]:
        return {"file": self.file.path.name}

    def adopt(self, staged: dict[str, Any] | None) -> None:
        self.file = ResumableFile(_beside(self.final, (staged or {}).get("file"), f".{self.final.name}.partial"))

    def state(self) -> dict[str, Any]:
        return {"length": self.file.length, "records": self.records, **self.staged()}

    async def write(self, rejects: Sequence[Reject], source: SourceBatch | None = None) -> None:
        """Appends the rejects (one JSON line each) and makes them durable."""
        await asyncio.to_thread(self.append, rejects)

    def append(self, rejects: Sequence[Reject]) -> None:
        if rejects:
            lines = [json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejects]
            self.file.write("".join(lines).encode("utf-8"))
            self.records += len({r.record for r in rejects})
        if rejects or not self._synced:  # else nothing new to make durable (3 ms a batch, in its durable step)
            self.file.sync()
            self._synced = True

    async def finish(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.complete)

    def complete(self) -> dict[str, Any]:
        self.file.sync()
        self.file.close()
        return {"name": self.final.name, "format": "jsonl", "records": self.records,
                "bytes": self.file.length, "sha256": self.file.sha256}

    async def publish(self, final: Path | None = None) -> None:
        await asyncio.to_thread(self.publish_file, final)

    def publish_file(self, final: Path | None = None) -> None:
        _publish(self.file.path, final or self.final)

    async def discard(self) -> None:
        await asyncio.to_thread(self.discard_file)

    def discard_file(self) -> None:
        self.file.close()
        self.file.path.unlink(missing_ok=True)

    async def close(self) -> None:
        self.file.close()


class StreamRejects:
    """Rejects as JSON lines on a text stream (`lgw score` without --rejects: stderr)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.records = 0

    async def open(self, state: dict[str, Any] | None = None) -> None:
        return None

    async def write(self, rejects: Sequence[Reject], source: SourceBatch | None = None) -> None:
        self.records += len({r.record for r in rejects})
        if self.stream is not None:
            for r in rejects:
                self.stream.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")

    def state(self) -> dict[str, Any]:
        return {"records": self.records}

    async def finish(self) -> dict[str, Any]:
        if self.stream is not None:
            self.stream.flush()
        return {"format": "jsonl", "records": self.records}

    async def publish(self) -> None:
        return None

    async def discard(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _publish(tmp: Path, final: Path) -> None:
    if os.path.lexists(tmp):
        publish(tmp, final)
    elif not os.path.lexists(final):
        raise FileNotFoundError(f"neither {tmp} nor {final} exists: the output was lost")


def _beside(final: Path, name: str | None, legacy: str) -> Path:
    """A temporary file a checkpoint names, in the folder of `final`; a checkpoint written
    before the names were random has none: the old fixed name."""
    return final.with_name(safe_name(name) if name else legacy)


def output_name(run_name: str, fmt: str) -> str:
    return f"{run_name}.scored.{FORMATS[fmt]}"  # type: ignore[index]


def build_sink(config: FileSinkConfig, context: BuildContext) -> OutboxSink:
    """The `file` sink of the registry: `NAME.scored.EXT` in `config.folder`, NAME the
    run's (a drop-folder input's name, a table run's pipeline and start time)."""
    if context.run_name is None:
        raise ConfigError(f"pipeline {context.pipeline}: a file sink writes one file per run, and this run "
                          "has no name (a real-time source never ends)")
    final = context.resolve(config.folder) / output_name(context.run_name, config.format)
    final.parent.mkdir(parents=True, exist_ok=True)
    return OutboxSink(final, config.format, page=context.contract.spec.page,
                      fixed_columns=context.extras.get("fixed_columns"), row_group_size=context.batch_size,
                      encode=functools.partial(encode_records, context.contract.spec))


def encode_records(spec: RecordSpec, table: pa.Table) -> np.ndarray:
    """The records of `table` in the contract's fixed-width layout; a value the layout
    cannot hold is an error (the driver isolates and rejects its record)."""
    matrix, problems = encode_table(table, spec)
    if problems:
        first = problems[0]
        raise ValueError(f"field {first['field']} cannot be written in the record layout: {first['reason']}")
    return matrix


def build_rejects(config: FileRejectsConfig, context: BuildContext) -> RejectsFile:
    """The `file` reject sink of the registry: `NAME.rejects.jsonl` in `config.folder`."""
    if context.run_name is None:
        raise ConfigError(f"pipeline {context.pipeline}: a rejects file is written per run, and this run "
                          "has no name (a real-time source never ends)")
    final = context.resolve(config.folder) / f"{context.run_name}.rejects.jsonl"
    final.parent.mkdir(parents=True, exist_ok=True)
    return RejectsFile(final)


__all__ = ["OutboxSink", "RejectsFile", "Renderer", "ResumableFile", "StreamRejects", "build_rejects",
           "build_sink",
           "output_name"]
