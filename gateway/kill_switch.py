"""A pipeline's kill switch: its value, a watcher that reads it at most once per TTL, and
where a command reads it from.

The switches live in the state store (`gateway.state`, SQLAlchemy over SQLite or
PostgreSQL), which sets them. A command that only reads its own pipeline's switch and has
a SQLite file as its store (the default) reads it with the standard library's sqlite3
instead, read-only (`SqliteKillSwitches`): importing SQLAlchemy took 0.13 s, a quarter of
`lgw score`'s start-up, for one SELECT. A store file or table that is not there yet holds
no switch: the pipeline's is off, and nothing is created to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict

from schemas.errors import InfrastructureError, StateStoreError

log = logging.getLogger("gateway.state")  # the store's: the watcher's lines kept their logger

KillSwitchMode = Literal["off", "force_fallback", "pause"]
KILL_SWITCH_MODES: tuple[str, ...] = get_args(KillSwitchMode)


class KillSwitch(BaseModel):
    """`off`: score normally. `force_fallback`: do not call the model, score by rules.
    `pause`: take no new work (sources stop reading; nothing is dropped)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str
    mode: KillSwitchMode = "off"
    reason: str = ""
    set_by: str = ""
    set_at: datetime | None = None  # None: never set


def kill_switch_from_row(row: Any) -> KillSwitch:
    """A `kill_switch` row as the store holds it (its `set_at` a datetime or, from sqlite3,
    SQLAlchemy's text form of one)."""
    set_at = row["set_at"]
    if isinstance(set_at, str):
        set_at = datetime.fromisoformat(set_at)
    if set_at is not None:
        # SQLite keeps no zone (we always write UTC); PostgreSQL answers in the session's zone.
        set_at = set_at.replace(tzinfo=UTC) if set_at.tzinfo is None else set_at.astimezone(UTC)
    mode = row["mode"]
    if mode not in KILL_SWITCH_MODES:
        raise StateStoreError(f"kill switch {row['pipeline']!r} holds unknown mode {mode!r}")
    return KillSwitch(pipeline=row["pipeline"], mode=mode, reason=row["reason"] or "",
                      set_by=row["set_by"] or "", set_at=set_at)


class KillSwitches(Protocol):
    """Where a pipeline's switch is read from: the state store, or `SqliteKillSwitches`."""

    def get_kill_switch(self, pipeline: str) -> KillSwitch: ...


class SqliteKillSwitches:
    """The switches of a SQLite state store file, read with sqlite3, never written."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SqliteKillSwitches({self.path!r})"

    def get_kill_switch(self, pipeline: str) -> KillSwitch:
        if not os.path.exists(self.path):
            return KillSwitch(pipeline=pipeline)
        try:
            # mode=ro: a read opens what is there and never creates the file
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)) as conn:
                conn.row_factory = sqlite3.Row
                row = conn.execute("SELECT pipeline, mode, reason, set_by, set_at FROM kill_switch "
                                   "WHERE pipeline = ?", (pipeline,)).fetchone()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):  # a store no switch was ever set in
                return KillSwitch(pipeline=pipeline)
            raise StateStoreError(f"state store sqlite:///{self.path}: {exc}") from exc
        return kill_switch_from_row(row) if row is not None else KillSwitch(pipeline=pipeline)


# a SQLite file as SQLAlchemy names it: no query string, no in-memory or URI database, no
# %-escapes (anything else is read through the state store itself)
_SQLITE_FILE = re.compile(r"sqlite(?:\+pysqlite|\+aiosqlite)?:///(?P<path>[^?%]+)")


def kill_switches_at(url: str) -> KillSwitches:
    """What reads the switches of the state store at `url` (its configured URL)."""
    found = _SQLITE_FILE.fullmatch(url)
    path = found["path"] if found else ""
    if path and path != ":memory:" and not path.startswith("file:"):
        return SqliteKillSwitches(os.path.expanduser(path))
    from gateway.state import StateStore

    return StateStore(url)


class KillSwitchWatcher:
    """A pipeline's kill switch, read from the shared store at most once per `ttl_s`.

    Cheap enough to call for every batch. A flip made by any replica takes effect here
    within `ttl_s`. If the store cannot be reached the last value read stays in force (and
    is re-checked after another `ttl_s`); with no value read yet, the error propagates,
    because guessing "off" would silently undo an operator's switch.
    """

    def __init__(
        self, store: KillSwitches, pipeline: str, ttl_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: KillSwitch | None = None
        self._expires = float("-inf")

    def current(self) -> KillSwitch:
        with self._lock:
            if self._value is not None and self._clock() < self._expires:
                return self._value
            return self._refresh()

    async def acurrent(self) -> KillSwitch:
        """`current()` for event loops: a refresh runs in a worker thread."""
        value = self._value
        if value is not None and self._clock() < self._expires:
            return value
        return await asyncio.to_thread(self.current)

    def invalidate(self) -> None:
        with self._lock:
            self._expires = float("-inf")

    def _refresh(self) -> KillSwitch:
        try:
            value = self.store.get_kill_switch(self.pipeline)
        except InfrastructureError as exc:
            self._expires = self._clock() + self.ttl_s
            if self._value is None:
                raise
            log.warning("kill switch %s: keeping %s, store unreachable: %s", self.pipeline, self._value.mode, exc)
            return self._value
        if self._value is not None and value.mode != self._value.mode:
            log.warning("kill switch %s: %s -> %s (%s)", self.pipeline, self._value.mode, value.mode, value.reason)
        self._value = value
        self._expires = self._clock() + self.ttl_s
        return value


__all__ = ["KILL_SWITCH_MODES", "KillSwitch", "KillSwitchMode", "KillSwitchWatcher", "KillSwitches",
           "SqliteKillSwitches", "kill_switch_from_row", "kill_switches_at"]
