"""`lgw serve` (the real-time app until SIGTERM) and `lgw asyncapi` (its channel docs)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sys
from functools import partial
from typing import Any

import yaml

from gateway.config import GatewayConfig
from gateway.meters import track_lag
from gateway.ops_http import OpsServer, Readiness
from gateway.realtime.app import RealtimeApp, build_realtime_app
from gateway.state import StateStore
from schemas.errors import ConfigError
from schemas.safefiles import create_output

log = logging.getLogger("lgw.realtime")


async def run_until(cfg: GatewayConfig, stop: asyncio.Event, *, only: str | None = None,
                    state: StateStore | None = None, freeze: bool = False,
                    ops: OpsServer | None = None) -> dict[str, Any]:
    """Serves every real-time pipeline until `stop` is set, then shuts down gracefully:
    subscribers stop fetching, in-flight batches finish and commit, clients close.
    Returns the per-pipeline counts. `freeze`: the process serves nothing else (`lgw
    serve`), see `freeze_heap`. `ops`: the operations endpoints (bound already), up
    before the brokers are reached, so /healthz answers and /readyz says what is missing."""
    rt = build_realtime_app(cfg, only=only, state=state)
    if ops is not None:
        add_readiness_checks(ops.readiness, rt, state)
        await ops.start()
    lag: list[asyncio.Task[None]] = []
    try:
        await _start(rt, cfg)
        lag = track_consumer_lag(rt)
        if freeze:
            freeze_heap()
        log.info("serving %s", ", ".join([*rt.kafka_drivers, *rt.amqp_drivers]))
        try:
            await stop.wait()
        finally:
            for task in lag:
                task.cancel()
            await rt.app.stop()
    finally:
        if ops is not None:
            await ops.stop()
    return rt.stats()


async def _start(rt: RealtimeApp, cfg: GatewayConfig) -> None:
    """Starts the app; a TLS handshake or SASL exchange the brokers refuse is one line."""
    with _HeldClientLogs() as held:
        try:
            await rt.app.start()
        except Exception:
            problem = await _connection_problem(cfg)
            if problem is None:
                raise
            held.drop()  # the clients' own lines say less than the one below
            with contextlib.suppress(Exception):  # what did start is let go; the cause is reported below
                await rt.app.stop()
            # a handshake or authentication the brokers refuse is the config's to fix, not a bug
            raise ConfigError(problem) from None


def track_consumer_lag(rt: RealtimeApp) -> list[asyncio.Task[None]]:
    """The consumer-lag gauges of the app's Kafka subscribers, measured until the tasks
    are cancelled."""
    return [asyncio.create_task(track_lag(name, topics, partial(getattr, sub, "consumer")))
            for name, (sub, topics) in rt.kafka_subscribers.items()]


def add_readiness_checks(readiness: Readiness, rt: RealtimeApp, state: StateStore | None) -> None:
    """What /readyz asks of `lgw serve`: its brokers, the state store, the models."""
    if rt.kafka_broker is not None:
        readiness.add_broker("kafka", rt.kafka_broker)
    if rt.rabbit_broker is not None:
        readiness.add_broker("amqp", rt.rabbit_broker)
    readiness.add_state_store(state)
    for driver in [*rt.kafka_drivers.values(), *rt.amqp_drivers.values()]:
        readiness.add_pipeline(driver.scorer.pipeline)


class _HeldClientLogs(logging.Filter):
    """While the app connects, the broker clients' log lines are held back: when the
    connection fails for a reason `_connection_problem` can name, that one line replaces
    theirs (aiokafka logs every failed attempt, without saying what was expected);
    otherwise they are let through as they were."""

    LOGGERS = ("aiokafka", "aiokafka.client", "aiokafka.conn", "aio_pika", "aiormq", "aiormq.connection",
               "lgw.faststream")

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def drop(self) -> None:
        self.records.clear()

    def __enter__(self) -> _HeldClientLogs:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        for record in self.records:
            logging.getLogger(record.name).handle(record)


async def _connection_problem(cfg: GatewayConfig) -> str | None:
    """Why the app could not connect, when a TLS handshake or SASL exchange says so."""
    from adapters.amqp.security import connection_problem as amqp_problem

    kafka = cfg.kafka
    if kafka.uses_tls or kafka.sasl is not None:
        from adapters.kafka.security import connection_problem as kafka_problem

        problem = await kafka_problem(kafka)
        if problem is not None:
            return problem
    return await amqp_problem(cfg.amqp)


def freeze_heap() -> None:
    """Once the app has started: what it built (contracts, model sessions, the libraries'
    modules) lives as long as the process, so it is moved out of the garbage collector's
    reach, and a full collection walks only what the batches allocate. Unfrozen, one such
    collection took up to 77 ms here, in the middle of a micro-batch, and set the p99
    latency (bench/realtime.py). A process-wide choice: only for a process that serves."""
    gc.collect()
    gc.freeze()


def asyncapi_document(cfg: GatewayConfig, *, only: str | None = None, fmt: str = "json") -> str:
    rt = build_realtime_app(cfg, only=only, for_docs=True)
    doc = rt.app.schema.to_specification().to_jsonable()
    # FastStream lists channels in registration order, which can differ between builds in
    # one process; sorted, the committed document compares equal to a fresh one.
    for section in (doc, doc.get("components", {})):
        for key in ("channels", "operations", "messages", "schemas"):
            if isinstance(section.get(key), dict):
                section[key] = dict(sorted(section[key].items()))
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return json.dumps(doc, indent=2, ensure_ascii=False)


def write_document(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    with create_output(output, "-o") as new:
        new.write(text.encode("utf-8"))
        new.publish()


def print_stats(stats: dict[str, Any]) -> None:
    print(json.dumps(stats, ensure_ascii=False), flush=True)
