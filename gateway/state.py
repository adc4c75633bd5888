"""The state store every gateway replica shares: kill switches now; the batch mode's
checkpoints and processed-file records later.

SQLAlchemy Core over SQLite (the default: beside gateway.yaml, or in the data directory
without one, gateway.settings.default_state_url) or PostgreSQL. Tables live
on the module's `metadata` and are created on first use, so a sibling module that defines
more tables on the same `metadata` (and is imported before the store is first used) gets
them created too. Identifiers are fixed in the table definitions; values always travel as
bound parameters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, create_engine, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from gateway.kill_switch import KILL_SWITCH_MODES, KillSwitch, KillSwitchMode, KillSwitchWatcher, kill_switch_from_row
from schemas.errors import ConfigError, StateStoreError
from schemas.safefiles import ensure_file

log = logging.getLogger(__name__)

metadata = MetaData()

kill_switch_table = Table(
    "kill_switch",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("mode", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("set_by", String(200), nullable=False, default=""),
    Column("set_at", DateTime(timezone=True), nullable=False),
)


def normalize_url(url: str | URL) -> URL:
    """Parse a state-store URL. Plain `postgresql://` / `postgres://` select psycopg 3
    (the driver the `postgres` extra installs) instead of SQLAlchemy's psycopg2 default."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://"):]
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(f"state store URL {text!r} is not a database URL: {exc}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _build_engine(url: URL) -> Engine:
    from gateway.extras import require_state

    require_state(url.render_as_string(hide_password=True))
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if _sqlite_in_memory(url):
            # One shared connection, or every thread would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif url.database and not url.database.startswith("file:"):
            path = Path(url.database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            ensure_file(path)  # SQLite would follow a link planted at the name, and create its target
    else:
        kwargs["pool_pre_ping"] = True  # survive a database restart without restarting us
    return create_engine(url, **kwargs)


class StateStore:
    def __init__(self, url: str | URL | None = None) -> None:
        """`url` None: SQLite in the data directory (gateway.settings), as without a config."""
        if url is None:
            from gateway.settings import default_state_url

            url = default_state_url(None)
        self.url = normalize_url(url)
        self.engine = _build_engine(self.url)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._made: set[str] = set()  # the tables of `metadata` when the store made its schema

    def __repr__(self) -> str:
        return f"StateStore({self.display_url!r})"

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- kill switches -----------------------------------------------------------------

    def get_kill_switch(self, pipeline: str) -> KillSwitch:
        stmt = select(kill_switch_table).where(kill_switch_table.c.pipeline == pipeline)
        with self._connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return kill_switch_from_row(row) if row is not None else KillSwitch(pipeline=pipeline)

    def set_kill_switch(self, pipeline: str, mode: str, reason: str = "", set_by: str = "", *,
                        on_change: Callable[[Connection, KillSwitch, KillSwitch], None] | None = None) -> KillSwitch:
        """Sets a pipeline's switch. `on_change(conn, old, new)` runs in the same
        transaction as the write (the audit log records the flip: both commit, or neither)."""
        if not pipeline:
            raise ConfigError("kill switch needs a pipeline name")
        try:
            switch = KillSwitch(pipeline=pipeline, mode=mode, reason=reason, set_by=set_by,  # type: ignore[arg-type]
                                set_at=datetime.now(UTC))
        except ValidationError:
            raise ConfigError(
                f"kill switch mode {mode!r} is not one of {', '.join(KILL_SWITCH_MODES)}"
            ) from None
        values = switch.model_dump()
        with self._connect() as conn, conn.begin():
            before = None
            if on_change is not None:
                row = conn.execute(select(kill_switch_table).where(kill_switch_table.c.pipeline == pipeline)
                                   ).mappings().first()
                before = kill_switch_from_row(row) if row is not None else KillSwitch(pipeline=pipeline)
            upsert(conn, kill_switch_table, values, keys=("pipeline",))
            if on_change is not None and before is not None:
                on_change(conn, before, switch)
        log.warning("kill switch %s -> %s by %s: %s", pipeline, mode, set_by or "?", reason)
        return switch

    def list_kill_switches(self) -> list[KillSwitch]:
        stmt = select(kill_switch_table).order_by(kill_switch_table.c.pipeline)
        with self._connect() as conn:
            return [kill_switch_from_row(row) for row in conn.execute(stmt).mappings()]

    # ---- plumbing ----------------------------------------------------------------------

    def create_missing_tables(self) -> None:
        """Creates the tables defined on `metadata` since the store made its schema (a module
        imported later: the console's, the batch runs' in a `lgw serve` store); nothing to
        do, and no round trip, when there are none."""
        with self._ready_lock:
            if self._ready and self._made.issuperset(metadata.tables):
                return
            self._ready = False
        self._ensure_schema()

    def _connect(self) -> _StoreConnection:
        self._ensure_schema()
        return _StoreConnection(self)

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            tables = set(metadata.tables)  # before: one defined meanwhile is made next time
            try:
                try:
                    metadata.create_all(self.engine, checkfirst=True)
                except (IntegrityError, ProgrammingError, OperationalError):
                    # Another process created a table between our check and our CREATE
                    # (PostgreSQL reports a duplicate in pg_type, SQLite "table ... already
                    # exists"); the second look sees it.
                    metadata.create_all(self.engine, checkfirst=True)
            except SQLAlchemyError as exc:
                raise StateStoreError(f"state store {self.display_url}: {_first_line(exc)}") from exc
            self._made = tables
            self._ready = True


class _StoreConnection:
    """A connection whose database errors surface as `StateStoreError` (an infrastructure
    error naming the store), not as driver exceptions."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        try:
            self._conn = self._store.engine.connect()
        except SQLAlchemyError as exc:
            raise StateStoreError(f"state store {self._store.display_url}: {_first_line(exc)}") from exc
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self._conn is not None
        self._conn.close()
        if isinstance(exc, SQLAlchemyError):
            raise StateStoreError(f"state store {self._store.display_url}: {_first_line(exc)}") from exc


def upsert(conn: Connection, table: Table, values: dict[str, Any], *, keys: tuple[str, ...]) -> None:
    """Inserts the row `values`, or updates the row with the same `keys`."""
    changes = {k: v for k, v in values.items() if k not in keys}
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        # imported here: the PostgreSQL dialect costs 30 ms of every CLI start-up that never upserts
        from sqlalchemy.dialects import postgresql, sqlite

        stmt = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table).values(**values)
        conn.execute(stmt.on_conflict_do_update(index_elements=[table.c[k] for k in keys], set_=changes))
        return
    # Other databases: update, insert if nothing was there (a racing insert fails loudly).
    match = [table.c[k] == values[k] for k in keys]
    if conn.execute(table.update().where(*match).values(**changes)).rowcount == 0:
        conn.execute(table.insert().values(**values))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = [
    "KILL_SWITCH_MODES", "KillSwitch", "KillSwitchMode", "KillSwitchWatcher", "StateStore",
    "StateStoreError", "kill_switch_table", "metadata", "normalize_url", "upsert",
]
