"""The audit tables of the state store: decisions (the `table` store) and operator
actions (always here: every replica must be able to query them).

    audit_decision   DECISION_SCHEMA's columns + day, writer, seq, pos (the row's place
                     in its batch: the content digest covers the order)
    audit_batch      the hash chain per writer and day: seq, records, content, prev, digest
    audit_action     operator actions, one chain over all of them (seq 1, 2, ...)
    audit_horizon    one row: the retention horizon (a day); it only moves forward

Append-only is the database's rule, not ours: triggers refuse UPDATE (and TRUNCATE on
PostgreSQL) on every audit table, DELETE on audit_action, and DELETE on audit_decision
and audit_batch for rows of a day at or after the horizon. Retention moves the horizon,
then deletes the days before it.

Bulk writes: PostgreSQL takes a batch as one COPY of CSV that Arrow writes (no Python
object per value); SQLite an executemany of tuples through the raw DBAPI connection; any
other database SQLAlchemy's executemany.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    func,
    select,
    text,
)
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
from gateway.state import StateStore, StateStoreError, metadata

_SQL_TYPES: dict[pa.DataType, Any] = {
    pa.string(): Text, pa.int64(): BigInteger, pa.int32(): Integer, pa.float64(): Double,
    pa.timestamp("us", tz="UTC"): DateTime(timezone=True),
}
_PLACE = ("day", "writer", "seq", "pos")

decision_table = Table(
    "audit_decision", metadata,
    Column("day", String(10), nullable=False),
    Column("writer", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("pos", BigInteger, nullable=False),
    *[Column(f.name, _SQL_TYPES[f.type]) for f in DECISION_SCHEMA],
    # No primary key: a batch's rows are found by day (verify, prune), a record's by its id;
    # duplicates or strays are what verify reports. Every index costs bulk inserts (on
    # PostgreSQL a b-tree on day doubled a COPY's time); rows arrive in day order, so
    # PostgreSQL gets a BRIN index there, a few pages that are nearly free to maintain.
    Index("audit_decision_day", "day", postgresql_using="brin"),
    Index("audit_decision_record_id", "record_id"),
)

batch_table = Table(
    "audit_batch", metadata,
    Column("day", String(10), nullable=False),
    Column("writer", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("content", String(64), nullable=False),
    Column("prev", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("day", "writer", "seq"),
)

action_table = Table(
    "audit_action", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("pipeline", String(200), nullable=False),
    Column("target", Text),
    Column("old", Text),
    Column("new", Text),
    Column("reason", Text, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Index("audit_action_target", "target"),
    Index("audit_action_pipeline", "pipeline", "action"),
)

horizon_table = Table(
    "audit_horizon", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("day", String(10), nullable=False),
    CheckConstraint("id = 1", name="audit_horizon_one_row"),
)

AUDIT_TABLES = [decision_table, batch_table, action_table, horizon_table]
NO_HORIZON = "0001-01-01"

# ---- the triggers ------------------------------------------------------------------------

_SQLITE_REFUSE = "SELECT RAISE(ABORT, '{table} is append-only: {op} refused{more}')"
# Under the advisory lock ensure_tables takes too: the state store may be creating these
# tables in another process at once, and concurrent CREATE OR REPLACE FUNCTIONs fail.
_PG_FUNCTIONS = """
SELECT pg_advisory_xact_lock(4711013);
CREATE OR REPLACE FUNCTION lgw_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
CREATE OR REPLACE FUNCTION lgw_audit_refuse_recent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE horizon text;
BEGIN
  SELECT day INTO horizon FROM audit_horizon WHERE id = 1;
  IF EXISTS (SELECT 1 FROM gone WHERE day >= COALESCE(horizon, '')) THEN
    RAISE EXCEPTION '% is append-only: DELETE refused for days at or after the retention horizon %',
      TG_TABLE_NAME, COALESCE(horizon, '(none)');
  END IF;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION lgw_audit_horizon_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id <> OLD.id OR NEW.day < OLD.day THEN
    RAISE EXCEPTION 'audit_horizon only moves forward: % to % refused', OLD.day, NEW.day;
  END IF;
  RETURN NEW;
