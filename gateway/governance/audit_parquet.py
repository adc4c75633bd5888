"""The `parquet` decision store: one read-only file per appended batch and day, and one
append-only chain file per writer and day that lists them.

    <dir>/day=2026-12-04/<writer>-000001.parquet     0o440, never overwritten
    <dir>/day=2026-12-04/<writer>.chain              one JSON line per file: seq, file,
                                                     records, content, prev, digest

A file is written under a hidden temporary name (O_CREAT|O_EXCL|O_NOFOLLOW), made
read-only, fsynced and published by a link that never replaces a name (schemas.safefiles),
and only then recorded in the chain (fsynced): a crash in between leaves a file the chain
does not list, which `verify` reports rather than hides. The chain records which files
exist, so a deleted, added or replaced file is found, and its link covers the content
digest of the records, so a modified or deleted record is found too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.governance.audit_model import (
    DECISION_SCHEMA,
    GENESIS,
    AuditStoreError,
    VerifyReport,
    as_shared,
    chain_digest,
    content_digest,
    split_by_day,
)
from schemas.safefiles import NewFile, UnsafePath, create_new, fsync_dir

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FILE_MODE = 0o440
# measured on 1M decisions (bench/audit.py): 1 MiB pages and statistics only where a
# reader filters (show --record) write in half the time of pyarrow's defaults;
# dictionaries only for the columns with few values (a batch's time and contract version
# too: one entry, 12 bytes a record fewer); the record numbers, which count up, and the
# record ids, which share their run's prefix, as deltas (99 -> 46 bytes a decision, for
# 0.03 s more CPU per million: half the bytes to write and fsync)
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "snappy", "data_page_size": 1 << 20, "write_statistics": ["record_id", "decided_at"],
    "use_dictionary": ["run", "pipeline", "source", "model_name", "model_version", "model_sha256", "contract",
                       "scored_by", "rule_id", "reason", "breaker_state", "review", "decided_at", "contract_version"],
    "column_encoding": {"record": "DELTA_BINARY_PACKED", "record_id": "DELTA_BYTE_ARRAY"},
}
# the string columns a batch's decisions usually share (dictionary-encoded in the files)
_CONSTANT_CANDIDATES = frozenset(_WRITE_OPTIONS["use_dictionary"])
DAY_PREFIX = "day="
CHAIN_SUFFIX = ".chain"


class ParquetDecisions:
    """Decision batches as Parquet files under `root`, chained per `writer` and day."""

    def __init__(self, root: Path, writer: str, *, compression: str = "none") -> None:
        self.root = root
        self.writer = writer
        self.options = {**_WRITE_OPTIONS, "compression": compression}

    def append(self, table: pa.Table) -> None:
        """`table` (conformed) as one file per day it spans, each fsynced and chained."""
        for day, part in split_by_day(table):
            self._append_day(day, part)

    def _append_day(self, day: date, part: pa.Table) -> None:
        folder = self._day_folder(day, create=True)
        # the head is read from the chain each time (its last 4 KiB): another instance of
        # this writer in the process (AuditLog serialises them) may have appended since
        seq, prev = _last_link(folder / f"{self.writer}{CHAIN_SUFFIX}")
        seq += 1
        while (folder / _file_name(self.writer, seq)).exists():  # left by an append a crash cut short
            seq += 1
        name = _file_name(self.writer, seq)
        meta = {b"lgw.audit.writer": self.writer.encode(), b"lgw.audit.seq": str(seq).encode()}
        part = constants_encoded(part)
        # the digest and the encoding both release the GIL: one core each
        with ThreadPoolExecutor(1) as pool, NewFile(folder / name, suffix=".tmp", mode=0o640) as new:
            pending = pool.submit(content_digest, part)
            # No Arrow schema in the file: the Parquet types give DECISION_SCHEMA back exactly,
            # where the stored schema would turn the encoded constants into dictionaries
            with pq.ParquetWriter(new.fh, part.schema, store_schema=False, **self.options) as writer:
                writer.write_table(part)
                writer.add_key_value_metadata(meta)
            content = pending.result()  # before the file is published: no file without its link
            os.fchmod(new.fh.fileno(), FILE_MODE)
            new.publish(replace=False)
        digest = chain_digest(prev, content)
        link = {"seq": seq, "day": day.isoformat(), "writer": self.writer, "file": name, "records": part.num_rows,
                "content": content, "prev": prev, "digest": digest,
                "at": datetime.now(UTC).isoformat(timespec="microseconds")}
        _append_line(folder / f"{self.writer}{CHAIN_SUFFIX}", json.dumps(link, sort_keys=True) + "\n")

    def _day_folder(self, day: date, *, create: bool = False) -> Path:
        folder = self.root / f"{DAY_PREFIX}{day.isoformat()}"
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                folder.mkdir()
                fsync_dir(self.root)  # the new day's entry survives a crash with the file in it
            except FileExistsError:
                pass
            except NotADirectoryError:
                raise AuditStoreError(f"audit.path: cannot create {folder}: a part of it is a file") from None
            if not stat.S_ISDIR(os.lstat(folder).st_mode):  # the root is trusted, names in it are not
                raise UnsafePath(f"{folder}: expected the audit day's folder, found a link or a file")
        return folder

    def days(self) -> list[date]:
        """The days the store holds, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith(DAY_PREFIX) and entry.is_dir():
                try:
                    found.append(date.fromisoformat(entry.name[len(DAY_PREFIX):]))
                except ValueError:
                    continue
        return sorted(found)

    def heads(self) -> dict[str, str]:
        """Every chain's last digest, `day/writer` -> digest: publish them to anchor the log."""
        out = {}
        for day in self.days():
            for chain in sorted(self._day_folder(day).glob(f"*{CHAIN_SUFFIX}")):
                _, digest = _last_link(chain)
                out[f"{day.isoformat()}/{chain.name[:-len(CHAIN_SUFFIX)]}"] = digest
        return out

    def verify(self, day: date | None = None) -> VerifyReport:
        report = VerifyReport()
        for d in [day] if day is not None else self.days():
            report = report.merge(self._verify_day(d))
        return report

    def _verify_day(self, day: date) -> VerifyReport:
        folder = self._day_folder(day)
        report = VerifyReport(days=[day.isoformat()])
        if not folder.is_dir():
            return report
        chained: set[str] = set()
        for chain in sorted(folder.glob(f"*{CHAIN_SUFFIX}")):
            writer = chain.name[:-len(CHAIN_SUFFIX)]
            prev, last_seq = GENESIS, 0
            for link in _links(chain, report, day):
                where = f"day {day}, writer {writer}, batch {link.get('seq', '?')} ({link.get('file', '?')})"
                problems = _link_problems(link, prev, last_seq, day, writer)
                report.problems += [f"{where}: {p}" for p in problems]
                prev, last_seq = str(link.get("digest", "")), int(link.get("seq", last_seq) or last_seq)
                name = str(link.get("file", ""))
                chained.add(name)
                report.batches += 1
                report.problems += [f"{where}: {p}" for p in _file_problems(folder / name, link)]
                report.records += int(link.get("records", 0) or 0)
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.name.endswith(CHAIN_SUFFIX) or path.name in chained:
                continue
            report.problems.append(f"day {day}: {path.name} is not recorded in any chain: added to the folder, "
                                   "or left by an append that was cut short")
        return report

    def prune(self, before: date) -> tuple[str | None, list[date]]:
        """Removes every day folder older than `before`; returns (None: no horizon kept
        here, the days removed)."""
        gone = [d for d in self.days() if d < before]
        for d in gone:
            shutil.rmtree(self._day_folder(d))
        if gone:
            fsync_dir(self.root)
        return None, gone

    def decisions_for(self, record_id: str) -> pa.Table:
        """Every decision row of `record_id`, in every day's files."""
        files = [str(p) for d in self.days() for p in sorted(self._day_folder(d).glob("*.parquet"))
                 if not p.name.startswith(".")]
        if not files:
            return DECISION_SCHEMA.empty_table()
        import pyarrow.dataset as ds  # only a lookup reads a dataset (7 ms of every batch run's start-up)

        dataset = ds.dataset(files, schema=DECISION_SCHEMA, format="parquet")
        return dataset.to_table(filter=ds.field("record_id") == record_id).sort_by("decided_at")


