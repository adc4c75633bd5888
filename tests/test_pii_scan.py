"""No card number leaves in clear (issue 13): every artefact a run produces, for every
source and every sink, is scanned for the clear values of the contract's pii field
(TXN-PAN, `pii: mask`): the scored records wherever they went (files of every format,
a table, a topic, an exchange), the rejects and dead letters (one record's card number
is itself damaged, so its reject is about the pii field), the manifest and the run
report, the log lines, the audit trail, the review queue and the state store.

The input is the only place the clear values may be; each test collects them from it."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aio_pika
import numpy as np
import pyarrow.parquet as pq
import pyodbc
import pytest
from aio_pika.abc import AbstractConnection

from gateway.config import GatewayConfig, example_dropfolder_config
from gateway.realtime.serve import run_until
from gateway.state import StateStore
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file
from schemas.jsonl import lines
from schemas.messages import MessageCodec
from tests.kafka_broker import TansuBroker, unique_topic
from tests.test_realtime_amqp import AMQP_URL, amqp  # noqa: F401 (a fixture)
from tests.test_realtime_kafka import TopicReader, Topics, config_dict, keyed, produce

pytestmark = pytest.mark.integration

RECORD = 120
DAMAGED_PAN = "4532ABCD99998888"  # a card number that breaks the pattern: its reject is about the pii field
REVIEW = {"band": [0.3, 0.9], "max_pending": 50}  # some records go to the review queue, with their data


def card_file(path: Path, records: int = 1_500) -> set[str]:
    """A card file with damaged records (one of them in its card number); the clear card
    numbers it holds (every value a scan must not find)."""
    generate_card_file(path, records=records, seed=17, bad_every=301)
    contract = load_contract(contract_path())
    pan = next(node for node, rules in contract.rules.values() if rules.pii)
    data = bytearray(path.read_bytes())
    at = 5 * RECORD + pan.offset  # the 4th detail, after the header
    data[at: at + pan.size] = DAMAGED_PAN.encode("cp037")
    path.write_bytes(bytes(data))
    rows = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, RECORD)[1:-1]
    return {bytes(r[pan.offset: pan.offset + pan.size]).decode("cp037") for r in rows}


def details(path: Path) -> list[bytes]:
    rows = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, RECORD)[1:-1]
    return [bytes(r) for r in rows]


def assert_clean(where: str, texts: Iterable[str | bytes], pans: set[str]) -> int:
    """No clear card number in any of `texts` (bytes are searched as UTF-8 and as cp037,
    the two ways the gateway writes text). Returns how many texts were scanned."""
    needles = [(p, p.encode(), p.encode("cp037")) for p in pans]
    scanned = 0
    for text in texts:
        scanned += 1
        if isinstance(text, str):
            found = [p for p, _, _ in needles if p in text]
        else:
            found = [p for p, utf8, ebcdic in needles if utf8 in text or ebcdic in text]
        assert not found, f"{where}: card number {found[0]} in clear"
    return scanned


def files_under(root: Path, *, skip: Iterable[Path] = ()) -> list[tuple[str, bytes | str]]:
    """Every file under `root` but the inputs: Parquet as its rows' text (compressed pages
    would hide a value from a byte search), everything else as its bytes."""
    skipped = {p.resolve() for p in skip}
    out: list[tuple[str, bytes | str]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.resolve() in skipped:
            continue
        if path.suffix == ".parquet":
            out.append((str(path), json.dumps(pq.read_table(path).to_pylist(), default=str)))
        else:
            out.append((str(path), path.read_bytes()))
    return out


def scan_files(root: Path, pans: set[str], *, inputs: Iterable[Path]) -> set[str]:
    """Scans every file under `root` but `inputs`; the kinds of artefact found (suffixes)."""
    kinds = set()
    for name, content in files_under(root, skip=inputs):
        assert_clean(name, [content], pans)
        kinds.add(Path(name).name.split(".", 1)[-1])
    return kinds


# --------------------------------------------------------------------------- batch: every sink
def batch_config(root: Path, sink: dict[str, Any] | None, rejects: dict[str, Any] | None,
                 **gateway: Any) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", batch_size=400)
    pipe = cfg["pipelines"]["card_txn"]
    if sink is not None:
        pipe["sink"] = sink
    if rejects is not None:
        pipe["rejects"] = rejects
    pipe["review"] = REVIEW
    cfg.update(gateway)
    cfg["audit"] = {"store": "parquet", "path": str(root / "audit")}
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    (root / "drop" / "inbox").mkdir(parents=True, exist_ok=True)
    return path


def run_batch(lgw_cmd: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*lgw_cmd, "--log-format", "json", "batch", "run", "card_txn", "--config", str(config),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # rejects: the damaged records
    return done


def audited_and_queued(root: Path) -> None:
    """The run wrote its audit trail and queued records for review (so both were scanned)."""
    assert list((root / "audit").rglob("*.parquet")), "no audit file written"
    with StateStore(f"sqlite:///{root / 'state.db'}") as store:
        from gateway.governance.review_queue import ReviewQueue

        assert ReviewQueue(store).counts("card_txn")["card_txn"]["pending"] > 0


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "fixed", "parquet"])
def test_a_file_run_leaves_no_card_number_in_clear_in_any_file_format(tmp_path: Path, lgw_cmd: list[str],
                                                                       fmt: str) -> None:
    config = batch_config(tmp_path, {"type": "file", "folder": "drop/outbox", "format": fmt}, None)
    source = tmp_path / "drop" / "inbox" / "CARDTXN.DAT"
    pans = card_file(source)
    done = run_batch(lgw_cmd, config)
    assert_clean("stdout and stderr (log lines)", [done.stdout, done.stderr], pans)
    kinds = scan_files(tmp_path, pans, inputs=[tmp_path / "drop" / "done" / "CARDTXN.DAT"])
    suffix = {"jsonl": "jsonl", "csv": "csv", "fixed": "dat", "parquet": "parquet"}[fmt]
    assert {f"DAT.scored.{suffix}", "DAT.rejects.jsonl", "DAT.manifest.json", "parquet", "db"} <= kinds, kinds
    rejects = (tmp_path / "drop" / "outbox" / "CARDTXN.DAT.rejects.jsonl").read_text()
    assert "TXN_PAN" in rejects  # the damaged card number was rejected, and not quoted
    audited_and_queued(tmp_path)


def test_a_file_run_into_a_table_leaves_no_card_number_in_clear(tmp_path: Path, lgw_cmd: list[str]) -> None:
    connection = {"connection_string": f"Driver={{SQLite3}};Database={tmp_path / 'legacy.db'};"}
    config = batch_config(tmp_path, {"type": "odbc", "connection": connection, "table": "scored", "key": ["TXN_ID"]},
                          {"type": "odbc", "connection": connection, "table": "rejected"})
    pans = card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    done = run_batch(lgw_cmd, config)
    assert_clean("log lines", [done.stdout, done.stderr], pans)
    conn = pyodbc.connect(connection["connection_string"], autocommit=True)
    try:
        for table in ("scored", "rejected"):
            rows = [json.dumps([str(v) for v in row]) for row in conn.execute(f"SELECT * FROM {table}").fetchall()]
            assert rows, table
            assert_clean(f"table {table}", rows, pans)
    finally:
        conn.close()
    scan_files(tmp_path, pans, inputs=[tmp_path / "drop" / "done" / "CARDTXN.DAT"])
    audited_and_queued(tmp_path)


async def test_a_file_run_into_a_topic_leaves_no_card_number_in_clear(kafka_broker: TansuBroker, tmp_path: Path,
                                                                     lgw_cmd: list[str]) -> None:
    results = kafka_broker.create_topic(unique_topic("pii-scored"), partitions=3)
    dead = kafka_broker.create_topic(unique_topic("pii-dead"), partitions=3)
    config = batch_config(tmp_path, {"type": "kafka", "topic": results, "format": "fixed"},
                          {"type": "kafka", "topic": dead},
                          kafka={"bootstrap_servers": kafka_broker.bootstrap, "enable_idempotence": False})
    pans = card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    done = await asyncio.to_thread(run_batch, lgw_cmd, config)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    readers = [await TopicReader(kafka_broker.bootstrap, t).start() for t in (results, dead)]
    try:
        for reader, count in zip(readers, (summary["records_out"], summary["rejected"]), strict=True):
            for _ in range(600):
                if len(reader.records) >= count:
                    break
                await asyncio.sleep(0.05)
            assert len(reader.records) >= count > 0, reader.topic
            messages = [r.value + b"".join(k.encode() + v for k, v in r.headers) for r in reader.records]
            assert_clean(f"topic {reader.topic}", messages, pans)
    finally:
        for reader in readers:
            await reader.stop()
    assert_clean("log lines", [done.stdout, done.stderr], pans)
    scan_files(tmp_path, pans, inputs=[tmp_path / "drop" / "done" / "CARDTXN.DAT"])


@pytest.fixture
async def exchange(amqp: AbstractConnection) -> AsyncIterator[tuple[str, aio_pika.abc.AbstractQueue]]:  # noqa: F811
    """An exchange of the test's own (durable, direct: as the gateway declares it) with a queue
    bound for the results (routing key "") and the dead letters (the pipeline's name)."""
    channel = await amqp.channel()
    name = f"lgw.test.pii.{uuid.uuid4().hex[:8]}"
    ex = await channel.declare_exchange(name, durable=True)
    queue = await channel.declare_queue(f"{name}.all", durable=True)
    for key in ("", "card_txn"):
        await queue.bind(ex, routing_key=key)
    yield name, queue
    await queue.delete(if_unused=False, if_empty=False)
    await ex.delete()
    await channel.close()


async def drain(queue: aio_pika.abc.AbstractQueue, at_least: int, timeout_s: float = 30.0) -> list[bytes]:
    """Every message on `queue` (body and headers), once at least `at_least` came."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            if len(got) >= at_least:
                return got
            await asyncio.sleep(0.05)
            continue
        got.append(message.body + json.dumps({k: str(v) for k, v in (message.headers or {}).items()}).encode())
    return got


async def test_a_file_run_into_an_exchange_leaves_no_card_number_in_clear(
        tmp_path: Path, lgw_cmd: list[str], exchange: tuple[str, aio_pika.abc.AbstractQueue]) -> None:
    name, queue = exchange
    config = batch_config(tmp_path, {"type": "amqp", "exchange": name, "format": "json"},
                          {"type": "amqp", "exchange": name}, amqp={"url": AMQP_URL})
    pans = card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=600)
    done = await asyncio.to_thread(run_batch, lgw_cmd, config)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    messages = await drain(queue, summary["records_out"] + summary["rejected"])
    assert len(messages) >= summary["records_out"] + summary["rejected"]
    assert_clean(f"exchange {name}", messages, pans)
    assert_clean("log lines", [done.stdout, done.stderr], pans)
    scan_files(tmp_path, pans, inputs=[tmp_path / "drop" / "done" / "CARDTXN.DAT"])


# --------------------------------------------------------------------------- streams
@pytest.mark.parametrize("payload", ["copybook", "json"])
async def test_a_stream_leaves_no_card_number_in_clear_in_results_or_dead_letters(
        kafka_broker: TansuBroker, tmp_path: Path, payload: str, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "CARDS.DAT"
    pans = card_file(source, records=800)
    records = details(source)
    if payload == "json":
        codec = MessageCodec(load_contract(contract_path()), "copybook")
        decoded = codec.decode(records)
        messages = [s.encode() for s in lines(decoded.table).to_pylist()]
        pans |= {json.loads(m)["TXN_PAN"] for m in messages}
        messages.insert(3, b'{"TXN_PAN": "' + DAMAGED_PAN.encode() + b'", "broken')  # not JSON at all
        messages.insert(9, json.dumps({**json.loads(messages[0]), "TXN_PAN": DAMAGED_PAN}).encode())
    else:
        messages = records
    t = Topics.create(kafka_broker, f"pii-{payload}")
    doc = config_dict(tmp_path, kafka_broker.bootstrap, {"cards": t.source(payload=payload)})
    doc["pipelines"]["cards"]["review"] = REVIEW
    doc["audit"] = {"store": "parquet", "path": str(tmp_path / "audit")}
    cfg = GatewayConfig.model_validate({**doc, "base_dir": tmp_path})
    store = StateStore(cfg.state.url)
    results, dead = (await TopicReader(kafka_broker.bootstrap, t.results).start(),
                     await TopicReader(kafka_broker.bootstrap, t.dlq).start())
    stop = asyncio.Event()
    caplog.set_level("DEBUG")
    gateway = asyncio.create_task(run_until(cfg, stop, state=store))
    try:
        sent = await produce(kafka_broker.bootstrap, t.input, keyed(messages, "card"))
        for _ in range(1200):
            if len(results.records) + len(dead.records) >= len(sent):
                break
            await asyncio.sleep(0.05)
        assert len(results.records) + len(dead.records) == len(sent)
        assert dead.records, "the damaged records were dead-lettered"
        for reader in (results, dead):
            messages_out = [r.value + b"".join(k.encode() + v for k, v in r.headers) for r in reader.records]
            assert_clean(f"topic {reader.topic}", messages_out, pans)
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 45)
        await results.stop()
        await dead.stop()
        store.close()
    # the gateway's own loggers at every level, the libraries' at the levels lgw lets through
    # (WARNING: gateway.commands; a library's DEBUG, such as aiokafka's per message, never is)
    shown = [r for r in caplog.records if r.name.startswith(("lgw", "gateway", "adapters", "schemas"))
             or r.levelno >= logging.WARNING]
    assert any(r.name.startswith("lgw") for r in shown)
    leaking = sorted({r.name for r in shown if any(p in r.getMessage() for p in pans)})
    assert leaking == [], f"loggers that wrote a card number in clear: {leaking}"
    kinds = scan_files(tmp_path, pans, inputs=[source])
    assert "parquet" in kinds and "db" in kinds, kinds  # the audit trail, the state store (review items)
