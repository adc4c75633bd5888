"""Requests on an AMQP 0-9-1 queue (RabbitMQ), one delivery a batch (`adapters.base.Source`).

The ack is basic.ack; the nack puts the request back on the queue (basic.nack requeue),
so it comes again. While the source is paused (the model is away and the pipeline's
policy is to wait), a nacked request is held until the pause ends and only then
requeued: requeued at once, it would come straight back and spin. The prefetch count
bounds the requests delivered and not yet acked.

In `lgw serve` a FastStream subscriber consumes the queue and hands each delivery to
`batch`; the request's own ids are used as sent (FastStream makes up a fresh message_id
for a request without one, and an id that changes on redelivery cannot de-duplicate the
replies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, overload

import pyarrow as pa

from adapters.amqp.config import AmqpConfig, AmqpSourceConfig
from adapters.base import InMessage, Messages, SourceBatch

_NO_TABLE = pa.table({})  # a real-time batch is decoded by the driver, per micro-batch


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    # only what survives a round trip as text: nested tables and byte arrays are dropped
    return [(k, str(v).encode()) for k, v in (raw or {}).items() if isinstance(v, str | int | float | bool)]


def in_message(msg: Any) -> InMessage:
    """A FastStream `RabbitMessage` as the gateway's `InMessage`."""
    raw = msg.raw_message
    body = msg.body if isinstance(msg.body, bytes) else bytes(msg.body)
    return InMessage(body, raw.message_id or raw.correlation_id or "", None, _headers(msg.headers),
                     msg.reply_to or None, msg.correlation_id)


class AmqpMessages(Messages):
    def __init__(self, messages: Sequence[InMessage], queue: str = "") -> None:
        self.messages = list(messages)
        self.queue = queue
        self.values = [m.value for m in self.messages]
        self.ids = [m.id for m in self.messages]
        self.keys = [None] * len(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def trace_attributes(self) -> dict[str, str | int]:
        """OpenTelemetry messaging attributes: the queue and the request's ids."""
        out: dict[str, str | int] = {"messaging.system": "rabbitmq", "messaging.destination.name": self.queue}
        if len(self.messages) == 1:
            m = self.messages[0]
            out["messaging.message.id"] = m.id
            if m.correlation_id:
                out["messaging.message.conversation_id"] = m.correlation_id
        return out

    @overload
    def __getitem__(self, i: int) -> InMessage: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[InMessage]: ...

    def __getitem__(self, i: int | slice) -> InMessage | Sequence[InMessage]:
        return self.messages[i]


class AmqpSource:
    """The deliveries of `config.queue`."""

    def __init__(self, config: AmqpSourceConfig, cluster: AmqpConfig) -> None:
        self.config = config
        self.cluster = cluster
        self._running = asyncio.Event()
        self._running.set()

    # ---- Source protocol: in `lgw serve` FastStream consumes and calls `batch`
    async def connect(self) -> None:
        return None

    async def read_batch(self) -> SourceBatch | None:
        return None  # push-driven: deliveries arrive through `batch`

    async def close(self) -> None:
        self._running.set()  # a held request is requeued, not kept past the end

    def batch(self, msg: Any) -> SourceBatch:
        """One delivery (a FastStream `RabbitMessage`) as a batch of one request."""
        message = in_message(msg)

        async def ack() -> None:
            await msg.ack()

        async def nack(_reason: str) -> None:
            await self._running.wait()
            await msg.nack(requeue=True)

        return SourceBatch(_NO_TABLE, position={"message_id": message.id}, ack=ack, nack=nack,
                           messages=AmqpMessages([message], self.config.queue))

    def pause(self) -> int:
        self._running.clear()
        return 1

    def resume(self) -> None:
        self._running.set()


def build_source(config: AmqpSourceConfig, context: Any) -> AmqpSource:
    """The `amqp` source of the registry."""
    return AmqpSource(config, context.amqp)
