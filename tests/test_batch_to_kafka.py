"""A nightly file scored and published to Kafka for the new systems: a drop-folder source
with a Kafka sink and a Kafka dead-letter topic, against the test broker; and the same
run killed with SIGKILL at random points and restarted until it is done."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import example_dropfolder_config
from schemas.examples import generate_card_file
from tests.kafka_broker import TansuBroker, unique_topic
from tests.test_kill_resume import checkpoint_seq
from tests.test_realtime_kafka import TopicReader, header_of, headers_of

pytestmark = pytest.mark.integration


def write_config(root: Path, bootstrap: str, results: str, dead: str, *, batch_size: int = 1_000) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", batch_size=batch_size)
    cfg["pipelines"]["card_txn"]["sink"] = {"type": "kafka", "topic": results, "key": "TXN_ID"}
    cfg["pipelines"]["card_txn"]["rejects"] = {"type": "kafka", "topic": dead}
    cfg["kafka"] = {"bootstrap_servers": bootstrap, "enable_idempotence": False}  # Tansu has no idempotence
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    (root / "drop" / "inbox").mkdir(parents=True)
    return path


async def collect(reader: TopicReader, count: int, timeout: float = 60.0, header: str = "lgw-id") -> None:
    deadline = time.monotonic() + timeout
    while len({header_of(r, header) for r in reader.records}) < count:
        assert time.monotonic() < deadline, f"{reader.topic}: {len(reader.records)} records, wanted {count}"
        await asyncio.sleep(0.05)


async def test_a_dropped_file_is_published_to_a_topic_with_its_rejects_on_another(
        kafka_broker: TansuBroker, tmp_path: Path, lgw_cmd: list[str]) -> None:
    results = kafka_broker.create_topic(unique_topic("scored"), partitions=3)
    dead = kafka_broker.create_topic(unique_topic("rejects"), partitions=3)
    config = write_config(tmp_path, kafka_broker.bootstrap, results, dead)
    generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=3_000, seed=11, bad_every=250)
    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # some records were rejected
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["output"] == f"kafka:{results}"
    assert summary["records_out"] + summary["rejected"] == summary["records_in"] == 3_000 and summary["rejected"]
    scored, rejected = await TopicReader(kafka_broker.bootstrap, results).start(), \
        await TopicReader(kafka_broker.bootstrap, dead).start()
    try:
        await collect(scored, summary["records_out"])
        await collect(rejected, summary["rejected"], header="lgw-source")
        await asyncio.sleep(0.5)  # nothing more arrives
        ids = [header_of(r, "lgw-id") for r in scored.records]
        assert len(ids) == len(set(ids)) == summary["records_out"]  # every record once
        first = scored.records[0]
        body = json.loads(first.value)
        assert first.key == body["TXN_ID"].encode() and "fraud_score" in body
        assert headers_of(first)["lgw-scored-by"] in ("model", "fallback")
        numbers = {json.loads(r.value)["record"] for r in rejected.records}  # the reject as its JSON line
        assert len(numbers) == summary["rejected"] and 251 in numbers  # the 250th detail, after the header
        assert all(header_of(r, "lgw-reason") for r in rejected.records)
    finally:
        await scored.stop()
        await rejected.stop()
    manifest = json.loads(next((tmp_path / "drop" / "outbox").glob("*.manifest.json")).read_text())
    assert manifest["outputs"]["scored"]["format"] == "kafka"
    assert manifest["outputs"]["scored"]["records"] == summary["records_out"]
    assert (tmp_path / "drop" / "done" / "CARDTXN.DAT").exists()


RECORDS = 100_000
KILLS = 8


async def test_kill_9_while_publishing_a_file_to_kafka_loses_nothing(kafka_broker: TansuBroker, tmp_path: Path,
                                                                     lgw_cmd: list[str]) -> None:
    results = kafka_broker.create_topic(unique_topic("scored"), partitions=3)
    dead = kafka_broker.create_topic(unique_topic("rejects"), partitions=3)
    config = write_config(tmp_path, kafka_broker.bootstrap, results, dead, batch_size=1_000)
    generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=RECORDS, seed=29)
    rng = random.Random(20261204)
    cmd = [*lgw_cmd, "batch", "run", "card_txn", "--config", str(config), "--no-progress"]
    kills = 0
    summary: dict[str, Any] | None = None
    seen = -1
    for _ in range(KILLS + 20):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < KILLS:
            # once the run has made progress (a new checkpoint), at a random moment of a chunk:
            # published to the broker and not yet checkpointed, or checkpointed and not yet ...
            while proc.poll() is None and checkpoint_seq(tmp_path / "state.db") <= seen:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.15))
            seen = checkpoint_seq(tmp_path / "state.db")
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
                kills += 1
                continue
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines = out.strip().splitlines()
        if lines:
            summary = json.loads(lines[-1])
        if summary is not None and summary.get("status") == "done":
            break
    assert kills == KILLS, "the run ended before it could be killed often enough"
    assert summary is not None and summary["status"] == "done" and summary["records_out"] == RECORDS
    reader = await TopicReader(kafka_broker.bootstrap, results).start()
    try:
        await collect(reader, RECORDS, timeout=120)
        ids = [header_of(r, "lgw-id") for r in reader.records]
    finally:
        await reader.stop()
    # at least once: every record is in the topic; a batch published before its checkpoint
    # was stored comes again after the restart, with the same id (counted, not lost)
    assert len(set(ids)) == RECORDS
    repeated = len(ids) - RECORDS
    assert 0 <= repeated <= kills * 2_000, repeated
    print(f"{kills} kills, {repeated} records published twice")


async def test_an_unreachable_broker_stops_the_run_with_one_line_and_it_resumes_later(
        kafka_broker: TansuBroker, tmp_path: Path, lgw_cmd: list[str]) -> None:
    results = kafka_broker.create_topic(unique_topic("scored"), partitions=3)
    dead = kafka_broker.create_topic(unique_topic("rejects"), partitions=3)
    config = write_config(tmp_path, "127.0.0.1:1", results, dead)  # nothing listens there
    generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=2_000, seed=3)
    cmd = [*lgw_cmd, "batch", "run", "card_txn", "--config", str(config), "--no-progress"]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2, failed.stderr
    [line] = [x for x in failed.stderr.splitlines() if x.startswith("lgw: error:")]
    assert "pipeline card_txn stopped: BrokerUnavailable: kafka: cannot reach 127.0.0.1:1" in line
    assert "run the command again to resume" in line and "Traceback" not in failed.stderr
    # the broker is back (the config names the real one): the run resumes and finishes
    doc = json.loads(config.read_text())
    doc["kafka"]["bootstrap_servers"] = kafka_broker.bootstrap
    config.write_text(json.dumps(doc))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["records_out"] == 2_000
    reader = await TopicReader(kafka_broker.bootstrap, results).start()
    try:
        await collect(reader, 2_000)
    finally:
        await reader.stop()
