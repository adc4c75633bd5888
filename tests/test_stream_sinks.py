"""Any source to any sink through the one streaming driver, against real services.

- A batch source's scored records (a decoded file chunk) through the Kafka topic sink and
  the dead-letter topic sink, read back from the (Tansu) broker.
- Kafka -> ODBC upsert on PostgreSQL: every record lands once by key, and the offsets are
  committed only after the table's transaction: a write that fails leaves them where they
  were, the batch comes again and lands once the table takes it.
- AMQP -> ODBC: requests land in the table, and a request is acked only after its commit:
  while the table refuses them they stay on the queue.
- `lgw serve` (Kafka -> ODBC) killed with SIGKILL at a random point and started again:
  every input key is in the table (an upsert cannot make a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pyodbc
import pytest
from aio_pika.abc import AbstractConnection

from adapters import registry
from adapters.files.config import DropFolderConfig
from adapters.files.source import file_batch
from adapters.kafka.config import KafkaConfig, KafkaRejectsConfig, KafkaSinkConfig
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig
from gateway.drivers.batch import score_rows, scoring_input
from gateway.governance.pii import policy_for
from gateway.pipeline import fixed_columns
from gateway.realtime.serve import run_until
from gateway.state import StateStore
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file
from tests.kafka_broker import TansuBroker
from tests.model_servers import ModelServerProcess
from tests.realtime_data import Gateway, copybook_records, json_records, until
from tests.test_realtime_amqp import AMQP_URL, Names, ready_count
from tests.test_realtime_kafka import (
    ServeProcess,
    TopicReader,
    Topics,
    committed_offsets,
    config_dict,
    end_offsets,
    header_of,
    headers_of,
    keyed,
    kserve_model,
    onnx_model,
    produce,
)

pytestmark = pytest.mark.integration

PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;Pwd=;"
RECORD = 120


# --------------------------------------------------------------------------- the table
class Table:
    """A results table of its own on PostgreSQL, read and altered over pyodbc; dropped
    (with the pipeline's checkpoint row) after the test."""

    def __init__(self, pipeline: str) -> None:
        self.name = f"lgw_stream_{uuid.uuid4().hex[:10]}"
        self.pipeline = pipeline
        self.conn = pyodbc.connect(PG, autocommit=True)

    def sink(self) -> dict[str, Any]:
        return {"type": "odbc", "connection": {"connection_string": PG}, "table": self.name, "key": ["TXN_ID"]}

    def keys(self) -> list[str]:
        try:
            return [r[0] for r in self.conn.execute(f'SELECT "TXN_ID" FROM {self.name}').fetchall()]
        except pyodbc.Error:  # not created yet: the first batch creates it
            return []

    def count(self) -> int:
        return len(self.keys())

    def refuse_writes(self) -> None:
        """A NOT NULL column the results do not have: every insert fails until `accept_writes`."""
        self.conn.execute(f"ALTER TABLE {self.name} ADD COLUMN must_fill TEXT NOT NULL DEFAULT 'x'")
        self.conn.execute(f"ALTER TABLE {self.name} ALTER COLUMN must_fill DROP DEFAULT")

    def accept_writes(self) -> None:
        self.conn.execute(f"ALTER TABLE {self.name} DROP COLUMN must_fill")

    def drop(self) -> None:
        with contextlib.suppress(pyodbc.Error):
            self.conn.execute(f"DROP TABLE IF EXISTS {self.name}")
        with contextlib.suppress(pyodbc.Error):
            self.conn.execute("DELETE FROM lgw_checkpoints WHERE pipeline = ?", self.pipeline)
        self.conn.close()


@pytest.fixture
def table() -> Iterator[Table]:
    try:
        t = Table(f"odbc_{uuid.uuid4().hex[:8]}")
    except pyodbc.Error as exc:
        pytest.fail(f"PostgreSQL over ODBC not reachable: {exc}", pytrace=False)
    yield t
    t.drop()


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractConnection]:
    try:
        conn = await asyncio.wait_for(aio_pika.connect(AMQP_URL), timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        pytest.fail(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}", pytrace=False)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def names(amqp: AbstractConnection) -> AsyncIterator[Names]:
    n = Names()
    yield n
    ch = await amqp.channel()
    for q in n.queues:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await ch.queue_delete(q, if_unused=False, if_empty=False)
    with contextlib.suppress(aio_pika.exceptions.AMQPError):
        await ch.exchange_delete(n.dlx)
    await ch.close()


def txn_ids(values: list[bytes]) -> set[str]:
    return {json.loads(v)["TXN_ID"] for v in values}


# --------------------------------------------------------------------------- 1. batch -> Kafka
@pytest.mark.parametrize("fmt", ["json", "fixed"])
async def test_a_scored_file_chunk_goes_to_a_topic_and_its_rejects_to_a_dead_letter_topic(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, fmt: str) -> None:
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=60, seed=5, bad_every=9)
    batch = file_batch(next(iter(contract.decode_file(path))))
    cfg = GatewayConfig.model_validate({"models": {"fraud": onnx_model()}, "base_dir": tmp_path})
    pipeline = build_pipeline("cards", contract, cfg, model_name="fraud")
    scored = await score_rows(pipeline, batch, scoring_input(batch))
    chunk = scored.batch  # the scored records and the source rows they came from
    rejects = [*batch.rejects, *scored.rejects]
    assert chunk.table.num_rows > 0 and rejects, "the file has good and bad records"

    t = Topics.create(kafka_broker, f"batch-{fmt}")
    cluster = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=False)
    context = registry.BuildContext(pipeline="cards", contract=contract, base_dir=tmp_path,
                                    source=DropFolderConfig(inbox="in", outbox="out"), kafka=cluster,
                                    extras={"fixed_columns": fixed_columns(pipeline)})
    sink = registry.component("sink", "kafka").build(KafkaSinkConfig(topic=t.results, format=fmt, key="TXN_ID"),
                                                     context)
    dead = registry.component("rejects", "kafka").build(KafkaRejectsConfig(topic=t.dlq), context)
    await sink.open()
    await dead.open()
    try:
        await sink.write([sink.prepare(chunk)])
        await dead.write(rejects, batch)
    finally:
        await sink.close()
        await dead.close()

    results = await TopicReader(kafka_broker.bootstrap, t.results).start()
    letters = await TopicReader(kafka_broker.bootstrap, t.dlq).start()
    try:
        await until(lambda: len(results.records) >= chunk.table.num_rows and len(letters.records) >= len(rejects),
                    30, "the results and dead letters to be readable")
    finally:
        await results.stop()
        await letters.stop()

    numbers = batch.record_numbers[chunk.rows].tolist()
    ids = chunk.table.column("TXN_ID").to_pylist()
    by_id = {header_of(r, "lgw-id"): r for r in results.records}
    assert len(results.records) == len(by_id) == chunk.table.num_rows
    widths = fixed_columns(pipeline)
    for row, number, txn in zip(chunk.rows.tolist(), numbers, ids, strict=True):
        r = by_id[f"cards/{number}"]
        h = headers_of(r)
        assert r.key == str(txn).encode()
        assert h["lgw-scored-by"] == "model" and h["lgw-model"] == "fraud" and h["lgw-contract"] == "card_txn"
        if fmt == "json":
            body = json.loads(r.value)
            assert body["TXN_ID"] == txn and 0.0 <= body["fraud_score"] <= 1.0 and body["scored_by"] == "model"
            assert "source_record" not in body
        else:
            # the record's own bytes, its card number masked in place (the pii policy), scores appended
            assert r.value[:RECORD] == pipeline.pii.redact_message(bytes(batch.raw[row]), "copybook")
            assert len(r.value) == RECORD + sum(widths.values())
    assert len(letters.records) == len(rejects)
    for r, reject in zip(sorted(letters.records, key=lambda m: json.loads(m.value)["record"]),
                         sorted(rejects, key=lambda x: x.record), strict=True):
        h = headers_of(r)
        assert json.loads(r.value) == json.loads(json.dumps(reject.to_json()))
        assert h["lgw-source"] == f"cards/{reject.record}" and h["lgw-reason"] and h["lgw-error"]
        assert h["lgw-contract"] == "card_txn"
        if reject.field:
            assert h["lgw-field"] == reject.field


