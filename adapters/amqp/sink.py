"""Scored records to requesters' reply queues (`AmqpReplySink`) or an exchange
(`AmqpExchangeSink`), and rejects to a dead-letter exchange (`AmqpDeadLetters`).

Every `write` returns once the broker confirmed each message (publisher confirms), and
only then is the source acked. A reply goes to the default exchange with the request's
`reply_to` as routing key and its `correlation_id`, header lgw-status `scored`; a
request without `reply_to` is scored, but nobody could read its answer: it goes to the
source's dead-letter exchange as lgw-error `no_reply_to`. A rejected request is
dead-lettered with the reasons in headers, and, when the request names a `reply_to`,
its requester gets a reply saying so (lgw-status `rejected`, a JSON body with the
error, reason and field), so it is not left waiting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiormq.exceptions import AMQPError

from adapters.amqp.config import AmqpConfig, AmqpRejectsConfig, AmqpSinkConfig, AmqpSourceConfig
from adapters.amqp.publisher import AmqpPublisher, OutMessage, as_amqp
from adapters.amqp.security import connection_problem
from adapters.base import InMessage, ScoredBatch, SourceBatch
from adapters.headers import H_ERROR, H_FIELD, H_REASON, H_SOURCE, TRACE_HEADERS, Headers, by_record, with_trace
from adapters.render import MessageRenderer, default_format
from schemas.errors import BrokerUnavailable
from schemas.stream import Reject

H_STATUS = "lgw-status"
JSON = "application/json"
OCTETS = "application/octet-stream"


class _Exchange:
    """What the three share: a publisher (the app's broker or one of its own), a renderer."""

    def __init__(self, renderer: MessageRenderer, publisher: AmqpPublisher) -> None:
        self.renderer = renderer
        self.publisher = publisher
        self.messages = 0

    async def open(self, state: dict[str, Any] | None = None) -> None:
        try:
            await self.publisher.start()
        except (AMQPError, OSError) as exc:
            cluster = self.publisher.cluster
            problem = await connection_problem(cluster) if cluster is not None else None
            raise BrokerUnavailable(problem or f"amqp: cannot connect: {type(exc).__name__}: {exc}") from exc

    def state(self) -> dict[str, Any]:
        return {}  # nothing to resume: what was confirmed stays published

    async def finish(self) -> dict[str, Any]:
        return {"format": "amqp", "records": self.messages}

    async def publish(self) -> None:
        return None

    async def discard(self) -> None:
        return None  # what was sent stays sent

    async def close(self) -> None:
        await self.publisher.stop()

    async def _send(self, messages: Sequence[OutMessage]) -> None:
        try:
            await self.publisher.publish(messages)
        except (AMQPError, OSError) as exc:  # the broker's trouble, not the records': retried, never rejected
            raise BrokerUnavailable(f"amqp: publishing failed: {type(exc).__name__}: {exc}") from exc
        self.messages += len(messages)

    def _content_type(self) -> str:
        return JSON if self.renderer.fmt == "json" else OCTETS


class AmqpExchangeSink(_Exchange):
    """Scored records published to an exchange (implements `adapters.base.Sink`)."""

    publishes_messages = True  # takes the payloads a real-time scorer rendered (`ScoredBatch.rendered`)

    def __init__(self, exchange: str, routing_key: str, renderer: MessageRenderer, publisher: AmqpPublisher) -> None:
        super().__init__(renderer, publisher)
        self.exchange = exchange
        self.routing_key = routing_key

    async def open(self, state: dict[str, Any] | None = None) -> None:
        await super().open(state)
        await self.publisher.declare(self.exchange)

    def prepare(self, batch: ScoredBatch) -> list[OutMessage]:
        out = []
        for _key, value, headers in self.renderer.results(batch):
            h = as_amqp(headers)
            out.append(OutMessage(value, self.routing_key, self.exchange, h, message_id=h.get("lgw-id"),
                                  content_type=self._content_type()))
        return out

    async def write(self, prepared: Sequence[list[OutMessage]]) -> None:
        await self._send([m for part in prepared for m in part])


class AmqpReplySink(_Exchange):
    """Each result as the reply to its request (implements `adapters.base.Sink`); only an
    AMQP source has requesters."""

    publishes_messages = True  # takes the payloads a real-time scorer rendered (`ScoredBatch.rendered`)

    def __init__(self, renderer: MessageRenderer, publisher: AmqpPublisher, dead_letter_exchange: str,
                 dead_letter_routing_key: str) -> None:
        super().__init__(renderer, publisher)
        self.dlx = dead_letter_exchange
        self.dlx_routing_key = dead_letter_routing_key

    def prepare(self, batch: ScoredBatch) -> list[OutMessage]:
        messages = batch.source.messages
        if messages is None:
            raise ValueError("a reply sink answers requests: its source must be an AMQP queue")
        out = []
        for (_key, value, headers), i in zip(self.renderer.results(batch), batch.rows.tolist(), strict=True):
            m = messages[i]
            if m.reply_to:
                out.append(OutMessage(value, m.reply_to, None, {**as_amqp(headers), H_STATUS: "scored"},
                                      m.correlation_id, content_type=self._content_type()))
            else:
                trace = batch.source.trace(i) if batch.source.trace is not None else []
                out.append(self._unanswerable(m, value, trace))
        return out

    def _unanswerable(self, m: InMessage, result: bytes, trace: Headers) -> OutMessage:
        """The result nobody asked to receive goes to the dead-letter exchange: the scored
        record as the reply would have carried it (its pii fields as the pipeline's policy
        leaves them, where the request's own bytes would carry them in clear)."""
        headers = {**as_amqp(with_trace(m.headers, trace)), H_ERROR: "no_reply_to", H_SOURCE: m.id,
                   H_REASON: "request has no reply_to: the result cannot be delivered"}
        return OutMessage(result, self.dlx_routing_key, self.dlx, headers, m.correlation_id)

    async def write(self, prepared: Sequence[list[OutMessage]]) -> None:
        await self._send([m for part in prepared for m in part])


class AmqpDeadLetters(_Exchange):
    """Rejects published to a dead-letter exchange (implements `adapters.base.RejectSink`),
    with a queue `<queue>.dlq` bound to it when the source is an AMQP queue."""

    def __init__(self, exchange: str, routing_key: str, renderer: MessageRenderer, publisher: AmqpPublisher,
                 dlq: str | None = None) -> None:
        super().__init__(renderer, publisher)
        self.exchange = exchange
        self.routing_key = routing_key
        self.dlq = dlq

    async def open(self, state: dict[str, Any] | None = None) -> None:
        await super().open(state)
        await self.publisher.declare(self.exchange, self.dlq, self.routing_key)

    async def write(self, rejects: Sequence[Reject], source: SourceBatch) -> None:
        if not rejects:
            return
        letters = self.renderer.dead_letters(rejects, source)
        out = [OutMessage(value, self.routing_key, self.exchange, as_amqp(headers), content_type=None)
               for _key, value, headers in letters]
        replies: list[OutMessage] = []
        if source.messages is not None:
            for letter, record in zip(out, by_record(rejects), strict=True):
                m = source.messages[record - 1]
                letter.correlation_id = m.correlation_id
                if m.reply_to:
                    replies.append(_rejected_reply(m, letter.headers))
        await self._send(out + replies)


def _rejected_reply(m: InMessage, dead: dict[str, Any]) -> OutMessage:
    lgw = {k: v for k, v in dead.items() if k.startswith("lgw-")}  # not the request's own headers
    trace = {k: v for k, v in dead.items() if k in TRACE_HEADERS}  # but its trace: the requester follows it
    body = json.dumps({"status": "rejected", "error": lgw.get(H_ERROR), "reason": lgw.get(H_REASON),
                       "field": lgw.get(H_FIELD)}).encode()
    assert m.reply_to is not None
    return OutMessage(body, m.reply_to, None, {**lgw, **trace, H_STATUS: "rejected"}, m.correlation_id,
                      content_type=JSON)


def _publisher(context: Any) -> AmqpPublisher:
    return AmqpPublisher(context.extras.get("rabbit_broker"), cluster=context.amqp or AmqpConfig())


def build_sink(config: AmqpSinkConfig, context: Any) -> AmqpExchangeSink | AmqpReplySink:
    """The `amqp` sink of the registry: an exchange, or (without one) the replies."""
    fmt = default_format(config.format, context.source)
    renderer = MessageRenderer(fmt, pipeline=context.pipeline, contract=context.contract,
                               fixed_columns=context.extras.get("fixed_columns"))
    if config.exchange is not None:
        return AmqpExchangeSink(config.exchange, config.routing_key, renderer, _publisher(context))
    src = context.source
    if not isinstance(src, AmqpSourceConfig):
        raise ValueError("an amqp sink without `exchange` replies to requests: it needs an amqp source")
    return AmqpReplySink(renderer, _publisher(context), src.dead_letter_exchange,
                         src.dead_letter_routing_key or src.queue)


def build_rejects(config: AmqpRejectsConfig, context: Any) -> AmqpDeadLetters:
    """The `amqp` reject sink of the registry."""
    renderer = MessageRenderer("json", pipeline=context.pipeline, contract=context.contract)
    src = context.source
    dlq = f"{src.queue}.dlq" if isinstance(src, AmqpSourceConfig) else None
    return AmqpDeadLetters(config.exchange, config.routing_key or context.pipeline, renderer, _publisher(context),
                           dlq)
