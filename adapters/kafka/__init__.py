"""Kafka: the topic source (source.py), the topic sink and the dead-letter topic (sink.py),
and what they share: the publisher (publisher.py) and the batch partitioner
(partitioning.py). The same layout as adapters/amqp."""

from adapters.kafka.publisher import KafkaPublisher, OutRecord
from adapters.kafka.source import KafkaSource, next_offsets, pause_all, record_id, resume_all, rewind

__all__ = ["KafkaPublisher", "KafkaSource", "OutRecord", "next_offsets", "pause_all", "record_id", "resume_all",
           "rewind"]
