"""The live metrics hooks (gateway.meters) and the ops endpoints (gateway.ops_http) in
process: reason classes, bounded labels, breaker transitions counted by its listener,
model calls by outcome, the kill-switch and pause gauges, records counted once a
micro-batch is acked, and /healthz, /readyz, /metrics served on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import meters, metrics
from gateway.config import GatewayConfig, Policy
from gateway.metrics import REASON_CLASSES, REGISTRY, reason_class
from gateway.ops_http import OpsServer, Readiness, ops_address, parse_address, run_brokers
from gateway.pipeline import Pipeline
from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gateway.state import KillSwitchWatcher, StateStore
from schemas.contract import Contract, load_contract
from schemas.errors import ConfigError
from schemas.examples import contract_path, generate_card_file
from tests.test_pipeline import Flaky, guarded


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def records(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    path = tmp_path_factory.mktemp("cards") / "cards.dat"
    generate_card_file(path, records=200, seed=3)
    return pa.concat_tables([dc.table for dc in contract.decode_file(path)])


# ---------------------------------------------------------------------------- reason classes
@pytest.mark.parametrize(("reason", "kind", "expected"), [
    ("RDW length 3 is below 4", None, "framing"),
    ("message is 80 bytes, the record is 120", None, "framing"),
    ("invalid packed decimal in AMOUNT", None, "decode"),
    ("invalid JSON: expecting value", None, "decode"),
    ("model rejected the record: HTTP 422", None, "model_rejected"),
    ("model output fraud_score: NaN", None, "model_output"),
    ("pipeline raised ZeroDivisionError", None, "pipeline_error"),
    ("MCC 12 is not one of the allowed codes", None, "validation"),
    ("whatever the text says", "decode", "decode"),
])
def test_reason_class_maps_free_text_onto_a_closed_set(reason: str, kind: str | None, expected: str) -> None:
    assert reason_class(reason, kind) == expected
    assert expected in REASON_CLASSES


def test_a_dead_letter_from_a_crash_is_a_pipeline_error_whatever_its_text() -> None:
    assert meters.dead_letter_class("ValueError at line 3", "crash") == "pipeline_error"
    assert meters.dead_letter_class("invalid zoned decimal in AMOUNT", "decode") == "decode"


# ---------------------------------------------------------------------------- breaker
def test_breaker_transitions_are_counted_by_its_listener_and_the_gauge_follows() -> None:
    breaker = CircuitBreaker("m", BreakerConfig(minimum_number_of_calls=2, sliding_window_size=2,
                                                wait_duration_in_open_s=0))
    meters.watch_breaker("unit-breaker", "m", breaker)
    labels = {"pipeline": "unit-breaker", "model": "m"}
    assert value("lgw_breaker_state", **labels) == 0
    for _ in range(2):
        breaker.acquire().failure(0.01)
    assert breaker.state is BreakerState.OPEN
    assert value("lgw_breaker_state", **labels) == metrics.BREAKER_STATE_VALUES["open"]
    breaker.acquire().success(0.01)  # the wait is over: the probe goes through half-open
    assert value("lgw_breaker_transitions_total", **labels, to="open") == 1
    assert value("lgw_breaker_transitions_total", **labels, to="half_open") == 1
    breaker.force_open()
    assert value("lgw_breaker_state", **labels) == metrics.BREAKER_STATE_VALUES["forced_open"]
    assert value("lgw_breaker_transitions_total", **labels, to="forced_open") == 1


# ---------------------------------------------------------------------------- the pipeline's hooks
async def test_model_calls_are_counted_by_outcome_with_their_duration(contract: Contract,
                                                                      records: pa.Table) -> None:
    backend = Flaky()
    pipe = Pipeline(contract, name="unit-calls", model=guarded(backend, minimum_number_of_calls=2,
                                                               sliding_window_size=2))
    labels = {"pipeline": "unit-calls", "model": "fraud"}
    await pipe.score(records)
    assert value("lgw_model_requests_total", **labels, outcome="ok") == 1
    assert value("lgw_model_request_duration_seconds_count", **labels) == 1
    backend.down = True
    await pipe.score(records)  # one failure in two calls: the breaker opens
    await pipe.score(records)  # and lets nothing through: no duration
    await pipe.score(records)
    assert value("lgw_model_requests_total", **labels, outcome="error") == 1
    assert value("lgw_model_requests_total", **labels, outcome="rejected") == 2
    assert value("lgw_model_request_duration_seconds_count", **labels) == 2
    assert value("lgw_breaker_state", **labels) == metrics.BREAKER_STATE_VALUES["open"]
    assert value("lgw_breaker_transitions_total", **labels, to="open") == 1


async def test_kill_switch_mode_and_pause_are_gauges(contract: Contract, records: pa.Table, tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    watcher = KillSwitchWatcher(store, "unit-ks", ttl_s=0)
    pipe = Pipeline(contract, name="unit-ks", kill_switch=watcher, policy=Policy.PAUSE)
    await pipe.score(records)
    assert value("lgw_kill_switch_mode", pipeline="unit-ks", mode="off") == 1
    assert value("lgw_pipeline_paused", pipeline="unit-ks") == 0
    store.set_kill_switch("unit-ks", "pause")
    assert (await pipe.score(records)).paused
    assert value("lgw_kill_switch_mode", pipeline="unit-ks", mode="pause") == 1
    assert value("lgw_kill_switch_mode", pipeline="unit-ks", mode="off") == 0
    assert value("lgw_pipeline_paused", pipeline="unit-ks") == 1
    store.set_kill_switch("unit-ks", "force_fallback")
    await pipe.score(records)
    assert value("lgw_pipeline_paused", pipeline="unit-ks") == 0
    assert value("lgw_kill_switch_mode", pipeline="unit-ks", mode="force_fallback") == 1
    store.close()


def test_stream_meters_count_an_acked_batch_once_by_class_and_scorer() -> None:
    m = meters.StreamMeters("unit-stream", "kafka", "kafka")
    m.acked(10, {"model": 7, "fallback": 1}, ["decode", "validation"], 2)
    m.acked(5, {"model": 5}, [], 0)
    assert value("lgw_records_in_total", pipeline="unit-stream", source="kafka") == 15
    assert value("lgw_records_out_total", pipeline="unit-stream", scored_by="model") == 12
    assert value("lgw_records_out_total", pipeline="unit-stream", scored_by="fallback") == 1
    assert value("lgw_records_rejected_total", pipeline="unit-stream", reason="decode") == 1
    assert value("lgw_dead_letters_published_total", pipeline="unit-stream", sink="kafka") == 2
    m.shadow(10, 9)
    m.shadow(10, 9)  # nothing new since
    m.shadow(15, 13)
    assert value("lgw_shadow_compared_total", pipeline="unit-stream") == 15
    assert value("lgw_shadow_agreed_total", pipeline="unit-stream") == 13


class _Partition:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class _Consumer:
    """aiokafka's consumer as the lag gauge reads it: assignment, highwater, position."""

    def __init__(self, ends: dict[int, int | None], positions: dict[int, int]) -> None:
        self.ends, self.positions = ends, positions

    def assignment(self) -> set[Any]:
        return {_Partition("in", p) for p in self.ends}

    def highwater(self, tp: _Partition) -> int | None:
        return self.ends[tp.partition]

    async def position(self, tp: _Partition) -> int:
        return self.positions[tp.partition]


