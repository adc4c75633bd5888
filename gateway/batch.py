"""Batch mode: files from a drop folder through a pipeline, safe to stop, kill and restart.

A run is one input file. It is claimed in the state store (by content hash: a file whose
content was processed before is not processed again unless an operator replays it),
moved into the work folder, and read in chunks. Per chunk:

    decode + validate (the source) -> score (the pipeline) -> render -> append the records
    and the rejects to their temporary files -> flush + fsync both -> ack the batch,
    which stores the checkpoint: input position, output lengths, counts, control sums.

Killed at any moment and restarted, a run takes itself over (its owner is gone), cuts
its temporary files back to the checkpointed lengths, seeks the input to the checkpointed
position and goes on; the result is byte for byte that of an uninterrupted run. A record
that crashes a chunk is isolated by splitting the chunk until it is found, and rejected
with the reason. At the end the control totals are checked, the outputs are renamed into
place, the manifest is written and the input moves to done/ (or, when the trailer's
control totals do not match, nothing is published: the rejects and a report go to
failed/ with the input). That last phase is checkpointed too and idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa

from adapters.base import SourceBatch
from adapters.files.dropfolder import (
    MARKER_SUFFIX,
    Arrival,
    DropFolder,
    Folders,
    UnsafePath,
    atomic_write,
    content_hash,
    move_file,
)
from adapters.files.outbox import EXTENSIONS, OutboxSink, RejectsFile, Renderer
from adapters.files.source import FileSource
from gateway.config import DropFolderConfig, GatewayConfig, PipelineConfig, Policy
from gateway.errors import InfrastructureError
from gateway.pipeline import Pipeline, PipelineStats
from gateway.runs import DONE, DUPLICATE, FAILED, LEASE_S, Run, RunStore
from gateway.runtime import build_pipeline
from gateway.score import ScoredChunk, batch_reject, fixed_columns, score_rows, scoring_input
from gateway.state import StateStore
from schemas.contract import Contract, ControlReport, load_contract
from schemas.errors import ConfigError
from schemas.stream import Reject

log = logging.getLogger("lgw.batch")

INTERRUPTED, BUSY = "interrupted", "busy"
MANIFEST_VERSION = 1
_SYSTEMIC = 8  # a piece of this many records that crashes record by record is no poison record
_HEARTBEAT_S = 30.0


# --------------------------------------------------------------------------- progress
class ProgressView(Protocol):
    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None: ...

    def update(self, done_bytes: int, records: int) -> None: ...

    def end(self) -> None: ...


class _Rate:
    def __init__(self) -> None:
        self.total = self.done = self.records = self._records0 = self._bytes0 = 0
        self._t0 = time.monotonic()
        self.label = ""

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        self.label, self.total, self.done, self.records = label, total_bytes, done_bytes, records
        self._records0, self._bytes0, self._t0 = records, done_bytes, time.monotonic()

    def update(self, done_bytes: int, records: int) -> None:
        self.done, self.records = done_bytes, records

    def end(self) -> None:
        return None

    @property
    def per_s(self) -> float:
        return (self.records - self._records0) / max(time.monotonic() - self._t0, 1e-9)

    @property
    def eta_s(self) -> float | None:
        moved = self.done - self._bytes0
        if moved <= 0:
            return None
        return (self.total - self.done) * (time.monotonic() - self._t0) / moved


class LogProgress(_Rate):
    """Plain log lines (not a terminal): at most one every `every_s`, and at the end."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last = 0.0

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        super().begin(label, total_bytes, done_bytes, records)
        self._last = time.monotonic()
        resumed = f", resuming at byte {done_bytes:,} after {records:,} records" if done_bytes else ""
        log.info("%s: %s bytes%s", label, f"{total_bytes:,}", resumed)

    def update(self, done_bytes: int, records: int) -> None:
        super().update(done_bytes, records)
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._line()

    def end(self) -> None:
        self._line()

    def _line(self) -> None:
        share = self.done / self.total if self.total else 1.0
        eta = self.eta_s
        log.info("%s: %.0f%%, %s records, %s records/s, ETA %s", self.label, share * 100, f"{self.records:,}",
                 f"{self.per_s:,.0f}", "-" if eta is None else f"{eta:.0f} s")


