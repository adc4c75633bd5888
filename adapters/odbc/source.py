"""Reads a table (or a query) over ODBC in batches of Arrow records shaped by a contract.

Three read modes:

- `full`: every row, every run.
- `incrementing`: rows whose key is above the watermark (the highest key acknowledged).
- `timestamp`: rows whose timestamp is at or after `watermark - overlap_s`, where the
  watermark is the newest timestamp acknowledged minus `lag_s`. Re-reading that window
  finds rows committed late (a transaction that took its timestamp before an earlier run
  but committed after it); rows already delivered are recognised by (key, timestamp) and
  dropped, so a row is delivered once, and again only when it changed.

Sharding (`shard=(K, N)`): N workers split one table by its integer key, worker K reading
only the rows whose `key % N` is K (its absolute value: negative keys too), each with a
watermark of its own (the source name plus `#K/N`). Every row belongs to exactly one
shard, so N workers together read each row once. Changing N starts new watermarks: the
first runs read everything again (the sinks upsert, so that costs time, not correctness).

A run pages through the rows in key (or timestamp, key) order with `LIMIT`, up to the
highest value present when the run started, so every batch is one bounded statement and
memory stays flat whatever the driver buffers. The watermark moves only in `ack` (the
driver calls it once the batch's results are durable), in read order: a batch acked
before an earlier one waits for it, and a nacked batch holds the watermark where it was.

Before the first batch `check_schema` compares the source's columns with the contract
(`columns.py`): a missing column or a column of another type stops the run with a message
naming it. Rows that decode but break the contract's types or rules come back as rejects,
as they do for files (`conform.py`). Acknowledgement order is kept by `acks.Acks`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.base import SourceBatch
from adapters.odbc.acks import Acks
from adapters.odbc.columns import (
    ContractColumn,
    SchemaDriftError,
    compare_columns,
    contract_columns,
    source_columns,
)
from adapters.odbc.config import OdbcSourceConfig
from adapters.odbc.conform import conform
from adapters.odbc.connection import (
    ColumnInfo,
    OdbcConnection,
    OdbcConnectionConfig,
    OdbcDataError,
    query_columns,
    table_columns,
    translate,
)
from adapters.odbc.identifiers import Dialect, quote, quote_table, validate_identifier
from schemas.contract import Contract
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from adapters.registry import BuildContext

log = logging.getLogger("lgw.odbc.source")

Mode = Literal["full", "incrementing", "timestamp"]
Reader = Literal["auto", "arrow", "pyodbc"]

# Measured through this source on this machine (200,000 card_txn rows, 15 columns, pages
# of 50,000 by key, best of 3): arrow-odbc 241k rows/s from PostgreSQL, 389k from MariaDB,
# 303k from SQLite; pyodbc fetchall -> Arrow 67k, 41k and 113k. arrow-odbc wins on all
# three drivers; the pyodbc reader stays for drivers without bulk (block cursor) fetches.
READERS: dict[Dialect, Literal["arrow", "pyodbc"]] = {
    Dialect.POSTGRESQL: "arrow", Dialect.MARIADB: "arrow", Dialect.SQLITE: "arrow"}


class Watermarks(Protocol):
    """Where the source keeps how far it has read, one JSON-able dict per (pipeline, source).
    A protocol so that adapters never import the gateway's state store: the gateway's
    `WatermarkStore` satisfies it and is handed in."""

    def get(self, pipeline: str, source: str) -> dict[str, Any] | None: ...

    def set(self, pipeline: str, source: str, watermark: dict[str, Any]) -> None: ...


# ------------------------------------------------------------------------------ a run
@dataclass
class _Run:
    """One pass over the source, from the stored watermark up to what existed at its start."""

    upper: Any
    cursor: tuple[Any, ...] | None = None  # the last row read: (key,) or (ts, key)
    state: dict[str, Any] | None = None  # the watermark after the last batch read
    seen: frozenset[str] = frozenset()  # "key|ts_us" delivered by earlier runs (timestamp mode)
    rows: int = 0
    stream: Any = None  # full mode without a key: one statement, read batch by batch
    done: bool = False


# ------------------------------------------------------------------------------ the source
class OdbcSource:
    """A table or query read over ODBC into Arrow batches (implements `adapters.base.Source`)."""

    def __init__(self, connection: OdbcConnection | OdbcConnectionConfig | str, *, contract: Contract,
                 pipeline: str, table: str | None = None, query: str | None = None, mode: Mode = "full",
                 key: str | None = None, timestamp: str | None = None, lag_s: float = 0.0, overlap_s: float = 0.0,
                 batch_size: int = 50_000, watermarks: Watermarks | None = None, name: str | None = None,
                 reader: Reader = "auto", shard: tuple[int, int] | None = None) -> None:
        self.connection = connection if isinstance(connection, OdbcConnection) else OdbcConnection(connection)
        if (table is None) == (query is None):
            raise ConfigError("ODBC source: give exactly one of table or query")
        if mode not in ("full", "incrementing", "timestamp"):
            raise ConfigError(f"ODBC source: mode {mode!r} is not one of full, incrementing, timestamp")
        if mode == "incrementing" and not key:
            raise ConfigError("ODBC source: mode incrementing needs a key column")
        if mode == "timestamp" and not (timestamp and key):
            raise ConfigError("ODBC source: mode timestamp needs a timestamp column and a key column "
                              "(the key tells re-read rows from new ones)")
        if mode != "full" and watermarks is None:
            raise ConfigError(f"ODBC source: mode {mode} needs a watermark store")
        if batch_size < 1 or lag_s < 0 or overlap_s < 0:
            raise ConfigError("ODBC source: batch_size must be >= 1, lag_s and overlap_s >= 0")
        if shard is not None:
            index, count = shard
            if not (count >= 1 and 0 <= index < count):
                raise ConfigError(f"ODBC source: shard {index}/{count}: expected K/N with 0 <= K < N")
            if not key:
                raise ConfigError("ODBC source: a shard needs a key column (rows are split by key % N)")
            shard = None if count == 1 else shard
        if table is not None:
            validate_identifier(table, qualified=True)
        for col in (key, timestamp):
            if col is not None:
                validate_identifier(col)
        self.contract = contract
        self.pipeline = pipeline
        self.table, self.query, self.mode = table, query, mode
        self.key, self.timestamp = key, timestamp
        self.lag = timedelta(seconds=lag_s)
        self.overlap = timedelta(seconds=overlap_s)
        self.batch_size = batch_size
        self.watermarks = watermarks
        self.name = name or table or "query:" + hashlib.sha1((query or "").encode()).hexdigest()[:12]
        self.shard = shard
        if shard is not None:  # a watermark of its own per shard
            self.name = f"{self.name}#{shard[0]}/{shard[1]}"
        self.reader_choice = reader
        self.expected = contract_columns(contract)
        self._odbc: Any = None
        self._arrow: Any = None
        self._columns: dict[str, ColumnInfo] = {}
        self._run: _Run | None = None
        self._acks = Acks()
        self._lock = asyncio.Lock()
        self._ack_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OdbcSource({self.name!r}, mode={self.mode}, {self.connection.display!r})"

    # ---- Source protocol
    async def connect(self) -> None:
        await asyncio.to_thread(self._connect)

    async def read_batch(self) -> SourceBatch | None:
        async with self._lock:
            return await asyncio.to_thread(self._read_batch)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def check_schema(self) -> dict[str, ColumnInfo]:
        """Compares the source's columns and types with the contract (and checks the key
        and timestamp columns exist); raises SchemaDriftError naming every difference."""
        if self._odbc is None:
            self._connect()
        else:
            self._columns = self._check_schema()
        return self._columns

    # ---- connecting and checking
    def _connect(self) -> None:
        self._close()
        self._odbc = self.connection.open()
        self._columns = self._check_schema()
        self._arrow = self.connection.open_arrow() if self._reader() == "arrow" else None

    def _reader(self) -> str:
        return READERS[self.dialect] if self.reader_choice == "auto" else self.reader_choice

    @property
    def dialect(self) -> Dialect:
        return self.connection.dialect

    def _check_schema(self) -> dict[str, ColumnInfo]:
        try:
            if self.table is not None:
                actual = table_columns(self._odbc, self.table, self.dialect)
                what = f"table {self.table}"
                if not actual:
                    raise SchemaDriftError(f"table {self.table} does not exist in {self.connection.display}")
            else:
                actual = query_columns(self._odbc, self.query or "")
                what = "the source query"
        except SchemaDriftError:
            raise
        except Exception as exc:
            raise translate(exc, f"reading the columns of {self.name}") from exc
        finally:
            self._odbc.rollback()  # a catalog read holds metadata locks on MariaDB until it ends
        columns = source_columns(self.expected, actual, what=what, contract=self.contract, dialect=self.dialect,
                                 key=self.key, timestamp=self.timestamp)
        if self.shard is not None and columns[self.key or ""].family != "integer":
            raise ConfigError(f"{self.name}: shards split by key % N: key column {self.key} is "
                              f"{columns[self.key or ''].type_name}, not an integer")
        return columns

    def _close(self) -> None:
        for conn in (self._odbc,):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already gone: nothing to release
                    log.debug("closing %s", self.name, exc_info=True)
        self._odbc = None
        self._arrow = None  # arrow-odbc closes its connection when the object goes
        if self._run is not None:
            self._run.stream = None

    # ---- SQL
    def _q(self, key: str) -> str:
        return quote(self._columns[key].name, self.dialect)

    def _source_sql(self) -> str:
        return quote_table(self.table, self.dialect) if self.table else f"({self.query}) lgw_src"

    def _param(self, col: str, placeholder: str = "?") -> str:
        """A placeholder cast to the column's type: arrow-odbc sends every parameter as text."""
        family = self._columns[col].family
        casts = {
            Dialect.POSTGRESQL: {"integer": "BIGINT", "decimal": "NUMERIC", "timestamp": "TIMESTAMP", "date": "DATE"},
            Dialect.MARIADB: {"integer": "SIGNED", "decimal": "DECIMAL(65,30)", "timestamp": "DATETIME(6)",
                              "date": "DATE"},
            Dialect.SQLITE: {"integer": "INTEGER"},  # SQLite timestamps are text in the driver's format
        }[self.dialect]
        if family == "timestamp" and self.dialect == Dialect.POSTGRESQL and "tz" in self._columns[col].type_name:
            return f"CAST({placeholder} AS TIMESTAMPTZ)"
        return f"CAST({placeholder} AS {casts[family]})" if family in casts else placeholder

    def _ts_expr(self) -> str:
        """The timestamp column as compared and ordered. SQLite keeps timestamps as text in
        whatever form the writer used ('…05.123', '…05.123000', '…05'); strftime gives all
        of them one form (millisecond precision, SQLite's own), so text order is time order."""
        t = self._q(self.timestamp or "")
        return f"strftime('%Y-%m-%d %H:%M:%f', {t})" if self.dialect == Dialect.SQLITE else t

    def _select_sql(self) -> str:
        names = [c.key for c in self.expected] + [c for c in (self.key, self.timestamp) if c and c not in
                                                   {e.key for e in self.expected}]
        return "SELECT " + ", ".join(self._q(n) for n in names) + " FROM " + self._source_sql()

    def _shard_where(self) -> list[str]:
        """This shard's rows: ABS(key % N) = K (`%` is the remainder in all three dialects)."""
        if self.shard is None:
            return []
        index, count = self.shard
        return [f"ABS({self._q(self.key or '')} % {int(count)}) = {int(index)}"]

    def _page(self, run: _Run) -> tuple[str, list[Any]]:
        """The next page's statement and parameters (keyset pagination)."""
        where: list[str] = self._shard_where()
        params: list[Any] = []
        k = self._q(self.key) if self.key else ""
        if self.mode == "timestamp":
            assert self.timestamp and self.key
            t = self._ts_expr()
            if run.cursor is None:
                lower = self._lower_ts(run)
                if lower is not None:
                    where.append(f"{t} >= {self._param(self.timestamp)}")
                    params.append(lower)
            else:
                where.append(f"({t} > {self._param(self.timestamp)} OR ({t} = {self._param(self.timestamp)} "
                             f"AND {k} > {self._param(self.key)}))")
                params += [run.cursor[0], run.cursor[0], run.cursor[1]]
            where.append(f"{t} <= {self._param(self.timestamp)}")
            params.append(run.upper)
            order = f"{t}, {k}"
        else:
            assert self.key
            lower = run.cursor[0] if run.cursor is not None else (run.state or {}).get("key")
            if lower is not None:
                where.append(f"{k} > {self._param(self.key)}")
                params.append(lower)
            if self.mode == "incrementing":
                where.append(f"{k} <= {self._param(self.key)}")
                params.append(run.upper)
            order = k
        sql = self._select_sql() + (" WHERE " + " AND ".join(where) if where else "")
        return f"{sql} ORDER BY {order} LIMIT {int(self.batch_size)}", params

    # ---- watermarks
    def _stored(self) -> dict[str, Any] | None:
        if self.watermarks is None or self.mode == "full":
            return None
        value = self.watermarks.get(self.pipeline, self.name)
        if value is not None and value.get("mode") != self.mode:
            raise ConfigError(f"source {self.name} of pipeline {self.pipeline}: the stored watermark is for mode "
                              f"{value.get('mode')}, the source now reads in mode {self.mode}; delete it to start over")
        return value

    def _lower_ts(self, run: _Run) -> str | None:
        if run.state is None:
            return None
        return self._ts_param(datetime.fromisoformat(run.state["ts"]) - self.overlap)

    def _ts_param(self, value: datetime | date) -> str:
        if self._columns[self.timestamp or ""].family == "date":
            return (value.date() if isinstance(value, datetime) else value).isoformat()
        if self.dialect == Dialect.SQLITE:  # the form _ts_expr compares in
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(value, datetime) else str(value)
        return value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)

    def _start_run(self) -> _Run | None:
        col = self.timestamp if self.mode == "timestamp" else self.key
        if col is None:  # full mode without a key: one statement for the whole run
            return _Run(upper=None)
        expr = self._ts_expr() if self.mode == "timestamp" else self._q(col)
        shard = self._shard_where()
        upper = self._scalar(f"SELECT MAX({expr}) FROM {self._source_sql()}"
                             + (f" WHERE {shard[0]}" if shard else ""))
        if upper is None:
            return None
        run = _Run(upper=upper)
        if self.mode == "timestamp":
            run.upper = upper if isinstance(upper, str) else self._ts_param(_as_datetime(upper))
            run.state = self._stored()
            if run.state:
                run.seen = frozenset(f"{k}|{us}" for k, us in run.state.get("seen", {}).items())
        elif self.mode == "incrementing":
            run.state = self._stored()
            run.upper = str(upper)
        return run

    def _scalar(self, sql: str) -> Any:
        cur = self._odbc.cursor()
        try:
            value = cur.execute(sql).fetchone()[0]
            self._odbc.rollback()  # end the read transaction: the next statement sees new commits
        except Exception as exc:
            raise translate(exc, f"reading {self.name}") from exc
        finally:
            cur.close()
        return value

    # ---- reading
    def _read_batch(self) -> SourceBatch | None:
        if self._odbc is None:
            self._connect()
        if self._run is None:
            self._run = self._start_run() or _Run(upper=None, done=True)
        run = self._run
        while not run.done:
            raw = self._fetch(run)
            if raw is None or raw.num_rows == 0:
                run.done = True
                return None
            if self.mode != "full" or self.key:
                run.done = raw.num_rows < self.batch_size
            batch = self._batch(run, raw)
            if batch is not None:
                return batch
        return None

    def _fetch(self, run: _Run) -> pa.Table | None:
        try:
            if run.stream is not None or (self.mode == "full" and not self.key):
                return self._fetch_stream(run)
            sql, params = self._page(run)
            return self._execute(sql, [_text(p) for p in params])
        except (OdbcDataError, ConfigError):
            raise
        except Exception as exc:
            raise translate(exc, f"reading {self.name}") from exc

    def _fetch_stream(self, run: _Run) -> pa.Table | None:
        if run.stream is None:
            if self._arrow is not None:
                run.stream = iter(self._arrow.read_arrow_batches(self._select_sql(), batch_size=self.batch_size,
                                                                 **self._arrow_options()))
            else:
                cur = self._odbc.cursor()
                cur.execute(self._select_sql())
                run.stream = cur
        if self._arrow is not None:
            batch = next(run.stream, None)
            return None if batch is None else pa.Table.from_batches([batch])
        rows = run.stream.fetchmany(self.batch_size)
        return _rows_to_table(rows, [d[0] for d in run.stream.description]) if rows else None

    def _execute(self, sql: str, params: list[str | None]) -> pa.Table:
        if self._arrow is not None:
            reader = self._arrow.read_arrow_batches(sql, batch_size=self.batch_size, parameters=params,
                                                    **self._arrow_options())
            return pa.Table.from_batches(list(reader), schema=reader.schema)
        cur = self._odbc.cursor()
        try:
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            cur.close()
            self._odbc.rollback()
        return _rows_to_table(rows, names)

    def _arrow_options(self) -> dict[str, Any]:
        # Unbounded text columns (TEXT, VARCHAR without a length) would get transfer buffers
        # of the driver's maximum (8 KB on psqlODBC, 64 KB on MariaDB) per row and column;
        # the contract bounds them. Timestamps are fetched to the microsecond (the SQLite
        # driver otherwise reports whole seconds).
        longest = max([c.field.size for c in self.expected if pa.types.is_string(c.type)] + [16])
        return {"max_text_size": max(256, 4 * longest), "fetch_concurrently": False,
                "map_schema": _microsecond_timestamps}

    # ---- batches
    def _batch(self, run: _Run, raw: pa.Table) -> SourceBatch | None:
        """A SourceBatch from one page, or None when every row of it was delivered before."""
        if self.mode == "timestamp":
            assert self.key and self.timestamp
            key_col = raw.column(self._columns[self.key].name)
            ts_col = _to_timestamp(raw.column(self._columns[self.timestamp].name), self.dialect)
            last_ts = ts_col[-1].as_py()
            run.cursor = (self._ts_param(last_ts), key_col[-1].as_py())
            fresh = self._not_seen(run, key_col, ts_col)
            run.state = self._advance_ts(run.state, key_col, ts_col, last_ts)
            if fresh is not None:
                raw = raw.filter(fresh)
                if raw.num_rows == 0:
                    return None
        elif self.key:
            run.cursor = (raw.column(self._columns[self.key].name)[-1].as_py(),)
            run.state = {"mode": self.mode, "key": run.cursor[0]} if self.mode == "incrementing" else None
        first = run.rows + 1
        run.rows += raw.num_rows
        table, rejects = conform(raw, first, contract=self.contract, expected=self.expected, source=self._columns,
                                 key=self.key, timestamp=self.timestamp)
        seq = self._acks.add(run.state)
        position = {k: v for k, v in run.state.items() if k != "seen"} if run.state else {}
        position.update(mode=self.mode, rows=run.rows)
        numbers = np.arange(first, first + raw.num_rows)
        if rejects:  # the numbers of the rows that stayed in `table`
            numbers = numbers[~np.isin(numbers, [r.record for r in rejects])]
        return SourceBatch(table=table, rejects=rejects, record_numbers=numbers,
                           position=position, ack=self._ack_fn(seq), nack=self._nack_fn(seq))

    def _not_seen(self, run: _Run, key_col: pa.ChunkedArray, ts_us: pa.ChunkedArray) -> pa.Array | None:
        if not run.seen:
            return None
        tags = pc.binary_join_element_wise(pc.cast(key_col, pa.string()),
                                           pc.cast(pc.cast(ts_us, pa.int64()), pa.string()), "|")
        return pc.invert(pc.is_in(tags, value_set=pa.array(sorted(run.seen), pa.string())))

    def _advance_ts(self, state: dict[str, Any] | None, key_col: pa.ChunkedArray, ts_us: pa.ChunkedArray,
                    last_ts: datetime) -> dict[str, Any]:
        """The watermark after this batch: newest timestamp minus the lag (never backwards),
        and the keys delivered at or after `watermark - overlap` (the next run re-reads those)."""
        new_ts = last_ts - self.lag
        if state is not None:
            new_ts = max(new_ts, datetime.fromisoformat(state["ts"]))
        horizon = _micros(new_ts - self.overlap)
        seen = {k: us for k, us in (state or {}).get("seen", {}).items() if us >= horizon}
        us = pc.cast(ts_us, pa.int64())
        keep = pc.greater_equal(us, horizon)
        for k, t in zip(pc.filter(key_col, keep).to_pylist(), pc.filter(us, keep).to_pylist(), strict=True):
            seen[str(k)] = t
        return {"mode": "timestamp", "ts": new_ts.isoformat(), "seen": seen}

    # ---- acknowledgement
    def _ack_fn(self, seq: int) -> Callable[[], Any]:
        acks = self._acks

        async def ack() -> None:
            async with self._ack_lock:  # stored states must not overtake each other
                state = acks.ack(seq)
                if state is not None and self.watermarks is not None:
                    await asyncio.to_thread(self.watermarks.set, self.pipeline, self.name, state)
        return ack

    def _nack_fn(self, seq: int) -> Callable[[str], Any]:
        acks = self._acks

        async def nack(reason: str) -> None:
            acks.nacked = True
            log.warning("%s: batch %d not delivered (%s); the watermark stays where it is", self.name, seq, reason)
        return nack


