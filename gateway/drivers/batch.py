"""The batch driver: any batch source through the pipeline to any sink, batch by batch.

Per source batch:

    score (the pipeline; a record that makes it raise is found by splitting the batch and
    rejected) -> prepare for the sink (render) -> write the records to the sink and the
    rejects to the reject sink, both durable -> ack the batch (the source's checkpoint:
    a file's position, an ODBC watermark)

A batch's durable writes and ack run while the next batch is scored, one in flight, in
order: a source is never acked before its batch's records and rejects are durable.
Accounting is kept here, once: every record read is either written or rejected
(`Counts`; in = out + rejected, checked when the run ends). While the pipeline is paused
(kill switch, or policy pause with the model away) the driver waits and scores the batch
again; a stop request (SIGTERM, Ctrl-C) ends the run after the batch in hand is durable
and acked, so a rerun resumes from there.

Who drives a whole run (`gateway.batch.job` for a drop-folder file, `gateway.table_job`
for a table, `gateway.score` for `lgw score`) only adds what is its own: claiming,
checkpoints, publishing, the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.trace import SpanKind

from adapters.base import RejectSink, ScoredBatch, Sink, Source, SourceBatch
from gateway import tracing
from gateway.governance.run import Observed, RunGovernance
from gateway.isolation import crash_reason, isolating, pii_names
from gateway.metrics import reason_class
from gateway.pipeline import Pipeline, PipelineStats
from schemas.stream import Reject

log = logging.getLogger("lgw.batch")


@dataclass
class Counts:
    """The run's record accounting: every record read is written or rejected."""

    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    # scored, but held back from the sink until a reviewer decides (`review: {hold: true}`);
    # they leave as the review's corrections
    held: int = 0
    # rejected records by reason class (gateway.metrics.REASON_CLASSES): a run's manifest
    # and metrics; checkpointed beside the counts, not in them (the summaries show those)
    rejected_by: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, int]:
        out = {"records_in": self.records_in, "records_out": self.records_out, "rejected": self.rejected}
        if self.held:
            out["held"] = self.held
        return out

    def count_rejects(self, rejects: Sequence[Reject]) -> None:
        """Counts the records of `rejects` (a record may fail on several fields: its first
        reject names its class)."""
        first: dict[int, Reject] = {}
        for r in rejects:
            first.setdefault(r.record, r)
        self.rejected += len(first)
        self.rejected_by.update(reason_class(r.reason) for r in first.values())

    @property
    def balanced(self) -> bool:
        return self.records_out + self.rejected + self.held == self.records_in

    def check(self, what: str) -> None:
        if not self.balanced:
            raise RuntimeError(f"{what}: record accounting broken: in {self.records_in} != "
                               f"out {self.records_out} + rejected {self.rejected} + held {self.held}")


def scoring_input(batch: SourceBatch) -> pa.Table:
    """The batch's records with `source_record` (their record number in the input)."""
    numbers = batch.record_numbers if batch.record_numbers is not None else np.arange(1, batch.table.num_rows + 1)
    return batch.table.append_column("source_record", pa.array(np.asarray(numbers, dtype=np.int64)))


def batch_reject(batch: SourceBatch, row: int, reason: str, field: str | None = None, *,
                 has_pii: bool = False) -> Reject:
    """A reject for row `row` of a source batch, with the record's number, offset and bytes.
    `has_pii`: the contract marks fields pii, so the record's bytes hold their values and
    are withheld from the rejects."""
    numbers = batch.record_numbers
    offsets = getattr(batch, "record_offsets", None)
    return Reject(int(numbers[row]) if numbers is not None else row + 1,
                  int(offsets[row]) if offsets is not None else 0, reason, field, None, None,
                  bytes(batch.raw[row]) if batch.raw is not None else b"", pii=has_pii)


