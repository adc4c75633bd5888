"""One run: an input file from the work folder to done/ or failed/, chunk by chunk with
checkpoints, a record that crashes a chunk isolated and rejected, then published with
its manifest; resumable throughout."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from adapters.base import SourceBatch
from adapters.files.dropfolder import UnsafePath, atomic_write, content_hash
from adapters.files.outbox import OutboxSink, RejectsFile, Renderer
from adapters.files.source import FileSource
from gateway.batch.manifest import build_manifest, jsonable, stats_from, stats_json, summarize
from gateway.batch.progress import NoProgress, ProgressView
from gateway.batch.runtime import BatchRuntime
from gateway.isolation import crash_reason, isolating, pii_names
from gateway.pipeline import PipelineStats
from gateway.runs import DONE, FAILED, LEASE_S, Run
from gateway.score import ScoredChunk, batch_reject, fixed_columns, score_rows, scoring_input
from schemas.contract import ControlReport
from schemas.errors import ConfigError
from schemas.reject_rate import RejectLimit
from schemas.stream import Reject, no_records

log = logging.getLogger("lgw.batch")

INTERRUPTED, BUSY = "interrupted", "busy"
_HEARTBEAT_S = 30.0


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
            rt.pipeline.stats = stats_from(state["stats"])
            self.seq = int(state["seq"])
            self.elapsed_before = float(state["elapsed_s"])
            position = state["position"]
            log.info("run %s: resuming after %s records (checkpoint %d)", self.run_id,
                     f"{self.counts.records_in:,}", self.seq)
        else:
            self.sink.start()
            self.rejects.open()
            rt.pipeline.stats = PipelineStats()
            position = None
        limit = RejectLimit(rt.config.max_reject_rate, rt.config.reject_rate_after)
        source = FileSource(rt.contract, self.work_path, chunk_records=rt.chunk_records, position=position,
                            commit=self._commit, reject_limit=limit, name=self.run_info.input_name)
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
            pieces = await self._isolating(batch, table, self.sink.renderer)
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
        return _Delivery(rendered, rows, rejects, self.counts.to_json(), stats_json(self.rt.pipeline.stats))

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

    async def _isolating(self, batch: SourceBatch, table: pa.Table, renderer: Renderer) -> list[_Piece]:
        """The batch's rows scored and rendered; a crash splits the rows in halves until the
        record that causes it is found and rejected (the rest goes on): `gateway.isolation`."""
        async def piece(lo: int, hi: int) -> _Piece:
            before = copy.deepcopy(self.rt.pipeline.stats)
            try:
                scored = await score_rows(self.rt.pipeline, batch, table, lo, hi)
                if scored.paused:
                    return _Piece(paused=True)
                return _Piece(scored, renderer.render(*scored.output(self.rt.fmt, batch)))
            except Exception:
                self.rt.pipeline.stats = before  # its records are counted where they end up
                raise

        def alone(row: int, exc: Exception) -> _Piece:
            pii = pii_names(self.rt.contract)
            reason = crash_reason(exc, pii, batch.table.slice(row, 1))
            reject = batch_reject(batch, row, reason, has_pii=bool(pii))
            log.warning("run %s: record %d isolated and rejected: %s", self.run_id, reject.record, reason)
            return _Piece(reject=reject)

        def on_split(lo: int, hi: int, exc: Exception) -> None:
            if (lo, hi) == (0, table.num_rows):  # the error's type only: its message may quote a pii value
                log.warning("run %s: a chunk of %d records crashed (%s); splitting it to find the record",
                            self.run_id, hi - lo, type(exc).__name__)

        # an InfrastructureError or ConfigError is not the records' fault: the run stops (and resumes later)
        return await isolating(piece, 0, table.num_rows, alone=alone, is_alone=lambda p: p.reject is not None,
                               on_split=on_split)

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
            control = jsonable(report.to_json()["control"])
        if contract.file_rejected:
            assert report is not None
            reason = "control totals do not match the trailer: " + "; ".join(report.problems)
            self.sink.discard()
            return await self._conclude(FAILED, reason, outputs={"rejects": self.rejects.finish()}, control=control)
        warnings = []
        if not (report and report.details):
            empty = no_records(self.work_path, self.run_info.input_name)
            if self.rt.config.require_records:
                self.sink.discard()
                return await self._conclude(FAILED, f"{empty} (the pipeline has require_records)",
                                            outputs={"rejects": self.rejects.finish()}, control=control)
            log.warning("run %s: %s", self.run_id, empty)
            warnings.append(empty)
        sink, rejects = self.sink, self.rejects
        outputs = await asyncio.to_thread(lambda: {"scored": sink.finish(), "rejects": rejects.finish()})
        return await self._conclude(DONE, None, outputs=outputs, control=control, warnings=warnings)

    async def _conclude(self, status: str, reason: str | None, *, outputs: dict[str, Any],
                        control: dict[str, Any] | None = None, processed: bool = True,
                        warnings: list[str] | None = None) -> JobResult:
        """Stores the publish step (what to publish, where the input goes), then runs it."""
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        settled = self.rt.folders.free_name(folder, self.run_info.input_name)
        if status == FAILED and "rejects" in outputs:  # they go to failed/ beside the input
            outputs["rejects"]["name"] = f"{settled}.rejects.jsonl"
        staged = {name: part.staged() for name, part in (("scored", self.sink), ("rejects", self.rejects))
                  if part is not None}  # the temporary files' random names, for a publish step resumed
        state = {"phase": "publish", "seq": self.seq + 1, "status": status, "reason": reason, "processed": processed,
                 "settled_name": settled, "outputs": outputs, "staged": staged, "control": control,
                 "counts": self.counts.to_json(),
                 "stats": stats_json(self.rt.pipeline.stats), "elapsed_s": self._elapsed()}
        if warnings:
            state["warnings"] = warnings
        await asyncio.to_thread(self.rt.runs.save_checkpoint, self.run_id, self.seq + 1, state)
        return await self._publish(state)

    async def _publish(self, state: dict[str, Any]) -> JobResult:
        """Idempotent: a crash anywhere in here repeats it from the top on restart."""
        rt, status, settled = self.rt, state["status"], state["settled_name"]
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        manifest = build_manifest(self.run_info, rt, state, f"{folder}/{settled}")
        text = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        sink, rejects = self._new_sink(), RejectsFile(self.rejects_path)
        staged = state.get("staged", {"scored": None, "rejects": None})  # None: written before names were random
        if "scored" in staged:
            sink.adopt(staged["scored"])
        if "rejects" in staged:
            rejects.adopt(staged["rejects"])
        if status == DONE:
            sink.publish()
            rejects.publish()
            atomic_write(self.manifest_path, text, stale=True)
        else:
            sink.discard()
            if "rejects" in state["outputs"]:
                rejects.publish(rt.folders.path("failed", f"{settled}.rejects.jsonl"))
            atomic_write(rt.folders.path("failed", f"{settled}.report.json"), text, stale=True)
        rt.dropfolder.settle(self.work_path, folder, settled, rt.marker(self.run_info.input_name))
        summary = summarize(manifest, rt, self.manifest_path)
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