class TerminalProgress(_Rate):
    """A progress bar on a terminal: share of the file, records, records/s, ETA."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)  # log lines go through it too, above the bar
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                  TextColumn("{task.fields[records]} records, {task.fields[rate]} records/s"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._task: Any = None

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        super().begin(label, total_bytes, done_bytes, records)
        self._progress.start()
        self._task = self._progress.add_task(label, total=max(total_bytes, 1), completed=done_bytes,
                                             records=f"{records:,}", rate="-")

    def update(self, done_bytes: int, records: int) -> None:
        super().update(done_bytes, records)
        self._progress.update(self._task, completed=done_bytes, records=f"{records:,}", rate=f"{self.per_s:,.0f}")

    def end(self) -> None:
        self._progress.stop()


class NoProgress(_Rate):
    pass


# --------------------------------------------------------------------------- runtime
@dataclass
class BatchRuntime:
    """What every run of one pipeline shares, built once from the config."""

    name: str
    config: PipelineConfig
    source: DropFolderConfig
    contract: Contract
    pipeline: Pipeline
    folders: Folders
    dropfolder: DropFolder
    runs: RunStore

    @property
    def fmt(self) -> str:
        return self.source.format

    @property
    def chunk_records(self) -> int:
        return self.config.batch_size

    def marker(self, input_name: str) -> str | None:
        return f"{input_name}{MARKER_SUFFIX}" if self.source.done_file else None

    def output_names(self, stem: str) -> dict[str, Path]:
        return {"scored": self.folders.path("outbox", f"{stem}.scored.{EXTENSIONS[self.fmt]}"),
                "rejects": self.folders.path("outbox", f"{stem}.rejects.jsonl"),
                "manifest": self.folders.path("outbox", f"{stem}.manifest.json")}

    async def close(self) -> None:
        if self.pipeline.model is not None:
            await self.pipeline.model.close()


def build_runtime(name: str, cfg: GatewayConfig, state: StateStore, runs: RunStore | None = None) -> BatchRuntime:
    pipe = cfg.pipelines.get(name)
    if pipe is None:
        raise ConfigError(f"no pipeline {name!r} in the config (pipelines: {', '.join(cfg.pipelines) or 'none'})")
    if not isinstance(pipe.source, DropFolderConfig):
        raise ConfigError(f"pipeline {name} has no drop-folder `source`: nothing for the file driver to read")
    if pipe.policy == Policy.FALLBACK_AND_RESCORE:
        raise ConfigError(f"pipeline {name}: policy fallback_and_rescore is not supported in batch mode "
                          "(use fallback or pause)")
    contract = load_contract(cfg.resolve(pipe.contract))
    pipeline = build_pipeline(name, contract, cfg, model_name=pipe.model, policy=pipe.policy, shadow=pipe.shadow,
                              state=state)
    folders = Folders.prepare(pipe.source.folders(cfg.base_dir))
    dropfolder = DropFolder(folders, glob=pipe.source.glob, stable_for_s=pipe.source.stable_for_s,
                            done_file=pipe.source.done_file)
    return BatchRuntime(name, pipe, pipe.source, contract, pipeline, folders, dropfolder, runs or RunStore(state))


@dataclass
class JobResult:
    run_id: str
    status: str  # done | failed | duplicate | interrupted | busy
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counts:
    records_in: int = 0
    records_out: int = 0
    rejected: int = 0

    def to_json(self) -> dict[str, int]:
        return {"records_in": self.records_in, "records_out": self.records_out, "rejected": self.rejected}


def _stats_json(stats: PipelineStats) -> dict[str, Any]:
    return {"batches": stats.batches, "records_in": stats.records_in, "records_out": stats.records_out,
            "rejected": stats.rejected, "scored_by": dict(stats.scored_by),
            "shadow_compared": stats.shadow_compared, "shadow_agreed": stats.shadow_agreed,
            "model_seconds": stats.model_seconds}


def _stats_from(data: dict[str, Any]) -> PipelineStats:
    return PipelineStats(batches=data["batches"], records_in=data["records_in"], records_out=data["records_out"],
                         rejected=data["rejected"], scored_by=Counter(data["scored_by"]),
                         shadow_compared=data["shadow_compared"], shadow_agreed=data["shadow_agreed"],
                         model_seconds=data.get("model_seconds", 0.0))


def _jsonable(value: Any) -> Any:
    """As the checkpoint stores it (Decimal -> text), so fresh and resumed runs agree."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class _Delivery:
    """One chunk, scored and rendered, waiting to be made durable; with the counts and
    pipeline figures as they stand after it (what its checkpoint stores)."""

    rendered: list[bytes]
    rows: int
    rejects: list[Reject]
    counts: dict[str, int]
    stats: dict[str, Any]


