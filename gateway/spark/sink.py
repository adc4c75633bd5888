"""`df.write.format("lgw")`: the rows of an `output=all` read (scored or not) written in one
pass, as the example job wants them, without caching the data set and without a second
decode or scoring:

    df.write.format("lgw").option("contract", C).mode("append").save(OUT)

- OUT/records/part-*.parquet: the records (without the columns only rejects need);
- OUT/rejects/part-*.parquet: the decode and scoring rejects (the `rejects` output's columns);
- OUT/control.json: files, counts (records, rejects, scored_by) and each file's control
  verdict; a file whose totals fail a `reject_file` trailer is named in `files_rejected`
  and its records are left out whole, as `lgw run` refuses such a file.

Each task writes its part files under OUT/.lgw-staging (created new, never through a link)
and says what it wrote in its commit message; the driver's commit judges the control
totals, then moves the accepted parts into place and removes the rest, so OUT holds a
finished job or, after an abort, nothing of it. A part file holds one input file's records
(a partition is a byte range of one file). OUT must be a path the driver and every
executor share (local mode, a mounted volume); for HDFS or object stores, use `split()`
with Spark's own writers instead.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql.datasource import DataSourceArrowWriter, WriterCommitMessage

from gateway.spark.source import CONTROL_COLUMN, REJECT_COLUMN, REJECT_SCHEMA, control_reports
from schemas.safefiles import atomic_write, create_new, fsync_dir, rename_new

STAGING = ".lgw-staging"
NOT_IN_RECORDS = (REJECT_COLUMN, CONTROL_COLUMN, "source_offset", "source_raw")


@dataclass
class PartsWritten(WriterCommitMessage):
    """What one task wrote (staging names) and saw."""

    records: dict[str, list[str]] = field(default_factory=dict)  # input file -> its record parts
    rejects: list[str] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    records_of: dict[str, int] = field(default_factory=dict)  # input file -> records written
    rejects_written: int = 0
    scored_by: dict[str, dict[str, int]] = field(default_factory=dict)  # input file -> scored_by counts


class _Parts:
    """A task's open Parquet writers, one per input file (records) and one for rejects."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.task = uuid.uuid4().hex
        self.writers: dict[str, tuple[str, Any, Any]] = {}  # key -> (name, file, ParquetWriter)

    def write(self, key: str, table: pa.Table) -> str:
        if key not in self.writers:
            name = f"part-{self.task}-{len(self.writers):04d}.parquet"
            fh = create_new(self.staging / name, 0o640)
            self.writers[key] = (name, fh, pq.ParquetWriter(fh, table.schema))
        name, _fh, writer = self.writers[key]
        writer.write_table(table)
        return name

    def close(self) -> None:
        for _name, fh, writer in self.writers.values():
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()


class LgwWriter(DataSourceArrowWriter):
    def __init__(self, out: str, contract: str) -> None:
        self.out = Path(out)
        self.contract = contract

    def write(self, iterator: Iterator[pa.RecordBatch]) -> PartsWritten:
        staging = self.out / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        parts = _Parts(staging)
        done = PartsWritten()
        records_of: Counter[str] = Counter()
        scored_by: dict[str, Counter[str]] = {}
        try:
            for batch in iterator:
                table = pa.Table.from_batches([batch])
                is_reject = pc.is_valid(table.column(REJECT_COLUMN))
                is_control = pc.is_valid(table.column(CONTROL_COLUMN))
                records = table.filter(pc.invert(pc.or_(is_reject, is_control)))
                records = records.drop_columns([c for c in NOT_IN_RECORDS if c in records.column_names])
                for path in pc.unique(records.column("source_file")).to_pylist():
                    mine = records.filter(pc.equal(records.column("source_file"), path))
                    name = parts.write(f"records:{path}", mine)
                    if name not in done.records.setdefault(path, []):
                        done.records[path].append(name)
                    records_of[path] += mine.num_rows
                    if "scored_by" in mine.column_names:
                        scored_by.setdefault(path, Counter()).update({str(v["values"]): int(v["counts"])
                                          for v in pc.value_counts(mine.column("scored_by")).to_pylist()})
                lines = table.filter(is_reject).column(REJECT_COLUMN).to_pylist()
                if lines:
                    rejects = pa.Table.from_pylist([json.loads(x) for x in lines], schema=REJECT_SCHEMA)
                    name = parts.write("rejects", rejects)
                    if name not in done.rejects:
                        done.rejects.append(name)
                    done.rejects_written += rejects.num_rows
                done.control += [json.loads(x) for x in table.filter(is_control).column(CONTROL_COLUMN).to_pylist()]
        finally:
            parts.close()
        done.records_of = dict(records_of)
        done.scored_by = {path: dict(c) for path, c in scored_by.items()}
        return done

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        from schemas.contract import load_contract

        written = [m for m in messages if isinstance(m, PartsWritten)]
        contract = load_contract(self.contract)
        reports = control_reports(contract, [row for m in written for row in m.control])
        refused = sorted(f for f, rep in reports.items() if contract.rejects_file(rep))
        staging = self.out / STAGING
        summary: dict[str, Any] = {"files": len(reports), "files_rejected": refused, "records": 0, "rejects": 0}
        scored_by: Counter[str] = Counter()
        for folder in ("records", "rejects"):
            (self.out / folder).mkdir()  # new: this job's output only
        for m in written:
            for path, names in m.records.items():
                for name in names:
                    if path in refused:
                        (staging / name).unlink()
                    else:
                        rename_new(staging / name, self.out / "records" / name)
                if path not in refused:
                    summary["records"] += m.records_of.get(path, 0)
                    scored_by.update(m.scored_by.get(path, {}))
            for name in m.rejects:
                rename_new(staging / name, self.out / "rejects" / name)
            summary["rejects"] += m.rejects_written
        if scored_by:
            summary["scored_by"] = dict(scored_by)
        summary["control"] = {f: rep.to_json()["control"] for f, rep in reports.items()}
        for folder in ("records", "rejects"):
            fsync_dir(self.out / folder)
        shutil.rmtree(staging, ignore_errors=True)
        atomic_write(self.out / "control.json", json.dumps(summary, default=str, indent=1).encode())

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
