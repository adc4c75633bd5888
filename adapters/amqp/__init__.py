"""AMQP 0-9-1 (RabbitMQ): the request queue source (source.py), the reply, exchange and
dead-letter exchange sinks (sink.py), and the publisher they share (publisher.py). The
same layout as adapters/kafka.

The names below load on first use: `adapters.amqp.config` (which gateway.yaml's loader
reads) must import without FastStream, so that a gateway installed without the rabbit
extra still starts and says which extra a pipeline needs (gateway.extras)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.amqp.publisher import AmqpPublisher, OutMessage
    from adapters.amqp.source import AmqpSource

_WHERE = {"AmqpPublisher": "publisher", "OutMessage": "publisher", "AmqpSource": "source"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = ["AmqpPublisher", "AmqpSource", "OutMessage"]
