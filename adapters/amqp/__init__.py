"""AMQP 0-9-1 (RabbitMQ): the request queue source (source.py), the reply, exchange and
dead-letter exchange sinks (sink.py), and the publisher they share (publisher.py). The
same layout as adapters/kafka."""

from adapters.amqp.publisher import AmqpPublisher, OutMessage
from adapters.amqp.source import AmqpSource

__all__ = ["AmqpPublisher", "AmqpSource", "OutMessage"]
