"""The review queue's store (gateway.governance.review says what review is): items in a
table of the shared state store (gateway.state: SQLite or PostgreSQL, created on first
use, values always bound parameters), filled one bulk insert per batch, decided
atomically (`UPDATE ... WHERE status = 'pending'`: of two reviewers deciding one item at
once exactly one wins).

Apart from the review's configuration and selection, which every pipeline loads with its
config: SQLAlchemy is imported only where a queue is used (it cost 0.13 s of every start-up).
"""

from __future__ import annotations

import builtins
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    select,
)

from gateway.governance.identity import operator_identity
from gateway.governance.review import (
    APPROVED,
    OVERRIDDEN,
    PENDING,
    PROVENANCE_COLUMNS,
    REVIEW_COLUMN,
    REVIEW_STATUSES,
    ReviewError,
    cap_mask,
)
from gateway.outputs import OutputSpec
from gateway.state import StateStore, metadata
from schemas.jsonl import lines

log = logging.getLogger("lgw.review")

_NOT_DATA = frozenset({*PROVENANCE_COLUMNS, REVIEW_COLUMN, "source_record"})  # what an item keeps apart from its data

review_item_table = Table(
    "review_item",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("run", String(240), nullable=False, default=""),
    Column("record_id", String(600), nullable=False),
    Column("source_record", BigInteger),
    Column("status", String(16), nullable=False),
    Column("why", String(32), nullable=False),
    Column("score_name", String(200)),
    Column("score", Float),
    Column("scored_by", String(32)),
    Column("model_name", String(200)),
    Column("model_version", String(100)),
    Column("data", Text, nullable=False),  # the record as given (pii masked by the caller), JSON
    Column("provenance", Text, nullable=False),  # scored_by, model, contract, rule ... as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(300)),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision", String(16)),  # approve | override
    Column("override_value", Text),  # JSON
    Column("decision_reason", Text),
    Index("ix_review_item_pipeline_status", "pipeline", "status"),
)


@dataclass(frozen=True)
class ReviewItem:
    id: int
    pipeline: str
    run: str
    record_id: str
    source_record: int | None
    status: str
    why: str
    score_name: str | None
    score: float | None
    scored_by: str | None
    model_name: str | None
    model_version: str | None
    data: dict[str, Any]
    provenance: dict[str, Any]
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision: str | None = None
    override_value: Any = None
    decision_reason: str | None = None
    data_text: str = "{}"  # `data` exactly as stored (decimals keep their digits)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "pipeline": self.pipeline, "run": self.run, "record_id": self.record_id,
            "source_record": self.source_record, "status": self.status, "why": self.why,
            "score_name": self.score_name, "score": self.score, "scored_by": self.scored_by,
            "model_name": self.model_name, "model_version": self.model_version,
            "created_at": _iso(self.created_at), "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at), "decision": self.decision,
            "override_value": self.override_value, "decision_reason": self.decision_reason,
            "data": self.data, "provenance": self.provenance,
        }


@dataclass(frozen=True)
class ReviewDecision:
    """A decided item: what the correction record says."""

    item: ReviewItem
    approved: bool
    final_score: Any  # the original score on approve, the override value on override
    reason: str
    actor: str
    decided_at: datetime

    @property
    def status(self) -> str:
        return APPROVED if self.approved else OVERRIDDEN

    def to_json(self) -> dict[str, Any]:
        return {"id": self.item.id, "pipeline": self.item.pipeline, "record_id": self.item.record_id,
                "status": self.status, "score_name": self.item.score_name, "original_score": self.item.score,
                "final_score": self.final_score, "reason": self.reason, "decided_by": self.actor,
                "decided_at": _iso(self.decided_at)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no zone (we always write UTC); PostgreSQL answers in the session's zone
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_column(table: pa.Table, columns: Sequence[str]) -> list[str]:
    """One JSON object per row of `table.select(columns)`, built column-wise."""
    if not columns:
        return ["{}"] * table.num_rows
    return [str(s) for s in lines(table.select(list(columns))).to_pylist()]


def _numbers(table: pa.Table, name: str | None) -> list[float | None]:
    if name is None or name not in table.column_names:
        return [None] * table.num_rows
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_decimal(col.type)):
        return [None] * table.num_rows
    return [None if v is None or not math.isfinite(v) else float(v)
            for v in pc.cast(col, pa.float64()).to_pylist()]


def _strings(table: pa.Table, name: str) -> list[str | None]:
    if name not in table.column_names:
        return [None] * table.num_rows
    return [None if v is None else str(v) for v in table.column(name).to_pylist()]


