"""The Kafka driver of one real-time pipeline: a FastStream batch subscriber hands it a
micro-batch; it scores, publishes results and dead letters, and only then commits.

At-least-once: offsets are committed after every result and dead letter of the batch is
acknowledged by the broker (acks=all). Anything that goes wrong before that rewinds the
partitions to the batch's first offsets, so the same records come again; results carry
their input's topic-partition-offset as a stable id for consumers to de-duplicate.
FastStream's own ack policies do not fit (NACK_ON_ERROR re-delivers a poison message
forever, ACK skips a failed one silently), so acknowledgement is manual.

The broker's acknowledgement of batch N is awaited while batch N+1 is scored (one batch
in flight), so the round trip does not stall the pipeline; N+1 is sent once N is
acknowledged, and N's offsets are committed explicitly after that (never the consumer's
position, which is already past N+1). If N failed, N+1 has not been sent yet: the
partitions are rewound to N's first offsets and both come again. A batch left in flight
when no more arrive is committed by a short idle task; while the app shuts down every
batch is committed before its handler returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from adapters.kafka import KafkaPublisher, OutRecord, pause_all, record_id, resume_all, rewind
from gateway.config import KafkaSourceConfig
from gateway.realtime.core import MicroBatchScorer, Outcome

log = logging.getLogger("lgw.realtime.kafka")

MAX_BACKOFF_S = 10.0
IDLE_COMMIT_S = 0.05  # a batch in flight with nothing after it is committed this soon

Records = tuple[ConsumerRecord[Any, Any], ...]
INFRASTRUCTURE = (KafkaError, OSError, TimeoutError)


@dataclass
class InFlight:
    """A batch whose results were sent but not yet acknowledged by the broker."""

    records: Records
    acked: asyncio.Future[Any]
    commit_offsets: dict[TopicPartition, int]  # next offset to read, per partition


def next_offsets(records: Records) -> dict[TopicPartition, int]:
    last: dict[tuple[str, int], int] = {}
    for r in records:  # a partition's records arrive in offset order
        last[r.topic, r.partition] = max(r.offset, last.get((r.topic, r.partition), -1))
    return {TopicPartition(topic, part): offset + 1 for (topic, part), offset in last.items()}


class KafkaPipelineDriver:
    def __init__(self, name: str, source: KafkaSourceConfig, scorer: MicroBatchScorer,
                 publisher: KafkaPublisher) -> None:
        self.name = name
        self.source = source
        self.scorer = scorer
        self.publisher = publisher
        self._backoff_s = 0.0
        self._resume_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one actor at a time: the handler, the idle commit, the shutdown flush
        self._in_flight: InFlight | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self.closing = False
        self.committed_batches = 0
        self.committed_records = 0
        self.redelivered_batches = 0

    async def handle(self, records: Records, consumer: AIOKafkaConsumer) -> None:
        if not records:
            return
        if self._idle_task is not None:
            self._idle_task.cancel()  # still waiting: this batch settles the one in flight
        async with self._lock:
            self._consumer = consumer
            await self._handle(records, consumer)
        if self._in_flight is not None and not self.closing:
            self._idle_task = asyncio.get_running_loop().create_task(self._idle_commit(self._in_flight))

    async def _handle(self, records: Records, consumer: AIOKafkaConsumer) -> None:
        values = [r.value or b"" for r in records]
        ids = [record_id(r) for r in records]
        try:
            outcome = await self.scorer.process(values, ids)
        except Exception:
            log.exception("%s: scoring a batch of %d failed; it will be fetched again", self.name, len(records))
            if await self._settle(consumer, records):
                await self._retry_later(consumer, records)
            return
        if outcome.paused:
            if await self._settle(consumer, records):
                rewind(consumer, records)
                self._pause(consumer)
            return
        before, self._in_flight = self._in_flight, None
        if before is not None and not await self._acked(consumer, before, records):
            return  # the batch before failed: both were rewound and come again
        try:
            acked = self._publish(records, outcome)
        except INFRASTRUCTURE as exc:
            log.warning("%s: publishing failed (%s); the batch will be fetched again", self.name, exc)
            if before is None or await self._commit(consumer, before, records):
                await self._retry_later(consumer, records)
            return
        self._in_flight = InFlight(records, acked, next_offsets(records))
        await asyncio.sleep(0)  # let the producer put the batch on the wire before the next one is scored
        # The batch before is committed only now, with this one on its way: the commit's
        # round trip is no message's wait. Should it fail, both batches come again, and
        # this one's results (already sent) are delivered twice, with the same ids.
        if before is not None and not await self._commit(consumer, before, records):
            self._in_flight = None  # rewound: its acknowledgement no longer matters
            acked.add_done_callback(lambda f: f.cancelled() or f.exception())
            return
        if self.closing:
            await self._settle(consumer)

    def _publish(self, records: Records, outcome: Outcome) -> asyncio.Future[Any]:
        """Sends results and dead letters; the future completes when the broker acked all."""
        results = [OutRecord(records[r.index].key, r.value, r.headers) for r in outcome.results]
        dead = [OutRecord(records[d.index].key, records[d.index].value or b"",
                          [*(records[d.index].headers or ()), *d.headers]) for d in outcome.dead_letters]
        assert self.source.result_topic is not None and self.source.dlq_topic is not None
        sends: list[Awaitable[Any]] = [self.publisher.publish(self.source.result_topic, results)]
        if dead:
            sends.append(self.publisher.publish(self.source.dlq_topic, dead))
        return asyncio.ensure_future(asyncio.gather(*sends))

    async def _settle(self, consumer: AIOKafkaConsumer, later: Records = ()) -> bool:
        """Waits for the batch in flight and commits it. False when it failed: its
        partitions, and those of `later` (the batch fetched after it, not sent), are rewound
        to their first offsets, so both come again."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return True
        return await self._acked(consumer, batch, later) and await self._commit(consumer, batch, later)

    async def _acked(self, consumer: AIOKafkaConsumer, batch: InFlight, later: Records) -> bool:
        try:
            await batch.acked
        except INFRASTRUCTURE as exc:
            log.warning("%s: the broker did not acknowledge a batch (%s); it will be fetched again", self.name, exc)
            await self._retry_later(consumer, batch.records + later)
            return False
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, batch: InFlight, later: Records) -> bool:
        try:
            await consumer.commit(batch.commit_offsets)
        except CommitFailedError as exc:  # the group rebalanced: the new owner gets them again
            log.warning("%s: commit failed (%s); %d records may be delivered again", self.name, exc,
                        len(batch.records))
            return True
        except INFRASTRUCTURE as exc:
            log.warning("%s: commit failed (%s); the batch will be fetched again", self.name, exc)
            await self._retry_later(consumer, batch.records + later)
            return False
        self.committed_batches += 1
        self.committed_records += len(batch.records)
        self._backoff_s = 0.0
        return True

    async def _idle_commit(self, batch: InFlight) -> None:
        await asyncio.sleep(IDLE_COMMIT_S)
        self._idle_task = None  # no longer cancelled by a new batch: a commit is not cut short
        async with self._lock:
            if self._in_flight is batch and self._consumer is not None:
                await self._settle(self._consumer)

    async def flush(self) -> None:
        """Shutdown: commit what is in flight; later batches commit before returning."""
        self.closing = True
        async with self._lock:
            if self._consumer is not None:
                await self._settle(self._consumer)

    async def _retry_later(self, consumer: AIOKafkaConsumer, records: Records) -> None:
        rewind(consumer, records)
        self.redelivered_batches += 1
        self._backoff_s = min(MAX_BACKOFF_S, max(0.2, self._backoff_s * 2))
        await asyncio.sleep(self._backoff_s)

    # ------------------------------------------------------------------ policy pause
    def _pause(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching while the model is away; resume when its breaker would let a call
        through (the next batch is then the half-open probe)."""
        if self._resume_task is not None and not self._resume_task.done():
            return
        paused = pause_all(consumer)
        log.warning("%s: model unavailable, policy pause: %d partitions paused", self.name, len(paused))
        self._resume_task = asyncio.get_running_loop().create_task(self._resume_when_ready(consumer))

    async def _resume_when_ready(self, consumer: AIOKafkaConsumer) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.scorer.retry_after_s())
        resume_all(consumer)
        log.info("%s: partitions resumed after %.1f s", self.name, time.monotonic() - started)

    async def close(self) -> None:
        for task in (self._resume_task, self._idle_task):
            if task is not None:
                task.cancel()
