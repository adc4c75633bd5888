"""Replays asked for through the API: the run is checked and the request audited at
once; the replay itself runs beside the watchers of `lgw run` (a big file takes minutes),
and its result is the new run, visible in /api/v1/runs."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gateway.console.context import Replay
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from gateway.batch import BatchDriver

log = logging.getLogger("lgw.console")


def replay_in(drivers: dict[str, BatchDriver]) -> Replay:
    """The replay callable of a process whose batch drivers are `drivers` (filled before
    the first request can come)."""
    running: set[asyncio.Task[Any]] = set()

    async def replay(pipeline: str | None, run_id: str, actor: str, reason: str) -> dict[str, Any]:
        from gateway.governance.audit_model import OperatorAction
        from gateway.governance.audit_sql import ActionLog
        from gateway.governance.audit_tables import ensure_tables

        if not drivers:
            raise ConfigError("this process runs no drop-folder pipeline: nothing can be replayed here")
        rt = next(iter(drivers.values())).rt
        run = await asyncio.to_thread(rt.runs.get, run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r}")
        if pipeline is not None and run.pipeline != pipeline:
            raise ConfigError(f"run {run_id} belongs to pipeline {run.pipeline}, not {pipeline}")
        driver = drivers.get(run.pipeline)
        if driver is None:
            raise ConfigError(f"pipeline {run.pipeline} is not run by this process (its `lgw run` replays it)")
        if not run.final_path:
            raise ConfigError(f"run {run_id} has not finished ({run.status}): nothing to replay yet")

        def audit() -> None:
            ensure_tables(rt.state)
            ActionLog(rt.state).append(OperatorAction(actor=actor, action="batch.replay", pipeline=run.pipeline,
                                                      target=run_id, reason=reason))

        await asyncio.to_thread(audit)

        async def go() -> None:
            try:
                result = await driver.replay(run_id)
                log.info("%s: replay of %s asked by %s ended: run %s %s", run.pipeline, run_id, actor,
                         result.run_id, result.status)
            except Exception:
                log.exception("%s: replay of %s asked by %s failed", run.pipeline, run_id, actor)

        task = asyncio.get_running_loop().create_task(go())
        running.add(task)
        task.add_done_callback(running.discard)
        return {"pipeline": run.pipeline, "replay_of": run_id, "status": "started"}

    return replay


__all__ = ["replay_in"]
