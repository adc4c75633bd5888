"""Scored records to a Kafka topic (`KafkaTopicSink`) and rejects to a dead-letter topic
(`KafkaDeadLetters`), for a real-time source or a batch one.

`write` returns once the brokers acknowledged every record (acks=all): only then is the
source acked. At least once: a batch written again after a crash is published again,
with the same `lgw-id` (topic-partition-offset of a Kafka input, message id of an AMQP
one, "<pipeline>/<record number>" of a file or table record), for consumers to drop.
Both sinks share one publisher (one producer) when the driver hands it over in
`BuildContext.extras["kafka_publisher"]`; otherwise each starts its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError

from adapters.base import ScoredBatch, SourceBatch, message_columns
from adapters.kafka.config import KafkaConfig, KafkaRejectsConfig, KafkaSinkConfig
from adapters.kafka.publisher import KafkaPublisher, OutRecord
from adapters.kafka.security import connection_problem
from adapters.render import MessageRenderer, default_format
from schemas.errors import BrokerUnavailable
from schemas.stream import Reject

log = logging.getLogger("lgw.kafka")


class _Topic:
    """What both sinks share: a topic, a publisher (own or shared), a renderer."""

    def __init__(self, topic: str, renderer: MessageRenderer, publisher: KafkaPublisher | None,
                 cluster: KafkaConfig | None = None) -> None:
        self.topic = topic
        self.renderer = renderer
        self._own = publisher is None
        self.publisher = publisher if publisher is not None else KafkaPublisher.for_cluster(cluster or KafkaConfig())
        self.records = 0

    async def open(self, state: dict[str, Any] | None = None) -> None:
        if self._own and not self.publisher.started:
            try:
                await self.publisher.start()
            except (KafkaError, OSError) as exc:
                cluster = self.publisher.cluster
                problem = await connection_problem(cluster) if cluster is not None else None
                raise BrokerUnavailable(problem or f"kafka: cannot reach {self.publisher.bootstrap} for topic "
                                                   f"{self.topic}: {type(exc).__name__}: {exc}") from exc

    def state(self) -> dict[str, Any]:
        return {}  # nothing to resume: what was acknowledged stays published

    async def finish(self) -> dict[str, Any]:
        return {"topic": self.topic, "format": "kafka", "records": self.records}

    async def publish(self) -> None:
        return None  # every batch was visible once acknowledged

    async def discard(self) -> None:
        return None  # what was sent stays sent; its lgw-id lets consumers recognise a rerun

    async def close(self) -> None:
        if self._own:
            await self.publisher.stop()

    async def _send(self, records: Sequence[OutRecord]) -> None:
        try:
            await self.publisher.publish(self.topic, records)
        except (KafkaError, OSError) as exc:  # the broker's trouble, not the records': retried, never rejected
            raise BrokerUnavailable(f"kafka topic {self.topic}: {type(exc).__name__}: {exc}") from exc
        self.records += len(records)


class KafkaTopicSink(_Topic):
    """Scored records published to a topic (implements `adapters.base.Sink`)."""

    publishes_messages = True  # takes the payloads a real-time scorer rendered (`ScoredBatch.rendered`)

    def prepare(self, batch: ScoredBatch) -> list[OutRecord]:
        messages = batch.source.messages
        if batch.rendered is not None and messages is not None and self.renderer.key is None:
            # the real-time hot path: the scorer's payloads under their input's key, one pass
            keys = message_columns(messages)[2]
            return [OutRecord(keys[i], value, headers)
                    for (value, headers), i in zip(batch.rendered, batch.rows.tolist(), strict=True)]
        return [OutRecord(k, v, h) for k, v, h in self.renderer.results(batch)]

    async def write(self, prepared: Sequence[list[OutRecord]]) -> None:
        """Everything prepared for one source batch, acknowledged by the brokers."""
        records = prepared[0] if len(prepared) == 1 else [r for part in prepared for r in part]
        await self._send(records)


class KafkaDeadLetters(_Topic):
    """Rejects published to a dead-letter topic (implements `adapters.base.RejectSink`):
    a message's original bytes, key and headers with the reasons added in headers; a
    file or table record's reject as its JSON line."""

    async def write(self, rejects: Sequence[Reject], source: SourceBatch) -> None:
        if rejects:
            await self._send([OutRecord(k, v, h) for k, v, h in self.renderer.dead_letters(rejects, source)])


def _publisher(context: Any) -> KafkaPublisher | None:
    shared = context.extras.get("kafka_publisher")
    return shared if isinstance(shared, KafkaPublisher) else None


def build_sink(config: KafkaSinkConfig, context: Any) -> KafkaTopicSink:
    """The `kafka` sink of the registry."""
    fmt = default_format(config.format, context.source)
    renderer = MessageRenderer(fmt, pipeline=context.pipeline, contract=context.contract,
                               key=config.key, fixed_columns=context.extras.get("fixed_columns"))
    return KafkaTopicSink(config.topic, renderer, _publisher(context), context.kafka)


def build_rejects(config: KafkaRejectsConfig, context: Any) -> KafkaDeadLetters:
    """The `kafka` reject sink of the registry."""
    renderer = MessageRenderer("json", pipeline=context.pipeline, contract=context.contract)
    return KafkaDeadLetters(config.topic, renderer, _publisher(context), context.kafka)
