"""`lgw score`: one file end to end — decode, validate, score, write — with a summary.

A one-shot use of the batch driver (`gateway.drivers.batch`): the file is the source,
the output file the sink, the rejects file (or stderr) the reject sink; no checkpoints.
The output appears only when the whole file is accepted: it is written to a temporary
file beside the target and renamed at the end, after the trailer's control totals
passed. Rejects (decode, validation, model output, poison records, framing) go to the
rejects file with the record number, field, offsets, raw bytes and reason.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from adapters.base import RejectSink, ScoredBatch, SourceBatch
from adapters.files.sink import OutboxSink, RejectsFile, StreamRejects
from adapters.files.source import FileSource
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig, Policy
from gateway.drivers.batch import BatchLoop, Delivery
from gateway.kill_switch import KillSwitch, KillSwitches
from gateway.pipeline import Pipeline, Rescorer, fixed_columns
from schemas.contract import Contract
from schemas.errors import ConfigError, GatewayError, InputFormatError
from schemas.records import DEFAULT_BATCH_SIZE
from schemas.reject_rate import DEFAULT_REJECT_LIMIT, RejectLimit
from schemas.safefiles import create_outputs, discard_all
from schemas.stream import no_records


class ScoringPaused(GatewayError):
    """The pipeline's kill switch says pause: `lgw score` runs a file to its end or not at
    all, so it scores nothing, writes no output and says so (exit 75: try again later)."""

    def __init__(self, switch: KillSwitch) -> None:
        why = f" ({switch.reason})" if switch.reason else ""
        by = f", set by {switch.set_by}" if switch.set_by else ""
        super().__init__(f"pipeline {switch.pipeline} is paused by its kill switch{why}{by}: nothing was scored "
                         f"and no output written; run again once `lgw killswitch set {switch.pipeline} --mode off` "
                         "lifts it")
        self.switch = switch


async def _refuse_if_paused(pipeline: Pipeline) -> None:
    if pipeline.kill_switch is None:
        return
    switch = await pipeline.kill_switch.acurrent()
    if switch.mode == "pause":
        raise ScoringPaused(switch)


class _Corrections:
    """Policy fallback_and_rescore: the model's scores for records the rules scored while
    it was away, written beside the output as they come."""

    def __init__(self, rescorer: Rescorer, sink: OutboxSink) -> None:
        self.rescorer = rescorer
        self.sink = sink
        self.written = 0

    async def write(self) -> None:
        table = await self.rescorer.rescore()
        if table is None or table.num_rows == 0:
            return
        batch = ScoredBatch(table, np.arange(table.num_rows), SourceBatch(pa.table({})))
        await self.sink.write([self.sink.prepare(batch)])
        self.written += table.num_rows

    async def last_chance(self, pipeline: Pipeline) -> None:
        """Waits out the breaker's open state (bounded) for the records still held."""
        if self.rescorer.pending_records and pipeline.model is not None:
            wait = min(pipeline.model.breaker.config.wait_duration_in_open_s, 60.0)
            if not self.rescorer.model_available():
                await asyncio.sleep(wait)
            await self.write()