class ReviewQueue:
    """Review items in the shared state store (table `review_item`)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.create_missing_tables()  # this module may come after the store made its schema

    # ---- filling
    def room(self, pipeline: str, max_pending: int) -> int:
        """How many more items `pipeline` may queue under `max_pending`."""
        return max(0, max_pending - self.counts(pipeline).get(pipeline, {}).get(PENDING, 0))

    def admit(self, pipeline: str, mask: pa.Array | np.ndarray, max_pending: int) -> pa.Array:
        """The mask trimmed to what still fits the pipeline's queue (records past it pass
        unreviewed, with a warning: the queue is a bounded resource, not a dam)."""
        room = self.room(pipeline, max_pending)
        capped = cap_mask(mask, room)
        wanted = int(np.asarray(mask, dtype=bool).sum()) if isinstance(mask, np.ndarray) else \
            int(pc.sum(mask.fill_null(False).cast(pa.int64())).as_py() or 0)
        if wanted > room:
            log.warning("review queue of %s is full (max_pending %d): %d records pass unreviewed",
                        pipeline, max_pending, wanted - room)
        return capped

    def enqueue(self, pipeline: str, run: str, table: pa.Table, why: pa.Array | Sequence[str | None], *,
                score: str | None = None, record_ids: Sequence[str] | None = None) -> int:
        """Queues every row of `table` (scored records, pii already masked) as pending, with
        `why` per row; one multi-row insert. `score`: the output judged (stored apart from
        the record's data; the correction replaces it). `record_ids`: what identifies each
        record downstream (default: its output's lgw-id, "<pipeline>/<source_record>").
        Returns the number queued."""
        n = table.num_rows
        if n == 0:
            return 0
        whys = why.to_pylist() if isinstance(why, pa.Array | pa.ChunkedArray) else list(why)
        if len(whys) != n:
            raise ValueError(f"enqueue: {len(whys)} reasons for {n} records")
        if record_ids is not None and len(record_ids) != n:
            raise ValueError(f"enqueue: {len(record_ids)} record ids for {n} records")
        data_cols = [c for c in table.column_names if c not in _NOT_DATA and c != score]
        prov_cols = [c for c in PROVENANCE_COLUMNS if c in table.column_names]
        data = _json_column(table, data_cols)
        provenance = _json_column(table, prov_cols)
        numbers = (table.column("source_record").to_pylist() if "source_record" in table.column_names
                   else [None] * n)
        ids = list(record_ids) if record_ids is not None else [
            f"{pipeline}/{num}" if num is not None else f"{pipeline}/{run}/{i}" for i, num in enumerate(numbers)]
        scores = _numbers(table, score)
        scored_by, model_name, model_version = (_strings(table, c) for c in ("scored_by", "model_name",
                                                                                "model_version"))
        now = datetime.now(UTC)
        rows = [{"pipeline": pipeline, "run": run, "record_id": ids[i], "source_record": numbers[i],
                 "status": PENDING, "why": whys[i] or "", "score_name": score, "score": scores[i],
                 "scored_by": scored_by[i], "model_name": model_name[i], "model_version": model_version[i],
                 "data": data[i], "provenance": provenance[i], "created_at": now} for i in range(n)]
        with self.store._connect() as conn, conn.begin():
            conn.execute(review_item_table.insert(), rows)  # executemany: one round of bound parameters
        return n

    # ---- reading
    def get(self, item_id: int) -> ReviewItem:
        stmt = select(review_item_table).where(review_item_table.c.id == int(item_id))
        with self.store._connect() as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            raise ReviewError(f"no review item {item_id}")
        return _item(row)

    def list(self, pipeline: str | None = None, status: str | None = PENDING, limit: int = 100
             ) -> builtins.list[ReviewItem]:
        """Items oldest first; `status` None or "all": every status."""
        t = review_item_table
        stmt = select(t).order_by(t.c.id).limit(max(1, int(limit)))
        if pipeline is not None:
            stmt = stmt.where(t.c.pipeline == pipeline)
        if status not in (None, "all"):
            if status not in REVIEW_STATUSES:
                raise ReviewError(f"review status {status!r} is not one of {', '.join(REVIEW_STATUSES)}, all")
            stmt = stmt.where(t.c.status == status)
        with self.store._connect() as conn:
            return [_item(row) for row in conn.execute(stmt).mappings()]

    def counts(self, pipeline: str | None = None) -> dict[str, dict[str, int]]:
        """{pipeline: {status: items}}."""
        t = review_item_table
        stmt = select(t.c.pipeline, t.c.status, func.count()).group_by(t.c.pipeline, t.c.status)
        if pipeline is not None:
            stmt = stmt.where(t.c.pipeline == pipeline)
        out: dict[str, dict[str, int]] = {}
        with self.store._connect() as conn:
            for name, status, count in conn.execute(stmt):
                out.setdefault(name, {})[status] = int(count)
        return out

    # ---- deciding
    def decide(self, item_id: int, *, approve: bool, override: float | str | None = None, reason: str,
               actor: str | None = None, spec: OutputSpec | None = None,
               on_decided: Callable[[ReviewDecision], None] | None = None) -> ReviewDecision:
        """Approves the item's score or overrides it; `reason` is required. Atomic: of two
        reviewers deciding one item, one wins and the other gets a ReviewError. `spec`: the
        judged output's spec, to check an override against (type, min, max). `actor`:
        default the authenticated local user. `on_decided` is called with the decision
        once it is stored (the audit log hooks in here)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ReviewError("a decision needs a reason (--reason TEXT): why the score stands or is replaced")
        if approve and override is not None:
            raise ReviewError("approve or override, not both")
        if not approve and override is None:
            raise ReviewError("a decision either approves the score or overrides it with a value")
        value: Any = None
        if not approve:
            value = _override_value(override, spec)
        who = operator_identity(actor)
        now = datetime.now(UTC)
        t = review_item_table
        stmt = (t.update().where(t.c.id == int(item_id), t.c.status == PENDING)
                .values(status=APPROVED if approve else OVERRIDDEN, decided_by=who, decided_at=now,
                        decision="approve" if approve else "override",
                        override_value=None if approve else json.dumps(value), decision_reason=reason.strip()))
        with self.store._connect() as conn, conn.begin():
            done = conn.execute(stmt).rowcount
        if done != 1:
            current = self.get(item_id)  # ReviewError when there is no such item
            raise ReviewError(f"review item {item_id} is already {current.status} (by {current.decided_by} at "
                              f"{_iso(current.decided_at)}); a decision is final")
        item = self.get(item_id)
        decision = ReviewDecision(item, approve, item.score if approve else value, reason.strip(), who, now)
        log.warning("review item %s of %s %s by %s: %s", item_id, item.pipeline, decision.status, who,
                    reason.strip())
        if on_decided is not None:
            on_decided(decision)
        return decision


    def decision(self, item_id: int) -> ReviewDecision:
        """The decision taken on a decided item (to publish its correction again)."""
        item = self.get(item_id)
        if item.status == PENDING or item.decided_at is None:
            raise ReviewError(f"review item {item_id} is still pending: nothing decided to publish")
        approved = item.status == APPROVED
        return ReviewDecision(item, approved, item.score if approved else item.override_value,
                              item.decision_reason or "", item.decided_by or "", item.decided_at)


def _override_value(override: float | str | None, spec: OutputSpec | None) -> Any:
    value: Any = override
    if spec is not None:
        if isinstance(value, str) and spec.type in ("float", "int"):
            try:
                value = float(value)
            except ValueError:
                raise ReviewError(f"override {override!r}: {spec.name} must be a number") from None
        if isinstance(value, str) and spec.type == "bool" and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        try:
            return spec.coerce(value)
        except ValueError as exc:
            raise ReviewError(f"override: {exc}") from None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        value = number
    if isinstance(value, float) and not math.isfinite(value):
        raise ReviewError(f"override {override!r} is not a finite number")
    return value


def _item(row: Any) -> ReviewItem:
    created = _utc(row["created_at"])
    assert created is not None
    return ReviewItem(
        id=int(row["id"]), pipeline=row["pipeline"], run=row["run"] or "", record_id=row["record_id"],
        source_record=row["source_record"], status=row["status"], why=row["why"], score_name=row["score_name"],
        score=row["score"], scored_by=row["scored_by"], model_name=row["model_name"],
        model_version=row["model_version"], data=json.loads(row["data"]), provenance=json.loads(row["provenance"]),
        created_at=created, decided_by=row["decided_by"], decided_at=_utc(row["decided_at"]),
        decision=row["decision"],
        override_value=json.loads(row["override_value"]) if row["override_value"] is not None else None,
        decision_reason=row["decision_reason"], data_text=row["data"])


__all__ = ["ReviewDecision", "ReviewItem", "ReviewQueue", "review_item_table"]
