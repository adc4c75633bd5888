"""`lgw score`: one file end to end — decode, validate, score, write — with a summary.

The output appears only when the whole file is accepted: it is written to a temporary
file beside the target and renamed at the end, after the trailer's control totals
passed. Rejects (decode, validation, model output, poison records, framing) go to the
rejects file with the record number, field, offsets, raw bytes and reason.

The per-batch pieces (`scoring_input`, `score_rows`, `batch_reject`, `fixed_columns`) are
shared with the batch driver (`gateway.batch`), which adds checkpoints around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from adapters.base import SourceBatch
from adapters.files.source import file_batch
from adapters.files.writers import open_writer
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig, Policy
from gateway.isolation import pii_names
from gateway.pipeline import Pipeline, Rescorer
from gateway.state import KillSwitch, StateStore
from schemas.contract import Contract
from schemas.errors import ConfigError, GatewayError, InputFormatError
from schemas.reject_rate import DEFAULT_REJECT_LIMIT, RejectLimit
from schemas.safefiles import create_outputs, discard_all
from schemas.stream import Reject, no_records


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


def fixed_columns(pipeline: Pipeline) -> dict[str, int]:
    """Widths of the fields appended to each record in fixed-width output."""
    cols = {name: spec.fixed_width for name, spec in pipeline.outputs.items()}
    cols.update({"scored_by": 8, "model_version": 12, "rule_id": 12, "reason": 24})
    return cols


@dataclass
class ScoredChunk:
    """What the pipeline made of (part of) one source batch."""

    table: pa.Table  # scored records with `source_record`, in input order
    rows: np.ndarray  # the source batch row of each scored record (for its input bytes)
    rejects: list[Reject]  # what the pipeline refused: model output, poison records
    paused: bool = False  # nothing scored: the kill switch or the model says wait
    rescore: pa.Table | None = None  # fallback-scored input rows to re-score later

    def output(self, fmt: str, batch: SourceBatch) -> tuple[pa.Table, np.ndarray | None]:
        """The records as the output format takes them, with their input bytes for
        fixed-width output (which appends the scores to the record's own bytes)."""
        if fmt != "fixed":
            return self.table, None
        raw = batch.raw[self.rows] if batch.raw is not None else None
        return self.table.drop_columns(["source_record"]), raw


def scoring_input(batch: SourceBatch) -> pa.Table:
    """The batch's records with `source_record` (their record number in the input)."""
    numbers = batch.record_numbers if batch.record_numbers is not None else np.arange(1, batch.table.num_rows + 1)
    return batch.table.append_column("source_record", pa.array(np.asarray(numbers, dtype=np.int64)))


def batch_reject(batch: SourceBatch, row: int, reason: str, field: str | None = None, *,
                 has_pii: bool = False) -> Reject:
    """A reject for row `row` of a source batch, with the record's number, offset and bytes.
    `has_pii`: the contract marks fields pii, so the record's bytes hold their values and
    are withheld from the rejects file."""
    numbers = batch.record_numbers
    offsets = getattr(batch, "record_offsets", None)
    return Reject(int(numbers[row]) if numbers is not None else row + 1,
                  int(offsets[row]) if offsets is not None else 0, reason, field, None, None,
                  bytes(batch.raw[row]) if batch.raw is not None else b"", pii=has_pii)


async def score_rows(pipeline: Pipeline, batch: SourceBatch, table: pa.Table,
                     lo: int = 0, hi: int | None = None) -> ScoredChunk:
    """Scores rows [lo, hi) of `table` (the batch's `scoring_input`)."""
    hi = table.num_rows if hi is None else hi
    part = table if (lo, hi) == (0, table.num_rows) else table.slice(lo, hi - lo)
    scored = await pipeline.score(part)
    has_pii = bool(pii_names(pipeline.contract)) if scored.rejects else False
    rejects = [batch_reject(batch, lo + r.row, r.reason, r.field, has_pii=has_pii) for r in scored.rejects]
    rescore = None
    if scored.rescore_rows is not None and len(scored.rescore_rows):
        rescore = part.take(pa.array(scored.rescore_rows))
    return ScoredChunk(scored.table, lo + np.asarray(scored.rows, dtype=np.int64), rejects, scored.paused, rescore)


async def score_file(contract: Contract, input_path: Path, output: Path, *, rejects_path: Path | None,
                     fmt: str, config: GatewayConfig, force_fallback: bool = False,
                     policy: Policy = Policy.FALLBACK, shadow: bool = False,
                     chunk_records: int = 50_000, state: StateStore | None = None,
                     rejects_stream: IO[str] | None = None, reject_limit: RejectLimit = DEFAULT_REJECT_LIMIT,
                     require_records: bool = False) -> dict[str, Any]:
    """`reject_limit`: a file rejected beyond it stops with InputFormatError and no output;
    `require_records`: so does a file without any record."""
    started = time.perf_counter()
    model_name = (contract.config.model or {}).get("name")
    pipeline = build_pipeline(contract.name, contract, config, model_name=model_name, policy=policy,
                              shadow=shadow, force_fallback=force_fallback, state=state)
    if policy == Policy.PAUSE:
        raise ConfigError("lgw score runs a file to its end: policy pause belongs to `lgw run`")
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
    new_output, new_rejects, new_corrections = files["--output"], files.get("--rejects"), files.get("corrections")
    writer = open_writer(new_output.fh, fmt, page=contract.spec.page,
                         fixed_columns=fixed_columns(pipeline) if fmt == "fixed" else None)
    records_in = rejected_records = corrected = 0
    corrections_writer = None

    async def write_corrections() -> None:
        nonlocal corrections_writer, corrected
        if rescorer is None:
            return
        table = await rescorer.rescore()
        if table is None or table.num_rows == 0:
            return
        if corrections_writer is None:
            assert new_corrections is not None
            corrections_writer = open_writer(new_corrections.fh, "parquet" if fmt == "parquet" else "jsonl")
        corrections_writer.write(table)
        corrected += table.num_rows

    try:
        with ExitStack() as stack:
            rej: IO[str] | None = rejects_stream
            if new_rejects is not None:
                rej = io.TextIOWrapper(new_rejects.fh, encoding="utf-8", write_through=True)
                stack.callback(rej.detach)  # the file itself stays open for its publish
            for dc in contract.decode_file(input_path, chunk_records=chunk_records, reject_limit=reject_limit):
                batch = file_batch(dc)
                records_in += batch.records_in
                scored = await score_rows(pipeline, batch, scoring_input(batch))
                if scored.paused and pipeline.kill_switch is not None:
                    # switched to pause mid-file: stop as if it had been paused at the start
                    raise ScoringPaused(await pipeline.kill_switch.acurrent())
                if rescorer is not None:
                    if scored.rescore is not None:
                        rescorer.hold(scored.rescore)
                    await write_corrections()
                writer.write(*scored.output(fmt, batch))
                all_rejects = batch.rejects + scored.rejects
                rejected_records += len({r.record for r in all_rejects})
                if rej is not None:
                    for r in sorted(all_rejects, key=lambda x: (x.record, x.field_offset or 0)):
                        rej.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            if rescorer is not None and rescorer.pending_records and pipeline.model is not None:
                # one last chance for the model: wait out the breaker's open state (bounded)
                wait = min(pipeline.model.breaker.config.wait_duration_in_open_s, 60.0)
                if not rescorer.model_available():
                    await asyncio.sleep(wait)
                await write_corrections()
            report = contract.last_report
            if require_records and not (report and report.details):
                raise InputFormatError(f"{no_records(input_path)} (--require-records)")
        writer.close()
        if corrections_writer is not None:
            corrections_writer.close()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()  # a Parquet writer's footer, before its file goes
        discard_all(files.values())
        raise
    finally:
        if pipeline.model is not None:
            await pipeline.model.close()
    report = contract.last_report
    stats = pipeline.stats.to_json()
    summary: dict[str, Any] = {
        "records_in": records_in,
        "records_out": stats["records_out"],
        "rejected": rejected_records,
        "scored_by": stats["scored_by"],
    }
    if "shadow_agreement" in stats:
        summary["shadow_agreement"] = stats["shadow_agreement"]
    if rescorer is not None:
        summary["corrections"] = corrected
        summary["not_rescored"] = rescorer.pending_records + rescorer.dropped
        if corrected:
            summary["corrections_output"] = str(corrections_path)
    if summary["records_out"] + summary["rejected"] != records_in:
        discard_all(files.values())
        raise RuntimeError(f"record accounting broken: in {records_in} != out {summary['records_out']} "
                           f"+ rejected {summary['rejected']}")
    if contract.header is not None or contract.trailer is not None:
        summary["control"] = {"ok": bool(report and report.ok), "problems": report.problems if report else []}
    if new_rejects is not None:  # the rejects and corrections stand also when the file is rejected
        new_rejects.publish()
    if new_corrections is not None and corrections_writer is not None:
        new_corrections.publish()
    elif new_corrections is not None:
        new_corrections.discard()  # nothing was corrected
    if contract.file_rejected:
        new_output.discard()
        summary["output"] = None
        summary["file_rejected"] = True
    else:
        new_output.publish()
        summary["output"] = str(output)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def run_score(contract: Contract, input_path: Path, output: Path, **kw: Any) -> dict[str, Any]:
    return asyncio.run(score_file(contract, input_path, output, **kw))