async def score_file(contract: Contract, input_path: Path, output: Path, *, rejects_path: Path | None,
                     fmt: str, config: GatewayConfig, force_fallback: bool = False,
                     policy: Policy = Policy.FALLBACK, shadow: bool = False,
                     batch_size: int = DEFAULT_BATCH_SIZE, state: KillSwitches | None = None,
                     rejects_stream: IO[str] | None = None, reject_limit: RejectLimit = DEFAULT_REJECT_LIMIT,
                     require_records: bool = False) -> dict[str, Any]:
    """`reject_limit`: a file rejected beyond it stops with InputFormatError and no output;
    `require_records`: so does a file without any record."""
    started = time.perf_counter()
    if policy == Policy.PAUSE:
        raise ConfigError("lgw score runs a file to its end: policy pause belongs to `lgw run`")
    model_name = (contract.config.model or {}).get("name")
    pipeline = build_pipeline(contract.name, contract, config, model_name=model_name, policy=policy,
                              shadow=shadow, force_fallback=force_fallback, state=state)
    rescorer = Rescorer(pipeline) if policy == Policy.FALLBACK_AND_RESCORE and pipeline.model else None
    corrections_path = output.with_name(f"{output.stem}.corrections{output.suffix}")
    # created (hidden, beside their targets) before any work: a target that is the input or
    # cannot be written fails now, and nothing but finished files is ever left behind
    try:
        await _refuse_if_paused(pipeline)
        files = create_outputs({"--input": input_path}, {
            "--output": output, "--rejects": rejects_path, "corrections": corrections_path if rescorer else None,
        }, suffix=".partial")
    except BaseException:
        if pipeline.model is not None:
            await pipeline.model.close()
        raise
    sink = OutboxSink.over(files["--output"], fmt, page=contract.spec.page, row_group_size=batch_size,
                           fixed_columns=fixed_columns(pipeline) if fmt == "fixed" else None)
    rejects: RejectSink = RejectsFile.over(files["--rejects"]) if "--rejects" in files else \
        StreamRejects(rejects_stream)
    corrections = _Corrections(rescorer, OutboxSink.over(files["corrections"], "parquet" if fmt == "parquet"
                                                         else "jsonl")) if rescorer else None
    source = FileSource(contract, input_path, batch_size=batch_size, reject_limit=reject_limit)

    async def paused() -> bool:  # only the kill switch pauses here (policy pause is refused above)
        assert pipeline.kill_switch is not None
        raise ScoringPaused(await pipeline.kill_switch.acurrent())

    async def after_batch(_batch: SourceBatch, _delivery: Delivery) -> None:
        if corrections is not None:
            await corrections.write()

    loop = BatchLoop(pipeline, sink, rejects, label=str(input_path), on_paused=paused, on_acked=after_batch)
    if rescorer is not None:
        loop.on_rescore = rescorer.hold
    try:
        await source.connect()
        await loop.run(source)
        await source.close()
        if corrections is not None:
            await corrections.last_chance(pipeline)
        report = source.report
        if require_records and not report.details:
            raise InputFormatError(f"{no_records(input_path)} (--require-records)")
        await sink.finish()
        await rejects.finish()
        if corrections is not None:
            await corrections.sink.finish()
        loop.counts.check(str(input_path))
    except BaseException:
        await source.close()
        await sink.discard()
        await rejects.discard()
        if corrections is not None:
            await corrections.sink.discard()
        discard_all(files.values())
        raise
    finally:
        if pipeline.model is not None:
            await pipeline.model.close()
    stats = pipeline.stats.to_json()
    summary: dict[str, Any] = {
        "records_in": loop.counts.records_in,
        "records_out": loop.counts.records_out,
        "rejected": loop.counts.rejected,
        "scored_by": stats["scored_by"],
    }
    if "shadow_agreement" in stats:
        summary["shadow_agreement"] = stats["shadow_agreement"]
    if corrections is not None and rescorer is not None:
        summary["corrections"] = corrections.written
        summary["not_rescored"] = rescorer.pending_records + rescorer.dropped
        if corrections.written:
            summary["corrections_output"] = str(corrections_path)
    if contract.header is not None or contract.trailer is not None:
        summary["control"] = {"ok": report.ok, "problems": report.problems}
    await rejects.publish()  # the rejects and corrections stand also when the file is rejected
    if corrections is not None:
        await (corrections.sink.publish() if corrections.written else corrections.sink.discard())
    if contract.rejects_file(report):
        await sink.discard()
        summary["output"] = None
        summary["file_rejected"] = True
    else:
        await sink.publish()
        summary["output"] = str(output)
    summary["records"] = report.details  # detail records decoded, before validation (for the CLI's note)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def run_score(contract: Contract, input_path: Path, output: Path, **kw: Any) -> dict[str, Any]:
    return asyncio.run(score_file(contract, input_path, output, **kw))
