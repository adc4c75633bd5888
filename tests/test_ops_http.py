"""/healthz, /readyz and /metrics of `lgw serve` and `lgw run`, each run as a process of
its own against real services: a Tansu Kafka broker, a KServe model server process (or
none, where the test needs an endpoint that does not answer), a SQLite state store.

Each process takes a free port (LGW_OPS_ADDRESS=127.0.0.1:0, set by conftest) and says
which in its "ops: serving ..." line on stderr; it is stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.state import StateStore
from schemas.examples import contract_path, generate_card_file
from tests.kafka_broker import TansuBroker
from tests.lgw_processes import LgwProcess
from tests.model_servers import ModelServerProcess, free_port
from tests.realtime_data import copybook_records
from tests.test_batch import write_config
from tests.test_realtime_kafka import Topics, config_dict, keyed, kserve_model, produce

pytestmark = pytest.mark.integration


def serve_config(tmp_path: Path, broker: TansuBroker, topics: Topics, model_url: str, **extra: Any) -> Path:
    doc = config_dict(tmp_path, broker.bootstrap, {"cards": topics.source(max_records=50, payload="copybook")},
                      model=kserve_model(model_url))
    doc.update(extra)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def ready(p: LgwProcess) -> bool:
    return p.get("/readyz")[0] == 200


# ---------------------------------------------------------------------------- lgw serve
async def test_serve_is_alive_ready_and_counts_the_records_it_scored(
        kafka_broker: TansuBroker, disposable_kserve_server: ModelServerProcess, tmp_path: Path,
        lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    topics = Topics.create(kafka_broker, "ops")
    config = serve_config(tmp_path, kafka_broker, topics, disposable_kserve_server.base_url)
    gw = LgwProcess(lgw_cmd, ["--log-format", "json", "serve", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    assert gw.get_json("/healthz") == (200, {"status": "alive"})
    gw.wait_for(lambda: ready(gw), "/readyz 200")
    body = gw.get_json("/readyz")[1]
    assert body["checks"] == {"kafka": "ok", "state_store": "ok", "model:fraud": "ok"}
    assert body["pipelines"]["cards"]["breaker"] == "closed"

    sent = await produce(kafka_broker.bootstrap, topics.input, keyed(copybook_records(0, 300), "ops"))
    gw.wait_for(lambda: gw.sample("lgw_records_in_total", pipeline="cards", source="kafka") == len(sent),
                "every record counted in")
    assert gw.sample("lgw_records_out_total", pipeline="cards", scored_by="model") == len(sent)
    assert gw.sample("lgw_records_rejected_total", pipeline="cards") == 0
    assert gw.sample("lgw_model_requests_total", pipeline="cards", model="fraud", outcome="ok") >= 1
    assert gw.sample("lgw_model_request_duration_seconds_count", pipeline="cards", model="fraud") >= 1
    assert gw.sample("lgw_breaker_state", pipeline="cards", model="fraud") == 0
    # all consumed: the lag gauge comes down to 0 once it was measured
    gw.wait_for(lambda: any(lbl == {"pipeline": "cards", "topic": topics.input} and v == 0
                            for lbl, v in gw.samples().get("lgw_kafka_consumer_lag_records", [])),
                "consumer lag measured")

    # the kill switch pauses the pipeline: reported, and still ready
    StateStore(f"sqlite:///{tmp_path / 'state.db'}").set_kill_switch("cards", "pause", reason="ops test")
    gw.wait_for(lambda: gw.get_json("/readyz")[1]["pipelines"]["cards"].get("kill_switch") == "pause",
                "the kill switch reported")
    assert gw.get("/readyz")[0] == 200
    assert gw.stop() == 0
    # the stats line is still the last thing on stdout (the ops lines go to stderr)
    assert json.loads(gw.stdout.splitlines()[-1])["cards"]["messages"] == len(sent)
    assert "ops: serving" not in gw.stdout


async def test_serve_is_not_ready_while_its_model_endpoint_does_not_answer(
        kafka_broker: TansuBroker, tmp_path: Path, lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    topics = Topics.create(kafka_broker, "ops-down")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = serve_config(tmp_path, kafka_broker, topics, nobody)
    gw = LgwProcess(lgw_cmd, ["serve", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    assert gw.get("/healthz")[0] == 200
    gw.wait_for(lambda: gw.get_json("/readyz")[1].get("checks", {}).get("kafka") == "ok", "kafka reached")
    status, body = gw.get_json("/readyz")
    assert status == 503
    assert body["not_ready"] == ["model:fraud"]
    assert body["checks"]["model:fraud"] == "unreachable" and body["checks"]["state_store"] == "ok"


def test_a_port_in_use_stops_serve_with_one_error_line(tmp_path: Path, lgw_cmd: list[str],
                                                       kafka_broker: TansuBroker) -> None:
    import socket

    topics = Topics.create(kafka_broker, "ops-busy")
    config = serve_config(tmp_path, kafka_broker, topics, "http://127.0.0.1:9")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*lgw_cmd, "serve", "--config", str(config), "--ops-address", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lgw: error: ops endpoints: cannot listen on 127.0.0.1:{port}: address already in use; expected a free "
        "address in --ops-address, LGW_OPS_ADDRESS or ops.address"]


# ---------------------------------------------------------------------------- lgw run
def test_run_serves_its_endpoints_and_the_finished_runs_figures(tmp_path: Path, lgw_cmd: list[str],
                                                                lgw_processes: list[LgwProcess]) -> None:
    config = write_config(tmp_path, stable_for_s=0.2)
    (tmp_path / "drop" / "inbox").mkdir(parents=True)
    gw = LgwProcess(lgw_cmd, ["run", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    assert gw.get_json("/healthz") == (200, {"status": "alive"})
    status, body = gw.get_json("/readyz")
    assert status == 200, body
    assert body["checks"] == {"state_store": "ok", "model:fraud": "ok"}
    assert body["pipelines"]["card_txn"]["paused"] is False

    staged = tmp_path / "staged.DAT"
    generate_card_file(staged, records=1_000, seed=4)
    os.rename(staged, tmp_path / "drop" / "inbox" / "OPS1.DAT")
    gw.wait_for(lambda: gw.sample("lgw_batch_runs_total", pipeline="card_txn", status="ok") == 1, "the run counted")
    assert gw.sample("lgw_records_in_total", pipeline="card_txn", source="dropfolder") == 1_000
    assert gw.sample("lgw_records_out_total", pipeline="card_txn", scored_by="model") == 1_000
    assert gw.sample("lgw_model_requests_total", pipeline="card_txn", model="fraud", outcome="ok") >= 1
    assert gw.stop() == 0


async def test_serve_over_amqp_is_ready_with_its_broker_and_counts_the_requests(
        tmp_path: Path, lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    import uuid

    import aio_pika

    from tests.helpers import unavailable
    from tests.test_realtime_amqp import AMQP_URL, onnx_model

    try:
        conn = await asyncio.wait_for(aio_pika.connect(AMQP_URL), timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        unavailable(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}")
    tag = uuid.uuid4().hex[:10]
    queue, dlx = f"lgw.test.{tag}.req", f"lgw.test.{tag}.dlx"
    doc = {"models": {"fraud": onnx_model()},
           "pipelines": {"cards": {"contract": str(contract_path("card_txn")), "model": "fraud",
                                   "source": {"type": "amqp", "queue": queue, "dead_letter_exchange": dlx}}},
           "amqp": {"url": AMQP_URL, "graceful_timeout_s": 10},
           "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        gw = LgwProcess(lgw_cmd, ["serve", "--config", str(config)], tmp_path)
        lgw_processes.append(gw)
        gw.wait_for(lambda: ready(gw), "/readyz 200")
        assert gw.get_json("/readyz")[1]["checks"] == {"amqp": "ok", "state_store": "ok", "model:fraud": "ok"}
        for i, body in enumerate(copybook_records(0, 40)):
            await channel.default_exchange.publish(
                aio_pika.Message(body, correlation_id=f"c{i}", reply_to=replies.name), routing_key=queue)
        gw.wait_for(lambda: gw.sample("lgw_records_out_total", pipeline="cards", scored_by="model") == 40,
                    "every request scored and counted")
        assert gw.sample("lgw_records_in_total", pipeline="cards", source="amqp") == 40
        assert gw.stop() == 0
    finally:
        cleanup = await conn.channel()
        for q in (queue, f"{queue}.dlq"):
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await cleanup.queue_delete(q)
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await cleanup.exchange_delete(dlx)
        await conn.close()
