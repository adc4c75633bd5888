"""The AMQP 0-9-1 driver (RabbitMQ): request/reply for the legacy queue.

A request names the queue for its reply (`reply_to`) and a `correlation_id`; the reply
goes to the default exchange with that routing key and the same correlation id, and the
request is acknowledged only after the broker confirmed the reply (publisher confirms).
A request that fails decoding or validation is published to the dead-letter exchange
with the original bytes and the reason in its headers, and the requester gets a reply
saying it was rejected, so it is not left waiting; so is a request that makes the
pipeline raise (lgw-error crash, `gateway.isolation`), rather than being requeued for
ever. Only what is not the request's fault (the broker, the state store) puts it back
on the queue after a pause. Prefetch bounds the requests in flight. A request with no
`reply_to` is scored and its result goes nowhere but the log: it is dead-lettered as
such, because nobody could read the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.message import RabbitMessage

from gateway.config import AmqpSourceConfig
from gateway.realtime.core import H_ERROR, H_FIELD, H_REASON, H_SOURCE, Headers, MicroBatchScorer

log = logging.getLogger("lgw.realtime.amqp")

H_STATUS = "lgw-status"
RETRY_PAUSE_S = 1.0


def _as_amqp(headers: Headers) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in headers}


class AmqpPipelineDriver:
    def __init__(self, name: str, source: AmqpSourceConfig, scorer: MicroBatchScorer, broker: RabbitBroker) -> None:
        self.name = name
        self.source = source
        self.scorer = scorer
        self.broker = broker
        self.dlx = RabbitExchange(source.dead_letter_exchange, durable=True)
        self.dlq_routing_key = source.dead_letter_routing_key or source.queue
        self.dlq = RabbitQueue(f"{source.queue}.dlq", durable=True, routing_key=self.dlq_routing_key)
        self.replies = 0
        self.rejected = 0

    async def declare(self) -> None:
        """The dead-letter exchange and a queue bound to it, so rejects are kept even when
        nobody has bound a queue of their own yet."""
        exchange = await self.broker.declare_exchange(self.dlx)
        queue = await self.broker.declare_queue(self.dlq)
        await queue.bind(exchange, routing_key=self.dlq_routing_key)

    async def handle(self, msg: RabbitMessage) -> None:
        """Answers one request; if anything fails on the way (the broker refusing the reply,
        a bug), the request goes back to the queue after a pause instead of holding a
        prefetch slot unacknowledged until the channel closes."""
        try:
            await self._answer(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: request %s could not be answered; it goes back to the queue", self.name,
                          msg.correlation_id)
            await asyncio.sleep(RETRY_PAUSE_S)
            await msg.nack(requeue=True)

    async def _answer(self, msg: RabbitMessage) -> None:
        payload = msg.body if isinstance(msg.body, bytes) else bytes(msg.body)
        # the request's own ids, as sent: FastStream makes up a fresh message_id for a request
        # without one, and an id that changes on redelivery cannot de-duplicate the replies
        raw = msg.raw_message
        source_id = raw.message_id or raw.correlation_id or ""
        while True:
            outcome = await self.scorer.process([payload], [source_id])
            if not outcome.paused:
                break
            # policy pause: hold this request (prefetch stops the rest) until the model is back
            await asyncio.sleep(self.scorer.retry_after_s())
        reply_to = msg.reply_to
        if outcome.results:
            result = outcome.results[0]
            if reply_to:
                await self.broker.publish(result.value, routing_key=reply_to, correlation_id=msg.correlation_id,
                                          headers={**_as_amqp(result.headers), H_STATUS: "scored"},
                                          content_type=self._content_type(), persist=True)
                self.replies += 1
            else:
                await self._dead_letter(payload, msg, {H_ERROR: "no_reply_to", H_SOURCE: source_id,
                                                       H_REASON: "request has no reply_to: the result "
                                                                 "cannot be delivered"})
        else:
            dead = outcome.dead_letters[0]
            headers = _as_amqp(dead.headers)
            await self._dead_letter(payload, msg, headers)
            if reply_to:
                body = json.dumps({"status": "rejected", "error": headers.get(H_ERROR),
                                   "reason": headers.get(H_REASON), "field": headers.get(H_FIELD)}).encode()
                await self.broker.publish(body, routing_key=reply_to, correlation_id=msg.correlation_id,
                                          headers={**headers, H_STATUS: "rejected"},
                                          content_type="application/json", persist=True)
        await msg.ack()

    async def _dead_letter(self, payload: bytes, msg: RabbitMessage, headers: dict[str, Any]) -> None:
        original = {k: v for k, v in (msg.headers or {}).items() if isinstance(v, str | int | float | bool)}
        await self.broker.publish(payload, exchange=self.dlx, routing_key=self.dlq_routing_key,
                                  correlation_id=msg.correlation_id, headers={**original, **headers},
                                  persist=True)
        self.rejected += 1

    def _content_type(self) -> str:
        return "application/json" if self.scorer.result_format == "json" else "application/octet-stream"
