"""The streaming driver: one for every real-time source (Kafka, AMQP) and every sink.

A transport hands it a micro-batch (`SourceBatch` with `messages`, an ack and a nack);
the driver scores it (`MicroBatchScorer`: decode, validate, score, render, poison
isolation), gives the results to the `Sink` (prepare, write) and the dead letters to the
`RejectSink`, and acks the batch only once both writes are durable. Anything that goes
wrong before that (a write the sink or broker refused, a failed ack, scoring that raised
what is not the messages' fault) nacks the batch, so it is delivered again, after a
backoff; it is never acked. Results carry a stable id (lgw-id) for consumers to drop
the duplicates a redelivery makes, and a table sink upserts by key.

One write in flight: the write of batch N is awaited while batch N+1 is scored, so its
round trip does not stall the pipeline; N+1's write starts once N's is durable, and N is
acked after that (a Kafka commit is no message's wait). If N's write failed, N+1's has
not started: both are nacked (newest first, so the oldest position is where fetching
resumes) and both come again. A batch left in flight when no more arrive is acked by a
short idle task; while the app shuts down (`flush`) every batch is acked before its
handler returns.

Policy pause (the model is away and the pipeline waits for it; the kill switch's
pause): the batch is nacked, the source stops fetching (Kafka pauses its partitions;
AMQP holds the request until the pause ends, and prefetch stops the rest) and resumes
when the model's breaker would let a call through; the next batch is then the probe.

Scoring runs outside the driver's lock, so sources that deliver concurrently (AMQP, up
to its prefetch) score concurrently; writes and acks are ordered under the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from adapters.base import RejectSink, ScoredBatch, Sink, SourceBatch, message_columns
from gateway import meters, tracing
from gateway.governance.decisions import byte_rows, fingerprints
from gateway.governance.run import Observed, RunGovernance
from gateway.logs import log_context
from gateway.meters import StreamMeters, dead_letter_class
from gateway.realtime.core import MicroBatchScorer, Outcome

log = logging.getLogger("lgw.drivers.stream")

MAX_BACKOFF_S = 10.0
IDLE_ACK_S = 0.05  # a batch in flight with nothing after it is acked this soon
PAYLOAD_WITHHELD = "lgw-payload-withheld"  # a dead letter's header: its bytes are left out (pii)


class Flow(Protocol):
    """A source that can stop and resume delivering (policy pause)."""

    def pause(self) -> int: ...

    def resume(self) -> None: ...


@dataclass
class InFlight:
    """A batch whose writes were started but are not yet known to be durable."""

    batch: SourceBatch
    written: asyncio.Future[Any]
    outcome: Outcome | None = None  # what it holds, counted once it is acked
    observed: Observed | None = None  # its audit records: durable before it is acked


class StreamDriver:
    def __init__(self, name: str, scorer: MicroBatchScorer, sink: Sink, rejects: RejectSink,
                 flow: Flow | None = None, meters: StreamMeters | None = None,
                 governance: RunGovernance | None = None) -> None:
        self.name = name
        # audit records, drift and quality per window (gateway.governance.run)
        self.governance = governance
        if governance is not None and governance.monitor is not None:
            governance.on_window = self._window
        self.meters = meters or StreamMeters(name, "unknown", "unknown")
        self.scorer = scorer
        self.sink = sink
        self.rejects = rejects
        self.flow = flow
        self._backoff_s = 0.0
        self._lock = asyncio.Lock()  # writes and acks: the handlers, the idle ack, the shutdown flush
        self._in_flight: InFlight | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._pending: list[tuple[list[SourceBatch], str, float]] = []  # to nack once the lock is released
        self._closed = asyncio.Event()
        self.closing = False
        self.committed_batches = 0
        self.committed_records = 0
        self.redelivered_batches = 0

    async def open(self) -> None:
        await self.sink.open()
        await self.rejects.open()

    async def handle(self, batch: SourceBatch) -> None:
        """Scores one micro-batch and writes it; returns with its write in flight (or, while
        closing, acked)."""
        with log_context(pipeline=self.name):  # the idle ack task it starts inherits it
            await self._handle(batch)

    async def _handle(self, batch: SourceBatch) -> None:
        messages = batch.messages
        if not messages:
            return
        if self._idle_task is not None:
            self._idle_task.cancel()  # still waiting: this batch settles the one in flight
            self._idle_task = None
        values, ids, _ = message_columns(messages)
        outcome: Outcome | None = None
        with tracing.micro_batch(self.name, batch) as traced:
            try:
                outcome = await self.scorer.process(values, ids)
            except Exception:
                log.exception("%s: scoring a batch of %d failed; it will be delivered again", self.name, len(values))
            traced.scored(outcome)
            async with self._lock:
                await self._after_scoring(batch, outcome, traced)
        await self._redeliver()  # before returning: a Kafka handler that returned would fetch past them
        if self._in_flight is not None and not self.closing:
            if self._idle_task is not None:
                self._idle_task.cancel()
            self._idle_task = asyncio.get_running_loop().create_task(self._idle_ack(self._in_flight))

    async def _after_scoring(self, batch: SourceBatch, outcome: Outcome | None,
                             traced: tracing.MicroBatch | tracing.Off = tracing.OFF) -> None:
        if outcome is None:
            if await self._settle(later=[batch]):
                self._retry_later([batch], "scoring failed")
            return
        if outcome.paused:
            if await self._settle(later=[batch]):
                self._pause()  # first: an AMQP nack waits for the pause to end
                self._pending.append(([batch], "policy pause", 0.0))
            return
        traced.stamp(outcome)  # the results' trace headers, before the sink renders them
        try:
            prepared = self.sink.prepare(self._scored(batch, outcome)) if outcome.results else None
        except Exception:
            log.exception("%s: the sink could not take a batch of %d; it will be delivered again", self.name,
                          len(outcome.results))
            if await self._settle(later=[batch]):
                self._retry_later([batch], "the sink refused the batch")
            return
        before, self._in_flight = self._in_flight, None
        if before is not None and not await self._written(before, later=[batch]):
            return  # the batch before failed: both were nacked and come again
        observed = self._observe(batch, outcome)
        written = self._write(batch, prepared, outcome, observed)
        traced.writing(written)
        self._in_flight = InFlight(batch, written, outcome, observed)
        await asyncio.sleep(0)  # let the sink put the batch on the wire before the next one is scored
        # The batch before is acked only now, with this one on its way: the ack's round
        # trip is no message's wait. Should it fail, both batches come again, and this
        # one's results (already sent) are delivered twice, with the same ids.
        if before is not None and not await self._ack(before, later=[batch]):
            self._in_flight = None  # nacked: its write no longer matters
            written.add_done_callback(lambda f: f.cancelled() or f.exception())
            return
        if self.closing:
            await self._settle()

    def _scored(self, batch: SourceBatch, outcome: Outcome) -> ScoredBatch:
        assert outcome.table is not None
        rendered = [(r.value, r.headers) for r in outcome.results] if self.scorer.render else None
        pii = self.scorer.pipeline.pii
        return ScoredBatch(outcome.table, outcome.rows, batch, rendered, redact=pii.redact_raw if pii.active else None)

    def _write(self, batch: SourceBatch, prepared: Any, outcome: Outcome,
               observed: Observed | None = None) -> asyncio.Future[Any]:
        """Starts the sink's, the reject sink's and the audit trail's writes; done when all
        are durable."""
        writes: list[Any] = []
        if prepared is not None:
            writes.append(self.sink.write([prepared]))
        if outcome.dead_letters:
            writes.append(self.rejects.write(outcome.rejects, self._redacted(batch, outcome)))
        if observed is not None and self.governance is not None:
            writes.append(self.governance.write(observed))
        return asyncio.ensure_future(asyncio.gather(*writes))  # gather starts each write now

    def _observe(self, batch: SourceBatch, outcome: Outcome) -> Observed | None:
        """The batch's decision records and its share of the window's drift and quality
        figures (judged, and a full window reported, once the batch is durable)."""
        governance = self.governance
        if governance is None or batch.messages is None:
            return None
        table = outcome.table if outcome.table is not None else pa.table({})
        values, ids, _ = message_columns(batch.messages)
        index = pa.array(np.asarray(outcome.rows, dtype=np.int64))  # each result's message
        prints = None
        if governance.audit is not None and len(index):
            matrix, lengths = byte_rows(pa.array(values, pa.binary()).take(index))
            prints = fingerprints(matrix, governance.key, lengths)
        record_ids = pa.array(ids, pa.string()).take(index)
        return governance.observe(len(values), table, None, table, np.arange(table.num_rows), outcome.rejects,
                                  record_ids=record_ids, prints=prints)

    def _window(self, figures: dict[str, Any]) -> None:
        """A full window, judged: one log line and the drift metrics."""
        log.info("%s: drift window: %s", self.name, figures.get("quality", {}).get("verdict"))
        meters.drift_window(self.name, figures)

    def _redacted(self, batch: SourceBatch, outcome: Outcome) -> SourceBatch:
        """The batch as its dead letters may carry it: each dead-lettered message with its
        pii fields as the pipeline's policy leaves them (gateway.governance.pii)."""
        pii = self.scorer.pipeline.pii
        if not pii.active or batch.messages is None:
            return batch
        messages = list(batch.messages)
        for letter in outcome.dead_letters:
            m = messages[letter.index]
            value = pii.redact_message(m.value, self.scorer.payload)
            # a message too broken to find its pii fields in is withheld whole, and says so
            headers = [*m.headers, (PAYLOAD_WITHHELD, b"pii")] if m.value and not value else m.headers
            messages[letter.index] = dataclasses.replace(m, value=value, headers=headers)
        return dataclasses.replace(batch, messages=messages)

    async def _settle(self, later: Sequence[SourceBatch] = ()) -> bool:
        """Waits for the batch in flight and acks it. False when it failed: it and `later`
        (scored after it, not written) are nacked, so both come again."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return True
        return await self._written(batch, later) and await self._ack(batch, later)

    async def _written(self, batch: InFlight, later: Sequence[SourceBatch]) -> bool:
        try:
            await batch.written
        except Exception as exc:
            log.warning("%s: a write failed (%s: %s); the batch will be delivered again", self.name,
                        type(exc).__name__, exc)
            self._retry_later([batch.batch, *later], "write failed")
            return False
        return True

    async def _ack(self, batch: InFlight, later: Sequence[SourceBatch]) -> bool:
        try:
            if self.governance is not None and batch.observed is not None:
                await self.governance.durable(batch.observed)  # its audit records, committed in a group
            await batch.batch.ack()
        except Exception as exc:
            log.warning("%s: ack failed (%s: %s); the batch will be delivered again", self.name,
                        type(exc).__name__, exc)
            self._retry_later([batch.batch, *later], "ack failed")
            return False
        self.committed_batches += 1
        self.committed_records += batch.batch.records_in
        self._backoff_s = 0.0
        if batch.outcome is not None:
            self._count(batch.outcome)
        return True

    def _count(self, outcome: Outcome) -> None:
        dead = outcome.dead_letters
        self.meters.acked(outcome.handled, outcome.scored_by,
                          [dead_letter_class(d.reasons[0].reason, d.reasons[0].kind) for d in dead if d.reasons],
                          len(dead))
        stats = self.scorer.pipeline.stats
        if stats.shadow_compared:
            self.meters.shadow(stats.shadow_compared, stats.shadow_agreed)

    async def _idle_ack(self, batch: InFlight) -> None:
        await asyncio.sleep(IDLE_ACK_S)
        self._idle_task = None  # no longer cancelled by a new batch: an ack is not cut short
        async with self._lock:
            if self._in_flight is batch:
                await self._settle()
        await self._redeliver()

    async def flush(self) -> None:
        """Shutdown: ack what is in flight; later batches are acked before their handler returns."""
        self.closing = True
        self._closed.set()  # backoffs end now: what failed goes back to its source at once
        with log_context(pipeline=self.name):
            async with self._lock:
                await self._settle()
            await self._redeliver()

    async def _nack(self, batches: Sequence[SourceBatch], reason: str) -> None:
        for b in reversed(batches):  # newest first: the oldest position is where delivery resumes
            try:
                await b.nack(reason)
            except Exception as exc:  # the connection is gone: the broker redelivers what was not acked
                log.warning("%s: nack failed (%s: %s)", self.name, type(exc).__name__, exc)

    def _retry_later(self, batches: Sequence[SourceBatch], reason: str) -> None:
        """The batches go back to their source after a backoff. Not under the lock: the
        deliveries of a concurrent source (AMQP) would wait for each other's backoffs."""
        self.redelivered_batches += 1
        self._backoff_s = min(MAX_BACKOFF_S, max(0.2, self._backoff_s * 2))
        self._pending.append((list(batches), reason, self._backoff_s))

    async def _redeliver(self) -> None:
        """Nacks what `_retry_later` left, each after its backoff (cut short by shutdown).
        The backoff comes first: a requeued AMQP request would come straight back."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*(self._redeliver_one(*p) for p in pending))

    async def _redeliver_one(self, batches: list[SourceBatch], reason: str, delay_s: float) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay_s)
        await self._nack(batches, reason)

    # ------------------------------------------------------------------ policy pause
    def _pause(self) -> None:
        """Stop taking input while the model is away; resume when its breaker would let a
        call through (the next batch is then the half-open probe)."""
        if self.flow is None or (self._resume_task is not None and not self._resume_task.done()):
            return
        paused = self.flow.pause()
        log.warning("%s: model unavailable, policy pause (%d paused)", self.name, paused)
        self._resume_task = asyncio.get_running_loop().create_task(self._resume_when_ready())

    async def _resume_when_ready(self) -> None:
        assert self.flow is not None
        started = time.monotonic()
        await asyncio.sleep(self.scorer.retry_after_s())
        self.flow.resume()
        log.info("%s: resumed after %.1f s", self.name, time.monotonic() - started)

    async def close(self) -> None:
        for task in (self._resume_task, self._idle_task):
            if task is not None:
                task.cancel()
        if self.flow is not None:
            self.flow.resume()  # a request held by the pause goes back to its queue
        for part in (self.sink, self.rejects):
            try:
                await part.close()
            except Exception as exc:
                log.warning("%s: closing %r failed (%s)", self.name, part, exc)