END $$;
"""


def _sqlite_triggers(table: str) -> list[str]:
    refuse = _SQLITE_REFUSE.format
    horizon = "(SELECT day FROM audit_horizon WHERE id = 1)"
    if table == "audit_horizon":
        return [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
            f"WHEN NEW.id <> OLD.id OR NEW.day < OLD.day BEGIN "
            f"SELECT RAISE(ABORT, 'audit_horizon only moves forward: UPDATE refused'); END",
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN {refuse(table=table, op='DELETE', more='')}; END",
        ]
    delete_when = "" if table == "audit_action" else f"WHEN OLD.day >= COALESCE({horizon}, '') "
    more = "" if table == "audit_action" else " for days at or after the retention horizon"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN {refuse(table=table, op='UPDATE', more='')}; END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} {delete_when}"
        f"BEGIN {refuse(table=table, op='DELETE', more=more)}; END",
    ]


def _pg_triggers(table: str) -> list[str]:
    each = "FOR EACH STATEMENT EXECUTE FUNCTION"
    if table == "audit_horizon":
        return [
            f"CREATE OR REPLACE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION lgw_audit_horizon_forward()",
            f"CREATE OR REPLACE TRIGGER {table}_no_delete BEFORE DELETE ON {table} {each} lgw_audit_refuse()",
            f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} {each} lgw_audit_refuse()",
        ]
    delete = (f"CREATE OR REPLACE TRIGGER {table}_no_delete BEFORE DELETE ON {table} {each} lgw_audit_refuse()"
              if table == "audit_action" else
              f"CREATE OR REPLACE TRIGGER {table}_no_delete AFTER DELETE ON {table} "
              f"REFERENCING OLD TABLE AS gone {each} lgw_audit_refuse_recent()")
    return [
        f"CREATE OR REPLACE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {each} lgw_audit_refuse()",
        delete,
        f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} {each} lgw_audit_refuse()",
    ]


def expected_triggers(dialect: str) -> dict[str, list[str]]:
    """Trigger names per audit table, as created on `dialect`."""
    ops = ("update", "delete", "truncate") if dialect == "postgresql" else ("update", "delete")
    return {t.name: [f"{t.name}_no_{op}" for op in ops] for t in AUDIT_TABLES}


def _install_triggers() -> None:
    for table in AUDIT_TABLES:
        if table is horizon_table:
            # first the row, then the triggers that guard it
            event.listen(table, "after_create", DDL(f"INSERT INTO audit_horizon (id, day) VALUES (1, '{NO_HORIZON}')"))
        for stmt in _sqlite_triggers(table.name):
            event.listen(table, "after_create", DDL(stmt).execute_if(dialect="sqlite"))
        # the functions before every table: create_all may make the tables in any order
        event.listen(table, "before_create", DDL(_PG_FUNCTIONS.replace("%", "%%")).execute_if(dialect="postgresql"))
        for stmt in _pg_triggers(table.name):
            event.listen(table, "after_create", DDL(stmt).execute_if(dialect="postgresql"))


_install_triggers()


def ensure_tables(store: StateStore) -> None:
    """Creates the audit tables (and their triggers) if missing: the store may have made
    its schema before this module was imported. PostgreSQL: under an advisory lock, so
    replicas starting together do not race on the functions."""
    if getattr(store, "_audit_ready", False):
        return
    try:
        with store.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(4711013)"))
            metadata.create_all(conn, tables=AUDIT_TABLES, checkfirst=True)
    except SQLAlchemyError as exc:
        raise StateStoreError(f"state store {store.display_url}: audit tables: {_first_line(exc)}") from exc
    store._audit_ready = True  # type: ignore[attr-defined]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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
                raise StateStoreError(f"state store {self.store.display_url}: {_first_line(exc)}") from exc

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


def missing_triggers(store: StateStore) -> list[str]:
    """The append-only triggers that are not there (someone dropped them)."""
    ensure_tables(store)
    dialect = store.engine.dialect.name
    if dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    elif dialect == "postgresql":
        query = ("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                 "WHERE pg_table_is_visible(c.oid) AND NOT t.tgisinternal")
    else:
        return []
    with store._connect() as conn:
        present = set(conn.execute(text(query)).scalars())
    return [f"{table}: trigger {name} is missing (dropped: the table is no longer append-only)"
            for table, names in expected_triggers(dialect).items() for name in names if name not in present]


AuditCallback = Callable[[Connection], None]

__all__ = ["AUDIT_TABLES", "ActionLog", "TableDecisions", "action_table", "batch_table", "decision_table",
           "ensure_tables", "horizon_table", "missing_triggers"]
