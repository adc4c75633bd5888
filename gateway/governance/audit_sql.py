"""The `table` decision store and the operator actions, on the state store's audit
tables (gateway.governance.audit_tables: what they hold, the triggers that keep them
append-only).

Bulk writes: PostgreSQL takes a batch as one COPY of CSV that Arrow writes (no Python
object per value), measured 6x SQLAlchemy's executemany; SQLite an executemany of tuples
through the raw DBAPI connection; any other database SQLAlchemy's executemany.
Reads for verify come back as Arrow tables the same ways (COPY ... TO STDOUT).
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.governance.audit_model import (
    DECISION_SCHEMA,
    GENESIS,
    OperatorAction,
    VerifyReport,
    chain_digest,
    content_digest,
    split_by_day,
    utc,
)
from gateway.governance.audit_tables import (
    action_table,
    batch_table,
    decision_table,
    ensure_tables,
    first_line,
    horizon_table,
)
from gateway.state import StateStore, StateStoreError

_PLACE = ("day", "writer", "seq", "pos")  # audit_decision's columns before DECISION_SCHEMA's


# ---- decisions ---------------------------------------------------------------------------


class TableDecisions:
    """Decision batches as rows of audit_decision, chained in audit_batch per writer and day."""

    def __init__(self, store: StateStore, writer: str, *,
                 bulk: Literal["auto", "executemany"] = "auto") -> None:
        self.store = store
        self.writer = writer
        self.bulk = bulk  # executemany: SQLAlchemy's, whatever the database (bench/audit.py compares)

    def append(self, table: pa.Table) -> None:
        """One transaction for the whole batch, whatever days it spans: a retried batch
        is never half there."""
        ensure_tables(self.store)
        parts = [(day, part, content_digest(part)) for day, part in split_by_day(table)]  # before any lock
        with self.store._connect() as conn, conn.begin():
            for day, part, content in parts:
                self._append_day(conn, day, part, content)

    def _append_day(self, conn: Connection, day: date, part: pa.Table, content: str) -> None:
        key = day.isoformat()
        last = conn.execute(
            select(batch_table.c.seq, batch_table.c.digest)
            .where(batch_table.c.day == key, batch_table.c.writer == self.writer)
            .order_by(batch_table.c.seq.desc()).limit(1)).first()
        seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
        conn.execute(batch_table.insert().values(
            day=key, writer=self.writer, seq=seq, records=part.num_rows, content=content, prev=prev,
            digest=chain_digest(prev, content), at=datetime.now(UTC)))
        n = part.num_rows
        rows = pa.Table.from_arrays(
            [pa.repeat(pa.scalar(key), n), pa.repeat(pa.scalar(self.writer), n), pa.repeat(pa.scalar(seq), n),
             pa.array(np.arange(n, dtype=np.int64)), *part.columns],
            names=[*_PLACE, *DECISION_SCHEMA.names])
        dialect = conn.dialect.name
        if self.bulk == "auto" and dialect == "postgresql":
            _copy_in(conn, rows)
        elif self.bulk == "auto" and dialect == "sqlite":
            _sqlite_executemany(conn, rows)
        else:
            conn.execute(decision_table.insert(), rows.to_pylist())

    def days(self) -> list[date]:
        ensure_tables(self.store)
        with self.store._connect() as conn:
            found = conn.execute(select(batch_table.c.day).distinct().order_by(batch_table.c.day)).scalars()
            horizon = _horizon(conn)
            extra = conn.execute(select(decision_table.c.day).where(decision_table.c.day >= horizon).distinct()
                                 ).scalars().all()
            return sorted({date.fromisoformat(d) for d in [*found, *extra] if d >= horizon})

    def heads(self) -> dict[str, str]:
        ensure_tables(self.store)
        latest = (select(batch_table.c.day, batch_table.c.writer, func.max(batch_table.c.seq).label("seq"))
                  .group_by(batch_table.c.day, batch_table.c.writer).subquery())
        stmt = select(batch_table.c.day, batch_table.c.writer, batch_table.c.digest).join(
            latest, (batch_table.c.day == latest.c.day) & (batch_table.c.writer == latest.c.writer)
            & (batch_table.c.seq == latest.c.seq))
        with self.store._connect() as conn:
            return {f"{d}/{w}": digest for d, w, digest in conn.execute(stmt)}

    def verify(self, day: date | None = None) -> VerifyReport:
        ensure_tables(self.store)
        report = VerifyReport()
        for d in [day] if day is not None else self.days():
            report = report.merge(self._verify_day(d))
        return report

    def _verify_day(self, day: date) -> VerifyReport:
        key = day.isoformat()
        report = VerifyReport(days=[key])
        with self.store._connect() as conn:
            links = conn.execute(select(batch_table).where(batch_table.c.day == key)
                                 .order_by(batch_table.c.writer, batch_table.c.seq)).mappings().all()
            rows = _read_decisions(conn, key)
        writers = rows.column("writer").to_numpy(zero_copy_only=False)
        seqs = rows.column("seq").to_numpy()
        chained = np.zeros(rows.num_rows, dtype=bool)
        prev_by_writer: dict[str, tuple[int, str]] = {}
        for link in links:
            writer, seq = link["writer"], int(link["seq"])
            where = f"day {key}, writer {writer}, batch {seq}"
            last_seq, prev = prev_by_writer.get(writer, (0, GENESIS))
            if seq != last_seq + 1:
                report.problems.append(f"{where}: batches {last_seq + 1}..{seq - 1} are missing (deleted)")
            elif link["prev"] != prev:
                report.problems.append(f"{where}: chain broken: its prev digest is not the digest of batch {last_seq}")
            if link["digest"] != chain_digest(link["prev"], link["content"]):
                report.problems.append(f"{where}: chain broken: its digest is not sha256(prev || content)")
            prev_by_writer[writer] = (seq, link["digest"])
            mask = (writers == writer) & (seqs == seq)
            chained |= mask
            batch = rows.filter(pa.array(mask)).select(DECISION_SCHEMA.names)
            report.batches += 1
            report.records += batch.num_rows
            if batch.num_rows != link["records"]:
                report.problems.append(f"{where}: holds {batch.num_rows} records, the chain recorded "
                                       f"{link['records']} (records deleted or added)")
            elif content_digest(batch) != link["content"]:
                report.problems.append(f"{where}: its records differ from those chained (a record was modified)")
        unchained = int((~chained).sum())
        if unchained:
            report.problems.append(f"day {key}: {unchained} decision rows belong to no chained batch (added)")
        return report

    def prune(self, before: date) -> tuple[str, list[date]]:
        """Moves the horizon to `before` (never back), then deletes the days before it.
        Returns the horizon it replaced and the days deleted."""
        ensure_tables(self.store)
        key = before.isoformat()
        with self.store._connect() as conn, conn.begin():
            old = _horizon(conn)
            gone = sorted({date.fromisoformat(d) for d in conn.execute(
                select(batch_table.c.day).where(batch_table.c.day < key).distinct()).scalars()})
            if key > old:
                conn.execute(horizon_table.update().where(horizon_table.c.id == 1).values(day=key))
            conn.execute(decision_table.delete().where(decision_table.c.day < key))
            conn.execute(batch_table.delete().where(batch_table.c.day < key))
        return old, gone

    def decisions_for(self, record_id: str) -> pa.Table:
        ensure_tables(self.store)
        with self.store._connect() as conn:
            return _read_decisions(conn, None, record_id=record_id).select(DECISION_SCHEMA.names).sort_by(
                "decided_at")


def _horizon(conn: Connection) -> str:
    return str(conn.execute(select(horizon_table.c.day).where(horizon_table.c.id == 1)).scalar() or "")


def _copy_in(conn: Connection, rows: pa.Table) -> None:
    """One COPY ... FROM STDIN (CSV as Arrow writes it: strings quoted, nulls empty)."""
    buf = io.BytesIO()
    pcsv.write_csv(rows, buf, pcsv.WriteOptions(include_header=False, batch_size=65536))
    columns = ", ".join(f'"{name}"' for name in rows.column_names)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY audit_decision ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
        view = buf.getbuffer()
        for start in range(0, len(view), 1 << 20):
            copy.write(view[start:start + (1 << 20)])


def _sqlite_executemany(conn: Connection, rows: pa.Table) -> None:
    """executemany of plain tuples on the raw sqlite3 connection (no SQLAlchemy row
    processing); timestamps as the text SQLAlchemy's SQLite DateTime reads back."""
    stamps = pc.strftime(rows.column("decided_at"), format="%Y-%m-%d %H:%M:%S")
    rows = rows.set_column(rows.schema.get_field_index("decided_at"), "decided_at", stamps)
    columns = [c.to_pylist() for c in rows.columns]
    names = ", ".join(f'"{n}"' for n in rows.column_names)
    marks = ", ".join("?" * rows.num_columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.executemany(f"INSERT INTO audit_decision ({names}) VALUES ({marks})",
                       zip(*columns, strict=True))  # type: ignore[arg-type]  # sqlite3 takes any iterable


def _read_decisions(conn: Connection, day: str | None, *, record_id: str | None = None) -> pa.Table:
    """Decision rows (with their place) as an Arrow table in DECISION_SCHEMA's types,
    in chain order: of a day, or of one record id. PostgreSQL: one COPY ... TO STDOUT read
    by Arrow's CSV reader; SQLite: the raw cursor; others: SQLAlchemy. Arrow sorts them
    (no index serves that order, and a database's sort of a day spills to disk)."""
    names = [c.name for c in decision_table.columns]
    types = [pa.string(), pa.string(), pa.int64(), pa.int64(), *DECISION_SCHEMA.types]
    column, value = ("day", day) if day is not None else ("record_id", record_id)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        table = _copy_out(conn, names, types, column, str(value))
    else:
        table = _fetch(conn, names, types, column, str(value))
    return table.sort_by([("writer", "ascending"), ("seq", "ascending"), ("pos", "ascending")])


def _fetch(conn: Connection, names: list[str], types: list[pa.DataType], column: str, value: str) -> pa.Table:
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        quoted = ", ".join(f'"{n}"' for n in names)
        cursor.execute(f'SELECT {quoted} FROM audit_decision WHERE "{column}" = ?', (value,))
        result = cursor.fetchall()
    else:
        result = [tuple(row) for row in conn.execute(select(decision_table).where(decision_table.c[column] == value))]
    columns = list(zip(*result, strict=True)) if result else [() for _ in names]
    arrays = []
    for values, kind in zip(columns, types, strict=True):
        if pa.types.is_timestamp(kind) and values and isinstance(values[0], str):
            # SQLite keeps the text SQLAlchemy's DateTime writes, in UTC
            arrays.append(pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(kind))
        else:  # aware datetimes are converted to UTC
            arrays.append(pa.array(values, kind))
    return pa.Table.from_arrays(arrays, names=names)


def _copy_out(conn: Connection, names: list[str], types: list[pa.DataType], column: str, value: str) -> pa.Table:
    from psycopg import sql

    fields = [sql.SQL("(extract(epoch from decided_at) * 1000000)::bigint") if n == "decided_at"
              else sql.Identifier(n) for n in names]
    stmt = sql.SQL("COPY (SELECT {} FROM audit_decision WHERE {} = {}) "
                   "TO STDOUT WITH (FORMAT csv)").format(sql.SQL(", ").join(fields), sql.Identifier(column),
                                                         sql.Literal(value))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    buf = io.BytesIO()
    with cursor.copy(stmt) as copy:
        for chunk in copy:
            buf.write(chunk)
    if not buf.tell():
        return pa.Table.from_arrays([pa.array([], t) for t in types], names=names)
    buf.seek(0)
    read_types = {n: (pa.int64() if pa.types.is_timestamp(t) else t) for n, t in zip(names, types, strict=True)}
    table = pcsv.read_csv(buf, read_options=pcsv.ReadOptions(column_names=names),
                          convert_options=pcsv.ConvertOptions(
                              column_types=read_types, null_values=[""], strings_can_be_null=True,
                              quoted_strings_can_be_null=False))  # PostgreSQL: NULL unquoted, '' quoted
    stamp = table.schema.get_field_index("decided_at")
    return table.set_column(stamp, "decided_at", table.column(stamp).cast(pa.timestamp("us", tz="UTC")))


# ---- operator actions --------------------------------------------------------------------


class ActionLog:
    """Operator actions in audit_action: one hash chain, seq 1, 2, 3, ... (a gap is a
    deleted action). Appends serialise on the chain's head: an advisory lock on
    PostgreSQL, the primary key and a retry elsewhere."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def append(self, action: OperatorAction) -> None:
        ensure_tables(self.store)
        for attempt in range(5):
            try:
                with self.store.engine.begin() as conn:
                    self.append_in(conn, action)
                return
            except IntegrityError:
                if attempt == 4:
                    raise StateStoreError(f"state store {self.store.display_url}: audit_action: another "
                                          "writer kept taking the next sequence number") from None
            except SQLAlchemyError as exc:
                raise StateStoreError(f"state store {self.store.display_url}: {first_line(exc)}") from exc

    def append_in(self, conn: Connection, action: OperatorAction) -> None:
        """Appends within the caller's transaction (a kill switch flip and its record commit together)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4711014)"))
        last = conn.execute(select(action_table.c.seq, action_table.c.digest)
                            .order_by(action_table.c.seq.desc()).limit(1)).first()
        seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
        conn.execute(action_table.insert().values(
            seq=seq, **action.model_dump(), prev=prev, digest=chain_digest(prev, action.content_digest())))

    def actions(self, pipeline: str | None = None, action_prefix: str | None = None, target: str | None = None,
                limit: int | None = 100) -> list[OperatorAction]:
        """Newest first."""
        ensure_tables(self.store)
        stmt = select(action_table).order_by(action_table.c.seq.desc())
        if pipeline is not None:
            stmt = stmt.where(action_table.c.pipeline == pipeline)
        if action_prefix is not None:
            stmt = stmt.where(func.substr(action_table.c.action, 1, len(action_prefix)) == action_prefix)
        if target is not None:
            stmt = stmt.where(action_table.c.target == target)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.store._connect() as conn:
            return [_action(row) for row in conn.execute(stmt).mappings()]

    def verify(self) -> VerifyReport:
        ensure_tables(self.store)
        report = VerifyReport()
        expected_seq, prev = 1, GENESIS
        with self.store._connect() as conn:
            for row in conn.execute(select(action_table).order_by(action_table.c.seq)).mappings():
                where = f"operator action {row['seq']} ({row['action']} at {utc(row['at']).isoformat()})"
                if row["seq"] != expected_seq:
                    report.problems.append(f"{where}: actions {expected_seq}..{row['seq'] - 1} are missing (deleted)")
                elif row["prev"] != prev:
                    report.problems.append(f"{where}: chain broken: its prev digest is not the digest before it")
                if row["digest"] != chain_digest(row["prev"], _action(row).content_digest()):
                    report.problems.append(f"{where}: its content differs from what was chained (modified)")
                expected_seq, prev = int(row["seq"]) + 1, row["digest"]
                report.actions += 1
        return report


def _action(row: Any) -> OperatorAction:
    return OperatorAction.model_construct(
        at=utc(row["at"]), actor=row["actor"], action=row["action"], pipeline=row["pipeline"],
        target=row["target"], old=row["old"], new=row["new"], reason=row["reason"])


__all__ = ["ActionLog", "TableDecisions"]