# ------------------------------------------------------------------------------ Arrow helpers
def _microsecond_timestamps(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(pa.timestamp("us")) if pa.types.is_timestamp(f.type) and f.type.tz is None
                      else f for f in schema])


def _rows_to_table(rows: list[Any], names: list[str]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table({n: pa.array(list(c)) for n, c in zip(names, cols, strict=True)})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(str(value))


def _to_timestamp(col: pa.ChunkedArray, dialect: Dialect) -> pa.ChunkedArray:
    """Microsecond timestamps; SQLite's cut to the millisecond, the precision its text
    comparison (strftime %f) has, so the page cursor and the seen keys match what SQL sees."""
    ts = col.cast(pa.timestamp("us"))
    if dialect == Dialect.SQLITE:
        ts = pc.floor_temporal(ts, unit="millisecond")
    return ts


def _micros(value: datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return int((value - datetime(1970, 1, 1)) / timedelta(microseconds=1))



__all__ = ["READERS", "ContractColumn", "OdbcSource", "SchemaDriftError", "Watermarks", "build_source",
           "compare_columns", "contract_columns"]


def build_source(config: OdbcSourceConfig, context: BuildContext) -> OdbcSource:
    """The `odbc` source of the registry; the watermark store comes from the driver
    (`context.extras["watermarks"]`), as the state store is the gateway's."""
    return OdbcSource(config.connection, contract=context.contract, pipeline=context.pipeline, table=config.table,
                      query=config.query, mode=config.mode, key=config.key, timestamp=config.timestamp,
                      lag_s=config.lag_s, overlap_s=config.overlap_s,
                      batch_size=config.batch_size or context.batch_size,
                      watermarks=context.extras.get("watermarks"), shard=context.extras.get("shard"))