# --------------------------------------------------------------------------- 2. Kafka -> ODBC
async def test_kafka_to_postgres_lands_once_by_key_and_commits_only_after_the_transaction(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, table: Table,
        serve: Callable[[GatewayConfig], Gateway], caplog: pytest.LogCaptureFixture) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "odbc")
    doc = config_dict(tmp_path, bootstrap, {table.pipeline: t.source(max_records=20)})
    doc["pipelines"][table.pipeline]["sink"] = table.sink()
    gateway = serve(GatewayConfig.model_validate({**doc, "base_dir": tmp_path}))

    values = json_records(contract, 0, 60)
    first = await produce(bootstrap, t.input, keyed(values[:30], "a"))
    await until(lambda: table.count() == 30, 30, "the first records in the table", gateway)
    deadline = time.monotonic() + 20
    while await committed_offsets(bootstrap, t.group, t.input) != end_offsets(first):
        assert time.monotonic() < deadline, "the first batches were not committed"
        await asyncio.sleep(0.1)

    table.refuse_writes()
    caplog.clear()
    second = await produce(bootstrap, t.input, keyed(values[30:], "b"))
    await until(lambda: sum("a write failed" in r.getMessage() for r in caplog.records) >= 2, 30,
                "the refused batch to be delivered again", gateway)
    assert table.count() == 30
    assert await committed_offsets(bootstrap, t.group, t.input) == end_offsets(first), \
        "offsets of a batch whose transaction failed were committed"

    table.accept_writes()
    await until(lambda: table.count() == 60, 30, "the refused records to land once the table takes them", gateway)
    stats = await gateway.stop()
    keys = table.keys()
    assert len(keys) == len(set(keys)) == 60 and set(keys) == txn_ids(values)
    assert await committed_offsets(bootstrap, t.group, t.input) == end_offsets([*first, *second])
    s = stats[table.pipeline]
    assert s["messages"] > 60 and s["results"] == s["messages"] and s["dead_letters"] == 0  # scored again