def constants_encoded(table: pa.Table) -> pa.Table:
    """`table` with each string column that holds one value in every row (a batch's run,
    pipeline, source, model, contract, breaker state) as a one-entry dictionary
    (`audit_model.shared`): what `decision_table` makes already, done here for any other
    caller's table."""
    columns = [as_shared(table.column(name)) if name in _CONSTANT_CANDIDATES else table.column(name)
               for name in table.column_names]
    return pa.table(columns, names=table.column_names)


def _file_name(writer: str, seq: int) -> str:
    return f"{writer}-{seq:06d}.parquet"


def _links(chain: Path, report: VerifyReport, day: date) -> Iterator[dict[str, Any]]:
    try:
        text = chain.read_text(encoding="utf-8")
    except OSError as exc:
        report.problems.append(f"day {day}: chain {chain.name} cannot be read: {exc.strerror or exc}")
        return
    for n, line in enumerate(text.splitlines(), 1):
        try:
            link = json.loads(line)
            if not isinstance(link, dict):
                raise ValueError("not an object")
        except ValueError:
            report.problems.append(f"day {day}: chain {chain.name} line {n} is not a chain link")
            continue
        yield link


def _link_problems(link: dict[str, Any], prev: str, last_seq: int, day: date, writer: str) -> list[str]:
    problems = []
    if link.get("prev") != prev:
        problems.append("chain broken: its prev digest is not the digest of the batch before it "
                        "(a batch was removed from the chain, or the chain was edited)")
    elif link.get("digest") != chain_digest(prev, str(link.get("content", ""))):
        problems.append("chain broken: its digest is not sha256(prev || content)")
    if not isinstance(link.get("seq"), int) or link["seq"] <= last_seq:
        problems.append(f"sequence {link.get('seq')!r} does not follow {last_seq}")
    if link.get("day") != day.isoformat() or link.get("writer") != writer:
        problems.append(f"recorded for day {link.get('day')} writer {link.get('writer')}: moved from elsewhere")
    return problems


