"""The stream driver's ordering of publish, acknowledgement and commit for a Kafka source
and topic sink (gateway.drivers.stream.StreamDriver with adapters.kafka's KafkaSource and
KafkaTopicSink), with a recording consumer and publisher in place of the broker (a
handler unit test: tests/test_realtime_kafka.py runs the same driver against a real
broker, where a failure cannot be placed between two given calls).

Batch N+1 is sent once N is acknowledged, and N is committed after that, so no message
waits for a commit's round trip; a commit that fails rewinds both batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from adapters.kafka.config import KafkaConfig
from adapters.kafka.sink import KafkaDeadLetters, KafkaTopicSink
from adapters.kafka.source import KafkaSource
from adapters.render import MessageRenderer
from gateway.assembly import build_pipeline
from gateway.config import KafkaSourceConfig, embedded_defaults
from gateway.drivers.stream import StreamDriver
from gateway.realtime.core import MicroBatchScorer
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file
from schemas.jsonl import lines

TOPIC = "card-txn"
SOURCE = KafkaSourceConfig(type="kafka", topics=[TOPIC], group_id="g", result_topic="scored", dlq_topic="dlq")


class Recorder:
    """The publisher and the consumer in one: every call lands in `events` in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.failing_commits = 0
        self.published_ids: list[list[str]] = []

    # KafkaPublisher
    async def publish(self, topic: str, records: list[Any]) -> int:
        ids = [dict(r.headers)["lgw-id"].decode() for r in records]
        self.published_ids.append(ids)
        self.events.append(("publish", ids[0]))
        await asyncio.sleep(0.01)  # the broker's round trip
        self.events.append(("acked", ids[0]))
        return len(records)

    # AIOKafkaConsumer
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0.001)
        if self.failing_commits:
            self.failing_commits -= 1
            raise KafkaConnectionError("connection to the coordinator lost")
        self.events.append(("commit", {tp.partition: o for tp, o in offsets.items()}))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.events.append(("seek", (tp.partition, offset)))

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    contract = load_contract(contract_path())
    path = tmp_path_factory.mktemp("driver") / "CARDTXN.DAT"
    generate_card_file(path, records=60, seed=3)
    table = next(iter(contract.decode_file(path))).table
    return [s.encode() for s in lines(table).to_pylist()]


def _batch(messages: list[bytes], first: int, n: int) -> tuple[ConsumerRecord[Any, Any], ...]:
    values = messages[first:first + n]
    return tuple(ConsumerRecord(TOPIC, 0, first + i, 0, 0, b"k", v, None, 1, len(v), []) for i, v in enumerate(values))


class Driver:
    """The driver with a Kafka source and topic sinks over the recorder; `handle` takes
    the records as the consumer fetched them."""

    def __init__(self, recorder: Recorder) -> None:
        contract = load_contract(contract_path())
        pipeline = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud")
        renderer = MessageRenderer("json", pipeline="card_txn", contract=contract)
        self.source = KafkaSource(SOURCE, KafkaConfig())
        self.stream = StreamDriver("card_txn", MicroBatchScorer(pipeline, "json"),
                                   KafkaTopicSink("scored", renderer, recorder),  # type: ignore[arg-type]
                                   KafkaDeadLetters("dlq", renderer, recorder),  # type: ignore[arg-type]
                                   flow=self.source)

    async def handle(self, records: tuple[ConsumerRecord[Any, Any], ...], consumer: Recorder) -> None:
        await self.stream.handle(self.source.batch(records, consumer))  # type: ignore[arg-type]

    async def flush(self) -> None:
        await self.stream.flush()

    @property
    def committed_records(self) -> int:
        return self.stream.committed_records

    @property
    def redelivered_batches(self) -> int:
        return self.stream.redelivered_batches


def _driver(recorder: Recorder) -> Driver:
    return Driver(recorder)


@pytest.mark.asyncio
async def test_the_next_batch_is_sent_before_the_one_before_is_committed(messages: list[bytes]) -> None:
    rec = Recorder()
    driver = _driver(rec)
    await driver.handle(_batch(messages, 0, 20), rec)
    await driver.handle(_batch(messages, 20, 20), rec)
    await driver.flush()
    assert rec.events == [
        ("publish", "card-txn-0-0"), ("acked", "card-txn-0-0"),
        ("publish", "card-txn-0-20"), ("commit", {0: 20}),  # N committed after N+1 was sent
        ("acked", "card-txn-0-20"), ("commit", {0: 40}),
    ]
    assert driver.committed_records == 40


@pytest.mark.asyncio
async def test_a_failed_commit_rewinds_both_batches_and_commits_neither(messages: list[bytes]) -> None:
    rec = Recorder()
    driver = _driver(rec)
    await driver.handle(_batch(messages, 0, 20), rec)
    rec.failing_commits = 1
    await driver.handle(_batch(messages, 20, 20), rec)
    assert ("seek", (0, 0)) in rec.events  # back to N's first offset: N and N+1 come again
    assert not [e for e in rec.events if e[0] == "commit"]
    assert driver.committed_records == 0 and driver.redelivered_batches == 1
    # the redelivery: the same records, the same ids; N+1's results go out twice
    await driver.handle(_batch(messages, 0, 40), rec)
    await driver.flush()
    assert rec.events[-1] == ("commit", {0: 40})
    assert driver.committed_records == 40
    assert rec.published_ids[2] == rec.published_ids[0] + rec.published_ids[1]