# --------------------------------------------------------------------------- 3. AMQP -> ODBC
def amqp_config(tmp_path: Path, names: Names, queue: str, table: Table, *, model: dict[str, Any] | None = None,
                **pipeline: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "models": {"fraud": model or onnx_model()},
        "pipelines": {table.pipeline: {"contract": str(contract_path("card_txn")), "model": "fraud",
                                       "source": {"type": "amqp", "queue": queue, "dead_letter_exchange": names.dlx},
                                       "sink": table.sink(), **pipeline}},
        "amqp": {"url": AMQP_URL, "graceful_timeout_s": 10},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "base_dir": tmp_path,
    })


async def send(amqp: AbstractConnection, queue: str, bodies: list[bytes]) -> None:
    ch = await amqp.channel()
    try:
        await ch.declare_queue(queue, durable=True)
        for i, body in enumerate(bodies):
            await ch.default_exchange.publish(
                aio_pika.Message(body, message_id=f"m-{uuid.uuid4().hex[:8]}-{i}",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
    finally:
        await ch.close()


async def test_amqp_to_odbc_requests_land_and_are_acked_only_after_the_commit(
        amqp: AbstractConnection, names: Names, tmp_path: Path, contract: Contract, table: Table,
        serve: Callable[[GatewayConfig], Gateway], caplog: pytest.LogCaptureFixture) -> None:
    queue = names.queue()
    records = copybook_records(0, 20)
    expected = txn_ids(json_records(contract, 0, 20))
    await send(amqp, queue, records[:10])
    gateway = serve(amqp_config(tmp_path, names, queue, table))
    await until(lambda: table.count() == 10, 30, "the first requests in the table", gateway)

    table.refuse_writes()
    caplog.clear()
    await send(amqp, queue, records[10:])
    await until(lambda: sum("a write failed" in r.getMessage() for r in caplog.records) >= 2, 30,
                "the refused requests to be delivered again", gateway)
    await gateway.stop()  # while the table still refuses them
    assert table.count() == 10
    assert await ready_count(amqp, queue) == 10, "a request whose write failed was acked"

    table.accept_writes()
    gateway = serve(amqp_config(tmp_path, names, queue, table))
    await until(lambda: table.count() == 20, 30, "the requeued requests to land", gateway)
    await gateway.stop()
    keys = table.keys()
    assert len(keys) == len(set(keys)) == 20 and set(keys) == expected
    assert await ready_count(amqp, queue) == 0


# --------------------------------------------------------------------------- 4. kill -9
@pytest.mark.slow
async def test_serve_killed_mid_stream_into_a_table_loses_no_record(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, table: Table, lgw_cmd: list[str]) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "odbc-kill")
    doc = config_dict(tmp_path, bootstrap, {table.pipeline: t.source(max_records=50)})
    doc["pipelines"][table.pipeline]["sink"] = table.sink()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    values = json_records(contract, 0, 1500)
    producing = asyncio.create_task(produce(bootstrap, t.input, keyed(values, "k"), pace_s=0.002))
    first = ServeProcess(lgw_cmd, config, "first")
    processes = [first]
    try:
        kill_at = random.randint(100, 1000)
        await until(lambda: table.count() >= kill_at, 90, f"{kill_at} records in the table", first)
        first.signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        sent = await producing
        second = ServeProcess(lgw_cmd, config, "second")
        processes.append(second)
        await until(lambda: table.count() >= len(values), 90, "every record in the table after the restart",
                    second)
        second.signal(signal.SIGTERM)
        second.process.wait(timeout=30)
    finally:
        for p in processes:
            if p.alive():
                p.signal(signal.SIGKILL)
                p.process.wait(timeout=10)
        if not producing.done():
            producing.cancel()
    keys = table.keys()
    assert len(keys) == len(set(keys)) and set(keys) == txn_ids(values)
    assert await committed_offsets(bootstrap, t.group, t.input) == end_offsets(sent)


# --------------------------------------------------------------------------- 5. kill switch, both sources
class Served:
    """`run_until` with a state store (the kill switch lives there), as a task of the test's loop."""

    def __init__(self, cfg: GatewayConfig, state: StateStore) -> None:
        self.event = asyncio.Event()
        self.task = asyncio.create_task(run_until(cfg, self.event, state=state))

    def check_alive(self) -> None:
        if self.task.done():
            self.task.result()
            pytest.fail("the gateway stopped by itself", pytrace=False)

    async def stop(self) -> dict[str, Any]:
        self.event.set()
        return await asyncio.wait_for(self.task, 45)


@dataclass
class Stream:
    """A pipeline fed by a Kafka topic or an AMQP queue, into the test's table."""

    cfg: GatewayConfig
    put: Callable[[list[bytes]], Awaitable[None]]
    records: Callable[[int, int], list[bytes]]  # JSON for Kafka, copybook for AMQP
    topics: Topics | None = None


def stream(transport: str, kafka_broker: TansuBroker, amqp: AbstractConnection, names: Names, tmp_path: Path,
           contract: Contract, table: Table, **pipeline: Any) -> Stream:
    if transport == "kafka":
        t = Topics.create(kafka_broker, transport)
        doc = config_dict(tmp_path, kafka_broker.bootstrap, {table.pipeline: t.source(max_records=20)},
                          model=pipeline.pop("model", None))
        doc["pipelines"][table.pipeline].update(sink=table.sink(), **pipeline)

        async def produce_all(values: list[bytes]) -> None:
            await produce(kafka_broker.bootstrap, t.input, keyed(values, uuid.uuid4().hex[:6]))

        return Stream(GatewayConfig.model_validate({**doc, "base_dir": tmp_path}), produce_all,
                      lambda start, n: json_records(contract, start, n), t)
    queue = names.queue()
    cfg = amqp_config(tmp_path, names, queue, table, **pipeline)

    async def send_all(values: list[bytes]) -> None:
        await send(amqp, queue, values)

    return Stream(cfg, send_all, copybook_records)


@pytest.mark.parametrize("transport", ["kafka", "amqp"])
async def test_the_kill_switch_holds_then_falls_back_for_either_source(
        transport: str, kafka_broker: TansuBroker, amqp: AbstractConnection, names: Names, tmp_path: Path,
        contract: Contract, table: Table) -> None:
    """pause: nothing is scored or acked, the input waits; force_fallback: the rules score
    it; off: the model scores again. The same for a Kafka topic and an AMQP queue."""
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    state.set_kill_switch(table.pipeline, "pause", reason="test")
    st = stream(transport, kafka_broker, amqp, names, tmp_path, contract, table)
    put, records, cfg, t = st.put, st.records, st.cfg, st.topics
    gateway = Served(cfg, state)
    await put(records(0, 10))
    await asyncio.sleep(3)  # a few pause / resume rounds
    gateway.check_alive()
    assert table.count() == 0, "scored while the kill switch said pause"
    if t is not None:
        assert sum((await committed_offsets(kafka_broker.bootstrap, t.group, t.input)).values()) == 0

    state.set_kill_switch(table.pipeline, "force_fallback", reason="test")
    await until(lambda: table.count() == 10, 30, "the held records scored by the rules", gateway)
    state.set_kill_switch(table.pipeline, "off")
    await asyncio.sleep(1.5)  # the watcher's ttl
    await put(records(100, 10))
    await until(lambda: table.count() == 20, 30, "the later records scored by the model", gateway)
    stats = await gateway.stop()
    scored_by = dict(table.conn.execute(f'SELECT "TXN_ID", scored_by FROM {table.name}').fetchall())
    first, later = txn_ids(json_records(contract, 0, 10)), txn_ids(json_records(contract, 100, 10))
    assert {scored_by[k] for k in first} == {"fallback"} and {scored_by[k] for k in later} == {"model"}
    s = stats[table.pipeline]
    assert s["paused_batches"] >= 1 and s["scored_by"] == {"fallback": 10, "model": 10}


# --------------------------------------------------------------------------- 6. model outage, both sources
@pytest.mark.slow
@pytest.mark.parametrize("transport", ["kafka", "amqp"])
async def test_policy_pause_holds_the_input_until_the_model_is_back_for_either_source(
        transport: str, kafka_broker: TansuBroker, amqp: AbstractConnection, names: Names, tmp_path: Path,
        contract: Contract, table: Table, disposable_kserve_server: ModelServerProcess) -> None:
    """policy pause: while the model is away nothing is scored by the rules and nothing
    is acked; once it is back every record is scored by the model, once."""
    server = disposable_kserve_server
    st = stream(transport, kafka_broker, amqp, names, tmp_path, contract, table, policy="pause",
                model=kserve_model(server.base_url))
    gateway = Served(st.cfg, StateStore(f"sqlite:///{tmp_path / 'state.db'}"))
    await st.put(st.records(0, 10))
    await until(lambda: table.count() == 10, 30, "the first records scored", gateway)
    server.kill()
    await st.put(st.records(100, 10))
    await asyncio.sleep(3)  # the breaker opens, waits 1 s, the probe fails: paused again
    gateway.check_alive()
    assert table.count() == 10, "scored while the model was away"
    if st.topics is not None:
        t = st.topics
        assert sum((await committed_offsets(kafka_broker.bootstrap, t.group, t.input)).values()) == 10
    await asyncio.to_thread(server.restart)
    await until(lambda: table.count() == 20, 60, "the held records scored once the model is back", gateway)
    stats = await gateway.stop()
    scored_by = {r[0] for r in table.conn.execute(f"SELECT scored_by FROM {table.name}").fetchall()}
    assert scored_by == {"model"}
    s = stats[table.pipeline]
    assert s["paused_batches"] >= 1 and s["scored_by"] == {"model": 20}


# --------------------------------------------------------------------------- 7. across transports
async def test_kafka_to_an_amqp_exchange(kafka_broker: TansuBroker, amqp: AbstractConnection, names: Names,
                                         tmp_path: Path, contract: Contract,
                                         serve: Callable[[GatewayConfig], Gateway]) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "to-amqp")
    exchange, queue = f"lgw.test.{names.tag}.scored", names.queue("scored")
    ch = await amqp.channel()
    try:
        ex = await ch.declare_exchange(exchange, durable=True)
        q = await ch.declare_queue(queue, durable=True)
        await q.bind(ex, routing_key="cards")
        doc = config_dict(tmp_path, bootstrap, {"cards": t.source(max_records=20)})
        doc["pipelines"]["cards"]["sink"] = {"type": "amqp", "exchange": exchange, "routing_key": "cards"}
        doc["amqp"] = {"url": AMQP_URL}
        gateway = serve(GatewayConfig.model_validate({**doc, "base_dir": tmp_path}))
        sent = await produce(bootstrap, t.input, keyed(json_records(contract, 0, 20), "x"))
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = time.monotonic() + 30
        while len(got) < len(sent):
            assert time.monotonic() < deadline, f"{len(got)} of {len(sent)} results on the exchange"
            m = await q.get(no_ack=True, fail=False)
            if m is None:
                gateway.check_alive()
                await asyncio.sleep(0.05)
            else:
                got.append(m)
        stats = await gateway.stop()
    finally:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await ch.exchange_delete(exchange)
        await ch.close()
    by_id = {str((m.headers or {})["lgw-id"]): m for m in got}
    assert set(by_id) == {s.id for s in sent}
    for s in sent:
        m = by_id[s.id]
        body = json.loads(m.body)
        assert body["id"] == s.id and body["TXN_ID"] == json.loads(s.value)["TXN_ID"]
        assert m.message_id == s.id and m.content_type == "application/json"
        assert (m.headers or {})["lgw-scored-by"] == "model"
    assert await committed_offsets(bootstrap, t.group, t.input) == end_offsets(sent)
    assert stats["cards"]["results"] == len(sent)


