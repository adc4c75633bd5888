"""Batch mode for tables: an ODBC source -> the pipeline -> an ODBC results table.

Each batch goes: read (the source's page, decoded to the contract's types and validated)
-> score -> upsert into the results table in one transaction together with the
checkpoint row -> rejects appended and fsynced -> ack, which advances the source's
watermark in the state store. A run killed at any point re-reads from the last acked
watermark; the upsert by key makes the repeated rows harmless, so nothing is lost and
nothing is duplicated in the results table.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.odbc.sink import OdbcSink
from adapters.odbc.source import OdbcSource
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig, OdbcSinkConfig, OdbcSourceConfig
from gateway.contract_scoring import load_scoring_contract as load_contract
from gateway.state import StateStore
from gateway.watermarks import WatermarkStore
from schemas.errors import ConfigError
from schemas.safefiles import create_unique

log = logging.getLogger("lgw.table")


@dataclass
class TableRunSummary:
    pipeline: str
    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    batches: int = 0
    scored_by: dict[str, int] = field(default_factory=dict)
    rejects_path: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "records_in": self.records_in, "records_out": self.records_out,
                "rejected": self.rejected, "batches": self.batches, "scored_by": self.scored_by,
                "rejects": self.rejects_path, "seconds": round(self.seconds, 3)}


def table_endpoints(name: str, cfg: GatewayConfig) -> tuple[OdbcSourceConfig, OdbcSinkConfig]:
    pipe = cfg.pipelines[name]
    if not isinstance(pipe.source, OdbcSourceConfig) or pipe.sink is None:
        raise ConfigError(f"pipeline {name} does not read an ODBC table (source.type odbc with a sink)")
    return pipe.source, pipe.sink


async def run_table_pipeline(name: str, cfg: GatewayConfig, state: StateStore) -> TableRunSummary:
    started = time.perf_counter()
    pipe_cfg = cfg.pipelines[name]
    src_cfg, sink_cfg = table_endpoints(name, cfg)
    contract = load_contract(cfg.resolve(pipe_cfg.contract))
    pipeline = build_pipeline(name, contract, cfg, model_name=pipe_cfg.model, policy=pipe_cfg.policy,
                              shadow=pipe_cfg.shadow, state=state)
    source = OdbcSource(src_cfg.connection, contract=contract, pipeline=name, table=src_cfg.table,
                        query=src_cfg.query, mode=src_cfg.mode, key=src_cfg.key, timestamp=src_cfg.timestamp,
                        lag_s=src_cfg.lag_s, overlap_s=src_cfg.overlap_s, batch_rows=src_cfg.batch_rows,
                        watermarks=WatermarkStore(state))
    sink = OdbcSink(sink_cfg.connection, sink_cfg.table, sink_cfg.key, pipeline=name, columns=sink_cfg.columns)
    summary = TableRunSummary(name)
    rejects_dir = cfg.resolve(sink_cfg.rejects)
    rejects_dir.mkdir(parents=True, exist_ok=True)
    rejects_name = f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.rejects.jsonl"
    await source.connect()  # checks the table's columns against the contract first
    await sink.connect()
    try:
        rejects_path, rejects_file = create_unique(rejects_dir / rejects_name)  # never an earlier run's
        with io.TextIOWrapper(rejects_file, encoding="utf-8") as rejects:
            while (batch := await source.read_batch()) is not None:
                scored = await pipeline.score(batch.table)
                if scored.paused:
                    await batch.nack("paused: the model is unavailable and the policy is pause")
                    log.warning("%s: paused; run again once the model is back", name)
                    break
                await sink.write_batch(scored.table, position=batch.position)
                lines = [r.to_json() for r in batch.rejects]
                lines += [{"row": r.row, "field": r.field, "reason": r.reason} for r in scored.rejects]
                for line in lines:
                    rejects.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                rejects.flush()
                os.fsync(rejects.fileno())
                await batch.ack()  # only now: results and rejects are durable
                summary.batches += 1
                summary.records_in += batch.records_in
                summary.records_out += scored.table.num_rows
                summary.rejected += len({r.record for r in batch.rejects}) + len({r.row for r in scored.rejects})
                for k, v in scored.counts().items():
                    summary.scored_by[k] = summary.scored_by.get(k, 0) + v
    finally:
        await source.close()
        await sink.close()
        if pipeline.model is not None:
            await pipeline.model.close()
    if summary.rejected:
        summary.rejects_path = str(rejects_path)
    else:
        Path(rejects_path).unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - started
    return summary
