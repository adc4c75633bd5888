"""The append-only audit log: which model or rule decided every record, and what every
operator did (issue 13).

    log = open_audit(cfg)                       # None when `audit.enabled` is false
    log.append_decisions(table)                 # DECISION_SCHEMA; durable when it returns
    log.append_action(OperatorAction(actor=operator_identity(), action="review.decide", ...))
    log.verify()                                # VerifyReport: every problem, one line each
    log.prune(reason="retention")               # whole days older than retention_days

Decisions go to the configured store: `parquet` (files per day under `audit.path`) or
`table` (the state store's audit tables). Operator actions always go to the state store,
whatever the decision store is, so every replica can query them. Both are hash-chained
(gateway.governance.audit_model) and append-only (read-only files; database triggers).

A caller appends a scored batch before acknowledging it to its source: when
`append_decisions` returns, the batch is on disk (fsynced) or committed.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from gateway.governance.audit_model import (
    DECISION_SCHEMA,
    AuditSchemaError,
    AuditStoreError,
    OperatorAction,
    VerifyReport,
    conform,
)
from gateway.governance.identity import operator_identity

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.governance.audit_parquet import ParquetDecisions
    from gateway.governance.audit_sql import TableDecisions
    from gateway.state import StateStore


class AuditConfig(BaseModel):
    """`audit:` in gateway.yaml."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    store: Literal["parquet", "table"] = "parquet"
    # parquet: the folder of the day partitions. Unset: var/audit beside gateway.yaml, or
    # `audit` in the data directory without one (as the state store's SQLite file).
    path: str | None = None
    retention_days: int = Field(default=400, ge=1)
    # parquet: page compression. none writes a million decisions in about 0.4 s less CPU
    # than snappy (measured, bench/audit.py) for files about 1.7 times as large; the
    # unique columns (record ids, input hashes, scores) hardly compress anyway
    compression: Literal["none", "snappy", "lz4", "zstd"] = "none"


class AuditLog:
    """Decisions and operator actions of one process (one `writer`: its chains)."""

    def __init__(self, config: AuditConfig, state: StateStore, path: Path | None = None, *,
                 writer: str | None = None, owns_state: bool = False) -> None:
        from gateway.governance.audit_sql import ActionLog
        from gateway.governance.audit_tables import ensure_tables

        self.config = config
        self.state = state
        self.writer = writer_id(writer)
        self._owns_state = owns_state
        self._actions = ActionLog(state)
        self.decisions: ParquetDecisions | TableDecisions
        if config.store == "parquet":
            from gateway.governance.audit_parquet import ParquetDecisions

            if path is None:
                raise AuditStoreError("audit.store parquet needs a folder (audit.path)")
            if path.exists() and not path.is_dir():
                raise AuditStoreError(f"audit.path: {path} is not a folder")
            self.decisions = ParquetDecisions(path, self.writer, compression=config.compression)
        else:
            from gateway.governance.audit_sql import TableDecisions

            self.decisions = TableDecisions(state, self.writer)
        ensure_tables(state)
        self._store_key = str(path) if config.store == "parquet" else state.display_url

    def __repr__(self) -> str:
        return f"AuditLog(store={self.config.store!r}, writer={self.writer!r})"

    def close(self) -> None:
        if self._owns_state:
            self.state.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append_decisions(self, table: pa.Table) -> None:
        """Appends a scored batch (DECISION_SCHEMA; AuditSchemaError names what differs) in
        bulk: one file or one bulk insert per day it spans, chained, durable on return.
        Thread-safe; appends of one writer to one store are serialised across the
        process's AuditLogs (each extends the chain's head as the last one left it)."""
        if table.num_rows:
            table = conform(table)
            with _writer_lock(self._store_key, self.writer):
                self.decisions.append(table)

    def append_action(self, action: OperatorAction) -> None:
        self._actions.append(action)

    def actions(self, pipeline: str | None = None, action_prefix: str | None = None, *,
                target: str | None = None, limit: int | None = 100) -> list[OperatorAction]:
        """Operator actions, newest first."""
        return self._actions.actions(pipeline, action_prefix, target, limit)

    def decisions_for(self, record_id: str) -> pa.Table:
        """Every decision row of one record (a re-score or a review adds rows), oldest first."""
        return self.decisions.decisions_for(record_id)

    def heads(self) -> dict[str, str]:
        """The last digest of every decision chain (`day/writer`): copy them somewhere
        else (a ticket, another system) and a rewritten chain no longer matches them."""
        return self.decisions.heads()

    def verify(self, day: date | None = None) -> VerifyReport:
        """Walks every chain of `day` (None: every day kept) and the operator actions'
        chain, and checks the append-only triggers are in place."""
        from gateway.governance.audit_tables import missing_triggers

        report = self.decisions.verify(day).merge(self._actions.verify())
        report.problems += missing_triggers(self.state)
        return report

    def prune(self, now: datetime | None = None, *, reason: str, actor: str | None = None) -> list[date]:
        """Deletes the whole days older than `retention_days` before `now` and records
        that as the operator action `audit.prune` (its reason is required). Returns the
        days deleted."""
        now = now or datetime.now(UTC)
        before = now.astimezone(UTC).date() - timedelta(days=self.config.retention_days)
        action = OperatorAction(actor=operator_identity(actor), action="audit.prune", pipeline="",
                                target=self.config.store, new=before.isoformat(), reason=reason)
        old, gone = self.decisions.prune(before)
        # what went is named: the days, and the horizon before (table store)
        detail = f"{len(gone)} days" + (f" ({gone[0]}..{gone[-1]})" if gone else "")
        old_text = f"horizon {old} ({detail})" if old is not None else detail
        self._actions.append(action.model_copy(update={"old": old_text}))
        return gone


