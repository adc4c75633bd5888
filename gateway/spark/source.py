"""`spark.read.format("lgw")`: records of mainframe files decoded by this project's column-wise
decoder, as a Spark Python data source (pyspark >= 4.0).

    from gateway.spark.source import register
    register(spark)
    df = spark.read.format("lgw").option("contract", "card.contract.yaml").load("drop/DAILY.BIN")
    rejects = spark.read.format("lgw").option("contract", ...).option("output", "rejects").load(...)

Splitting: a fixed-length file (record format F) is cut into byte ranges of about
`partitionBytes` (default 64 MiB) at record boundaries (the stride includes any line
terminator). V, VB and text (D) files are cut by an index pass in the driver: the file is
framed once (RDW by RDW, BDW by BDW, line by line, without decoding) and cut at the record
boundary where a partition has reached `partitionBytes` (a VB boundary inside a block keeps
the block's end), as Cobrix's sparse index does. Every partition is read from its offset
with its record numbers in file order, so rejects name the same records and offsets as
`lgw decode`.

Outputs (`output` option): `records` (default: the decoded records, the rows `lgw decode`
writes), `rejects` (one row per reject, the fields of `lgw decode --rejects` plus `file`),
`control` (one row per partition: detail count, control sums, header and trailer as read;
`control_reports` combines them per file and checks the trailer's totals as the CLI does),
and `all`: the three in one read (records with the source columns, and rows whose
`lgw_reject` or `lgw_control` holds a reject or a control row as JSON; `split()` separates
them, `df.write.format("lgw")` writes them: gateway.spark.sink). `sourceColumns=true` adds
`source_record`, `source_file`, `source_offset` and `source_raw` (the record's bytes; null
where the contract marks fields pii) to the records, which scoring needs
(gateway.spark.score).

Options: `contract` or `copybook`; the CLI's record overrides (`encoding`, `record_format`,
`record_length`, `rdw_endian`, `rdw_includes_header`, `trim`, `float_format`,
`control_chars`; `-`, `_` and case do not matter); `partitionBytes`, `batchRecords`,
`maxRejectRate`, `rejectRateAfter` (judged per partition). `load()` takes a file, a folder
(its files, sorted) or a glob; `paths` (comma-separated) adds more.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import StructType

from schemas.contract import Contract, ControlReport, RecordSpec
from schemas.records import DEFAULT_BATCH_SIZE, ReadPosition, fixed_stride, rdw_reading, read_records
from schemas.reject_rate import RejectLimit, guard_rejects
from schemas.stream import DecodedChunk, Reject

NAME = "lgw"
OUTPUTS = ("records", "rejects", "control", "all")
# output=all: one read gives everything; a decode reject's row carries it here (as JSON, the
# rejects output's fields), a partition's control row there; a record row has both null
REJECT_COLUMN = "lgw_reject"
CONTROL_COLUMN = "lgw_control"
DEFAULT_PARTITION_BYTES = 64 * 1024 * 1024

REJECT_SCHEMA = pa.schema([
    ("file", pa.string()), ("record", pa.int64()), ("record_offset", pa.int64()), ("field", pa.string()),
    ("field_offset", pa.int64()), ("offset", pa.int64()), ("length", pa.int64()), ("raw", pa.string()),
    ("raw_truncated", pa.bool_()), ("raw_length", pa.int64()), ("raw_withheld", pa.string()),
    ("reason", pa.string())])
# option sourceColumns: where each record came from (record number as `lgw score` counts it,
# file, byte offset, and its bytes unless the contract marks fields pii)
SOURCE_FIELDS = (pa.field("source_record", pa.int64()), pa.field("source_file", pa.string()),
                 pa.field("source_offset", pa.int64()), pa.field("source_raw", pa.binary()))
CONTROL_SCHEMA = pa.schema([
    ("file", pa.string()), ("partition", pa.int64()), ("first_record", pa.int64()), ("details", pa.int64()),
    ("sums", pa.string()), ("header", pa.string()), ("trailer", pa.string())])

_OVERRIDES = ("encoding", "record_format", "record_length", "rdw_endian", "rdw_includes_header", "trim",
              "float_format", "control_chars")
_LIMITS = ("max_record_bytes", "max_field_bytes", "max_occurs", "max_line_bytes")


def register(spark: Any) -> None:
    """Makes `spark.read.format("lgw")` known to this session."""
    spark.dataSource.register(LgwDataSource)


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


@dataclass(frozen=True)
class Settings:
    """The options of one read, plain values only (sent to every executor)."""

    contract: str | None
    copybook: str | None
    overrides: tuple[tuple[str, Any], ...]
    limits: tuple[tuple[str, int], ...]
    output: str
    partition_bytes: int
    batch_records: int
    max_reject_rate: float
    reject_rate_after: int
    source_columns: bool = False

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        opts = {_key(k): v for k, v in dict(options).items()}

        def get(name: str) -> str | None:
            v = opts.get(_key(name))
            return None if v is None else str(v)

        overrides: dict[str, Any] = {}
        for name in _OVERRIDES:
            v = get(name)
            if v is None:
                continue
            if name == "record_length":
                overrides[name] = int(v)
            elif name == "rdw_includes_header":
                overrides[name] = v.lower() in ("yes", "true", "1")
            else:
                overrides[name] = v
        limits = {name: int(v) for name in _LIMITS if (v := get(name)) is not None}
        contract, copybook = get("contract"), get("copybook")
        if (contract is None) == (copybook is None):
            raise ValueError("lgw data source: give exactly one of the options `contract` and `copybook`")
        output = (get("output") or "records").lower()
        if output not in OUTPUTS:
            raise ValueError(f"lgw data source: output {output!r} is not one of {', '.join(OUTPUTS)}")
        return cls(contract=str(Path(contract).resolve()) if contract else None,
                   copybook=str(Path(copybook).resolve()) if copybook else None,
                   overrides=tuple(sorted(overrides.items())), limits=tuple(sorted(limits.items())),
                   output=output, partition_bytes=int(get("partitionBytes") or DEFAULT_PARTITION_BYTES),
                   batch_records=int(get("batchRecords") or DEFAULT_BATCH_SIZE),
                   max_reject_rate=float(get("maxRejectRate") or 0.5),
                   reject_rate_after=int(get("rejectRateAfter") or 1000),
                   source_columns=output == "all" or (get("sourceColumns") or "false").lower() in ("yes", "true", "1"))


@functools.lru_cache(maxsize=16)
def resolved(settings: Settings) -> tuple[Contract | None, RecordSpec]:
    """Contract and record spec as `lgw decode` resolves them (gateway.commands.resolve_spec),
    once per process and read."""
    from gateway.commands import resolve_spec

    ns = argparse.Namespace(contract=settings.contract, copybook=settings.copybook,
                            **{k: None for k in (*_OVERRIDES, *_LIMITS)})
    for k, v in (*settings.overrides, *settings.limits):
        setattr(ns, k, "yes" if v is True else "no" if v is False else v)
    return resolve_spec(ns)


def input_files(path: str | None, extra: str | None) -> list[str]:
    """The files of `load()`: a file, a folder's files (sorted) or a glob; `paths` adds more."""
    given = [p for p in [path, *((extra or "").split(","))] if p and p.strip()]
    files: list[str] = []
    for p in given:
        p = p.strip().removeprefix("file://")
        if os.path.isdir(p):
            files.extend(sorted(str(Path(p, f).resolve()) for f in os.listdir(p)
                                if not f.startswith(".") and Path(p, f).is_file()))
        elif any(c in p for c in "*?["):
            files.extend(sorted(str(Path(f).resolve()) for f in glob.glob(p) if Path(f).is_file()))
        elif Path(p).is_file():
            files.append(str(Path(p).resolve()))
        else:
            raise FileNotFoundError(f"lgw data source: input {p} is not a file or folder")
    if not files:
        raise FileNotFoundError(f"lgw data source: no input files in {given}")
    return files