@dataclass
class Scored:
    """What the pipeline made of rows [lo, hi) of one source batch."""

    batch: ScoredBatch  # the scored records, with the source rows they came from
    rejects: list[Reject]  # what the pipeline refused: model output, poison records
    paused: bool = False  # nothing scored: the kill switch or the model says wait
    rescore: pa.Table | None = None  # fallback-scored input rows to re-score later
    held: ScoredBatch | None = None  # scored, held back for review (`review: {hold: true}`), not for the sink
    features: np.ndarray | None = None  # the model's feature rows of rows [lo, hi) (the pipeline's)

    def hold_for_review(self) -> Scored:
        """The records marked `review: pending` moved from what the sink gets to `held`."""
        table = self.batch.table
        if "review" not in table.column_names or table.num_rows == 0:
            return self
        pending = pc.equal(table.column("review"), "pending").fill_null(False)
        if not pc.any(pending).as_py():
            return self
        flags = np.asarray(pending.to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.asarray(self.batch.rows)
        self.held = ScoredBatch(table.filter(pending), rows[flags], self.batch.source, redact=self.batch.redact)
        self.batch = ScoredBatch(table.filter(pc.invert(pending)), rows[~flags], self.batch.source,
                                 redact=self.batch.redact)
        return self

    @property
    def everything(self) -> list[ScoredBatch]:
        """What was scored: for the sink and held back alike (the audit trail has both)."""
        return [self.batch] if self.held is None else [self.batch, self.held]


async def score_rows(pipeline: Pipeline, batch: SourceBatch, table: pa.Table,
                     lo: int = 0, hi: int | None = None) -> Scored:
    """Scores rows [lo, hi) of `table` (the batch's `scoring_input`)."""
    hi = table.num_rows if hi is None else hi
    part = table if (lo, hi) == (0, table.num_rows) else table.slice(lo, hi - lo)
    with tracing.span("lgw.score") as span:
        scored = await pipeline.score(part)
        if span.is_recording():
            tracing.describe_score(span, pipeline, part.num_rows, scored)
    has_pii = bool(pii_names(pipeline.contract)) if scored.rejects else False
    rejects = [batch_reject(batch, lo + r.row, r.reason, r.field, has_pii=has_pii) for r in scored.rejects]
    rescore = None
    if scored.rescore_rows is not None and len(scored.rescore_rows):
        rescore = part.take(pa.array(scored.rescore_rows))
    rows = lo + np.asarray(scored.rows, dtype=np.int64)
    redact = pipeline.pii.redact_raw if pipeline.pii.active else None
    return Scored(ScoredBatch(scored.table, rows, batch, redact=redact), rejects, scored.paused, rescore,
                  features=scored.features)


@dataclass
class Delivery:
    """One source batch, scored and prepared, waiting to be made durable; with the counts
    and pipeline figures as they stand after it (what its checkpoint stores)."""

    prepared: list[Any]
    rows: int
    rejects: list[Reject]
    counts: dict[str, int]
    stats: PipelineStats
    rescore: list[pa.Table] = field(default_factory=list)
    rejected_by: dict[str, int] = field(default_factory=dict)
    observed: Observed | None = None  # its decision records (the audit trail), written with it
    governance: dict[str, Any] | None = None  # the run's governance counters after it (checkpoint)


@dataclass
class _Piece:
    scored: Scored | None = None
    prepared: Any = None
    reject: Reject | None = None
    paused: bool = False


PauseWait = Callable[[], Awaitable[bool]]


class BatchLoop:
    """Runs one source to its end (or to a stop request) into a sink and a reject sink.

    `label` names the run in log lines; `on_paused` is awaited while the pipeline is
    paused and says whether to try the batch again (False: stop, the run is interrupted);
    `before_write` runs before each durable write (a run's lease heartbeat)."""

    def __init__(self, pipeline: Pipeline, sink: Sink, rejects: RejectSink, *, label: str,
                 stop: asyncio.Event | None = None, on_paused: PauseWait | None = None,
                 before_write: Callable[[], Awaitable[None]] | None = None,
                 counts: Counts | None = None, read_errors: tuple[type[Exception], ...] = (),
                 on_acked: Callable[[SourceBatch, Delivery], Awaitable[None] | None] | None = None,
                 hold_acks: list[SourceBatch] | None = None, governance: RunGovernance | None = None) -> None:
        self.pipeline = pipeline
        self.governance = governance  # audit, drift and quality of the run (gateway.governance.run)
        self.sink = sink
        self.rejects = rejects
        self.label = label
        self.stop = stop or asyncio.Event()
        self.on_paused = on_paused or self._wait_a_moment
        self.before_write = before_write
        self.counts = counts or Counts()
        self.read_errors = read_errors  # a source raising one of these fails the run: `read_failure` says why
        self.read_failure: str | None = None
        self.on_acked = on_acked
        # batches durable but not to be acked yet (a file sink publishes at the end of the
        # run: the caller acks them, in order, after that); None: ack each when durable
        self.hold_acks = hold_acks
        self.durable: Delivery | None = None  # the delivery being acked: what its checkpoint stores
        self.on_rescore: Callable[[pa.Table], None] | None = None
        self._pii = pii_names(pipeline.contract)

    async def run(self, source: Source) -> bool:
        """True when the source was read to its end (or failed: `read_failure`); False when
        stopped (or paused and told to stop) with every batch taken so far durable and acked."""
        in_flight: asyncio.Task[None] | None = None
        # the next batch is read while this one is scored, unless the source reads ahead itself
        read_ahead = not getattr(source, "reads_ahead", False)
        reading: asyncio.Future[SourceBatch | None] | None = None
        read_since = tracing.clock()
        try:
            while True:
                try:
                    batch = await (reading or source.read_batch())
                except self.read_errors as exc:  # e.g. a file that is not what its contract says
                    log.warning("%s: %s", self.label, exc)
                    self.read_failure = str(exc)
                    batch = None
                reading = None
                if batch is None:
                    break
                traced = tracing.batch_span(self.pipeline.name, self.label, batch, (read_since, tracing.clock()))
                read_since = tracing.clock()
                if read_ahead and not self.stop.is_set():
                    reading = asyncio.ensure_future(source.read_batch())
                try:
                    with traced.current():
                        delivery = await self.deliver(batch)
                except BaseException as exc:
                    traced.end(exc=exc)
                    raise
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if delivery is None:
                    traced.end()
                    return False
                in_flight = asyncio.create_task(self._make_durable(batch, delivery, traced))
                if self.stop.is_set():
                    await in_flight
                    in_flight = None
                    return False
            if in_flight is not None:
                await in_flight
                in_flight = None
            return True
        finally:
            for task in (in_flight, reading):  # an error elsewhere, or stopped: let them end before closing
                if task is not None:
                    with contextlib.suppress(Exception):
                        await task

    async def deliver(self, batch: SourceBatch) -> Delivery | None:
        """Scores and prepares one batch (None: stopped while the pipeline was paused)."""
        table = scoring_input(batch)
        while True:
            before = copy.deepcopy(self.pipeline.stats)
            pieces = await self._isolating(batch, table)
            if not any(p.paused for p in pieces):
                break
            self.pipeline.stats = before
            if not await self.on_paused():
                return None
        rejects = list(batch.rejects)
        prepared, rows, held, rescore = [], 0, 0, []
        for p in pieces:
            if p.reject is not None:
                rejects.append(p.reject)
            elif p.scored is not None:
                rejects.extend(p.scored.rejects)
                prepared.append(p.prepared)
                rows += p.scored.batch.table.num_rows
                held += p.scored.held.table.num_rows if p.scored.held is not None else 0
                if p.scored.rescore is not None:
                    rescore.append(p.scored.rescore)
        rejects.sort(key=lambda r: (r.record, r.field_offset or 0))
        self.counts.records_in += batch.records_in
        self.counts.records_out += rows
        self.counts.held += held
        self.counts.count_rejects(rejects)
        observed = None
        if self.governance is not None:
            scored = [part for p in pieces if p.scored is not None for part in p.scored.everything]
            # the feature rows the model was given, when one piece scored the whole batch
            whole = pieces[0].scored if len(pieces) == 1 else None
            observed = self.governance.observe(
                batch.records_in, table, batch.raw,
                pa.concat_tables([s.table for s in scored], promote_options="permissive") if scored
                else table.slice(0, 0),
                np.concatenate([s.rows for s in scored]) if scored else np.zeros(0, dtype=np.int64), rejects,
                features=whole.features if whole is not None else None)
        return Delivery(prepared, rows, rejects, self.counts.to_json(), copy.deepcopy(self.pipeline.stats),
                        rescore, dict(self.counts.rejected_by), observed)

    async def _make_durable(self, batch: SourceBatch, delivery: Delivery,
                            traced: tracing.BatchSpan | tracing.BatchOff = tracing.BATCH_OFF) -> None:
        """Writes the batch's records and rejects, both durable, then acks the batch."""
        try:
            with traced.current():
                await self._durable(batch, delivery)
        except BaseException as exc:
            traced.end(delivery, exc)
            raise
        traced.end(delivery)

    async def _durable(self, batch: SourceBatch, delivery: Delivery) -> None:
        if self.before_write is not None:
            await self.before_write()
        with tracing.span("lgw.write", SpanKind.PRODUCER) as span:
            if span.is_recording():
                span.set_attributes({"lgw.records": delivery.rows, "lgw.rejected": len(delivery.rejects)})
            # the audit trail beside the records (its own thread): all durable before the ack
            governed = None
            if self.governance is not None and delivery.observed is not None:
                governed = asyncio.ensure_future(self.governance.write(delivery.observed))
            try:
                await self.sink.write(delivery.prepared)
                await self.rejects.write(delivery.rejects, batch)
            finally:
                if governed is not None:
                    await governed
            if self.governance is not None:
                delivery.governance = copy.deepcopy(self.governance.state())  # its figures after this batch
        self.durable = delivery
        if self.on_rescore is not None:
            for table in delivery.rescore:
                self.on_rescore(table)
        if self.hold_acks is not None:
            self.hold_acks.append(batch)
        else:
            await batch.ack()
        if self.on_acked is not None:
            after = self.on_acked(batch, delivery)
            if after is not None:
                await after

    async def _isolating(self, batch: SourceBatch, table: pa.Table) -> list[_Piece]:
        """The batch's rows scored and prepared; a crash splits the rows in halves until the
        record that causes it is found and rejected (the rest goes on): `gateway.isolation`."""
        async def piece(lo: int, hi: int) -> _Piece:
            before, marked = copy.deepcopy(self.pipeline.stats), self.pipeline.review_marked
            try:
                scored = await score_rows(self.pipeline, batch, table, lo, hi)
                if scored.paused:
                    return _Piece(paused=True)
                if self.pipeline.review is not None and self.pipeline.review.hold:
                    scored = scored.hold_for_review()
                return _Piece(scored, self.sink.prepare(scored.batch))
            except Exception:
                # its records are counted (and marked for review) where they end up
                self.pipeline.stats, self.pipeline.review_marked = before, marked
                raise

        def alone(row: int, exc: Exception) -> _Piece:
            reason = crash_reason(exc, self._pii, batch.table.slice(row, 1))
            reject = batch_reject(batch, row, reason, has_pii=bool(self._pii))
            log.warning("%s: record %d isolated and rejected: %s", self.label, reject.record, reason)
            return _Piece(reject=reject)

        def on_split(lo: int, hi: int, exc: Exception) -> None:
            if (lo, hi) == (0, table.num_rows):  # the error's type only: its message may quote a pii value
                log.warning("%s: a batch of %d records crashed (%s); splitting it to find the record",
                            self.label, hi - lo, type(exc).__name__)

        # an InfrastructureError or ConfigError is not the records' fault: the run stops (and resumes later)
        return await isolating(piece, 0, table.num_rows, alone=alone, is_alone=lambda p: p.reject is not None,
                               on_split=on_split)

    async def _wait_a_moment(self) -> bool:
        log.warning("%s: pipeline %s is paused (kill switch or model unavailable): waiting", self.label,
                    self.pipeline.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=1.0)
        return not self.stop.is_set()


def staged_names(part: Sink | RejectSink) -> dict[str, Any] | None:
    """The temporary files a file sink has staged (random names, for a publish step that
    resumes after a crash); None for a sink that stages nothing."""
    staged = getattr(part, "staged", None)
    return staged() if callable(staged) else None


def adopt_staged(part: Sink | RejectSink, staged: dict[str, Any] | None) -> None:
    adopt = getattr(part, "adopt", None)
    if callable(adopt):
        adopt(staged)


def written_to(outputs: dict[str, Any]) -> str:
    """Where a non-file sink wrote, as a run's summary says it: `TYPE:TARGET` (`kafka:TOPIC`,
    `odbc:TABLE`, `amqp:EXCHANGE`), from what its `finish()` returned."""
    target = next((outputs[k] for k in ("target", "topic", "table", "exchange") if outputs.get(k)), "?")
    return f"{outputs.get('format', '?')}:{target}"


async def close_all(parts: Sequence[Sink | RejectSink | Source]) -> None:
    """Closes every part, each even when another fails."""
    for part in parts:
        with contextlib.suppress(Exception):
            await part.close()


__all__ = [
    "BatchLoop",
    "Counts",
    "Delivery",
    "Scored",
    "adopt_staged",
    "batch_reject",
    "close_all",
    "score_rows",
    "scoring_input",
    "staged_names",
]