_LOCKS_GUARD = threading.Lock()
_WRITER_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def _writer_lock(store: str, writer: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault((store, writer), threading.Lock())


def writer_id(given: str | None = None) -> str:
    """A name for this process's chains, safe in a file name: `given` (a run id), or
    HOST-PID (two live processes never share one; a later one reusing it continues its
    chain). One writer id must not be used by two processes at once: their appends would
    race for the chain's head (the table store's key refuses the loser; a Parquet file is
    never overwritten, but the chain could fork)."""
    raw = given or f"{socket.gethostname()}-{os.getpid()}"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).lstrip(".")[:100]
    if not cleaned:
        raise AuditStoreError(f"audit writer id {raw!r}: expected letters, digits, '.', '_' or '-'")
    return cleaned


def audit_path(cfg: GatewayConfig) -> Path:
    """`audit.path` (relative to the config's folder), else var/audit beside gateway.yaml,
    else `audit` in the data directory (the embedded defaults live there)."""
    from gateway.settings import data_dir

    if cfg.audit.path:
        return cfg.resolve(cfg.audit.path).absolute()
    home = data_dir()
    if cfg.base_dir.absolute() == home:
        return home / "audit"
    return cfg.base_dir.absolute() / "var" / "audit"


def open_audit(cfg: GatewayConfig, *, writer: str | None = None, state: StateStore | None = None) -> AuditLog | None:
    """The audit log `cfg` configures, None when disabled. `state`: the state store the
    caller already has open (else one is opened on `cfg.state.url`, closed with the log)."""
    if not cfg.audit.enabled:
        return None
    from gateway.state import StateStore

    owns = state is None
    store = StateStore(cfg.state.url) if state is None else state
    try:
        return AuditLog(cfg.audit, store, audit_path(cfg), writer=writer, owns_state=owns)
    except BaseException:
        if owns:
            store.close()
        raise


__all__ = ["DECISION_SCHEMA", "AuditConfig", "AuditLog", "AuditSchemaError", "AuditStoreError", "OperatorAction",
           "VerifyReport", "audit_path", "open_audit", "writer_id"]
