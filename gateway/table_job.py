"""Batch mode for tables: an ODBC table or query -> the pipeline -> any sink.

One run reads the rows the source's mode selects (all, or those past its watermark) and
drives them through the batch driver (`gateway.drivers.batch`): per batch, score ->
write the results to the sink and the rejects to the reject sink, both durable -> ack,
which advances the source's watermark in the state store. A run killed at any point
re-reads from the last acked watermark.

Into a sink that makes each batch visible as it is written (an ODBC upsert, a topic) a
batch is acked as soon as it is durable; the upsert by key makes repeated rows harmless.
Into a file, which appears only whole when the run ends, the batches are acked once the
file is published: a run killed before that leaves no file and no advanced watermark,
and the next run reads the same rows into a new file. SIGTERM finishes the batch in
hand, publishes what is durable, acks it, and the command exits 3.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from adapters import registry
from adapters.base import RejectSink, Sink, SourceBatch
from adapters.files.sink import OutboxSink, RejectsFile
from adapters.odbc.source import OdbcSource
from adapters.registry import BuildContext
from gateway import meters
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig, OdbcSourceConfig
from gateway.contract_scoring import load_scoring_contract
from gateway.drivers.batch import BatchLoop, Delivery, close_all, written_to
from gateway.governance.wiring import build_governance, open_decision_log
from gateway.logs import log_context
from gateway.pipeline import fixed_columns
from gateway.runs import run_stamp
from gateway.state import StateStore
from gateway.watermarks import WatermarkStore
from schemas.errors import ConfigError

log = logging.getLogger("lgw.table")


@dataclass
class TableRunSummary:
    pipeline: str
    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    batches: int = 0
    scored_by: dict[str, int] = field(default_factory=dict)
    output: str | None = None
    rejects_path: str | None = None
    seconds: float = 0.0
    interrupted: bool = False
    governance: dict[str, Any] = field(default_factory=dict)  # quality, drift (gateway.governance.run)

    def to_json(self) -> dict[str, Any]:
        out = {"pipeline": self.pipeline, "records_in": self.records_in, "records_out": self.records_out,
               "rejected": self.rejected, "batches": self.batches, "scored_by": self.scored_by,
               "output": self.output, "rejects": self.rejects_path, "seconds": round(self.seconds, 3)}
        if self.interrupted:
            out["status"] = "interrupted"
        quality, drift = self.governance.get("quality"), self.governance.get("drift")
        if quality is not None:
            out["verdict"] = quality["verdict"]
        if drift is not None and drift.get("breaches"):
            out["breaches"] = drift["breaches"]
        return out


def _location(part: dict[str, Any], target: Sink | RejectSink) -> str | None:
    """A file's path, or the sink's type and target (`odbc:TABLE`, `kafka:TOPIC`)."""
    if isinstance(target, OutboxSink | RejectsFile):
        return str(target.final)
    return written_to(part)


async def run_table_pipeline(name: str, cfg: GatewayConfig, state: StateStore, *,
                             stop: asyncio.Event | None = None,
                             shard: tuple[int, int] | None = None) -> TableRunSummary:
    """`shard` (K, N): only the rows whose key % N is K, with this shard's own watermark."""
    with log_context(pipeline=name):
        return await _run_table_pipeline(name, cfg, state, stop=stop, shard=shard)


