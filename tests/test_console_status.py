"""Pipeline status across processes: `lgw run` with the console on publishes its
pipelines' status (breaker, counters, inbox) to the state store every few seconds, and a
separate `lgw console` over the same store shows it; a stopped replica's rows go with it,
and a row nobody refreshed is shown as stale, not as current. Real processes, a real
SQLite state store, bearer tokens of the test's own tokens file."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.console.status import STALE_S, published, replica_status
from gateway.state import StateStore
from schemas.examples import generate_card_file
from tests.lgw_processes import LgwProcess
from tests.test_console_runs import write_world

pytestmark = pytest.mark.integration
RECORDS = 200


def api(proc: LgwProcess, token: str, path: str) -> Any:
    req = urllib.request.Request(proc.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def card_txn(proc: LgwProcess, token: str) -> dict[str, Any]:
    [found] = [p for p in api(proc, token, "/api/v1/pipelines") if p["name"] == "card_txn"]
    return found


def test_lgw_console_shows_what_a_running_lgw_run_publishes(tmp_path: Path, lgw_cmd: list[str],
                                                            lgw_processes: list[LgwProcess]) -> None:
    config, tokens = write_world(tmp_path)
    viewer = tokens["viewer"]
    runner = LgwProcess(lgw_cmd, ["run", "--config", str(config)], tmp_path, name="run")
    console = LgwProcess(lgw_cmd, ["console", "--config", str(config), "--address", "127.0.0.1:0"], tmp_path,
                         name="console")
    lgw_processes.extend([runner, console])

    # the running process answers for its own pipeline, live
    mine = card_txn(runner, viewer)
    [replica] = mine["replicas"]
    assert replica["process"] == "run" and replica["live"] is True and replica["paused"] is False
    assert replica["models"] == [{"name": "fraud", "breaker": "closed"}]
    assert mine["source"] == "dropfolder" and mine["policy"] == "fallback" and mine["kill_switch"]["mode"] == "off"

    generate_card_file(tmp_path / "drop" / "inbox" / "CARDS.DAT", records=RECORDS, seed=3)

    def counted() -> bool:
        replicas = card_txn(console, viewer)["replicas"]
        return bool(replicas) and sum(replicas[0]["counters"]["scored_by"].values()) == RECORDS

    console.wait_for(counted, "lgw console showing the records lgw run scored")
    [seen] = card_txn(console, viewer)["replicas"]
    assert seen["replica"] == replica["replica"] and seen["process"] == "run" and seen["live"] is True
    assert seen["counters"]["records_in"] == RECORDS and seen["counters"]["inbox"] == 0
    assert seen["models"] == [{"name": "fraud", "breaker": "closed"}]
    # the streaming pipeline runs nowhere: listed, with no replica
    [stream] = [p for p in api(console, viewer, "/api/v1/pipelines") if p["name"] == "card_stream"]
    assert stream["replicas"] == [] and stream["source"] == "kafka"

    assert runner.stop() == 0
    assert card_txn(console, viewer)["replicas"] == []  # a stopped replica takes its rows along


def test_a_row_nobody_refreshed_is_shown_stale(tmp_path: Path) -> None:
    config, _ = write_world(tmp_path)
    cfg = load_config(config)
    body = {"replica": "gone:1", "process": "serve", "paused": False, "models": [],
            "counters": {"records_in": 5, "scored_by": {"model": 5}, "rejected": {}}}
    with StateStore(cfg.state.url) as state:
        with state._connect() as conn, conn.begin():
            for replica, age in (("gone:1", STALE_S + 5), ("here:2", 1)):
                conn.execute(replica_status.insert().values(
                    replica=replica, pipeline="card_txn", status=json.dumps({**body, "replica": replica}),
                    updated_at=datetime.now(UTC) - timedelta(seconds=age)))
        seen = {r.replica: r.live for r in published(state)["card_txn"]}
    assert seen == {"gone:1": False, "here:2": True}
