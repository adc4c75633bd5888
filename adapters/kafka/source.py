"""Records on Kafka topics, a micro-batch at a time (`adapters.base.Source`).

A batch's ack commits the offsets after its last record of each partition (never the
consumer's position, which may already be past the next batch); its nack seeks every
partition of the batch back to its first record, so the same records come again. Offsets
are committed only by these acks: auto-commit is off. A commit refused because the group
rebalanced is not a failure of the batch: the partition's new owner reads it again.

No commit is sent while the group is rebalancing this member (from the revocation that
starts its rejoin to the assignment that ends it), as the Java client does. aiokafka sends
one, and Tansu holds it until the rebalance is over and then takes it, for partitions that
may have moved (Kafka does not check who owns a committed partition): a commit that lands
after the new owner's moves the partition's offset back, to records answered and never
read again. That is the likely cause of test_kafka_scaleout's failures in CI (a partition
committed short of its end, every record answered). Left uncommitted, a batch is read again
by the partition's next owner (this member too if it keeps the partition: a new assignment
starts from the group's commit).

In `lgw serve` a FastStream batch subscriber owns the consumer and hands each fetch to
`batch`; on its own (`connect`, `read_batch`) the source runs a consumer of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter
from typing import Any, TypeAlias, overload

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from adapters.base import InMessage, Messages, SourceBatch
from adapters.kafka.config import KafkaConfig, KafkaSourceConfig
from adapters.kafka.security import client_options

log = logging.getLogger("lgw.kafka")

Record: TypeAlias = ConsumerRecord[Any, Any]
_NO_TABLE = pa.table({})  # a real-time batch is decoded by the driver, per micro-batch


def record_id(record: Record) -> str:
    """Stable across redeliveries: where the input sits in its topic."""
    return f"{record.topic}-{record.partition}-{record.offset}"


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record: what a commit stores."""
    last: dict[tuple[str, int], int] = {}
    for r in records:  # a partition's records arrive in offset order
        last[r.topic, r.partition] = max(r.offset, last.get((r.topic, r.partition), -1))
    return {TopicPartition(topic, part): offset + 1 for (topic, part), offset in last.items()}


def rewind(consumer: AIOKafkaConsumer, records: Sequence[Record]) -> None:
    """Seek every partition of the batch back to its first record: the batch is fetched again."""
    first: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if tp not in first or r.offset < first[tp]:
            first[tp] = r.offset
    for tp, offset in first.items():
        if tp in consumer.assignment():
            consumer.seek(tp, offset)


class Rebalances(ConsumerRebalanceListener):
    """Whether the group is rebalancing its member: from the revocation of its partitions
    (the start of every rejoin) to its next assignment."""

    def __init__(self) -> None:
        self.in_progress = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.in_progress = True

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.in_progress = False


async def commit_held(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], records: int,
                      rebalances: Rebalances) -> None:
    """Commits `offsets` of the partitions `consumer` still holds, unless the group is
    rebalancing it. A partition the group has moved to another member since the fetch is
    not ours to commit: its new owner reads it again from the group's last commit.
    (aiokafka refuses a commit naming it, IllegalStateError, and the whole batch was nacked:
    the partitions still held were not committed by it.)"""
    if rebalances.in_progress:
        log.info("not committing %d records: the group is rebalancing; the next owner of their partitions "
                 "reads them again", records)
        return
    held = consumer.assignment()
    mine = {tp: offset for tp, offset in offsets.items() if tp in held}
    if len(mine) < len(offsets):
        moved = sorted(f"{tp.topic}-{tp.partition}" for tp in offsets.keys() - mine.keys())
        log.info("not committing %s: moved to another member, which reads them again", ", ".join(moved))
    if not mine:
        return
    try:
        await consumer.commit(mine)
    except (CommitFailedError, IllegalStateError) as exc:  # the group rebalanced meanwhile
        log.warning("commit failed (%s); %d records may be delivered again", exc, records)


def pause_all(consumer: AIOKafkaConsumer) -> set[TopicPartition]:
    assigned = set(consumer.assignment())
    consumer.pause(*assigned)
    return assigned


def resume_all(consumer: AIOKafkaConsumer) -> None:
    paused = consumer.paused()
    if paused:
        consumer.resume(*paused)