async def _run_table_pipeline(name: str, cfg: GatewayConfig, state: StateStore, *,
                              stop: asyncio.Event | None, shard: tuple[int, int] | None = None) -> TableRunSummary:
    started = time.perf_counter()
    pipe_cfg = cfg.pipelines[name]
    if not isinstance(pipe_cfg.source, OdbcSourceConfig):
        raise ConfigError(f"pipeline {name} does not read an ODBC table (source.type odbc)")
    contract = load_scoring_contract(cfg.resolve(pipe_cfg.contract))
    pipeline = build_pipeline(name, contract, cfg, model_name=pipe_cfg.model, policy=pipe_cfg.policy,
                              shadow=pipe_cfg.shadow, state=state, pii=pipe_cfg.pii,
                              review=pipe_cfg.review)
    part = f".shard{shard[0]}of{shard[1]}" if shard else ""
    context = BuildContext(pipeline=name, contract=contract, base_dir=cfg.base_dir, source=pipe_cfg.source,
                           batch_size=pipe_cfg.batch_size, kafka=cfg.kafka, amqp=cfg.amqp, state=state,
                           run_name=f"{name}.{run_stamp()}{part}",
                           extras={"fixed_columns": fixed_columns(pipeline), "watermarks": WatermarkStore(state),
                                   "shard": shard})
    source: OdbcSource = registry.component("source", "odbc").build(pipe_cfg.source, context)
    sink: Sink = registry.component("sink", pipe_cfg.output.type).build(pipe_cfg.output, context)
    rejects: RejectSink = registry.component("rejects", pipe_cfg.rejects_to.type).build(pipe_cfg.rejects_to, context)
    # a file becomes visible only when the run publishes it: its batches are acked then
    held: list[SourceBatch] = []
    whole_file = any(getattr(part, "publishes_at_end", False) for part in (sink, rejects))
    summary = TableRunSummary(name)

    def acked(batch: SourceBatch, delivery: Delivery) -> None:
        summary.batches += 1

    assert context.run_name is not None
    governance = build_governance(pipeline, pipe_cfg, cfg, state, run=context.run_name,
                                  source=f"odbc:{pipe_cfg.source.table or 'query'}",
                                  audit=open_decision_log(cfg, state))
    loop = BatchLoop(pipeline, sink, rejects, label=f"pipeline {name}", stop=stop, on_acked=acked,
                     hold_acks=held if whole_file else None, governance=governance)
    try:
        await source.connect()  # checks the table's columns against the contract first
        await sink.open()
        await rejects.open()
        finished = await loop.run(source)
        loop.counts.check(f"pipeline {name}")
        outputs = {"scored": await sink.finish(), "rejects": await rejects.finish()}
        await sink.publish()
        if outputs["rejects"].get("records") or not isinstance(rejects, RejectsFile):
            await rejects.publish()
            summary.rejects_path = _location(outputs["rejects"], rejects) if loop.counts.rejected else None
        else:
            await rejects.discard()  # no reject: no empty rejects file
        for batch in held:  # in read order: the watermark moves past what the file holds
            await batch.ack()
    except BaseException as exc:
        await sink.discard()
        await rejects.discard()
        if isinstance(exc, Exception):  # the failed-run alert reads this
            meters.batch_run_ended(name, source="odbc", status="failed", records_in=loop.counts.records_in,
                                   scored_by={}, rejected_by={}, elapsed_s=time.perf_counter() - started)
        raise
    finally:
        await close_all([source, sink, rejects])
        if pipeline.model is not None:
            await pipeline.model.close()
    summary.output = _location(outputs["scored"], sink)
    summary.interrupted = not finished
    summary.records_in, summary.records_out, summary.rejected = (
        loop.counts.records_in, loop.counts.records_out, loop.counts.rejected)
    summary.scored_by = dict(pipeline.stats.scored_by)
    summary.seconds = time.perf_counter() - started
    summary.governance = await governance.conclude("done" if finished else "interrupted")
    meters.drift_window(name, summary.governance)
    stats = pipeline.stats
    status = "interrupted" if not finished else ("rejects" if summary.rejected else "ok")
    meters.batch_run_ended(name, source="odbc", status=status, records_in=summary.records_in,
                           scored_by=stats.scored_by, rejected_by=loop.counts.rejected_by, elapsed_s=summary.seconds,
                           shadow=(stats.shadow_compared, stats.shadow_agreed))
    if not finished:
        log.warning("pipeline %s: stopped after %d batches; the next run goes on from there", name, summary.batches)
    return summary
