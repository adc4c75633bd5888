"""A real Prometheus server scrapes a running `lgw serve` and `lgw run` (every second),
and what it stored is asked through its HTTP API: the records scored, and, once the model
server process is killed, the breaker's open state and the records the fallback rules
scored instead."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from schemas.examples import generate_card_file
from tests.kafka_broker import TansuBroker
from tests.lgw_processes import LgwProcess
from tests.model_servers import ModelServerProcess, running
from tests.prometheus_server import PrometheusServer
from tests.realtime_data import copybook_records
from tests.test_batch import write_config
from tests.test_ops_http import serve_config
from tests.test_realtime_kafka import Topics, keyed, produce

pytestmark = pytest.mark.integration

DEADLINE_S = 90.0


def target(process: LgwProcess) -> str:
    return process.url.removeprefix("http://")


async def test_prometheus_sees_the_breaker_open_and_the_fallback_when_the_model_server_dies(
        kafka_broker: TansuBroker, disposable_kserve_server: ModelServerProcess, tmp_path: Path,
        lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    topics = Topics.create(kafka_broker, "prom")
    config = serve_config(tmp_path, kafka_broker, topics, disposable_kserve_server.base_url)
    gw = LgwProcess(lgw_cmd, ["serve", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    gw.wait_for(lambda: gw.get("/readyz")[0] == 200, "lgw serve ready")
    with running(PrometheusServer({"lgw_serve": target(gw)}, tmp_path)) as prom:
        prom.wait_for('up{job="lgw_serve"} == 1', "the target scraped")
        sent = await produce(kafka_broker.bootstrap, topics.input, keyed(copybook_records(0, 100), "up"))
        prom.wait_for(f'lgw_records_out_total{{job="lgw_serve",pipeline="cards",scored_by="model"}} == {len(sent)}',
                      "the records the model scored")
        assert prom.values('lgw_breaker_state{job="lgw_serve",pipeline="cards",model="fraud"}') == [0.0]

        disposable_kserve_server.kill()
        # paced rounds until the breaker has judged enough failed calls and opened
        deadline = time.monotonic() + DEADLINE_S
        opened = 'lgw_breaker_transitions_total{job="lgw_serve",pipeline="cards",model="fraud",to="open"} >= 1'
        start = 100
        while not prom.values(opened):
            gw.check_alive()
            assert time.monotonic() < deadline, f"the breaker's opening never reached Prometheus\n{gw.stderr[-2000:]}"
            await produce(kafka_broker.bootstrap, topics.input, keyed(copybook_records(start, 20), f"down{start}"))
            start += 20
            await asyncio.sleep(0.5)
        # no more input: the breaker stays open (it turns half-open only when a call asks)
        prom.wait_for('lgw_breaker_state{job="lgw_serve",pipeline="cards",model="fraud"} == 2', "the open state")
        fallback = prom.wait_for('lgw_records_out_total{job="lgw_serve",pipeline="cards",scored_by="fallback"} > 0',
                                 "the records the fallback rules scored")
        assert fallback[0] > 0
        errors = prom.values('lgw_model_requests_total{job="lgw_serve",pipeline="cards",outcome="error"}')
        assert errors and errors[0] >= 1
        # every record is accounted for: scored by the model or the rules, none rejected
        total = prom.wait_for(f'sum(lgw_records_out_total{{job="lgw_serve",pipeline="cards"}}) == {start}',
                              "every record in the scraped series")
        assert total == [float(start)]
    assert gw.stop() == 0


def test_prometheus_scrapes_lgw_run_and_sees_the_finished_run(tmp_path: Path, lgw_cmd: list[str],
                                                              lgw_processes: list[LgwProcess]) -> None:
    config = write_config(tmp_path, stable_for_s=0.2)
    (tmp_path / "drop" / "inbox").mkdir(parents=True)
    gw = LgwProcess(lgw_cmd, ["run", "--config", str(config)], tmp_path)
    lgw_processes.append(gw)
    with running(PrometheusServer({"lgw_run": target(gw)}, tmp_path)) as prom:
        prom.wait_for('up{job="lgw_run"} == 1', "the target scraped")
        staged = tmp_path / "staged.DAT"
        generate_card_file(staged, records=800, seed=6)
        os.rename(staged, tmp_path / "drop" / "inbox" / "PROM1.DAT")
        prom.wait_for('lgw_batch_runs_total{job="lgw_run",pipeline="card_txn",status="ok"} == 1', "the run")
        assert prom.values('lgw_records_in_total{job="lgw_run",pipeline="card_txn"}') == [800.0]
        assert prom.values('lgw_batch_run_progress_ratio{job="lgw_run",pipeline="card_txn"}') == [1.0]
    assert gw.stop() == 0
