"""Watermarks: how far a pipeline has read a source (an incrementing key, a timestamp and
the keys already seen near it), kept in the shared state store.

One row per (pipeline, source) with the watermark as JSON. A source writes it only from
its batch's ack, i.e. after the driver has made the batch's results durable, so a crash
re-reads at most the batches whose results were not yet acknowledged (and the sinks
upsert, so re-reading is harmless). The table lives on the state store's `metadata`
and is also created on first use here, because the store may have created its own
tables before this module was imported.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, String, Table, Text, select
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from gateway.state import StateStore, StateStoreError, metadata, upsert

watermark_table = Table(
    "watermarks",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("watermark", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class WatermarkStore:
    """get/set of a source's watermark (a JSON-able dict) in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WatermarkStore({self.store.display_url!r})"

    def get(self, pipeline: str, source: str) -> dict[str, Any] | None:
        """The stored watermark, or None before the first acknowledged batch."""
        t = watermark_table
        stmt = select(t.c.watermark).where(t.c.pipeline == pipeline, t.c.source == source)
        with self._errors():
            self._ensure_table()
            with self.store.engine.connect() as conn:
                text = conn.execute(stmt).scalar_one_or_none()
        if text is None:
            return None
        value = json.loads(text)
        if not isinstance(value, dict):
            raise StateStoreError(f"watermark of {pipeline}/{source} is not a JSON object: {text[:80]!r}")
        return value

    def set(self, pipeline: str, source: str, watermark: dict[str, Any]) -> None:
        """Stores the watermark in one transaction (insert or replace)."""
        values = {"pipeline": pipeline, "source": source, "updated_at": datetime.now(UTC),
                  "watermark": json.dumps(watermark, separators=(",", ":"), default=str)}
        with self._errors():
            self._ensure_table()
            with self.store.engine.begin() as conn:
                upsert(conn, watermark_table, values, keys=("pipeline", "source"))

    def delete(self, pipeline: str, source: str) -> None:
        """Forgets the watermark: the next run reads the source from the start."""
        t = watermark_table
        with self._errors():
            self._ensure_table()
            with self.store.engine.begin() as conn:
                conn.execute(t.delete().where(t.c.pipeline == pipeline, t.c.source == source))

    def _ensure_table(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                watermark_table.create(self.store.engine, checkfirst=True)
            except (IntegrityError, ProgrammingError):
                # Another replica created it between our check and our CREATE.
                watermark_table.create(self.store.engine, checkfirst=True)
            self._ready = True

    def _errors(self) -> _StoreErrors:
        return _StoreErrors(self.store)


class _StoreErrors:
    """Database errors surface as StateStoreError naming the store, not as driver errors."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, SQLAlchemyError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateStoreError(f"state store {self.store.display_url}: {first}") from exc


__all__ = ["WatermarkStore", "watermark_table"]
