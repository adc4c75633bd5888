"""The driver: finds a pipeline's work (its unfinished runs, then complete inbox files),
claims it and runs it; replays on request; watches the inbox until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

from adapters.files.dropfolder import Arrival, UnsafePath, content_hash, move_file
from gateway.batch.job import BUSY, BatchJob, JobResult
from gateway.batch.progress import NoProgress, ProgressView
from gateway.batch.runtime import BatchRuntime
from gateway.logs import log_context
from gateway.runs import DUPLICATE, FAILED, Run
from schemas.errors import ConfigError, InfrastructureError

log = logging.getLogger("lgw.batch")


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
        self.rt.hashes.start(arrival.path for arrival in ready)  # the next file's hash beside this one's run
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
            hashed = await asyncio.to_thread(rt.hashes.hash, arrival.path)
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
        file's fault (state store, disk, a link where an output goes) are logged and
        retried with a growing wait."""
        failures = 0
        with log_context(pipeline=self.rt.name):
            while not self.stop.is_set():
                try:
                    for result in await self.run_once():
                        if report is not None:
                            report(result)
                    failures = 0
                except (InfrastructureError, OSError, RuntimeError, UnsafePath) as exc:
                    failures += 1
                    log.error("%s: %s: %s (retrying)", self.rt.name, type(exc).__name__, exc)
                wait = min(self.rt.source.poll_s * (2 ** min(failures, 6)), 300.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=wait)
