"""Publishing to an AMQP 0-9-1 broker (RabbitMQ) with publisher confirms: `publish`
returns once the broker confirmed the message, so a sink's write is durable on return
(persistent messages to durable queues). The connection is FastStream's `RabbitBroker`:
the real-time app's own broker when the driver hands it over in
`BuildContext.extras["rabbit_broker"]`, else one of the publisher's own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue

from adapters.amqp.config import AmqpConfig
from adapters.amqp.security import broker_security
from adapters.headers import Headers


def as_amqp(headers: Headers) -> dict[str, str]:
    """lgw-* headers (bytes, as Kafka carries them) as AMQP table strings."""
    return {k: v.decode("utf-8", "replace") for k, v in headers}


@dataclass(slots=True)
class OutMessage:
    body: bytes
    routing_key: str
    exchange: str | None = None  # None: the default exchange (a reply, by queue name)
    headers: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    message_id: str | None = None
    content_type: str | None = None


class AmqpPublisher:
    def __init__(self, broker: RabbitBroker | None = None, *, cluster: AmqpConfig | None = None) -> None:
        self._own = broker is None
        self.cluster = cluster  # what a failed connection is explained against
        if broker is None:
            cfg = cluster or AmqpConfig()
            broker = RabbitBroker(cfg.url, security=broker_security(cfg), logger=None)
        self.broker = broker
        self._exchanges: dict[str, RabbitExchange] = {}

    async def start(self) -> None:
        if self._own:
            await self.broker.connect()

    async def stop(self) -> None:
        if self._own:
            await self.broker.stop()

    def exchange(self, name: str) -> RabbitExchange:
        ex = self._exchanges.get(name)
        if ex is None:
            ex = self._exchanges[name] = RabbitExchange(name, durable=True)
        return ex

    async def declare(self, exchange: str, queue: str | None = None, routing_key: str = "") -> None:
        """A durable exchange, and a durable queue bound to it (so what is published is kept
        even when nobody has bound a queue of their own yet)."""
        ex = await self.broker.declare_exchange(self.exchange(exchange))
        if queue is not None:
            q = await self.broker.declare_queue(RabbitQueue(queue, durable=True, routing_key=routing_key))
            await q.bind(ex, routing_key=routing_key)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Every message confirmed by the broker, or the first failure raised."""
        await asyncio.gather(*(self._one(m) for m in messages))

    async def _one(self, m: OutMessage) -> None:
        await self.broker.publish(m.body, exchange=self.exchange(m.exchange) if m.exchange else None,
                                  routing_key=m.routing_key, correlation_id=m.correlation_id, headers=m.headers,
                                  content_type=m.content_type, message_id=m.message_id, persist=True)