async def test_consumer_lag_sums_end_minus_position_over_the_assigned_partitions() -> None:
    consumer = _Consumer({0: 100, 1: 50, 2: None}, {0: 90, 1: 50, 2: 0})
    assert await meters.consumer_lag(consumer) == {"in": 10}
    task = asyncio.create_task(meters.track_lag("unit-lag", ["in"], lambda: consumer, interval_s=0.01))
    try:
        for _ in range(200):
            if value("lgw_kafka_consumer_lag_records", pipeline="unit-lag", topic="in") == 10:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert value("lgw_kafka_consumer_lag_records", pipeline="unit-lag", topic="in") == 10


# ---------------------------------------------------------------------------- the address
def test_ops_address_flag_then_env_then_config_then_the_default() -> None:
    cfg = GatewayConfig.model_validate({"ops": {"address": "127.0.0.1:9000"}})
    assert ops_address(cfg, "127.0.0.1:0", {"LGW_OPS_ADDRESS": "127.0.0.1:1"}) == ("127.0.0.1", 0)
    assert ops_address(cfg, None, {"LGW_OPS_ADDRESS": "127.0.0.1:1"}) == ("127.0.0.1", 1)
    assert ops_address(cfg, None, {}) == ("127.0.0.1", 9000)
    assert ops_address(GatewayConfig(), None, {}) == ("127.0.0.1", 9464)
    off = GatewayConfig.model_validate({"ops": {"enabled": False}})
    assert ops_address(off, None, {"LGW_OPS_ADDRESS": "127.0.0.1:1"}) is None
    assert ops_address(off, "[::1]:9100", {}) == ("::1", 9100)


