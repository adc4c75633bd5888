"""Writes result tables into a database table over ODBC: upsert by key, one transaction
per chunk, the pipeline's checkpoint row written in that same transaction.

The checkpoint lives in the target database (`lgw_checkpoints`, one row per pipeline:
how many chunks are durable and the source position of the last one), because the
state store is usually another database and a transaction cannot span both. After a
crash the target says exactly which chunk made it; since every write is an upsert, a
chunk written twice leaves the same rows.

How a chunk travels is chosen per driver, by measurement on this machine (card_txn
results into an empty keyed table, 100,000 rows in chunks of 50,000, best of 3; 9
columns = key, score and provenance / 23 = every input column too; `bench/odbc.py`
re-measures PostgreSQL end to end):

- PostgreSQL (psqlODBC): `INSERT … SELECT … FROM unnest(CAST(? AS type[]), …) ON
  CONFLICT (key) DO UPDATE`, one array parameter per column, and a column with one value
  in the whole chunk (the provenance) as one scalar parameter: 234k rows/s (9 columns),
  69k (23). Multi-row `VALUES (…),(…)`: 82k / 28k at 250 rows per statement (67k at
  500): psqlODBC handles every parameter on its own. arrow-odbc's array insert ~20k and
  pyodbc fast_executemany ~9k rows/s.
- MariaDB (Connector/ODBC): arrow-odbc array insert (the driver ships a whole column
  array per parameter) into a temporary staging table, then `INSERT … SELECT … ON
  DUPLICATE KEY UPDATE`: 142k / 92k rows/s. Multi-row VALUES: 71k / 20k at 250 rows.
- SQLite (SQLite3 ODBC): multi-row VALUES with `ON CONFLICT … DO UPDATE` (SQLite >=
  3.24), 250 rows per statement: 165k / 65k rows/s; the staging route 115k / 63k.
  pyodbc fast_executemany fails with MemoryError on this driver (and on MariaDB's).

Identifiers are validated and quoted; values only ever travel as parameters (an array
literal in a parameter is still a parameter). Decimals travel as exact text or Decimal,
never float; SQLite stores them as TEXT, its only exact form.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.base import ScoredBatch
from adapters.odbc.config import OdbcSinkConfig
from adapters.odbc.connection import (
    OdbcConnection,
    OdbcConnectionConfig,
    OdbcDataError,
    OdbcError,
    table_columns,
    translate,
)
from adapters.odbc.identifiers import Dialect, quote, quote_table, split_table, validate_identifier
from schemas.arrow_buffers import one_array
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from adapters.registry import BuildContext

log = logging.getLogger("lgw.odbc.sink")

Method = Literal["auto", "values", "unnest", "staged"]

METHODS: dict[Dialect, Method] = {Dialect.POSTGRESQL: "unnest", Dialect.MARIADB: "staged", Dialect.SQLITE: "values"}
# Rows per multi-row VALUES statement (measured best), and parameters per statement: ODBC
# counts parameter markers in an SQLSMALLINT (SQLNumParams), so 32,768 markers read back
# as -32,768 on all three drivers (measured; PostgreSQL and MariaDB themselves take 65,535);
# SQLite's own limit is 32,766 since 3.32 and 999 before.
VALUES_ROWS: dict[Dialect, int] = {Dialect.POSTGRESQL: 250, Dialect.MARIADB: 250, Dialect.SQLITE: 250}
PARAMETER_LIMITS: dict[Dialect, int] = {Dialect.POSTGRESQL: 32_767, Dialect.MARIADB: 32_767, Dialect.SQLITE: 32_766}
_SQL_TYPE = re.compile(r"[A-Za-z][A-Za-z ]{0,40}(\(\s*\d{1,5}\s*(,\s*\d{1,5}\s*)?\))?")
UNNEST_ROWS = 50_000  # rows per unnest statement: ~1 MB per column parameter
CHECKPOINT_TABLE = "lgw_checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    pipeline: str
    chunk: int  # chunks made durable so far
    position: dict[str, Any]
    updated_at: datetime | None


def column_type(field: pa.Field, dialect: Dialect) -> str:
    """The SQL type of a results column for an Arrow type."""
    t = field.type
    pg, maria, lite = dialect == Dialect.POSTGRESQL, dialect == Dialect.MARIADB, dialect == Dialect.SQLITE
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR(255)" if maria else "TEXT"
    if pa.types.is_boolean(t):
        return "BOOLEAN" if not lite else "INTEGER"
    if pa.types.is_integer(t):
        if lite:
            return "INTEGER"
        return {8: "SMALLINT", 16: "SMALLINT", 32: "INTEGER"}.get(t.bit_width, "BIGINT")
    if pa.types.is_float32(t):
        return "REAL" if not maria else "FLOAT"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION" if pg else "DOUBLE" if maria else "REAL"
    if pa.types.is_decimal(t):
        return "TEXT" if lite else f"{'NUMERIC' if pg else 'DECIMAL'}({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        if lite:
            return "TIMESTAMP"
        if maria:
            return "DATETIME(6)"
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    raise ConfigError(f"results column {field.name}: no SQL type for Arrow {t}")


class OdbcSink:
    """A results table written over ODBC (implements `adapters.base.Sink`)."""

    def __init__(self, connection: OdbcConnection | OdbcConnectionConfig | str, table: str,
                 key: str | Sequence[str], *, pipeline: str | None = None, method: Method = "auto",
                 rows_per_statement: int | None = None, column_types: dict[str, str] | None = None,
                 columns: Sequence[str] | None = None, create: bool = True) -> None:
        self.connection = connection if isinstance(connection, OdbcConnection) else OdbcConnection(connection)
        self.table = validate_identifier(table, qualified=True)
        self.keys = [validate_identifier(k) for k in ([key] if isinstance(key, str) else list(key))]
        if not self.keys:
            raise ConfigError(f"ODBC sink {table}: an upsert needs at least one key column")
        if method not in ("auto", "values", "unnest", "staged"):
            raise ConfigError(f"ODBC sink {table}: method {method!r} is not one of auto, values, unnest, staged")
        if rows_per_statement is not None and rows_per_statement < 1:
            raise ConfigError(f"ODBC sink {table}: rows_per_statement must be >= 1")
        for name in [*(column_types or {}), *(columns or [])]:
            validate_identifier(name)
        for name, typ in (column_types or {}).items():
            if not _SQL_TYPE.fullmatch(typ.strip()):
                raise ConfigError(f"ODBC sink {table}: column_types.{name} = {typ!r} is not a plain SQL type "
                                  "such as VARCHAR(40) or NUMERIC(11,2)")
        self.columns = list(columns) if columns is not None else None  # None: every column of the results
        if self.columns is not None and (missing := [k for k in self.keys if k not in self.columns]):
            raise ConfigError(f"ODBC sink {table}: columns must include the key column(s) {', '.join(missing)}")
        self.pipeline = pipeline
        self.method_choice = method
        self.rows_per_statement = rows_per_statement
        self.column_types = dict(column_types or {})
        self.create = create
        self._conn: Any = None
        self._arrow: Any = None
        self._target: dict[str, str] = {}  # results column -> the table's column (its case may differ)
        self._target_types: dict[str, str] = {}  # results column -> SQL type, for unnest casts
        self._stage: str | None = None
        self._ready_for: pa.Schema | None = None
        self._lock = threading.Lock()
        self.rows = 0  # written by this instance (a run's figure for its manifest)

    def __repr__(self) -> str:
        return f"OdbcSink({self.table!r}, {self.connection.display!r})"

    @property
    def dialect(self) -> Dialect:
        return self.connection.dialect

    @property
    def method(self) -> Method:
        return METHODS[self.dialect] if self.method_choice == "auto" else self.method_choice

    # ---- Sink protocol (adapters.base)
    async def connect(self) -> None:
        await asyncio.to_thread(self._connect)

    async def open(self, state: dict[str, Any] | None = None) -> None:
        await self.connect()  # an upsert needs nothing from an earlier attempt

    def prepare(self, batch: ScoredBatch) -> tuple[pa.Table, dict[str, Any]]:
        """The rows as the table takes them, with the source position they reach (its
        checkpoint row goes in the same transaction)."""
        table = batch.table  # `columns` are picked by `write_table`
        if "source_record" in table.column_names and "source_record" not in (self.columns or ()):
            table = table.drop_columns(["source_record"])  # a file's record number: no column of a table
        return table, batch.source.position

    async def write(self, prepared: Sequence[tuple[pa.Table, dict[str, Any]]]) -> None:
        """Everything prepared for one source batch, in one transaction."""
        if not prepared:
            return
        tables = [t for t, _ in prepared]
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        position = prepared[-1][1] or None
        await asyncio.to_thread(self.write_table, table, position if self.pipeline else None)
        self.rows += table.num_rows

    def state(self) -> dict[str, Any]:
        return {}  # nothing to resume: a repeated batch is upserted again

    async def finish(self) -> dict[str, Any]:
        return {"format": "odbc", "target": self.table, "records": self.rows}

    async def publish(self) -> None:
        return None  # each batch was committed as it was written

    async def discard(self) -> None:
        return None  # committed rows stay: a failed run's rows are upserted again by its rerun

    async def write_batch(self, table: pa.Table, raw: np.ndarray | None = None, *,
                          position: dict[str, Any] | None = None) -> None:
        """Upserts the chunk and (with a pipeline) its checkpoint in one transaction."""
        await asyncio.to_thread(self.write_table, table, position)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    # ---- synchronous API
    def write_table(self, table: pa.Table, position: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self._conn is None:
                self._connect()
            if table.num_rows == 0 and position is None:
                return
            if self.columns is not None:
                missing = [c for c in self.columns if c not in table.column_names]
                if missing:
                    raise ConfigError(f"ODBC sink {self.table}: the results have no column(s) {', '.join(missing)}")
                table = table.select(self.columns)
            self._prepare(table.schema)
            table = _last_per_key(table, self.keys)
            try:
                if self.method == "staged":
                    self._write_staged(table, position)
                else:
                    self._write_pyodbc(table, position)
            except (OdbcError, OdbcDataError, ConfigError):
                raise
            except Exception as exc:
                err = translate(exc, f"writing {table.num_rows} rows to {self.table}")
                if isinstance(err, OdbcError):
                    self._close()  # a broken connection is reopened by the next write
                raise err from exc

    def last_checkpoint(self) -> Checkpoint | None:
        """The pipeline's checkpoint as the target database has it (None before the first chunk)."""
        if self.pipeline is None:
            return None
        with self._lock:
            if self._conn is None:
                self._connect()
            cp = quote_table(self._checkpoint_table(), self.dialect)
            p = quote("pipeline", self.dialect)
            try:
                cur = self._conn.cursor()
                row = cur.execute(f"SELECT {quote('chunk', self.dialect)}, {quote('position', self.dialect)}, "
                                  f"{quote('updated_at', self.dialect)} FROM {cp} WHERE {p} = ?",
                                  self.pipeline).fetchone()
                self._conn.rollback()
            except Exception as exc:
                raise translate(exc, f"reading the checkpoint of {self.pipeline}") from exc
        if row is None:
            return None
        updated = row[2] if isinstance(row[2], datetime) or row[2] is None else datetime.fromisoformat(str(row[2]))
        return Checkpoint(self.pipeline, int(row[0]), json.loads(row[1]), updated)

    # ---- connecting and the target's shape
    def _connect(self) -> None:
        self._close()
        self._conn = self.connection.open()
        self._ready_for = None
        self._strict(self._conn.execute)
        if self.method == "unnest" and self.dialect != Dialect.POSTGRESQL:
            raise ConfigError(f"ODBC sink {self.table}: method unnest needs PostgreSQL, the target is {self.dialect}")
        if self.pipeline is not None:
            self._ensure_checkpoint_table()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already gone
                log.debug("closing %s", self.table, exc_info=True)
        self._conn = None
        self._arrow = None
        self._stage = None
        self._ready_for = None

    def _strict(self, execute: Any) -> None:
        """MariaDB outside strict mode turns a NULL in a NOT NULL column into '' or 0 and
        cuts long text, with a warning; the gateway wants the error (and the rollback)."""
        if self.dialect == Dialect.MARIADB:
            try:
                execute("SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'STRICT_ALL_TABLES')")
            except Exception as exc:
                raise translate(exc, f"preparing the session for {self.table}") from exc

    def _checkpoint_table(self) -> str:
        schema, _ = split_table(self.table)
        return f"{schema}.{CHECKPOINT_TABLE}" if schema else CHECKPOINT_TABLE

    def _ensure_checkpoint_table(self) -> None:
        q = self.dialect
        text = "VARCHAR(200)" if q != Dialect.SQLITE else "TEXT"
        body = "LONGTEXT" if q == Dialect.MARIADB else "TEXT"
        ts = "DATETIME(6)" if q == Dialect.MARIADB else "TIMESTAMP"
        self._ddl(f"CREATE TABLE IF NOT EXISTS {quote_table(self._checkpoint_table(), q)} ("
                  f"{quote('pipeline', q)} {text} NOT NULL PRIMARY KEY, {quote('chunk', q)} BIGINT NOT NULL, "
                  f"{quote('position', q)} {body} NOT NULL, {quote('updated_at', q)} {ts} NOT NULL)")

    def _ddl(self, sql: str) -> None:
        for attempt in (1, 2):
            cur = self._conn.cursor()
            try:
                cur.execute(sql)
                self._conn.commit()
                return
            except Exception as exc:
                self._conn.rollback()
                # two writers creating the table at once (shards, replicas): PostgreSQL fails
                # the loser's CREATE ... IF NOT EXISTS with a duplicate in pg_type once the
                # winner has committed, so a second look finds the table there
                if attempt == 1 and "IF NOT EXISTS" in sql:
                    continue
                raise translate(exc, f"preparing {self.table}") from exc
            finally:
                cur.close()

    def _prepare(self, schema: pa.Schema) -> None:
        """Creates the results table if it is missing, checks it holds every column."""
        if self._ready_for is not None and self._ready_for.equals(schema):
            return
        for f in schema:
            validate_identifier(f.name)
        missing_keys = [k for k in self.keys if k not in schema.names]
        if missing_keys:
            raise ConfigError(f"ODBC sink {self.table}: key column(s) {', '.join(missing_keys)} not in the results")
        existing = self._columns()
        if not existing and self.create:
            self._ddl(self._create_sql(schema))
            existing = self._columns()
        if not existing:
            raise ConfigError(f"ODBC sink: table {self.table} does not exist (and create is off)")
        by_lower = {c.name.lower(): c for c in existing}
        missing = [f.name for f in schema if f.name.lower() not in by_lower]
        if missing:
            raise ConfigError(f"ODBC sink: table {self.table} has no column(s) {', '.join(missing)} for the results")
        self._target = {f.name: by_lower[f.name.lower()].name for f in schema}
        self._target_types = {f.name: self.column_types.get(f.name) or column_type(f, self.dialect) for f in schema}
        if self.method == "staged":
            self._prepare_stage(schema)
        self._ready_for = schema

    def _columns(self) -> list[Any]:
        try:
            cols = table_columns(self._conn, self.table, self.dialect)
            self._conn.rollback()
            return cols
        except Exception as exc:
            raise translate(exc, f"reading the columns of {self.table}") from exc

    def _create_sql(self, schema: pa.Schema) -> str:
        q = self.dialect
        cols = []
        for f in schema:
            typ = self.column_types.get(f.name) or column_type(f, q)
            cols.append(f"{quote(f.name, q)} {typ}" + (" NOT NULL" if f.name in self.keys else ""))
        keys = ", ".join(quote(k, q) for k in self.keys)
        return f"CREATE TABLE IF NOT EXISTS {quote_table(self.table, q)} ({', '.join(cols)}, PRIMARY KEY ({keys}))"

    # ---- SQL
    def _upsert_clause(self, names: list[str], *, source: str = "values") -> str:
        q = self.dialect
        target = [self._target[n] for n in names]
        keys = [self._target[k] for k in self.keys]
        others = [c for c in target if c not in keys]
        if q == Dialect.MARIADB:
            sets = ", ".join(f"{quote(c, q)} = VALUES({quote(c, q)})" for c in others or keys[:1])
            return f" ON DUPLICATE KEY UPDATE {sets}"
        conflict = ", ".join(quote(k, q) for k in keys)
        if not others:
            return f" ON CONFLICT ({conflict}) DO NOTHING"
        sets = ", ".join(f"{quote(c, q)} = excluded.{quote(c, q)}" for c in others)
        return f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"

    def _insert_head(self, names: list[str]) -> str:
        cols = ", ".join(quote(self._target[n], self.dialect) for n in names)
        return f"INSERT INTO {quote_table(self.table, self.dialect)} ({cols})"

    def _checkpoint_sql(self) -> str:
        q = self.dialect
        cp = quote_table(self._checkpoint_table(), q)
        cols = [quote(c, q) for c in ("pipeline", "chunk", "position", "updated_at")]
        head = f"INSERT INTO {cp} ({', '.join(cols)}) VALUES (?, 1, ?, CURRENT_TIMESTAMP)"
        chunk, position, updated = cols[1], cols[2], cols[3]
        if q == Dialect.MARIADB:
            return (f"{head} ON DUPLICATE KEY UPDATE {chunk} = {chunk} + 1, {position} = VALUES({position}), "
                    f"{updated} = VALUES({updated})")
        this = quote(CHECKPOINT_TABLE, q)  # the existing row, by the unqualified table name
        return (f"{head} ON CONFLICT ({cols[0]}) DO UPDATE SET {chunk} = {this}.{chunk} + 1, "
                f"{position} = excluded.{position}, {updated} = excluded.{updated}")

    def _checkpoint_params(self, position: dict[str, Any] | None) -> list[str] | None:
        if self.pipeline is None or position is None:
            return None
        return [self.pipeline, json.dumps(position, separators=(",", ":"), default=str)]

    # ---- writing through pyodbc: multi-row VALUES or unnest arrays
    def _write_pyodbc(self, table: pa.Table, position: dict[str, Any] | None) -> None:
        cur = self._conn.cursor()
        try:
            if table.num_rows:
                if self.method == "unnest":
                    self._unnest(cur, table)
                else:
                    self._values(cur, table)
            checkpoint = self._checkpoint_params(position)
            if checkpoint is not None:
                cur.execute(self._checkpoint_sql(), checkpoint)
            self._conn.commit()
        except BaseException:
            self._rollback()
            raise
        finally:
            cur.close()

    def _rollback(self) -> None:
        try:
            self._conn.rollback()
        except Exception:  # the connection is gone: the server rolled back already
            log.debug("rollback on %s", self.table, exc_info=True)

    def _values(self, cur: Any, table: pa.Table) -> None:
        names = table.column_names
        per = self.rows_per_statement or VALUES_ROWS[self.dialect]
        per = max(1, min(per, self._parameter_limit() // max(1, len(names))))
        head, tail = self._insert_head(names), self._upsert_clause(names)
        one = "(" + ", ".join("?" * len(names)) + ")"
        columns = [_python_values(table.column(n), self.dialect) for n in names]
        rows = list(zip(*columns, strict=True))
        statements: dict[int, str] = {}
        for start in range(0, len(rows), per):
            part = rows[start: start + per]
            sql = statements.get(len(part))
            if sql is None:
                sql = statements[len(part)] = f"{head} VALUES {', '.join([one] * len(part))}{tail}"
            cur.execute(sql, [v for row in part for v in row])

    def _parameter_limit(self) -> int:
        info = self.connection.info
        if self.dialect == Dialect.SQLITE and info is not None and info.version_tuple < (3, 32):
            return 999
        return PARAMETER_LIMITS[self.dialect]

    def _unnest(self, cur: Any, table: pa.Table) -> None:
        """One array parameter per column; a column holding one value for the whole part
        (the provenance: model name, version, contract, scored_by) goes as one scalar
        parameter instead. Parsing array literals is most of the server's work here."""
        names = table.column_names
        per = self.rows_per_statement or UNNEST_ROWS
        for start in range(0, table.num_rows, per):
            part = table.slice(start, per)
            constant = {n: v for n in names if n not in self.keys
                        for v in [_constant(part.column(n))] if v is not _VARIES}
            arrays = [n for n in names if n not in constant]
            alias = {n: f"c{i}" for i, n in enumerate(arrays)}
            select = ", ".join(f"lgw_u.{alias[n]}" if n in alias else f"CAST(? AS {self._target_types[n]})"
                               for n in names)
            unnest = ", ".join(f"CAST(? AS {self._target_types[n]}[])" for n in arrays)
            sql = (f"{self._insert_head(names)} SELECT {select} FROM unnest({unnest}) "
                   f"AS lgw_u({', '.join(alias.values())}){self._upsert_clause(names)}")
            params = [constant[n] for n in names if n in constant] + [pg_array_literal(part.column(n)) for n in arrays]
            cur.execute(sql, params)

    # ---- writing through arrow-odbc: array insert into a staging table, then upsert
    def _prepare_stage(self, schema: pa.Schema) -> None:
        q = self.dialect
        if self._arrow is None:
            self._arrow = self.connection.open_arrow(autocommit=False)
            self._strict(self._arrow.execute)
        _, name = split_table(self.table)
        stage = f"lgw_stage_{name}"[:63]
        cols = ", ".join(f"{quote(self._target[f.name], q)} {self._target_types[f.name]}" for f in schema)
        try:
            # TEMPORARY: private to this connection, and no implicit commit on MariaDB.
            self._arrow.execute(f"DROP TEMPORARY TABLE IF EXISTS {quote(stage, q)}" if q == Dialect.MARIADB
                                else f"DROP TABLE IF EXISTS {quote(stage, q)}")
            self._arrow.execute(f"CREATE TEMPORARY TABLE {quote(stage, q)} ({cols})")
            self._arrow.commit()
        except Exception as exc:
            raise translate(exc, f"preparing the staging table for {self.table}") from exc
        self._stage = stage

    def _write_staged(self, table: pa.Table, position: dict[str, Any] | None) -> None:
        assert self._stage is not None and self._arrow is not None
        q = self.dialect
        names = table.column_names
        stage = quote(self._stage, q)
        cols = ", ".join(quote(self._target[n], q) for n in names)
        try:
            self._arrow.execute(f"DELETE FROM {stage}")
            if table.num_rows:
                renamed = table.rename_columns([self._target[n] for n in names])
                reader = pa.RecordBatchReader.from_batches(renamed.schema, renamed.to_batches())
                self._arrow.insert_into_table(reader, self._stage, max(1, min(table.num_rows, UNNEST_ROWS)))
                where = " WHERE true" if q == Dialect.SQLITE else ""  # SQLite: ON after SELECT needs a WHERE
                self._arrow.execute(f"{self._insert_head(names)} SELECT {cols} FROM {stage}{where}"
                                    f"{self._upsert_clause(names)}")
            checkpoint = self._checkpoint_params(position)
            if checkpoint is not None:
                self._arrow.execute(self._checkpoint_sql(), parameters=checkpoint)
            self._arrow.commit()
        except BaseException:
            try:
                self._arrow.rollback()
            except Exception:
                log.debug("rollback on %s", self.table, exc_info=True)
            raise


# ------------------------------------------------------------------------------ values
def _last_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per key, the last one (a statement may not touch a row twice)."""
    if table.num_rows < 2:
        return table
    key_table = table.select(keys)
    if key_table.group_by(keys).aggregate([]).num_rows == table.num_rows:
        return table
    rows = key_table.append_column("__row", pa.array(np.arange(table.num_rows)))
    last = rows.group_by(keys).aggregate([("__row", "max")]).column("__row_max").to_numpy()
    return table.take(pa.array(np.sort(last)))


def _python_values(col: pa.ChunkedArray, dialect: Dialect) -> list[Any]:
    """Column -> parameter values. Decimals: Decimal (PostgreSQL binds SQL_NUMERIC) or
    exact text (MariaDB converts; SQLite keeps text). Timestamps as text outside
    PostgreSQL: MariaDB Connector/ODBC drops the microseconds of a bound datetime."""
    t = col.type
    if pa.types.is_decimal(t) and dialect != Dialect.POSTGRESQL:
        return pc.cast(col, pa.string()).to_pylist()
    if pa.types.is_timestamp(t) and dialect != Dialect.POSTGRESQL:
        return [None if v is None else v.isoformat(sep=" ") for v in col.to_pylist()]
    if pa.types.is_boolean(t) and dialect == Dialect.SQLITE:
        return [None if v is None else int(v) for v in col.to_pylist()]
    return col.to_pylist()


_VARIES = object()


def _constant(col: pa.ChunkedArray) -> Any:
    """The column's single value as parameter text (None for all-null), or _VARIES."""
    nulls = col.null_count
    if nulls == len(col):
        return None
    if nulls or pc.count_distinct(col).as_py() != 1:
        return _VARIES
    value = col[0]
    if pa.types.is_boolean(value.type):
        return "true" if value.as_py() else "false"
    return pc.cast(pa.array([value.as_py()], value.type), pa.string())[0].as_py()


def pg_array_literal(col: pa.ChunkedArray | pa.Array) -> str:
    """A PostgreSQL array literal ({…}) of the column, built column-wise in Arrow.
    Text-like elements are double-quoted with backslash escapes; NULL stays bare."""
    arr = one_array(col)
    t = arr.type
    if pa.types.is_boolean(t):
        text = pc.if_else(arr, "true", "false")
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = arr.cast(pa.string())
    else:
        text = pc.cast(arr, pa.string())
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)):
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        text = pc.binary_join_element_wise('"', text, '"', "")
    text = pc.fill_null(text, "NULL")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text), ",")
    return "{" + (joined[0].as_py() or "") + "}"


__all__ = ["METHODS", "PARAMETER_LIMITS", "VALUES_ROWS", "Checkpoint", "OdbcSink", "column_type",
           "pg_array_literal"]


def build_sink(config: OdbcSinkConfig, context: BuildContext) -> OdbcSink:
    """The `odbc` sink of the registry: upserts into `config.table` by `config.key`. A shard
    of a table pipeline (`context.extras["shard"]`) keeps a checkpoint row of its own."""
    shard = context.extras.get("shard")
    pipeline = f"{context.pipeline}#{shard[0]}/{shard[1]}" if shard else context.pipeline
    return OdbcSink(config.connection, config.table, config.key, pipeline=pipeline, columns=config.columns)