async def test_amqp_to_a_kafka_topic(kafka_broker: TansuBroker, amqp: AbstractConnection, names: Names,
                                     tmp_path: Path, contract: Contract, appended: dict[str, int],
                                     serve: Callable[[GatewayConfig], Gateway]) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "from-amqp")
    queue = names.queue()
    cfg = GatewayConfig.model_validate({
        "models": {"fraud": onnx_model()},
        "pipelines": {"cards": {"contract": str(contract_path("card_txn")), "model": "fraud",
                                "source": {"type": "amqp", "queue": queue, "dead_letter_exchange": names.dlx},
                                "sink": {"type": "kafka", "topic": t.results}}},
        "amqp": {"url": AMQP_URL, "graceful_timeout_s": 10},
        "kafka": config_dict(tmp_path, bootstrap, {})["kafka"],
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "base_dir": tmp_path,
    })
    records = copybook_records(0, 10)
    results = await TopicReader(bootstrap, t.results).start()
    try:
        gateway = serve(cfg)
        await send(amqp, queue, [*records, records[0][:119]])  # the last one is short: a dead letter
        await until(lambda: len(results.records) >= len(records), 30, "the results on the topic", gateway)
        deadline = time.monotonic() + 30
        while await ready_count(amqp, f"{queue}.dlq") < 1:
            assert time.monotonic() < deadline, "the short request was not dead-lettered"
            await asyncio.sleep(0.05)
        stats = await gateway.stop()
    finally:
        await results.stop()
    assert len(results.records) == len(records)
    masked = policy_for(load_contract(contract_path())).redact_message  # the card number leaves masked
    # fixed: the request, scores appended
    assert sorted(r.value[:RECORD] for r in results.records) == sorted(masked(r, "copybook") for r in records)
    for r in results.records:
        assert len(r.value) == RECORD + sum(appended.values()) and r.key is None
        assert header_of(r, "lgw-id").startswith("m-") and header_of(r, "lgw-scored-by") == "model"
    assert await ready_count(amqp, queue) == 0
    assert stats["cards"]["results"] == 10 and stats["cards"]["dead_letters"] == 1