class FilePart(InputPartition):
    """Records [first, first + records) of `path` from byte `offset` (records None: to the
    end); `block_end`: VB, where the block holding `offset` ends (-1: at a block boundary);
    `rdw`: V/VB, the RDW's byte order and header counting the index pass settled."""

    path: str
    part: int
    offset: int
    first: int
    records: int | None
    block_end: int
    rdw: tuple[str, bool] | None

    def __init__(self, path: str, part: int, offset: int, first: int, records: int | None, block_end: int = -1,
                 rdw: tuple[str, bool] | None = None) -> None:
        super().__init__(part)
        self.path, self.part, self.offset, self.first, self.records = path, part, offset, first, records
        self.block_end, self.rdw = block_end, rdw

    @property
    def start(self) -> ReadPosition | None:
        return ReadPosition(self.offset, self.first, self.block_end) if self.part else None


def split_file(path: str, spec: RecordSpec, partition_bytes: int) -> list[FilePart]:
    """Partitions of about `partition_bytes` at record boundaries: fixed-length by byte
    arithmetic; V, VB and text by an index pass (below); one partition for a small file."""
    size = os.path.getsize(path)
    if size <= partition_bytes:
        return [FilePart(path, 0, 0, 0, None)]
    if spec.framing.format != "F":
        return index_pass(path, spec, partition_bytes)
    with open(path, "rb") as fh:
        stride, _term = fixed_stride(fh, size, spec.framing.record_length)
    per = max(1, partition_bytes // stride)
    whole = size // stride
    parts: list[FilePart] = []
    first = 0
    while first < whole:
        last = first + per >= whole
        parts.append(FilePart(path, len(parts), first * stride, first, None if last else per))
        first += per
    return parts or [FilePart(path, 0, 0, 0, None)]


INDEX_STEP_RECORDS = 8192  # at most, records a step of the index pass (a boundary falls on one of its ends)


def index_pass(path: str, spec: RecordSpec, partition_bytes: int) -> list[FilePart]:
    """V, VB and text files (D): records have no fixed size, so the driver frames the file
    once (RDW by RDW, BDW by BDW, line by line: this project's reader, without decoding)
    and cuts at the record boundary where a partition has reached `partition_bytes`, as
    Cobrix's sparse index does. A boundary is a resumable read position (for VB: inside a
    block, with the block's end). Framing trouble in V/VB (a bad RDW, a truncated tail) ends
    the read there, so it falls in the last partition, read as `lgw decode` reads it; a text
    line longer than the record is cut, as there, in whichever partition holds it."""
    size = os.path.getsize(path)
    framing = rdw_reading(path, spec.framing)
    rdw = (framing.rdw_endian, bool(framing.rdw_includes_header)) if framing.rdw_endian else None
    parts: list[FilePart] = []
    begin = ReadPosition()
    step = max(1, min(INDEX_STEP_RECORDS, partition_bytes // max(framing.record_length, 1)))
    for chunk in read_records(path, framing, step):
        end = chunk.end  # V/VB: a chunk that ends in framing trouble ends at the file's end
        if end.offset - begin.offset >= partition_bytes and end.offset < size:
            parts.append(FilePart(path, len(parts), begin.offset, begin.record, end.record - begin.record,
                                  begin.block_end, rdw))
            begin = end
    parts.append(FilePart(path, len(parts), begin.offset, begin.record, None, begin.block_end, rdw))
    return parts


def record_schema(settings: Settings) -> pa.Schema:
    """The decoded records' Arrow schema (from decoding no records), with the source
    columns when asked for."""
    contract, spec = resolved(settings)
    empty = np.zeros((0, spec.framing.record_length), dtype=np.uint8)
    schema = _decoder(contract, spec).decode(empty).table.schema
    if settings.source_columns:
        for f in SOURCE_FIELDS:
            schema = schema.append(f)
    if settings.output == "all":
        schema = schema.append(pa.field(REJECT_COLUMN, pa.string())).append(pa.field(CONTROL_COLUMN, pa.string()))
    return schema


def side_rows(schema: pa.Schema, n: int, **columns: pa.Array) -> pa.Table:
    """`n` rows of `schema` that are not records (rejects, control): null but for `columns`."""
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def with_source_columns(path: str, dc: DecodedChunk, raw_withheld: bool) -> pa.Table:
    """The chunk's records with where each came from (the columns a scoring reject needs to
    name the record as `lgw score` does). `raw_withheld`: the contract marks fields pii, so
    the record's bytes, which hold them in clear, are not carried (null)."""
    rows = dc.batch.chunk_rows()
    n = len(rows)
    table = dc.table
    numbers = np.asarray(dc.record_numbers()[rows], dtype=np.int64)
    offsets = np.asarray(dc.chunk.offsets[rows], dtype=np.int64)
    if raw_withheld or n == 0:
        raw: pa.Array = pa.nulls(n, pa.binary())
    else:
        matrix = np.ascontiguousarray(dc.chunk.matrix[rows], dtype=np.uint8)
        fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(matrix.shape[1]), n, [None, pa.py_buffer(matrix)])
        raw = fixed.cast(pa.binary())
    columns = {"source_record": pa.array(numbers), "source_file": pa.repeat(pa.scalar(path, pa.string()), n),
               "source_offset": pa.array(offsets), "source_raw": raw}
    for name, col in columns.items():
        table = table.append_column(name, col)
    return table


def _decoder(contract: Contract | None, spec: RecordSpec) -> Any:
    from schemas.decoder import RecordDecoder

    if contract is not None:
        return spec.decoder()
    return RecordDecoder(spec.layout, spec.page, spec.options, report_redefines=True)


def decode_part(settings: Settings, part: FilePart, report: ControlReport) -> Iterator[DecodedChunk]:
    """One partition's chunks as `lgw decode` makes them (contract: validated, header and
    trailer split off into `report`; copybook: every REDEFINES view reported)."""
    from schemas.stream import decode_file

    contract, spec = resolved(settings)
    limit = RejectLimit(settings.max_reject_rate, settings.reject_rate_after)
    start = part.start
    if part.rdw is not None:
        spec = dataclasses.replace(spec, framing=dataclasses.replace(
            spec.framing, rdw_endian=part.rdw[0], rdw_includes_header=part.rdw[1]))
    if contract is not None:
        yield from contract.decode_file(part.path, spec, settings.batch_records, start=start, report=report,
                                        reject_limit=limit, records=part.records)
        return
    chunks = decode_file(part.path, _decoder(None, spec), spec.framing, settings.batch_records,
                         check_encoding=start is None, start=start,
                         first_chunk_records=limit.first_chunk() if start is None else None, records=part.records)
    yield from guard_rejects(chunks, limit, f"{part.path} (layout {spec.layout.name})")


def has_pii(settings: Settings) -> bool:
    from gateway.isolation import pii_names

    contract, _spec = resolved(settings)
    return contract is not None and bool(pii_names(contract))


def reject_batch(path: str, rejects: list[Reject]) -> pa.RecordBatch:
    rows = [{"file": path, **r.to_json()} for r in rejects]
    return pa.RecordBatch.from_pylist(rows, schema=REJECT_SCHEMA)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, ensure_ascii=False)


class LgwReader(DataSourceReader):
    def __init__(self, settings: Settings, files: list[str], schema: pa.Schema) -> None:
        self.settings = settings
        self.files = files
        self.arrow_schema = schema

    def partitions(self) -> list[InputPartition]:
        _contract, spec = resolved(self.settings)
        parts = [p for path in self.files for p in split_file(path, spec, self.settings.partition_bytes)]
        for i, p in enumerate(parts):
            p.value = i
        return list(parts)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, FilePart)
        out = self.settings.output
        report = ControlReport()
        withheld = self.settings.source_columns and has_pii(self.settings)
        for dc in decode_part(self.settings, partition, report):
            if out == "all":
                yield from self._all_rows(partition.path, dc, withheld)
            elif out == "records":
                table = with_source_columns(partition.path, dc, withheld) if self.settings.source_columns \
                    else dc.table
                for batch in table.to_batches():
                    if batch.num_rows:
                        yield batch
            elif out == "rejects" and dc.rejects:
                yield reject_batch(partition.path, dc.rejects)
        control = {"file": partition.path, "partition": partition.part, "first_record": partition.first,
                   "details": report.details, "sums": _json({k: str(v) for k, v in report.sums.items()}),
                   "header": _json(report.header), "trailer": _json(report.trailer)}
        if out == "control":
            yield pa.RecordBatch.from_pylist([control], schema=CONTROL_SCHEMA)
        elif out == "all":
            yield from side_rows(self.arrow_schema, 1, source_file=pa.array([partition.path]),
                                 **{CONTROL_COLUMN: pa.array([_json(control)])}).to_batches()

    def _all_rows(self, path: str, dc: DecodedChunk, withheld: bool) -> Iterator[pa.RecordBatch]:
        table = with_source_columns(path, dc, withheld)
        n = table.num_rows
        if n:
            table = table.append_column(REJECT_COLUMN, pa.nulls(n, pa.string()))
            yield from table.append_column(CONTROL_COLUMN, pa.nulls(n, pa.string())).to_batches()
        if dc.rejects:
            k = len(dc.rejects)
            yield from side_rows(self.arrow_schema, k, source_file=pa.repeat(pa.scalar(path, pa.string()), k),
                                 source_record=pa.array([r.record for r in dc.rejects], pa.int64()),
                                 source_offset=pa.array([r.record_offset for r in dc.rejects], pa.int64()),
                                 **{REJECT_COLUMN: pa.array([_json({"file": path, **r.to_json()})
                                                             for r in dc.rejects])}).to_batches()


