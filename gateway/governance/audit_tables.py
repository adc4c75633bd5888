"""The audit tables of the state store and the triggers that make them append-only.

    audit_decision   DECISION_SCHEMA's columns + day, writer, seq, pos (the row's place
                     in its batch: the content digest covers the order)
    audit_batch      the hash chain per writer and day: seq, records, content, prev, digest
    audit_action     operator actions, one chain over all of them (seq 1, 2, ...)
    audit_horizon    one row: the retention horizon (a day); it only moves forward

Append-only is the database's rule, not ours: triggers refuse UPDATE (and TRUNCATE on
PostgreSQL) on every audit table, DELETE on audit_action, and DELETE on audit_decision
and audit_batch for rows of a day at or after the horizon. Retention moves the horizon,
then deletes the days before it. The tables live on gateway.state's `metadata`.
"""

from __future__ import annotations

import weakref
from typing import Any

import pyarrow as pa
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
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from gateway.governance.audit_model import DECISION_SCHEMA
from gateway.state import StateStore, StateStoreError, metadata

_SQL_TYPES: dict[pa.DataType, Any] = {
    pa.string(): Text, pa.int64(): BigInteger, pa.int32(): Integer, pa.float64(): Double,
    pa.timestamp("us", tz="UTC"): DateTime(timezone=True),
}

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
    # PostgreSQL gets a BRIN index there, a few pages that are nearly free to maintain
    # (made by _install_day_index: a `postgresql_using` here would load SQLAlchemy's
    # PostgreSQL dialect, 30 ms, into every batch run on any database).
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


def _not_postgresql(ddl: Any, target: Any, bind: Any, tables: Any = None, state: Any = None, *,
                    dialect: Any, **_: Any) -> bool:
    return bool(dialect.name != "postgresql")


def _install_day_index() -> None:
    made = f"CREATE INDEX audit_decision_day ON {decision_table.name}"
    event.listen(decision_table, "after_create", DDL(f"{made} USING brin (day)").execute_if(dialect="postgresql"))
    event.listen(decision_table, "after_create", DDL(f"{made} (day)").execute_if(callable_=_not_postgresql))


_install_day_index()


_READY: weakref.WeakSet[StateStore] = weakref.WeakSet()


def ensure_tables(store: StateStore) -> None:
    """Creates the audit tables (and their triggers) if missing: the store may have made
    its schema before this module was imported. PostgreSQL: under an advisory lock, so
    replicas starting together do not race on the functions. SQLite has no such lock: a
    table another process created between our check and our CREATE is seen the second time."""
    if store in _READY:
        return
    for attempt in (1, 2):
        try:
            with store.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(4711013)"))
                metadata.create_all(conn, tables=AUDIT_TABLES, checkfirst=True)
            break
        except (IntegrityError, OperationalError, ProgrammingError) as exc:
            if attempt == 2:
                raise StateStoreError(f"state store {store.display_url}: audit tables: {first_line(exc)}") from exc
        except SQLAlchemyError as exc:
            raise StateStoreError(f"state store {store.display_url}: audit tables: {first_line(exc)}") from exc
    _READY.add(store)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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


__all__ = ["AUDIT_TABLES", "action_table", "batch_table", "decision_table", "ensure_tables", "expected_triggers",
           "first_line", "horizon_table", "missing_triggers"]