@dataclass
class _Piece:
    scored: ScoredChunk | None = None
    data: bytes = b""
    reject: Reject | None = None
    paused: bool = False


# --------------------------------------------------------------------------- one run
class BatchJob:
    """One input file, from the work folder to done/ or failed/, resumable throughout."""

    def __init__(self, rt: BatchRuntime, run: Run, *, progress: ProgressView | None = None,
                 stop: asyncio.Event | None = None, failure: str | None = None) -> None:
        self.rt = rt
        self.run_info = run
        self.progress: ProgressView = progress or NoProgress()
        self.stop = stop or asyncio.Event()
        self.failure = failure  # the input cannot be run at all (unsafe, vanished): straight to failed/
        names = rt.output_names(run.output_stem)
        self.scored_path, self.rejects_path, self.manifest_path = names["scored"], names["rejects"], names["manifest"]
        self.work_path = rt.folders.path("work", run.work_name)
        self.counts = Counts()
        self.seq = 0
        self.elapsed_before = 0.0
        self._started = time.monotonic()
        self._last_beat = time.monotonic()
        self.sink: OutboxSink | None = None
        self.rejects: RejectsFile | None = None
        self._report: ControlReport | None = None
        self._acking: _Delivery | None = None

    @property
    def run_id(self) -> str:
        return self.run_info.run_id

    def _new_sink(self) -> OutboxSink:
        page = self.rt.contract.spec.page
        columns = fixed_columns(self.rt.pipeline) if self.rt.fmt == "fixed" else None
        return OutboxSink(self.scored_path, self.rt.fmt, page=page, fixed_columns=columns,
                          row_group_size=self.rt.chunk_records)

    # ---- the run
    async def run(self) -> JobResult:
        state = await asyncio.to_thread(self.rt.runs.checkpoint, self.run_id)
        if state is not None and state["phase"] == "publish":
            log.info("run %s: resuming its last step (publishing)", self.run_id)
            return await self._publish(state)
        failure = self.failure or self._ensure_input()
        if failure is not None:  # not read at all: its content is not marked processed
            return await self._conclude(FAILED, failure, outputs={}, processed=False)
        try:
            outcome = await self._chunks(state)
            return outcome if outcome is not None else await self._finish()
        finally:
            for closable in (self.sink, self.rejects):
                if closable is not None:
                    closable.file.close()

    def _ensure_input(self) -> str | None:
        """The input is in the work folder; after a crash between claim and move it may
        still be in the inbox. Returns why the run cannot go on, if it cannot."""
        if os.path.lexists(self.work_path):
            return None
        name = self.run_info.input_name
        inbox = self.rt.folders.path("inbox", name)
        try:
            hashed = content_hash(inbox)
        except FileNotFoundError:
            return f"input {name} vanished before it could be taken"
        except UnsafePath as exc:
            return str(exc)
        if hashed.sha256 != self.run_info.input_sha256:
            return f"input {name} in the inbox is not the content this run claimed"
        try:
            self.rt.dropfolder.claim(name, self.run_info.work_name, hashed)
        except UnsafePath as exc:
            return str(exc)
        return None

    async def _chunks(self, state: dict[str, Any] | None) -> JobResult | None:
        rt = self.rt
        self.sink, self.rejects = self._new_sink(), RejectsFile(self.rejects_path)
        if state is not None:
            self.sink.resume(state["sink"])
            self.rejects.open(state["rejects"])
            self.counts = Counts(**state["counts"])
            rt.pipeline.stats = _stats_from(state["stats"])
            self.seq = int(state["seq"])
            self.elapsed_before = float(state["elapsed_s"])
            position = state["position"]
            log.info("run %s: resuming after %s records (checkpoint %d)", self.run_id,
                     f"{self.counts.records_in:,}", self.seq)
        else:
            self.sink.file.open()
            self.rejects.open()
            rt.pipeline.stats = PipelineStats()
            position = None
        source = FileSource(rt.contract, self.work_path, chunk_records=rt.chunk_records, position=position,
                            commit=self._commit)
        done_bytes = int(position["read"]["offset"]) if position else 0
        self.progress.begin(f"{rt.name} {self.run_info.input_name}", self.run_info.input_bytes, done_bytes,
                            self.counts.records_in)
        # A chunk's write, fsync and checkpoint run in the background while the next chunk
        # is scored; they stay in order (one in flight), and a checkpoint is only ever
        # stored after its own chunk's outputs are durable.
        in_flight: asyncio.Task[None] | None = None
        try:
            await source.connect()
            while True:
                try:
                    batch = await source.read_batch()
                except ConfigError as exc:  # the file is not what its contract says (encoding, framing)
                    log.warning("run %s: %s", self.run_id, exc)
                    self.failure = str(exc)
                    break
                if batch is None:
                    break
                delivery = await self._deliver(batch)
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if delivery is None:
                    return self._interrupted()
                in_flight = asyncio.create_task(self._make_durable(batch, delivery))
                if self.stop.is_set():
                    await in_flight
                    in_flight = None
                    return self._interrupted()
            if in_flight is not None:
                await in_flight
                in_flight = None
        finally:
            if in_flight is not None:  # an error elsewhere: let the write end before the files close
                with contextlib.suppress(Exception):
                    await in_flight
            self.progress.end()
            await source.close()
        self._report = source.report
        return None

    def _interrupted(self) -> JobResult:
        log.info("run %s: stopped after checkpoint %d (%s records); it resumes where it stopped",
                 self.run_id, self.seq, f"{self.counts.records_in:,}")
        return JobResult(self.run_id, INTERRUPTED, {"run": self.run_id, "input": self.run_info.input_name,
                                                    "status": INTERRUPTED, **self.counts.to_json()})

    # ---- one chunk
    async def _deliver(self, batch: SourceBatch) -> _Delivery | None:
        """Scores and renders one batch (None: stopped while the pipeline was paused)."""
        assert self.sink is not None
        table = scoring_input(batch)
        while True:
            before = copy.deepcopy(self.rt.pipeline.stats)
            pieces = await self._isolating(batch, table, 0, table.num_rows, self.sink.renderer)
            if not any(p.paused for p in pieces):
                break
            self.rt.pipeline.stats = before
            if not await self._wait_while_paused():
                return None
        rejects = list(batch.rejects)
        rendered, rows = [], 0
        for p in pieces:
            if p.reject is not None:
                rejects.append(p.reject)
            elif p.scored is not None:
                rejects.extend(p.scored.rejects)
                rendered.append(p.data)
                rows += p.scored.table.num_rows
        rejects.sort(key=lambda r: (r.record, r.field_offset or 0))
        self.counts.records_in += batch.records_in
        self.counts.records_out += rows
        self.counts.rejected += len({r.record for r in rejects})
        return _Delivery(rendered, rows, rejects, self.counts.to_json(), _stats_json(self.rt.pipeline.stats))

    async def _make_durable(self, batch: SourceBatch, delivery: _Delivery) -> None:
        """Appends the chunk's records and rejects, fsyncs both, then acks the batch (the
        ack stores the checkpoint)."""
        if time.monotonic() - self._last_beat >= LEASE_S / 4:  # still ours? (a long chunk, a slow model)
            await asyncio.to_thread(self.rt.runs.heartbeat, self.run_id)
            self._last_beat = time.monotonic()
        await asyncio.to_thread(self._write, delivery.rendered, delivery.rows, delivery.rejects)
        self._acking = delivery
        await batch.ack()
        self.progress.update(getattr(batch, "bytes_read", 0), delivery.counts["records_in"])

    def _write(self, rendered: list[bytes], rows: int, rejects: list[Reject]) -> None:
        assert self.sink is not None and self.rejects is not None
        self.sink.write_rendered(rendered, rows)
        self.rejects.write(rejects)
        self.sink.sync()
        self.rejects.sync()

    async def _isolating(self, batch: SourceBatch, table: pa.Table, lo: int, hi: int,
                         renderer: Renderer) -> list[_Piece]:
        """Rows [lo, hi) scored and rendered; a crash splits the rows in halves until the
        record that causes it is found and rejected (the rest goes on)."""
        before = copy.deepcopy(self.rt.pipeline.stats)
        try:
            scored = await score_rows(self.rt.pipeline, batch, table, lo, hi)
            if scored.paused:
                return [_Piece(paused=True)]
            return [_Piece(scored, renderer.render(*scored.output(self.rt.fmt, batch)))]
        except InfrastructureError:
            raise  # not the records' fault: the run stops and resumes later
        except Exception as exc:
            self.rt.pipeline.stats = before
            if hi - lo == 1:
                reason = f"record crashed the pipeline: {type(exc).__name__}: {exc}"
                reject = batch_reject(batch, lo, reason)
                log.warning("run %s: record %d isolated and rejected: %s", self.run_id, reject.record, reason)
                return [_Piece(reject=reject)]
            if (lo, hi) == (0, table.num_rows):
                log.warning("run %s: a chunk of %d records crashed (%s: %s); splitting it to find the record",
                            self.run_id, hi - lo, type(exc).__name__, exc)
            mid = (lo + hi) // 2
            pieces = await self._isolating(batch, table, lo, mid, renderer)
            pieces += await self._isolating(batch, table, mid, hi, renderer)
            if hi - lo >= _SYSTEMIC and all(p.reject is not None for p in pieces):
                raise exc  # every record fails alone: the pipeline is broken, not a record
            return pieces

    async def _wait_while_paused(self) -> bool:
        log.warning("run %s: pipeline %s is paused (kill switch or model unavailable): waiting", self.run_id,
                    self.rt.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=1.0)
        if time.monotonic() - self._last_beat >= _HEARTBEAT_S:
            self._last_beat = time.monotonic()
            await asyncio.to_thread(self.rt.runs.heartbeat, self.run_id)
        return not self.stop.is_set()

    async def _commit(self, position: dict[str, Any]) -> None:
        """The ack of a file batch: its outputs are durable, so store the checkpoint."""
        assert self.sink is not None and self.rejects is not None
        self.seq += 1
        delivery = self._acking
        assert delivery is not None, "a batch is acked after its delivery was made durable"
        state = {"phase": "chunks", "seq": self.seq, "position": position, "sink": self.sink.state(),
                 "rejects": self.rejects.state(), "counts": delivery.counts, "stats": delivery.stats,
                 "elapsed_s": self._elapsed()}
        await asyncio.to_thread(self.rt.runs.save_checkpoint, self.run_id, self.seq, state)
        self._last_beat = time.monotonic()

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    # ---- the end
    async def _finish(self) -> JobResult:
        assert self.sink is not None and self.rejects is not None
        contract = self.rt.contract
        if self.failure is not None:
            self.sink.discard()
            return await self._conclude(FAILED, self.failure, outputs={"rejects": self.rejects.finish()})
        if self.counts.records_out + self.counts.rejected != self.counts.records_in:
            raise RuntimeError(f"run {self.run_id}: record accounting broken: in {self.counts.records_in} != "
                               f"out {self.counts.records_out} + rejected {self.counts.rejected}")
        report = self._report
        control = None
        if report is not None and (contract.header is not None or contract.trailer is not None):
            control = _jsonable(report.to_json()["control"])
        if contract.file_rejected:
            assert report is not None
            reason = "control totals do not match the trailer: " + "; ".join(report.problems)
            self.sink.discard()
            return await self._conclude(FAILED, reason, outputs={"rejects": self.rejects.finish()}, control=control)
        sink, rejects = self.sink, self.rejects
        outputs = await asyncio.to_thread(lambda: {"scored": sink.finish(), "rejects": rejects.finish()})
        return await self._conclude(DONE, None, outputs=outputs, control=control)

    async def _conclude(self, status: str, reason: str | None, *, outputs: dict[str, Any],
                        control: dict[str, Any] | None = None, processed: bool = True) -> JobResult:
        """Stores the publish step (what to publish, where the input goes), then runs it."""
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        settled = self.rt.folders.free_name(folder, self.run_info.input_name)
        if status == FAILED and "rejects" in outputs:  # they go to failed/ beside the input
            outputs["rejects"]["name"] = f"{settled}.rejects.jsonl"
        state = {"phase": "publish", "seq": self.seq + 1, "status": status, "reason": reason, "processed": processed,
                 "settled_name": settled, "outputs": outputs, "control": control, "counts": self.counts.to_json(),
                 "stats": _stats_json(self.rt.pipeline.stats), "elapsed_s": self._elapsed()}
        await asyncio.to_thread(self.rt.runs.save_checkpoint, self.run_id, self.seq + 1, state)
        return await self._publish(state)

    async def _publish(self, state: dict[str, Any]) -> JobResult:
        """Idempotent: a crash anywhere in here repeats it from the top on restart."""
        rt, status, settled = self.rt, state["status"], state["settled_name"]
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        manifest = self._manifest(state, f"{folder}/{settled}")
        text = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        sink, rejects = self._new_sink(), RejectsFile(self.rejects_path)
        if status == DONE:
            sink.publish()
            rejects.publish()
            atomic_write(self.manifest_path, text)
        else:
            sink.discard()
            if "rejects" in state["outputs"]:
                rejects.publish(rt.folders.path("failed", f"{settled}.rejects.jsonl"))
            atomic_write(rt.folders.path("failed", f"{settled}.report.json"), text)
        rt.dropfolder.settle(self.work_path, folder, settled, rt.marker(self.run_info.input_name))
        summary = self._summary(manifest)
        await asyncio.to_thread(rt.runs.finish, self.run_id, status, final_path=f"{folder}/{settled}",
                                summary=summary, record=state.get("processed", True))
        if status == DONE:
            log.info("run %s: %s done: %s in, %s out, %s rejected -> %s", self.run_id, self.run_info.input_name,
                     f"{summary['records_in']:,}", f"{summary['records_out']:,}", f"{summary['rejected']:,}",
                     self.scored_path.name)
        else:
            log.warning("run %s: %s failed: %s (moved to failed/%s)", self.run_id, self.run_info.input_name,
                        state["reason"], settled)
        return JobResult(self.run_id, status, summary)

    def _manifest(self, state: dict[str, Any], moved_to: str) -> dict[str, Any]:
        run, rt, pipeline = self.run_info, self.rt, self.rt.pipeline
        stats = _stats_from(state["stats"])
        counts = state["counts"]
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run.run_id,
            "pipeline": rt.name,
            "status": state["status"],
        }
        if state["reason"]:
            manifest["reason"] = state["reason"]
        manifest.update({
            "replay_of": run.replay_of,
            "input": {"name": run.input_name, "sha256": run.input_sha256, "bytes": run.input_bytes,
                      "moved_to": moved_to},
            "contract": {"name": rt.contract.name, "version": rt.contract.version},
            "model": {"name": pipeline.model_name, "version": pipeline.model_version} if pipeline.model else None,
            "policy": str(pipeline.policy),
            "counts": counts,
            "scored_by": dict(sorted(stats.scored_by.items())),
        })
        if stats.shadow_compared:
            manifest["shadow_agreement"] = round(stats.shadow_agreed / stats.shadow_compared, 6)
        manifest["control"] = state["control"]
        manifest["outputs"] = state["outputs"]
        elapsed = float(state["elapsed_s"])
        manifest["timings"] = {
            "started_at": run.started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 3),
            "records_per_s": round(counts["records_in"] / elapsed) if elapsed > 0 else None,
            "model_s": round(stats.model_seconds, 3),
            "attempts": run.attempts,
        }
        return manifest

    def _summary(self, manifest: dict[str, Any]) -> dict[str, Any]:
        scored = (manifest["outputs"] or {}).get("scored")
        summary = {"run": manifest["run_id"], "input": manifest["input"]["name"], "status": manifest["status"],
                   **manifest["counts"], "scored_by": manifest["scored_by"]}
        if manifest.get("reason"):
            summary["reason"] = manifest["reason"]
        if manifest["control"] is not None:
            summary["control"] = {"ok": manifest["control"]["ok"], "problems": manifest["control"]["problems"]}
        summary["output"] = str(self.rt.folders.outbox / scored["name"]) if scored else None
        summary["manifest"] = str(self.manifest_path) if manifest["status"] == DONE else None
        summary["seconds"] = manifest["timings"]["elapsed_s"]
        return summary