class KafkaMessages(Messages):
    """The fetched records as `InMessage`s, made one at a time when asked for."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.values = [r.value or b"" for r in records]
        self.ids = [record_id(r) for r in records]
        self.keys = [r.key for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def header_lists(self) -> list[Sequence[tuple[str, bytes]]]:
        return [r.headers or () for r in self.records]

    def trace_attributes(self) -> dict[str, str | int]:
        """OpenTelemetry messaging attributes: the topic, and each partition's offset range.
        A fetch holds each partition's records in a run, in offset order, so a run's first
        and last record give its range (a loop over 2,000 records cost 0.65 ms a batch)."""
        records = self.records
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        i = 0
        for tp, run in groupby(map(attrgetter("topic", "partition"), records)):
            n = len(list(run))
            lo, hi = records[i].offset, records[i + n - 1].offset
            seen = ranges.get(tp)
            ranges[tp] = (min(lo, seen[0]), max(hi, seen[1])) if seen else (lo, hi)
            i += n
        topics = sorted({t for t, _ in ranges})
        out: dict[str, str | int] = {"messaging.system": "kafka", "messaging.destination.name": ",".join(topics),
                                     "lgw.kafka.offsets": ",".join(f"{t}-{p}:{lo}-{hi}" for (t, p), (lo, hi)
                                                                   in sorted(ranges.items()))}
        if len(ranges) == 1:
            (_, part), (lo, _) = next(iter(ranges.items()))
            out["messaging.destination.partition.id"] = str(part)
            out["messaging.kafka.offset"] = lo  # the first: the range is in lgw.kafka.offsets
        return out

    @overload
    def __getitem__(self, i: int) -> InMessage: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[InMessage]: ...

    def __getitem__(self, i: int | slice) -> InMessage | Sequence[InMessage]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r = self.records[i]
        return InMessage(self.values[i], self.ids[i], r.key, list(r.headers or ()))


class KafkaSource:
    """A consumer group's micro-batches of `config.topics`."""

    def __init__(self, config: KafkaSourceConfig, cluster: KafkaConfig) -> None:
        self.config = config
        self.cluster = cluster
        self.consumer: AIOKafkaConsumer | None = None
        self.rebalances = Rebalances()  # the consumer's rebalance listener: no commit while it rebalances
        self._own = False

    # ---- Source protocol: a consumer of its own
    async def connect(self) -> None:
        if self.consumer is not None:
            return
        c = self.cluster
        self.consumer = AIOKafkaConsumer(
            **client_options(c), group_id=self.config.group_id, enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            fetch_max_wait_ms=c.fetch_max_wait_ms, session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms, max_poll_records=self.config.batch_size)
        self.consumer.subscribe(list(self.config.topics), listener=self.rebalances)
        self._own = True
        await self.consumer.start()

    async def read_batch(self) -> SourceBatch | None:
        """The next micro-batch, or None when nothing came within `max_wait_ms`."""
        if self.consumer is None:
            raise RuntimeError("KafkaSource.connect() has not run")
        fetched = await self.consumer.getmany(timeout_ms=self.config.max_wait_ms, max_records=self.config.batch_size)
        records = tuple(r for part in fetched.values() for r in part)
        return self.batch(records) if records else None

    async def close(self) -> None:
        if self.consumer is not None and self._own:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    # ---- a fetch made by someone else's consumer (FastStream's subscriber)
    def batch(self, records: Sequence[Record], consumer: AIOKafkaConsumer | None = None) -> SourceBatch:
        """The records fetched by `consumer` (default: this source's own) as a batch whose
        ack commits them and whose nack fetches them again."""
        if consumer is not None:
            self.consumer = consumer
        owner = self.consumer
        if owner is None:
            raise RuntimeError("KafkaSource.batch: no consumer")
        offsets = next_offsets(records)

        async def ack() -> None:
            await commit_held(owner, offsets, len(records), self.rebalances)

        async def nack(_reason: str) -> None:
            rewind(owner, records)

        position = {f"{tp.topic}-{tp.partition}": offset for tp, offset in offsets.items()}
        return SourceBatch(_NO_TABLE, position=position, ack=ack, nack=nack, messages=KafkaMessages(records))

    def pause(self) -> int:
        """Stop fetching (policy pause): how many partitions were paused."""
        return len(pause_all(self.consumer)) if self.consumer is not None else 0

    def resume(self) -> None:
        if self.consumer is not None:
            resume_all(self.consumer)


def build_source(config: KafkaSourceConfig, context: Any) -> KafkaSource:
    """The `kafka` source of the registry."""
    return KafkaSource(config, context.kafka)
