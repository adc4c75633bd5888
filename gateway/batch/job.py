"""One run: an input file from the work folder to done/ or failed/, chunk by chunk with
checkpoints, a record that crashes a chunk isolated and rejected, then published with
its manifest; resumable throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.base import RejectSink, Sink, SourceBatch
from adapters.files.dropfolder import UnsafePath, atomic_write, content_hash
from adapters.files.sink import RejectsFile
from adapters.files.source import FileSource
from gateway import meters
from gateway.batch.manifest import build_manifest, jsonable, run_status, stats_from, stats_json, summarize
from gateway.batch.progress import NoProgress, ProgressView
from gateway.batch.runtime import BatchRuntime
from gateway.drivers.batch import BatchLoop, Counts, Delivery, adopt_staged, close_all, staged_names
from gateway.governance.report_files import save_report_beside
from gateway.governance.run import RunGovernance
from gateway.logs import log_context
from gateway.pipeline import PipelineStats
from gateway.runs import DONE, FAILED, Run
from schemas.contract import ControlReport
from schemas.errors import ConfigError
from schemas.reject_rate import RejectLimit
from schemas.stream import no_records

log = logging.getLogger("lgw.batch")

INTERRUPTED, BUSY = "interrupted", "busy"
_HEARTBEAT_S = 30.0


@dataclass
class JobResult:
    run_id: str
    status: str  # done | failed | duplicate | interrupted | busy
    summary: dict[str, Any] = field(default_factory=dict)


class BatchJob:
    """One input file, from the work folder to done/ or failed/, resumable throughout."""

    def __init__(self, rt: BatchRuntime, run: Run, *, progress: ProgressView | None = None,
                 stop: asyncio.Event | None = None, failure: str | None = None) -> None:
        self.rt = rt
        self.run_info = run
        self.progress: ProgressView = progress or NoProgress()
        self.stop = stop or asyncio.Event()
        self.failure = failure  # the input cannot be run at all (unsafe, vanished): straight to failed/
        self.manifest_path = rt.manifest_path(run.output_stem)
        self.work_path = rt.folders.path("work", run.work_name)
        self.counts = Counts()
        self.seq = 0
        self.elapsed_before = 0.0
        self._started = time.monotonic()
        self._last_beat = time.monotonic()
        self.sink: Sink | None = None
        self.rejects: RejectSink | None = None
        self.loop: BatchLoop | None = None
        self._report: ControlReport | None = None
        self.governance: RunGovernance | None = None

    @property
    def run_id(self) -> str:
        return self.run_info.run_id

    def _new_sink(self) -> Sink:
        return self.rt.build_sink(self.run_info.output_stem)

    def _new_rejects(self) -> RejectSink:
        return self.rt.build_rejects(self.run_info.output_stem)

    # ---- the run
    async def run(self) -> JobResult:
        with log_context(pipeline=self.rt.name, run=self.run_id, input=self.run_info.input_name):
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
                await close_all([part for part in (self.sink, self.rejects) if part is not None])

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
        self.sink, self.rejects = self._new_sink(), self._new_rejects()
        self.governance = rt.governance(self.run_id, self.run_info.input_name, self.run_info.output_stem)
        if state is not None:
            self.governance.restore(state.get("governance"))
            await self.sink.open(state["sink"])
            await self.rejects.open(state["rejects"])
            self.counts = Counts(**state["counts"], rejected_by=Counter(state.get("rejected_by", {})))
            rt.pipeline.stats = stats_from(state["stats"])
            self.seq = int(state["seq"])
            self.elapsed_before = float(state["elapsed_s"])
            position = state["position"]
            log.info("run %s: resuming after %s records (checkpoint %d)", self.run_id,
                     f"{self.counts.records_in:,}", self.seq)
        else:
            await self.sink.open()
            await self.rejects.open()
            rt.pipeline.stats = PipelineStats()
            position = None
        limit = RejectLimit(rt.config.max_reject_rate, rt.config.reject_rate_after)
        source = FileSource(rt.contract, self.work_path, batch_size=rt.batch_size, position=position,
                            commit=self._commit, reject_limit=limit, name=self.run_info.input_name)
        done_bytes = int(position["read"]["offset"]) if position else 0
        self.progress.begin(f"{rt.name} {self.run_info.input_name}", self.run_info.input_bytes, done_bytes,
                            self.counts.records_in)
        self.loop = BatchLoop(rt.pipeline, self.sink, self.rejects, label=f"run {self.run_id}", stop=self.stop,
                              on_paused=self._wait_while_paused, before_write=self._heartbeat, counts=self.counts,
                              read_errors=(ConfigError,),
                              on_acked=self._acked, governance=self.governance)
        try:
            await source.connect()
            finished = await self.loop.run(source)
        finally:
            self.progress.end()
            await source.close()
        if not finished:
            return self._interrupted()
        self.failure = self.loop.read_failure
        self._report = source.report
        return None

    def _interrupted(self) -> JobResult:
        log.info("run %s: stopped after checkpoint %d (%s records); it resumes where it stopped",
                 self.run_id, self.seq, f"{self.counts.records_in:,}")
        stats = self.rt.pipeline.stats
        meters.batch_run_ended(self.run_info.pipeline, source="dropfolder", status=INTERRUPTED,
                               records_in=self.counts.records_in, scored_by=stats.scored_by,
                               rejected_by=self.counts.rejected_by, elapsed_s=self._elapsed(),
                               shadow=(stats.shadow_compared, stats.shadow_agreed))
        return JobResult(self.run_id, INTERRUPTED, {"run": self.run_id, "input": self.run_info.input_name,
                                                    "status": INTERRUPTED, **self.counts.to_json()})

    # ---- one chunk
    async def _heartbeat(self) -> None:
        if time.monotonic() - self._last_beat >= self.rt.runs.lease_s / 4:  # still ours? (a long chunk, a slow model)
            await asyncio.to_thread(self.rt.runs.heartbeat, self.run_id)
            self._last_beat = time.monotonic()

    async def _wait_while_paused(self) -> bool:
        log.warning("run %s: pipeline %s is paused (kill switch or model unavailable): waiting", self.run_id,
                    self.rt.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=1.0)
        if time.monotonic() - self._last_beat >= min(_HEARTBEAT_S, self.rt.runs.lease_s / 4):
            self._last_beat = time.monotonic()
            await asyncio.to_thread(self.rt.runs.heartbeat, self.run_id)
        return not self.stop.is_set()

    def _acked(self, batch: SourceBatch, delivery: Delivery) -> None:
        done_bytes, records = getattr(batch, "bytes_read", 0), delivery.counts["records_in"]
        self.progress.update(done_bytes, records)
        total = self.run_info.input_bytes
        meters.batch_progress(self.run_info.pipeline, records, done_bytes / total if total else None)

    async def _commit(self, position: dict[str, Any]) -> None:
        """The ack of a file batch: its outputs are durable, so store the checkpoint."""
        assert self.sink is not None and self.rejects is not None and self.loop is not None
        self.seq += 1
        delivery = self.loop.durable
        assert delivery is not None, "a batch is acked after its delivery was made durable"
        state = {"phase": "chunks", "seq": self.seq, "position": position, "sink": self.sink.state(),
                 "rejects": self.rejects.state(), "counts": delivery.counts, "rejected_by": delivery.rejected_by,
                 "stats": stats_json(delivery.stats), "elapsed_s": self._elapsed(),
                 "governance": delivery.governance}
        await asyncio.to_thread(self.rt.runs.save_checkpoint, self.run_id, self.seq, state)
        self._last_beat = time.monotonic()

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    # ---- the end
    async def _finish(self) -> JobResult:
        assert self.sink is not None and self.rejects is not None
        contract = self.rt.contract
        if self.failure is not None:
            await self.sink.discard()
            return await self._conclude(FAILED, self.failure, outputs={"rejects": await self.rejects.finish()})
        self.counts.check(f"run {self.run_id}")
        report = self._report
        control = None
        if report is not None and (contract.header is not None or contract.trailer is not None):
            control = jsonable(report.to_json()["control"])
        if contract.rejects_file(report):
            assert report is not None
            reason = "control totals do not match the trailer: " + "; ".join(report.problems)
            await self.sink.discard()
            return await self._conclude(FAILED, reason, outputs={"rejects": await self.rejects.finish()},
                                        control=control)
        warnings = []
        if not (report and report.details):
            empty = no_records(self.work_path, self.run_info.input_name)
            if self.rt.config.require_records:
                await self.sink.discard()
                return await self._conclude(FAILED, f"{empty} (the pipeline has require_records)",
                                            outputs={"rejects": await self.rejects.finish()}, control=control)
            log.warning("run %s: %s", self.run_id, empty)
            warnings.append(empty)
        outputs = {"scored": await self.sink.finish(), "rejects": await self.rejects.finish()}
        return await self._conclude(DONE, None, outputs=outputs, control=control, warnings=warnings)

    async def _conclude(self, status: str, reason: str | None, *, outputs: dict[str, Any],
                        control: dict[str, Any] | None = None, processed: bool = True,
                        warnings: list[str] | None = None) -> JobResult:
        """Stores the publish step (what to publish, where the input goes), then runs it."""
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        settled = self.rt.folders.free_name(folder, self.run_info.input_name)
        if status == FAILED and isinstance(self.rejects, RejectsFile):  # they go to failed/ beside the input
            outputs["rejects"]["name"] = f"{settled}.rejects.jsonl"
        staged = {name: staged_names(part) for name, part in (("scored", self.sink), ("rejects", self.rejects))
                  if part is not None}  # the temporary files' random names, for a publish step resumed
        state = {"phase": "publish", "seq": self.seq + 1, "status": status, "reason": reason, "processed": processed,
                 "settled_name": settled, "outputs": outputs, "staged": staged, "control": control,
                 "counts": self.counts.to_json(), "rejected_by": dict(self.counts.rejected_by),
                 "stats": stats_json(self.rt.pipeline.stats), "elapsed_s": self._elapsed()}
        if warnings:
            state["warnings"] = warnings
        if self.governance is not None:  # the manifest's governance sections, final now
            sections = await self.governance.conclude(status, self.rt.state)
            meters.drift_window(self.rt.name, sections)
            state["sections"] = jsonable(sections)
        await asyncio.to_thread(self.rt.runs.save_checkpoint, self.run_id, self.seq + 1, state)
        return await self._publish(state)

    async def _publish(self, state: dict[str, Any]) -> JobResult:
        """Idempotent: a crash anywhere in here repeats it from the top on restart."""
        rt, status, settled = self.rt, state["status"], state["settled_name"]
        folder: Literal["done", "failed"] = "done" if status == DONE else "failed"
        manifest = build_manifest(self.run_info, rt, state, f"{folder}/{settled}")
        text = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        sink, rejects = self._new_sink(), self._new_rejects()
        staged = state.get("staged", {"scored": None, "rejects": None})  # None: written before names were random
        if "scored" in staged:
            adopt_staged(sink, staged["scored"])
        if "rejects" in staged:
            adopt_staged(rejects, staged["rejects"])
        if status == DONE:
            await sink.publish()
            await rejects.publish()
            atomic_write(self.manifest_path, text, stale=True)
            save_report_beside(manifest, self.manifest_path)  # NAME.report.html; a failure is a warning
        else:
            await sink.discard()
            if "rejects" in state["outputs"]:
                if isinstance(rejects, RejectsFile):  # beside the input in failed/
                    await rejects.publish(rt.folders.path("failed", f"{settled}.rejects.jsonl"))
                else:
                    await rejects.publish()
            atomic_write(rt.folders.path("failed", f"{settled}.report.json"), text, stale=True)
            save_report_beside(manifest, rt.folders.path("failed", f"{settled}.report.json"))
        rt.dropfolder.settle(self.work_path, folder, settled, rt.marker(self.run_info.input_name))
        summary = summarize(manifest, rt, self.manifest_path)
        stats, counts = state["stats"], state["counts"]
        meters.batch_run_ended(self.run_info.pipeline, source="dropfolder",
                               status=run_status(status, counts["rejected"]), records_in=counts["records_in"],
                               scored_by=stats["scored_by"], rejected_by=state.get("rejected_by", {}),
                               elapsed_s=state["elapsed_s"], shadow=(stats["shadow_compared"], stats["shadow_agreed"]))
        await asyncio.to_thread(rt.runs.finish, self.run_id, status, final_path=f"{folder}/{settled}",
                                summary=summary, record=state.get("processed", True))
        if status == DONE:
            log.info("run %s: %s done: %s in, %s out, %s rejected -> %s", self.run_id, self.run_info.input_name,
                     f"{summary['records_in']:,}", f"{summary['records_out']:,}", f"{summary['rejected']:,}",
                     summary["output"])
        else:
            log.warning("run %s: %s failed: %s (moved to failed/%s)", self.run_id, self.run_info.input_name,
                        state["reason"], settled)
        return JobResult(self.run_id, status, summary)
