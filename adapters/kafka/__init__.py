"""Kafka: the topic source (source.py), the topic sink and the dead-letter topic (sink.py),
and what they share: the publisher (publisher.py) and the batch partitioner
(partitioning.py). The same layout as adapters/amqp.

The names below load on first use: `adapters.kafka.config` (which gateway.yaml's loader
reads) must import without aiokafka, so that a gateway installed without the kafka extra
still starts and says which extra a pipeline needs (gateway.extras)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.kafka.publisher import KafkaPublisher, OutRecord
    from adapters.kafka.source import KafkaSource, next_offsets, pause_all, record_id, resume_all, rewind

_WHERE = {"KafkaPublisher": "publisher", "OutRecord": "publisher", "KafkaSource": "source",
          "next_offsets": "source", "pause_all": "source", "record_id": "source", "resume_all": "source",
          "rewind": "source"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = ["KafkaPublisher", "KafkaSource", "OutRecord", "next_offsets", "pause_all", "record_id", "resume_all",
           "rewind"]
