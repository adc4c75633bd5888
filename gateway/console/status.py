"""Pipeline status as the overview shows it: source, lag or inbox, breaker per model,
kill switch, policy and counters.

A process with live pipelines reads them directly (breaker objects, its own Prometheus
registry). It also publishes them to the state store every few seconds (`StatusPublisher`),
so that `lgw console`, which scores nothing itself, shows every replica: a row older than
`STALE_S` is shown as stale, not as current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import Column, DateTime, String, Table, Text, delete, select

from gateway.state import KillSwitch, StateStore, metadata

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.pipeline import Pipeline

log = logging.getLogger("lgw.console")

PUBLISH_EVERY_S = 5.0
STALE_S = 30.0

replica_status = Table(
    "console_replica_status",
    metadata,
    Column("replica", String(240), primary_key=True),
    Column("pipeline", String(200), primary_key=True),
    Column("status", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class Switch(BaseModel):
    mode: str = "off"
    reason: str = ""
    set_by: str = ""
    set_at: datetime | None = None


class ModelState(BaseModel):
    name: str
    breaker: str  # closed, half_open, open, forced_open, disabled


class Counters(BaseModel):
    records_in: int = 0
    scored_by: dict[str, int] = Field(default_factory=dict)  # model, fallback
    rejected: dict[str, int] = Field(default_factory=dict)  # by reason class
    lag: int | None = None  # Kafka: records on the input topic not yet consumed
    inbox: int | None = None  # drop folder: files waiting


class ReplicaStatus(BaseModel):
    replica: str
    process: str
    live: bool  # False: published longer than STALE_S ago
    updated_at: datetime
    paused: bool
    models: list[ModelState]
    counters: Counters


class PipelineStatus(BaseModel):
    name: str
    source: str  # kafka, amqp, dropfolder, odbc, none
    source_detail: str  # the topic, queue or folder (never a URL: it may carry a password)
    sink: str
    policy: str
    kill_switch: Switch
    model: str | None
    replicas: list[ReplicaStatus]


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _sample_sum(metric: Any, name: str, pipeline: str, by: str | None = None) -> dict[str, float]:
    """The samples `name` of one metric (its own collect, not the whole registry's: that
    took 0.8 ms each, four times per pipeline and request) for `pipeline`, summed by `by`."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name != name or sample.labels.get("pipeline") != pipeline:
                continue
            key = sample.labels.get(by, "") if by else ""
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def _inbox(cfg: GatewayConfig, name: str) -> int | None:
    from adapters.files.config import DropFolderConfig

    src = cfg.pipelines[name].source
    if not isinstance(src, DropFolderConfig):
        return None
    try:
        inbox = src.folders(cfg.base_dir)["inbox"]
        return sum(1 for e in os.scandir(inbox) if e.is_file(follow_symlinks=False)
                   and not e.name.startswith(".") and not e.name.endswith(".done"))
    except OSError:
        return None


def live_replica(cfg: GatewayConfig, pipeline: Pipeline, process: str) -> ReplicaStatus:
    """This process's view of one of its pipelines, now."""
    from gateway.metrics import CONSUMER_LAG, RECORDS_IN, RECORDS_OUT, RECORDS_REJECTED

    models = []
    if pipeline.model is not None:
        models.append(ModelState(name=pipeline.model_name or pipeline.model.info.name,
                                 breaker=pipeline.model.breaker.state.value))
    name = pipeline.name
    lag = _sample_sum(CONSUMER_LAG, "lgw_kafka_consumer_lag_records", name)
    counters = Counters(
        records_in=int(sum(_sample_sum(RECORDS_IN, "lgw_records_in_total", name).values())),
        scored_by={k: int(v) for k, v in _sample_sum(RECORDS_OUT, "lgw_records_out_total", name, "scored_by").items()},
        rejected={k: int(v) for k, v in _sample_sum(RECORDS_REJECTED, "lgw_records_rejected_total", name,
                                                    "reason").items()},
        lag=int(sum(lag.values())) if lag else None,
        inbox=_inbox(cfg, pipeline.name) if pipeline.name in cfg.pipelines else None,
    )
    return ReplicaStatus(replica=replica_id(), process=process, live=True, updated_at=datetime.now(UTC),
                         paused=pipeline.paused, models=models, counters=counters)


