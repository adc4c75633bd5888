"""The scoring pipeline: one batch of validated records in, scored records out.

features -> model (behind breaker, retries, timeout, concurrency limit) -> output
validation -> provenance; when the model cannot answer, the pipeline's policy decides:
score with the fallback rules, pause, or score with the rules now and re-score later.
A batch may hold one record or 50,000; batch files and real-time topics drive the same
code. In = out + rejects (+ nothing held back unless the policy is `pause`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway import meters
from gateway.config import Policy
from gateway.fallback import FallbackRules
from gateway.features import FeatureMap
from gateway.governance.pii import PiiPolicy, policy_for
from gateway.governance.review import ReviewConfig, cap_mask, mark_review, select_for_review
from gateway.kill_switch import KillSwitchWatcher
from gateway.outputs import OutputSpec, outputs_from_contract
from gateway.resilience.guarded import GuardedModel
from schemas.arrow_buffers import one_array
from schemas.contract import Contract
from schemas.errors import BreakerOpen, InfrastructureError, ModelRejected, ModelServerError

log = logging.getLogger("lgw.pipeline")

SCORED_BY_MODEL = "model"
SCORED_BY_FALLBACK = "fallback"
DRIFT_REVIEW_MAX = 10_000  # records a drift breach sends to review where the pipeline has no `review:` cap
PROVENANCE = ("scored_by", "model_name", "model_version", "contract", "contract_version", "rule_id", "reason")


@dataclass
class RowReject:
    """A record the pipeline refused: `row` indexes the input batch."""

    row: int
    reason: str
    field: str | None = None


@dataclass
class ScoredBatch:
    table: pa.Table  # input columns + outputs + provenance, in input order (rejected rows left out)
    rows: np.ndarray  # input row index of every output row
    rejects: list[RowReject] = field(default_factory=list)
    paused: bool = False  # policy pause while the model is unavailable: nothing scored, do not ack
    rescore_rows: np.ndarray | None = None  # fallback-scored rows to re-score (fallback_and_rescore)
    shadow_agreement: float | None = None
    # the model's feature rows of every input row (model-scored batches): the drift monitor takes them
    features: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        if self.table.num_rows == 0:
            return {}
        counts = pc.value_counts(self.table.column("scored_by"))
        return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


@dataclass
class PipelineStats:
    batches: int = 0
    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    scored_by: Counter[str] = field(default_factory=Counter)
    shadow_compared: int = 0
    shadow_agreed: int = 0
    model_seconds: float = 0.0

    def add(self, n_in: int, batch: ScoredBatch) -> None:
        self.batches += 1
        self.records_in += n_in
        self.records_out += batch.table.num_rows
        self.rejected += len({r.row for r in batch.rejects})
        self.scored_by.update(batch.counts())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"records_in": self.records_in, "records_out": self.records_out,
                               "rejected": self.rejected, "scored_by": dict(self.scored_by)}
        if self.shadow_compared:
            out["shadow_agreement"] = round(self.shadow_agreed / self.shadow_compared, 6)
        return out


class Pipeline:
    """Scores batches for one contract. Build once, call `score` per batch."""

    def __init__(self, contract: Contract, *, name: str, model: GuardedModel | None = None,
                 policy: Policy = Policy.FALLBACK, kill_switch: KillSwitchWatcher | None = None,
                 shadow: bool = False, pii: PiiPolicy | None = None, review: ReviewConfig | None = None) -> None:
        self.contract = contract
        # records a person looks at: marked `review: pending` in the output; the driver queues
        # them (gateway.governance.run) once their batch is durable, while later batches are
        # being scored, so the queue's room is counted in two parts: `review_queue_room`, the
        # room the store had when the driver last queued, and the records `review_marked`
        # counted then; what was marked since is not queued yet but takes room all the same.
        # `review_all`: a drift breach's action, every record goes to review
        self.review = review
        self.review_limit = review.max_pending if review is not None else DRIFT_REVIEW_MAX
        self.review_marked = 0
        self.review_queue_room: tuple[int, int] = (self.review_limit, 0)
        self.review_all = False
        # what the records' pii fields become in the scored records (every sink, review, audit)
        self.pii = pii if pii is not None else policy_for(contract)
        self.name = name
        self.model = model
        self.policy = policy
        self.kill_switch = kill_switch
        self.shadow = shadow and model is not None
        self.features = FeatureMap.from_contract(contract)
        self.rules = FallbackRules.from_contract(contract)
        self.outputs: dict[str, OutputSpec] = outputs_from_contract(contract)
        model_cfg = contract.config.model or {}
        self.model_name = str(model_cfg.get("name", model.info.name if model else ""))
        self.model_version = str(model.info.version) if model else None
        self.stats = PipelineStats()
        self.paused = False  # the last batch was held back (policy or kill-switch pause)
        self.meters = meters.PipelineMeters(name, self.model_name if model else None)
        if model is not None:
            meters.watch_breaker(name, self.model_name, model.breaker)

    # ------------------------------------------------------------------ public
    async def score(self, table: pa.Table) -> ScoredBatch:
        n = table.num_rows
        mode = (await self.kill_switch.acurrent()).mode if self.kill_switch else "off"
        self.meters.kill_switch(mode)
        if n == 0:
            batch = self._assemble(table, np.zeros(0, dtype=np.int64), {}, SCORED_BY_FALLBACK, None)
        elif mode == "pause":
            batch = ScoredBatch(table.slice(0, 0), np.zeros(0, dtype=np.int64), paused=True)
        elif mode == "force_fallback" or self.model is None:
            batch = self._fallback(table, np.arange(n))
        else:
            batch = await self._with_model(table)
        self.stats.add(n, batch)
        if n:
            self.paused = batch.paused
            self.meters.paused(batch.paused)
        return batch

    # ------------------------------------------------------------------ model path
    async def _with_model(self, table: pa.Table) -> ScoredBatch:
        assert self.model is not None
        features = self.features.matrix(table)
        started = time.perf_counter()
        try:
            outputs, poison = await self._predict_isolating(features, np.arange(table.num_rows))
        except (InfrastructureError, TimeoutError, OSError) as exc:
            rejected = isinstance(exc, BreakerOpen)  # nothing was called: no duration to observe
            self.meters.model_call("rejected" if rejected else "error",
                                   None if rejected else time.perf_counter() - started)
            return self._unavailable(table, exc)
        finally:
            self.stats.model_seconds += time.perf_counter() - started
        self.meters.model_call("ok", time.perf_counter() - started)
        rejects = [RowReject(int(r), why) for r, why in poison]
        scored_rows = np.arange(table.num_rows)
        if poison:
            scored_rows = np.setdiff1d(scored_rows, np.array([r for r, _ in poison], dtype=np.int64))
        bad = np.zeros(len(scored_rows), dtype=bool)
        for name, spec in self.outputs.items():
            values = outputs[name]
            wrong, why = spec.validate(values)
            wrong = np.asarray(wrong, dtype=bool)
            for i in np.flatnonzero(wrong & ~bad):
                rejects.append(RowReject(int(scored_rows[i]), f"model output {name}: {why[i]}", name))
            bad |= wrong
        keep = scored_rows[~bad]
        kept_outputs = {k: v[~bad] for k, v in outputs.items()}
        batch = self._assemble(table, keep, kept_outputs, SCORED_BY_MODEL, None)
        batch.rejects = sorted(rejects, key=lambda r: r.row)
        batch.features = features
        if self.shadow and len(keep):
            batch.shadow_agreement = self._shadow(table, keep, kept_outputs)
        return batch

    async def _predict_isolating(self, features: np.ndarray, rows: np.ndarray
                                 ) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
        """Scores `rows`; a 5xx, a 4xx or a garbage answer (ModelOutputError) on a batch may
        be one poison record rather than an outage, so the batch is split until the record
        is found (rejected as data) while the rest is scored. Outputs come back for the
        non-poison rows, in order."""
        assert self.model is not None
        poisoned: ModelRejected | ModelServerError
        try:
            return await self.model.predict(features), []
        except ModelRejected as exc:
            if len(rows) == 1:
                return {}, [(int(rows[0]), f"model rejected the record: {exc}")]
            poisoned = exc
        except ModelServerError as exc:
            if len(rows) == 1:
                raise
            poisoned = exc
        log.info("model failed on a batch of %d (%s): splitting to isolate poison records", len(rows), poisoned)
        half = len(rows) // 2
        parts = [(features[:half], rows[:half]), (features[half:], rows[half:])]
        outs: list[dict[str, np.ndarray]] = []
        poison: list[tuple[int, str]] = []
        failures = 0
        for f, r in parts:
            try:
                o, p = await self._predict_isolating(f, r)
            except ModelServerError as exc:
                if len(r) > 1:
                    raise
                failures += 1
                o, p = {}, [(int(r[0]), f"model server failed on this record: {exc}")]
            outs.append(o)
            poison.extend(p)
        if failures == len(parts):
            raise poisoned  # every part failed: an outage, not a poison record
        names = [k for o in outs for k in o] or list(self.outputs)
        merged = {k: np.concatenate([o[k] for o in outs if k in o]) for k in dict.fromkeys(names)}
        return merged, poison

    def _unavailable(self, table: pa.Table, exc: BaseException) -> ScoredBatch:
        n = table.num_rows
        if self.policy == Policy.PAUSE:
            log.warning("model unavailable (%s): pausing %s", exc, self.name)
            return ScoredBatch(table.slice(0, 0), np.zeros(0, dtype=np.int64), paused=True)
        if not isinstance(exc, BreakerOpen):
            log.warning("model unavailable (%s): %s scores with fallback rules", exc, self.name)
        batch = self._fallback(table, np.arange(n))
        if self.policy == Policy.FALLBACK_AND_RESCORE:
            batch.rescore_rows = np.arange(n)
        return batch

    # ------------------------------------------------------------------ fallback
    def _fallback(self, table: pa.Table, rows: np.ndarray) -> ScoredBatch:
        subset = table if len(rows) == table.num_rows else table.take(pa.array(rows))
        scored = self.rules.score(subset)
        outputs = {name: scored.column(name).to_numpy(zero_copy_only=False) for name in self.outputs}
        return self._assemble(table, rows, outputs, SCORED_BY_FALLBACK, scored)

    def _shadow(self, table: pa.Table, rows: np.ndarray, model_out: dict[str, np.ndarray]) -> float:
        rules = self.rules.score(table.take(pa.array(rows)))
        agreed = np.ones(len(rows), dtype=bool)
        for name, spec in self.outputs.items():
            agreed &= spec.agree(model_out[name], rules.column(name).to_numpy(zero_copy_only=False))
        self.stats.shadow_compared += len(rows)
        self.stats.shadow_agreed += int(agreed.sum())
        return float(agreed.mean())

    # ------------------------------------------------------------------ output
    def _assemble(self, table: pa.Table, rows: np.ndarray, outputs: dict[str, np.ndarray], scored_by: str,
                  rules: pa.Table | None) -> ScoredBatch:
        n = len(rows)
        base = table if n == table.num_rows else table.take(pa.array(rows, type=pa.int64()))
        columns: dict[str, pa.Array] = {}
        for name, spec in self.outputs.items():
            columns[name] = spec.to_arrow(outputs[name]) if n else pa.array([], spec.arrow_type)
        model = scored_by == SCORED_BY_MODEL
        columns["scored_by"] = _same(scored_by, n, pa.string())
        columns["model_name"] = _same(self.model_name if model else None, n, pa.string())
        columns["model_version"] = _same(self.model_version if model else None, n, pa.string())
        columns["contract"] = _same(self.contract.name, n, pa.string())
        columns["contract_version"] = _same(self.contract.version, n, pa.int32())
        if rules is not None and n:
            columns["rule_id"] = one_array(rules.column("rule_id"))
            columns["reason"] = one_array(rules.column("reason"))
        else:
            columns["rule_id"] = pa.nulls(n, pa.string())
            columns["reason"] = pa.nulls(n, pa.string())
        out = self.pii.apply(base)
        for name, col in columns.items():
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, col)
        if self.review is not None or self.review_all:
            out = self._mark_review(out)
        return ScoredBatch(out, rows)

    def _mark_review(self, table: pa.Table) -> pa.Table:
        wanted = (pa.array(np.ones(table.num_rows, dtype=bool)) if self.review_all or self.review is None
                  else select_for_review(table, self.review))
        mask = cap_mask(wanted, self.review_room)
        self.review_marked += int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
        return mark_review(table, mask)

    @property
    def review_room(self) -> int:
        """How many more records may be marked for review: the queue's room less what was
        marked and is not queued yet."""
        room, counted = self.review_queue_room
        return max(0, room - (self.review_marked - counted))

    def queued_for_review(self, room: int, marked: int) -> None:
        """The driver's word that the queue has `room` left with every record marked up to
        the `marked`-th queued (from its own thread: one assignment, read whole)."""
        self.review_queue_room = (room, marked)


def _same(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    """`n` times `value` (a list of n Python values costs 0.2 s per million records)."""
    return pa.nulls(n, typ) if value is None else pa.repeat(pa.scalar(value, typ), n)


class Rescorer:
    """Policy `fallback_and_rescore`: records the rules scored while the model was away
    are kept here and re-scored by the model once its breaker lets calls through again;
    the model's scores come back as corrections. Bounded: past `max_pending` records the
    oldest are dropped from re-scoring (their rule scores stand) and counted."""

    def __init__(self, pipeline: Pipeline, max_pending: int = 1_000_000) -> None:
        self.pipeline = pipeline
        self.max_pending = max_pending
        self._pending: list[pa.Table] = []
        self.pending_records = 0
        self.dropped = 0

    def hold(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self.pending_records += table.num_rows
        while self.pending_records > self.max_pending and self._pending:
            oldest = self._pending.pop(0)
            self.pending_records -= oldest.num_rows
            self.dropped += oldest.num_rows

    def model_available(self) -> bool:
        """Would the breaker let a call through now (open but done waiting counts)?"""
        model = self.pipeline.model
        if model is None:
            return False
        snap = model.breaker.snapshot()
        return snap["state"] in ("closed", "half_open") or (snap["state"] == "open" and snap["retry_after_s"] == 0)

    async def rescore(self) -> pa.Table | None:
        """Corrections for the held records, or None while the model is still away."""
        if not self._pending or not self.model_available():
            return None
        table = pa.concat_tables(self._pending, promote_options="permissive")
        batch = await self.pipeline._with_model(table)
        if batch.table.num_rows == 0 and table.num_rows:
            return None
        if batch.counts().get(SCORED_BY_MODEL, 0) != batch.table.num_rows:
            return None  # the model went away again: keep holding
        self._pending = []
        self.pending_records = 0
        corrections = batch.table.append_column("corrects", pa.array([SCORED_BY_FALLBACK] * batch.table.num_rows))
        return corrections


def fixed_columns(pipeline: Pipeline) -> dict[str, int]:
    """Widths of the fields appended to each record in fixed-width output."""
    cols = {name: spec.fixed_width for name, spec in pipeline.outputs.items()}
    cols.update({"scored_by": 8, "model_version": 12, "rule_id": 12, "reason": 24})
    if pipeline.review is not None:
        cols["review"] = 8
    return cols