# --------------------------------------------------------------------------- the driver
class BatchDriver:
    """Finds a pipeline's work: its unfinished runs first, then complete inbox files."""

    def __init__(self, rt: BatchRuntime, *, progress: ProgressView | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.rt = rt
        self.progress: ProgressView = progress or NoProgress()
        self.stop = stop or asyncio.Event()

    def _job(self, run: Run, failure: str | None = None) -> BatchJob:
        return BatchJob(self.rt, run, progress=self.progress, stop=self.stop, failure=failure)

    async def resume_unfinished(self) -> list[JobResult]:
        results = []
        for run in await asyncio.to_thread(self.rt.runs.unfinished, self.rt.name):
            if self.stop.is_set():
                break
            if not await asyncio.to_thread(self.rt.runs.take_over, run):
                log.info("run %s: in progress elsewhere (%s)", run.run_id, run.owner)
                continue
            taken = self.rt.runs.get(run.run_id)
            assert taken is not None
            results.append(await self._job(taken).run())
        return results

    async def take_inbox(self) -> list[JobResult]:
        ready, waiting = self.rt.dropfolder.scan()
        if waiting:
            log.info("%s: %d file(s) not complete yet: %s", self.rt.name, len(waiting), ", ".join(waiting[:5]))
        results = []
        for arrival in ready:
            if self.stop.is_set():
                break
            result = await self.offer(arrival)
            if result is not None:
                results.append(result)
        return results

    async def offer(self, arrival: Arrival) -> JobResult | None:
        """Runs one complete inbox file, unless its content was processed already."""
        rt = self.rt
        try:
            hashed = await asyncio.to_thread(content_hash, arrival.path)
        except FileNotFoundError:
            return None  # taken meanwhile (another replica)
        except UnsafePath as exc:
            log.warning("%s: %s", rt.name, exc)
            return None
        claim = await asyncio.to_thread(rt.runs.claim, rt.name, hashed.sha256, arrival.name, hashed.size)
        if claim.busy:
            assert claim.existing is not None
            log.info("%s: %s has the content of run %s, in progress (%s)", rt.name, arrival.name,
                     claim.existing.run_id, claim.existing.owner)
            return JobResult(claim.existing.run_id, BUSY, {"input": arrival.name, "status": BUSY})
        if claim.run is None:
            assert claim.existing is not None
            return await self._duplicate(arrival, hashed.sha256, hashed.size, claim.existing)
        failure = None
        try:
            await asyncio.to_thread(rt.dropfolder.claim, arrival.name, claim.run.work_name, hashed)
        except UnsafePath as exc:
            failure = str(exc)
        except FileNotFoundError:
            failure = f"input {arrival.name} vanished before it could be taken"
        return await self._job(claim.run, failure).run()

    async def _duplicate(self, arrival: Arrival, sha256: str, size: int, of: Run) -> JobResult:
        """Content processed before: not run again; the file goes where the first went."""
        rt = self.rt
        folder: Literal["done", "failed"] = "failed" if of.status == FAILED else "done"
        settled = rt.folders.free_name(folder, arrival.name)
        move_file(rt.folders.path("inbox", arrival.name), rt.folders.path(folder, settled))
        marker = rt.marker(arrival.name)
        if marker is not None and os.path.lexists(rt.folders.path("inbox", marker)):
            move_file(rt.folders.path("inbox", marker), rt.folders.path(folder, rt.folders.free_name(folder, marker)))
        run = await asyncio.to_thread(rt.runs.record_duplicate, rt.name, sha256, arrival.name, size, of=of,
                                      final_path=f"{folder}/{settled}")
        log.warning("%s: %s has the same content as %s (run %s, %s): not processed again, moved to %s/%s "
                    "(replay it with `lgw batch replay %s`)", rt.name, arrival.name, of.input_name, of.run_id,
                    of.status, folder, settled, of.run_id)
        return JobResult(run.run_id, DUPLICATE, {"run": run.run_id, "input": arrival.name, "status": DUPLICATE,
                                                 "duplicate_of": of.run_id})

    async def replay(self, target: str) -> JobResult:
        """Runs a file again although its content was processed: `target` is a run id
        (its input is found in done/ or failed/) or a file inside inbox/, done/ or failed/."""
        rt = self.rt
        previous = await asyncio.to_thread(rt.runs.get, target)
        if previous is not None:
            if previous.pipeline != rt.name:
                raise ConfigError(f"run {target} belongs to pipeline {previous.pipeline}, not {rt.name}")
            if not previous.final_path:
                raise ConfigError(f"run {target} has not finished ({previous.status}): nothing to replay yet")
            folder_name, _, name = previous.final_path.partition("/")
            if folder_name not in ("done", "failed"):
                raise ConfigError(f"run {target}: its input is recorded at {previous.final_path!r}, "
                                  "not in done/ or failed/")
            path = rt.folders.path("done" if folder_name == "done" else "failed", name)
        else:
            path = Path(target)
        folder, name = rt.folders.locate(path)
        hashed = await asyncio.to_thread(content_hash, rt.folders.path(folder, name))
        if previous is None:
            previous = await asyncio.to_thread(rt.runs.latest_for, rt.name, hashed.sha256)
        claim = await asyncio.to_thread(rt.runs.claim, rt.name, hashed.sha256, name, hashed.size,
                                        replay_of=previous.run_id if previous else None, force=True)
        assert claim.run is not None
        log.info("%s: replaying %s/%s as run %s%s", rt.name, folder, name, claim.run.run_id,
                 f" (replay of {previous.run_id})" if previous else "")
        await asyncio.to_thread(rt.dropfolder.take_back, folder, name, claim.run.work_name)
        return await self._job(claim.run).run()

    async def run_once(self) -> list[JobResult]:
        return await self.resume_unfinished() + await self.take_inbox()

    async def watch(self, report: Any = None) -> None:
        """Until stopped: resume, take complete files, wait `poll_s`. Errors that are not a
        file's fault (state store, disk) are logged and retried with a growing wait."""
        failures = 0
        while not self.stop.is_set():
            try:
                for result in await self.run_once():
                    if report is not None:
                        report(result)
                failures = 0
            except (InfrastructureError, OSError, RuntimeError) as exc:
                failures += 1
                log.error("%s: %s: %s (retrying)", self.rt.name, type(exc).__name__, exc)
            wait = min(self.rt.source.poll_s * (2 ** min(failures, 6)), 300.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=wait)


__all__ = [
    "BUSY", "INTERRUPTED", "BatchDriver", "BatchJob", "BatchRuntime", "JobResult", "LogProgress", "NoProgress",
    "ProgressView", "TerminalProgress", "build_runtime",
]