def _file_problems(path: Path, link: dict[str, Any]) -> list[str]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ["its file is missing (deleted)"]
    if not stat.S_ISREG(st.st_mode):
        return ["its file is not a regular file (replaced by a link or a folder)"]
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        return [f"its file cannot be read as Parquet (modified): {exc}"]
    problems = []
    meta = table.schema.metadata or {}
    if meta.get(b"lgw.audit.seq", b"").decode() != str(link.get("seq")):
        problems.append("its file was written as another batch (replaced)")
    try:
        table = table.select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA)
    except (KeyError, pa.ArrowException) as exc:
        return [*problems, f"its file no longer has the decision columns (modified): {exc}"]
    if table.num_rows != link.get("records"):
        problems.append(f"its file holds {table.num_rows} records, the chain recorded {link.get('records')} "
                        "(records deleted or added)")
    elif content_digest(table) != link.get("content"):
        problems.append("its records differ from those chained (a record was modified)")
    if st.st_mode & 0o222:
        problems.append(f"its file is writable (mode {stat.S_IMODE(st.st_mode):o}, written read-only)")
    return problems


def _last_link(chain: Path) -> tuple[int, str]:
    """(seq, digest) of a chain's last link; (0, GENESIS) for a chain not started."""
    try:
        with chain.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return 0, GENESIS
    for line in reversed(lines):
        try:
            link = json.loads(line)
            return int(link["seq"]), str(link["digest"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0, GENESIS


def _open_chain(chain: Path) -> IO[bytes]:
    """An existing chain file for appending: not through a link, not a file with other names."""
    try:
        fd = os.open(chain, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{chain}: is a symbolic link; links are not followed") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UnsafePath(f"{chain}: expected the audit chain file, found a link or a special file")
    return os.fdopen(fd, "ab")


def _append_line(chain: Path, line: str) -> None:
    """Appends one line to a chain file (created exclusively the first time, never through
    a link, never a file with other names), fsynced."""
    try:
        fh = create_new(chain, 0o640)
        created = True
    except UnsafePath:
        created = False
        fh = _open_chain(chain)
    with fh:
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())
    if created:
        fsync_dir(chain.parent)


__all__ = ["CHAIN_SUFFIX", "DAY_PREFIX", "ParquetDecisions"]