class LgwDataSource(DataSource):
    """spark.read.format("lgw"): see the module's text."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def _settings(self) -> Settings:
        return Settings.from_options(self.options)

    def _arrow_schema(self) -> pa.Schema:
        settings = self._settings()
        return {"records": record_schema, "all": record_schema, "rejects": lambda _s: REJECT_SCHEMA,
                "control": lambda _s: CONTROL_SCHEMA}[settings.output](settings)

    def schema(self) -> StructType:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self._arrow_schema())

    def writer(self, schema: StructType, overwrite: bool) -> Any:
        """`df.write.format("lgw")`: see gateway.spark.sink."""
        from gateway.spark.sink import LgwWriter

        settings = self._settings()
        path = dict(self.options).get("path")
        if settings.contract is None or not path:
            raise ValueError("lgw data source: writing needs the option `contract` and a path: "
                             "df.write.format('lgw').option('contract', C).mode('append').save(OUT)")
        return LgwWriter(str(path), settings.contract)

    def reader(self, schema: StructType) -> LgwReader:
        opts = {_key(k): v for k, v in dict(self.options).items()}
        files = input_files(opts.get("path"), opts.get("paths"))
        return LgwReader(self._settings(), files, self._arrow_schema())


def split(df: Any) -> tuple[Any, Any, Any]:
    """The rows of an `output=all` read (scored or not; or of a scored `records` read) as
    three DataFrames: the records
    (without the columns only rejects need: source_offset, source_raw), the rejects (the
    `rejects` output's columns) and the control rows (the `control` output's columns, for
    `control_reports`)."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    def parsed(column: str, schema: pa.Schema) -> Any:
        if column not in df.columns:  # e.g. the control rows of a `records` read: none
            return df.sparkSession.createDataFrame([], from_arrow_schema(schema))
        rows = df.filter(F.col(column).isNotNull())
        return rows.select(F.from_json(F.col(column), from_arrow_schema(schema)).alias("r")).select("r.*")

    side = [c for c in (REJECT_COLUMN, CONTROL_COLUMN) if c in df.columns]
    records = df
    for c in side:
        records = records.filter(F.col(c).isNull())
    records = records.drop(*side, *(c for c in ("source_offset", "source_raw") if c in df.columns))
    return records, parsed(REJECT_COLUMN, REJECT_SCHEMA), parsed(CONTROL_COLUMN, CONTROL_SCHEMA)


def control_reports(contract: Contract, rows: list[Any]) -> dict[str, ControlReport]:
    """Per file, the control verdict of the partitions' `control` rows combined: the same
    report `lgw decode` prints (details, sums, header and trailer; problems on a mismatch)."""
    by_file: dict[str, ControlReport] = {}
    for row in sorted(rows, key=lambda r: (r["file"], r["partition"])):
        rep = by_file.setdefault(row["file"], ControlReport())
        rep.details += int(row["details"])
        for k, v in json.loads(row["sums"] or "{}").items():
            rep.sums[k] = rep.sums.get(k, Decimal(0)) + Decimal(v)
        if row["header"] is not None and rep.header is None:
            rep.header = json.loads(row["header"])
        if row["trailer"] is not None:
            rep.trailer = json.loads(row["trailer"])
    for rep in by_file.values():
        contract._finish_control(rep)
    return by_file
