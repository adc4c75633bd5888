"""Governance of one run or one streaming window, beside the driver that moves the data.

Per batch the driver hands over what it scored (`observe`): the records as read, the
records as written, the rejects. From them come the audit trail's decision records
(written durably with the outputs, before the source is acknowledged: `write`), the
drift and quality counters (gateway.governance.monitor), the review items (records in
the uncertainty band or marked high-risk), and, at the end, the manifest's sections:
`quality` (with its one-line verdict), `drift`, `pii`, `timeline`, `review`, `examples`
(masked), and the breaches of the pipeline's thresholds with the action taken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.slices import CORES
from gateway.governance.decisions import decision_table, fingerprints, run_record_ids, value_rows
from gateway.governance.monitor import DriftConfig, RunMonitor, verdict
from gateway.governance.profile import Profile
from gateway.pipeline import Pipeline
from schemas.stream import Reject

log = logging.getLogger("lgw.governance")

EXAMPLES = 5  # masked examples of rejects and records a report shows
# a batch this large has its decision records made as soon as it is scored (a batch run's
# chunk: 3 ms of work a thousand records); a smaller one in its durable step
AHEAD_ROWS = 10_000
DRIFT_ACTOR = "lgw:drift-monitor"  # who set the kill switch when a threshold did


class DecisionLog(Protocol):
    def append_decisions(self, table: pa.Table) -> None: ...


@dataclass
class Observed:
    """What one batch leaves for the durable step: its decision records, the records it
    queues for review; `pending` the work that counts it in the run's figures, done on the
    durable step's thread (its decision records were made beforehand, beside the scoring
    of the batches after it: `RunGovernance.observe`)."""

    pending: Any = None  # () -> Observed: the batch's figures counted (its records made beforehand)
    committed: Any = None  # a stream's: the future of the group commit its audit records are in
    decisions: pa.Table | None = None
    review: pa.Table | None = None  # the records marked `review: pending`, as written (pii masked)
    review_why: pa.Array | None = None  # why each is (band, rule, drift)
    review_ids: list[str] | None = None  # what names each downstream (a stream's message id)


@dataclass
class RunGovernance:
    """Build per run (batch) or per pipeline (stream); `observe` per batch."""

    pipeline: Pipeline
    run: str
    source: str
    key: bytes
    audit: DecisionLog | None = None
    monitor: RunMonitor | None = None
    drift: DriftConfig | None = None
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"rejects": [], "records": []})
    store: Any = None  # gateway.state.StateStore: where an action (the kill switch) is taken
    actions: list[dict[str, Any]] = field(default_factory=list)  # taken in this run: {signal, action, at}
    review_all: bool = False  # a breach's action `review`: the records from here on go to review
    # a stream's: called with a full window's figures once judged (then a new window begins);
    # None: a batch run, judged as a whole at its end
    on_window: Any = None
    queue: Any = None  # gateway.governance.review_queue.ReviewQueue: where marked records are queued
    # a stream's: audit records are committed in groups (what arrives while one group is
    # written goes in the next), and a micro-batch is acknowledged once its group is durable;
    # a batch run's are appended with each batch (a batch is tens of thousands of records)
    group_commit: bool = False
    _group: list[tuple[pa.Table, asyncio.Future[None]]] = field(default_factory=list)
    _committing: bool = False
    _committer: asyncio.Future[None] | None = None
    review_run: str = ""  # the run the review items name (a batch run's output stem: its corrections' name)
    queued: int = 0  # records this run put on the review queue
    # the pipeline's count of records marked for review (`Pipeline.review_marked`) that the
    # queue has taken in: what is marked beyond it is in flight, and takes room all the same
    review_accounted: int = 0
    pending: int | None = None  # the pipeline's items waiting for a decision when the run ended

    @classmethod
    def build(cls, pipeline: Pipeline, *, run: str, source: str, audit: DecisionLog | None,
              drift: DriftConfig | None, reference: Profile | None, key: bytes | None = None,
              monitor: bool = True) -> RunGovernance:
        """`monitor` False: the audit trail only (a stream without `drift:` has no window to report)."""
        from gateway.governance.pii import pii_key

        figures = None if not monitor else RunMonitor(
            reference, outputs=list(pipeline.outputs), features=pipeline.features.names,
            segments=drift.segments if drift else (), decision_threshold=drift.decision_threshold if drift else None,
            pii=pipeline.pii.declared)
        return cls(pipeline, run, source, key if key is not None else pii_key(), audit, figures, drift)

    def attach_review(self, store: Any, run: str) -> None:
        """Queue the records the pipeline marks for review (its `review:`, or a drift
        breach's action `review`) in `store`, naming them by `run`."""
        if self.pipeline.review is None and (self.drift is None or self.drift.action != "review"):
            return
        from gateway.governance.review_queue import ReviewQueue

        self.queue = ReviewQueue(store)
        self.review_run = run
        self.review_accounted = self.pipeline.review_marked
        self.pipeline.queued_for_review(self.queue.room(self.pipeline.name, self.pipeline.review_limit),
                                        self.review_accounted)

    # ------------------------------------------------------------------ per batch
    def observe(self, records_in: int, inputs: pa.Table, raw: np.ndarray | None, scored: pa.Table,
                rows: np.ndarray, rejects: Sequence[Reject], *, record_ids: pa.Array | None = None,
                prints: pa.Array | None = None, features: np.ndarray | None = None) -> Observed:
        """A batch of `records_in` records. `inputs`: those that decoded, as read (with
        `source_record`); `raw`: their bytes
        (rows as `inputs`), None where the source has none; `scored`: what is written
        (pii as the policy leaves it), `rows` its row in `inputs`. The breaker's state is
        taken now, and what only depends on the batch (its records' fingerprints and
        decision records, its drift features) begins now, on a thread of its own, beside
        the next batch's scoring; what moves the run's figures on is done by `write` (the
        batch's durable step, in order), so a checkpoint holds exactly the batches before it.
        `features`: the feature rows the model was given, one per row of `inputs`, where the
        caller has them (else they are made again for the drift monitor)."""
        pipeline = self.pipeline
        breaker = pipeline.model.breaker.snapshot()["state"] if pipeline.model is not None else None
        shadow = [pipeline.stats.shadow_compared, pipeline.stats.shadow_agreed]
        prepare = functools.partial(self._prepare, inputs, raw, scored, rows, record_ids, prints, breaker, features)
        # a stream's micro-batch is made in its durable step: no thread hop
        made = _preparing().submit(prepare) if scored.num_rows >= AHEAD_ROWS else None
        return Observed(pending=lambda: self._observe(records_in, inputs, scored, rejects, record_ids, breaker,
                                                      shadow, *(made.result() if made else prepare())))

    def _prepare(self, inputs: pa.Table, raw: np.ndarray | None, scored: pa.Table, rows: np.ndarray,
                 record_ids: pa.Array | None, prints: pa.Array | None, breaker: str | None,
                 given: np.ndarray | None = None) -> tuple[np.ndarray | None, pa.Table | None]:
        """(the drift features of the scored records, their decision records): the batch's
        own, nothing of the run's state changed."""
        pipeline = self.pipeline
        taken = np.asarray(rows, dtype=np.int64)
        features = None
        if self.monitor is not None and scored.num_rows and pipeline.features.names and not (
                pipeline.features.fields_used & set(pipeline.pii.fields) and inputs is scored):
            every = _every_row(taken, inputs.num_rows)
            if given is not None and len(given) == inputs.num_rows:
                features = given if every else given[taken]
            else:
                used = inputs.select([c for c in inputs.column_names if c in pipeline.features.fields_used])
                features = pipeline.features.matrix(used if every else used.take(pa.array(taken)))
        if self.audit is None or scored.num_rows == 0:
            return features, None
        if prints is not None:
            pass
        elif raw is not None:
            prints = fingerprints(raw if _every_row(taken, len(raw)) else raw[taken], self.key)
        else:
            matrix, lengths = value_rows(inputs.drop_columns(["source_record"]) if "source_record" in
                                         inputs.column_names else inputs)
            prints = fingerprints(matrix[taken], self.key, lengths[taken])
        return features, decision_table(pipeline, scored, run=self.run, source=self.source, fingerprint=prints,
                                        record_ids=record_ids, breaker_state=breaker)

    def _observe(self, records_in: int, inputs: pa.Table, scored: pa.Table, rejects: Sequence[Reject],
                 record_ids: pa.Array | None, breaker: str | None, shadow: list[int],
                 features: np.ndarray | None, decisions: pa.Table | None) -> Observed:
        if self.monitor is not None:
            self.monitor.observe(records_in, inputs, scored, features, rejects, breaker=breaker)
            self.monitor.state["shadow"] = shadow
        self._keep_examples(scored, rejects)
        observed = self._review(scored, record_ids)
        observed.decisions = decisions
        return observed

    def _review(self, scored: pa.Table, record_ids: pa.Array | None) -> Observed:
        """The records the pipeline marked for review, to queue with the batch."""
        if self.queue is None or "review" not in scored.column_names or scored.num_rows == 0:
            return Observed()
        from gateway.governance.review import review_reasons

        pending = pc.equal(scored.column("review"), "pending").fill_null(False)
        if not pc.any(pending).as_py():
            return Observed()
        table = scored.filter(pending)
        cfg = self.pipeline.review
        why = review_reasons(table, cfg) if cfg is not None else pa.nulls(table.num_rows, pa.string())
        if self.pipeline.review_all:
            why = pc.fill_null(why, "drift")
        if record_ids is not None:
            ids = record_ids.filter(pending).to_pylist()
        else:  # a batch run's record: named as its audit records name it, RUN:RECORD
            ids = run_record_ids(self.run, table.column("source_record")).to_pylist()
        return Observed(review=table, review_why=why, review_ids=ids)

    async def write(self, observed: Observed) -> None:
        """Durable before the batch is acknowledged (the caller's order; a stream's audit
        records: see `durable`); then the thresholds are judged on what the run has seen
        so far, and a breach's action taken."""
        await asyncio.to_thread(self._settle, observed)
        if self.group_commit and observed.decisions is not None and observed.decisions.num_rows:
            observed.committed = self._commit_in_group(observed.decisions)
        await self.judge()
        if self.on_window is not None:
            window = self.close_window()
            if window is not None:
                self.on_window(window)

    def _settle(self, observed: Observed) -> None:
        """The batch counted, its decision records appended, its review items queued."""
        if observed.pending is not None:
            done = observed.pending()
            observed.pending = None
            observed.decisions, observed.review = done.decisions, done.review
            observed.review_why, observed.review_ids = done.review_why, done.review_ids
        if self.audit is not None and observed.decisions is not None and observed.decisions.num_rows \
                and not self.group_commit:
            self.audit.append_decisions(observed.decisions)
        if self.queue is not None and observed.review is not None:
            self._enqueue(observed)

    def _commit_in_group(self, decisions: pa.Table) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.append((decisions, done))
        if not self._committing:
            self._committing = True
            self._committer = asyncio.ensure_future(self._commit_groups())
        return done

    async def _commit_groups(self) -> None:
        """Appends what waits as one batch of the audit log, again while more arrived."""
        assert self.audit is not None
        try:
            while self._group:
                group, self._group = self._group, []
                try:
                    tables = [t for t, _ in group]
                    await asyncio.to_thread(self.audit.append_decisions,
                                            tables[0] if len(tables) == 1 else pa.concat_tables(tables))
                except Exception as exc:  # each waiting batch is nacked and comes again
                    for _, done in group:
                        done.set_exception(exc)
                else:
                    for _, done in group:
                        done.set_result(None)
        finally:
            self._committing = False

    async def durable(self, observed: Observed) -> None:
        """A stream's micro-batch: returns once its audit records are committed."""
        if observed.committed is not None:
            await observed.committed

    def _enqueue(self, observed: Observed) -> None:
        assert observed.review is not None and observed.review_why is not None
        pipeline = self.pipeline
        cfg = pipeline.review
        self.queued += self.queue.enqueue(pipeline.name, self.review_run or self.run, observed.review,
                                          observed.review_why, score=cfg.score if cfg is not None else None,
                                          record_ids=observed.review_ids)
        self.review_accounted += observed.review.num_rows
        # what other replicas queued counts too
        pipeline.queued_for_review(self.queue.room(pipeline.name, pipeline.review_limit), self.review_accounted)

    async def judge(self) -> list[dict[str, Any]]:
        """The breaches so far; the first one takes the configured action, once a run."""
        if self.monitor is None or self.drift is None:
            return []
        breaches = self.monitor.breaches(self.drift.thresholds)
        if breaches and not self.actions and self.drift.action != "none":
            await self._act(breaches)
        return breaches

    async def _act(self, breaches: list[dict[str, Any]]) -> None:
        from datetime import UTC, datetime

        assert self.drift is not None
        first = breaches[0]
        why = (f"drift monitor, run {self.run}: {first['signal']} {first['value']:g} past {first['threshold']:g}"
               + (f" (and {len(breaches) - 1} more)" if len(breaches) > 1 else ""))
        action = self.drift.action
        if action == "force_fallback" and self.store is not None:
            await asyncio.to_thread(self._force_fallback, why)
        elif action == "review":
            self.review_all = self.pipeline.review_all = True
            log.warning("%s: %s: the records from here on go to review", self.pipeline.name, why)
            if self.store is not None:
                await asyncio.to_thread(self._record_action, "drift.action", "review", why)
        self.actions.append({"signal": first["signal"], "action": action, "reason": why,
                             "at": datetime.now(UTC).isoformat(timespec="seconds")})

    def _keep_examples(self, scored: pa.Table, rejects: Sequence[Reject]) -> None:
        kept = self.examples
        for r in rejects[: max(0, EXAMPLES - len(kept["rejects"]))]:
            kept["rejects"].append(r.to_json())  # pii bytes and values withheld by the reject itself
        room = EXAMPLES - len(kept["records"])
        if room > 0 and scored.num_rows:
            sample = scored.slice(0, room).to_pylist()  # the records as written: pii masked already
            kept["records"].extend({k: _plain(v) for k, v in row.items()} for row in sample)

    def _force_fallback(self, why: str) -> None:
        """The kill switch to force_fallback, unless an operator set it already; the flip
        and its audit record in one transaction."""
        from gateway.killswitch_cli import audited_flip

        name = self.pipeline.name
        if self.store.get_kill_switch(name).mode != "off":
            return
        self.store.set_kill_switch(name, "force_fallback", why, DRIFT_ACTOR,
                                   on_change=audited_flip(self.store, DRIFT_ACTOR, why))
        log.warning("%s: %s: kill switch force_fallback", name, why)

    def _record_action(self, action: str, new: str, why: str) -> None:
        from gateway.governance.audit_model import OperatorAction
        from gateway.governance.audit_sql import ActionLog
        from gateway.governance.audit_tables import ensure_tables

        ensure_tables(self.store)
        ActionLog(self.store).append(OperatorAction(actor=DRIFT_ACTOR, action=action, pipeline=self.pipeline.name,
                                                    target=self.run, new=new, reason=why))

    # ------------------------------------------------------------------ the end
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run reports the same figures."""
        return {"monitor": self.monitor.to_state() if self.monitor else None, "examples": self.examples,
                "actions": self.actions, "review_all": self.review_all, "queued": self.queued}

    def restore(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        if self.monitor is not None:
            self.monitor.restore(state.get("monitor"))
        self.examples = state.get("examples") or self.examples
        self.actions = list(state.get("actions") or [])
        self.review_all = self.pipeline.review_all = bool(state.get("review_all"))
        self.queued = int(state.get("queued") or 0)

    async def conclude(self, status: str, store: Any = None) -> dict[str, Any]:
        """The manifest's sections once the run is over (thresholds judged on the whole run)."""
        if store is not None:
            self.store = store
        if status == "done":
            await self.judge()
        if self.queue is not None:
            counts = await asyncio.to_thread(self.queue.counts, self.pipeline.name)
            self.pending = counts.get(self.pipeline.name, {}).get("pending", 0)
        return self.sections(status)

    def close_window(self) -> dict[str, Any] | None:
        """A streaming pipeline's window, once it holds `window_records`: its figures (what a
        batch run's manifest holds), and a fresh window. None while it is still filling."""
        if self.monitor is None or self.drift is None or self.monitor.state["records"] < self.drift.window_records:
            return None
        figures = self.sections()
        fresh = RunMonitor(self.monitor.reference, outputs=self.monitor.outputs, features=self.monitor.features,
                           segments=self.monitor.segments, decision_threshold=self.monitor.decision_threshold,
                           pii=self.monitor.pii)
        self.monitor, self.actions, self.queued = fresh, [], 0
        self.review_all = self.pipeline.review_all = False
        self.examples = {"rejects": [], "records": []}
        return figures

    def sections(self, status: str = "done") -> dict[str, Any]:
        """The manifest's governance sections (see the module's docstring)."""
        out: dict[str, Any] = {"pii": self.pipeline.pii.describe()}
        if self.queue is not None and (self.pipeline.review is not None or self.queued):
            cfg = self.pipeline.review
            out["review"] = {"queued": self.queued, "pending": self.pending, "hold": bool(cfg and cfg.hold)}
        if self.monitor is None:
            return out
        thresholds = self.drift.thresholds if self.drift else None
        quality = self.monitor.quality()
        breaches = self.monitor.breaches(thresholds) if thresholds is not None else []
        quality["verdict"] = verdict(quality, breaches, status)
        quality["ok"] = status == "done" and not breaches
        out["quality"] = quality
        drift = self.monitor.drift()
        if drift is not None:
            ref = self.monitor.reference
            assert ref is not None and self.drift is not None
            drift["reference"] = {"path": self.drift.reference, "records": ref.records,
                                  "sha256": (ref.source or {}).get("sha256")}
            drift["thresholds"] = thresholds.model_dump() if thresholds else None
            taken = {a["signal"]: a["action"] for a in self.actions}
            drift["breaches"] = [{**b, "action": taken.get(b["signal"])} for b in breaches]
            drift["actions"] = self.actions
            out["drift"] = drift
        out["timeline"] = self.monitor.state["timeline"]
        out["examples"] = self.examples
        return out


@functools.cache
def _preparing() -> ThreadPoolExecutor:
    """Where batches' own governance work is done: a thread per core, shared by the
    process's pipelines (each batch's durable step waits for its own)."""
    return ThreadPoolExecutor(CORES, thread_name_prefix="lgw-governance")


def _every_row(rows: np.ndarray, n: int) -> bool:
    """Are `rows` 0 .. n-1 in order (every record of the batch scored and written)?"""
    return len(rows) == n and bool(np.array_equal(rows, np.arange(n)))


def _plain(value: Any) -> Any:
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


__all__ = ["DecisionLog", "Observed", "RunGovernance"]