def _source(cfg: GatewayConfig, name: str) -> tuple[str, str, str]:
    pipe = cfg.pipelines.get(name)
    if pipe is None or pipe.source is None:
        return "none", "", "none"
    src: Any = pipe.source
    detail = ""
    for attr in ("topics", "topic", "queue", "inbox", "table"):
        value = getattr(src, attr, None)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            value = ", ".join(value)  # Kafka: the topics consumed
        if isinstance(value, str) and value:
            detail = value
            break
    return str(src.type), detail, str(pipe.output.type)


def _switch(sw: KillSwitch) -> Switch:
    return Switch(mode=sw.mode, reason=sw.reason, set_by=sw.set_by, set_at=sw.set_at)


def published(state: StateStore) -> dict[str, list[ReplicaStatus]]:
    """What the replicas last published, per pipeline."""
    now = datetime.now(UTC)
    with state._connect() as conn:
        rows = conn.execute(select(replica_status)).mappings().all()
    out: dict[str, list[ReplicaStatus]] = {}
    for row in rows:
        at = row["updated_at"] if row["updated_at"].tzinfo else row["updated_at"].replace(tzinfo=UTC)
        try:
            status = ReplicaStatus.model_validate({**json.loads(row["status"]), "updated_at": at,
                                                   "live": now - at < timedelta(seconds=STALE_S)})
        except ValueError:
            continue
        out.setdefault(row["pipeline"], []).append(status)
    return out


def pipeline_statuses(cfg: GatewayConfig, state: StateStore, live: dict[str, Pipeline], process: str,
                      only: str | None = None) -> list[PipelineStatus]:
    """Every configured pipeline (or `only`): this process's live view where it runs the
    pipeline, else what the replicas published."""
    switches = {sw.pipeline: sw for sw in state.list_kill_switches()}
    others = published(state) if set(cfg.pipelines) - set(live) else {}
    me = replica_id()
    result = []
    for name, pipe in cfg.pipelines.items():
        if only is not None and name != only:
            continue
        source, detail, sink = _source(cfg, name)
        replicas = [live_replica(cfg, live[name], process)] if name in live else []
        replicas += [r for r in others.get(name, []) if r.replica != me]
        result.append(PipelineStatus(
            name=name, source=source, source_detail=detail, sink=sink, policy=pipe.policy.value,
            kill_switch=_switch(switches.get(name, KillSwitch(pipeline=name))), model=pipe.model,
            replicas=replicas))
    return result


class StatusPublisher:
    """Publishes this process's pipelines to the state store until stopped."""

    def __init__(self, cfg: GatewayConfig, state: StateStore, pipelines: dict[str, Pipeline], process: str) -> None:
        self.cfg, self.state, self.pipelines, self.process = cfg, state, pipelines, process
        self._task: asyncio.Task[None] | None = None

    def publish_once(self) -> None:
        me = replica_id()
        now = datetime.now(UTC)
        with self.state._connect() as conn, conn.begin():
            for name, pipeline in self.pipelines.items():
                body = live_replica(self.cfg, pipeline, self.process).model_dump(mode="json",
                                                                                 exclude={"updated_at", "live"})
                conn.execute(delete(replica_status).where(replica_status.c.replica == me,
                                                          replica_status.c.pipeline == name))
                conn.execute(replica_status.insert().values(replica=me, pipeline=name, status=json.dumps(body),
                                                            updated_at=now))
            # rows of replicas gone for a day are history, not status
            conn.execute(delete(replica_status).where(replica_status.c.updated_at < now - timedelta(days=1)))

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.publish_once)
            except Exception as exc:  # the store may be away a while; status is best effort
                log.warning("console: could not publish status: %s", type(exc).__name__)
            await asyncio.sleep(PUBLISH_EVERY_S)

    def start(self) -> None:
        if self.pipelines and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            me = replica_id()
            with self.state._connect() as conn, conn.begin():
                conn.execute(delete(replica_status).where(replica_status.c.replica == me))


__all__ = ["Counters", "ModelState", "PipelineStatus", "ReplicaStatus", "StatusPublisher", "Switch",
           "live_replica", "pipeline_statuses", "published", "replica_id", "replica_status"]