@pytest.mark.parametrize("text", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":9464"])
def test_a_wrong_address_is_one_line_naming_what_was_expected_and_found(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_address(text, "--ops-address")
    message = str(err.value)
    assert "\n" not in message and "expected HOST:PORT" in message and repr(text) in message


def test_a_port_in_use_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            OpsServer(("127.0.0.1", port)).bind()
    assert str(err.value) == (f"ops endpoints: cannot listen on 127.0.0.1:{port}: address already in use; "
                              "expected a free address in --ops-address, LGW_OPS_ADDRESS or ops.address")


# ---------------------------------------------------------------------------- the endpoints
async def test_endpoints_answer_and_readyz_names_what_is_not_ready(contract: Contract, records: pa.Table,
                                                                  tmp_path: Path) -> None:
    backend = Flaky()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.set_kill_switch("unit-ops", "pause", reason="maintenance")
    pipe = Pipeline(contract, name="unit-ops", model=guarded(backend), kill_switch=KillSwitchWatcher(store, "unit-ops"))
    await pipe.score(records)
    readiness = Readiness()
    readiness.add_state_store(store)
    readiness.add_pipeline(pipe)
    server = OpsServer(("127.0.0.1", 0), readiness).bind()
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "alive"})
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["checks"] == {"state_store": "ok", "model:fraud": "ok"}
            # paused by the kill switch: reported, still ready
            assert body["pipelines"]["unit-ops"] == {"paused": True, "policy": "fallback", "kill_switch": "pause",
                                                     "breaker": "closed"}
            backend.down = True
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["not_ready"] == ["model:fraud"]
            scraped = await client.get("/metrics")
            assert scraped.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
            paused = [s for s in families["lgw_pipeline_paused"].samples if s.labels == {"pipeline": "unit-ops"}]
            assert [s.value for s in paused] == [1.0]
    finally:
        await server.stop()
        store.close()
    with socket.socket() as probe:  # stopped: the port is free again
        probe.bind(("127.0.0.1", server.port))


# after the other tests of this module (and whatever ran before)
def test_every_label_value_the_registry_holds_comes_from_a_closed_set_or_the_config() -> None:
    # no record value, no free text: only what a closed set or the config allows
    closed = {"reason": set(REASON_CLASSES), "scored_by": {"model", "fallback"},
              "outcome": set(meters.MODEL_OUTCOMES), "to": set(metrics.BREAKER_STATE_VALUES),
              "mode": set(metrics.KILL_SWITCH_MODES),
              "status": {"ok", "rejects", "failed", "interrupted", "paused"},
              "source": {"kafka", "amqp", "dropfolder", "odbc", "unknown"},
              "sink": {"kafka", "amqp", "odbc", "file", "files", "unknown"},
              "signal": set(metrics.DRIFT_SIGNALS)}
    seen = 0
    for family in REGISTRY.collect():
        for sample in family.samples:
            for label, allowed in closed.items():
                if label in sample.labels:
                    seen += 1
                    assert sample.labels[label] in allowed, (sample.name, sample.labels)
    assert seen > 0


async def test_lgw_runs_brokers_are_ready_when_one_of_their_addresses_accepts_a_connection() -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        up, down = listening.getsockname()[1], closed.getsockname()[1]
        cfg = GatewayConfig.model_validate({
            "kafka": {"bootstrap_servers": f"127.0.0.1:{down},127.0.0.1:{up}"},
            "amqp": {"url": f"amqp://guest:secret@127.0.0.1:{down}/"},
            "pipelines": {"p": {"contract": "c.yaml", "source": {"inbox": "in", "outbox": "out"},
                                "sink": {"type": "kafka", "topic": "t"}, "rejects": {"type": "amqp",
                                                                                   "exchange": "x"}}}})
        readiness = Readiness()
        run_brokers(readiness, cfg, ["p"])
        ready, body = await readiness.report()
    assert not ready
    assert body["checks"] == {"kafka": "ok", "amqp": "unreachable"} and body["not_ready"] == ["amqp"]
    assert "secret" not in str(body)
