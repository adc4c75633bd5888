"""Admin API: batch runs and their manifests and reports, replays, the rejects browser,
drift and quality per pipeline (included by gateway.console.api under /api/v1).

Reads need any role; a replay needs operator and is audited by the replay itself
(gateway.console.replay) with the caller's identity and reason."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.console import views_runs as views
from gateway.console.app import context, known_pipeline, require
from gateway.console.auth import Principal
from gateway.console.context import ConsoleContext

router = APIRouter()

RunId = Path(pattern=views.RUN_ID_PATTERN, description="a run id (GET /api/v1/runs)")
PipelineName = Path(pattern=r"^[A-Za-z0-9_.-]{1,200}$", description="a pipeline of gateway.yaml")
Status = Literal["running", "done", "failed", "duplicate"]
# the report is a page of its own with inline styles only; the console shows it in a sandboxed frame
REPORT_FRAME_CSP_EXTRA = "; frame-ancestors 'self'"


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, pattern=views.REASON_PATTERN,
                        description="why (an incident, a ticket), one line; audited")


def _raise(exc: views.Refused) -> HTTPException:
    return HTTPException(exc.status, exc.message)


@router.get("/runs", tags=["runs"], summary="Recent batch runs, newest first", dependencies=[Depends(require("read"))])
async def runs(pipeline: str | None = Query(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$"),
               status: Status | None = None,
               limit: int = Query(50, ge=1, le=views.MAX_LIMIT),
               ctx: ConsoleContext = Depends(context)) -> list[views.RunSummary]:  # noqa: B008
    known_pipeline(ctx, pipeline)
    return await asyncio.to_thread(views.list_runs, ctx.state, pipeline, status, limit)


@router.get("/runs/{run_id}", tags=["runs"], summary="A run and its manifest", dependencies=[Depends(require("read"))],
            responses={404: {"description": "no such run"}})
async def run(run_id: str = RunId, ctx: ConsoleContext = Depends(context)) -> views.RunDetail:  # noqa: B008
    try:
        return await asyncio.to_thread(views.run_detail, ctx.cfg, ctx.state, run_id)
    except views.Refused as exc:
        raise _raise(exc) from None


@router.get("/runs/{run_id}/report", tags=["runs"], summary="A run's HTML report (self-contained page)",
            dependencies=[Depends(require("read"))], response_class=HTMLResponse,
            responses={404: {"description": "no such run, or it has no manifest"}})
async def report(run_id: str = RunId, ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    from gateway.governance.report import CSP

    try:
        page = await asyncio.to_thread(views.report_html, ctx.cfg, ctx.state, run_id)
    except views.Refused as exc:
        raise _raise(exc) from None
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP + REPORT_FRAME_CSP_EXTRA,
                                       "X-Frame-Options": "SAMEORIGIN"})


@router.post("/runs/{run_id}/replay", tags=["runs"], summary="Process a run's input again (audited)",
             status_code=202, responses={404: {"description": "no such run"},
                                         409: {"description": "this process cannot replay it (one line says why)"}})
async def replay(body: ReplayRequest, run_id: str = RunId,
                 principal: Principal = Depends(require("operate")),  # noqa: B008
                 ctx: ConsoleContext = Depends(context)) -> views.ReplayStarted:  # noqa: B008
    try:
        return await views.replay(ctx, run_id, principal.identity, body.reason.strip())
    except views.Refused as exc:
        raise _raise(exc) from None


@router.get("/rejects", tags=["runs"], summary="Rejects of drop-folder runs (pii bytes withheld), newest run first",
            dependencies=[Depends(require("read"))])
async def rejects(pipeline: str | None = Query(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$"),
                  run: str | None = Query(None, pattern=views.RUN_ID_PATTERN),
                  reason: views.ReasonClass | None = None,
                  field: str | None = Query(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$"),
                  limit: int = Query(100, ge=1, le=views.MAX_LIMIT),
                  offset: int = Query(0, ge=0, le=1_000_000),
                  ctx: ConsoleContext = Depends(context)) -> views.RejectsPage:  # noqa: B008
    known_pipeline(ctx, pipeline)
    return await asyncio.to_thread(views.list_rejects, ctx.cfg, ctx.state, pipeline=pipeline, run=run,
                                   reason=reason, field=field, limit=limit, offset=offset)


@router.get("/pipelines/{name}/drift", tags=["pipelines"], summary="Drift and quality: the latest run's, or a "
            "stream's last window", dependencies=[Depends(require("read"))],
            responses={404: {"description": "no such pipeline"}})
async def drift(name: str = PipelineName, ctx: ConsoleContext = Depends(context)) -> views.DriftView:  # noqa: B008
    known_pipeline(ctx, name)
    return await asyncio.to_thread(views.drift_of, ctx.cfg, ctx.state, name, name in ctx.pipelines)


__all__ = ["router"]
