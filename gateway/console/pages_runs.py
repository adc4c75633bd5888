"""Console pages: runs, a run's page with its report, the rejects browser, drift and
quality per pipeline (see gateway.console.pages; data from gateway.console.views_runs).

- /console/runs                      the recent runs, filtered by pipeline and status
- /console/runs/{id}                 a run: summary, counts, outputs, replay form, its report in a
                                     sandboxed frame (/api/v1/runs/{id}/report)
- POST /console/runs/{id}/replay     replay it (operator; a reason; audited by the replay)
- /console/rejects                   rejects with filters (pipeline, run, reason class, field), paged
- /console/pipelines/{name}/drift    drift and quality of a pipeline
- /console/partials/drift/{name}     the same as a partial, for the pipeline page (data-refresh)
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from gateway.console import views_runs as views
from gateway.console.app import context, require
from gateway.console.auth import Principal
from gateway.console.context import ConsoleContext
from gateway.console.pages import back_to, render
from gateway.console.security import CSP

router = APIRouter()

# the run's page shows its report (a page of its own, same origin) in a sandboxed frame
RUN_PAGE_CSP = CSP.replace("default-src 'none';", "default-src 'none'; frame-src 'self';", 1)
PIPELINE_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
PAGE_SIZE = 50


def _known(ctx: ConsoleContext, pipeline: str | None) -> None:
    if pipeline is not None and pipeline not in ctx.cfg.pipelines:
        raise HTTPException(404, f"no pipeline {pipeline!r}")


def _blank(value: str | None) -> str | None:
    return value if value else None


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request, pipeline: str | None = Query(None, pattern=r"^$|" + PIPELINE_PATTERN),
                    status: str | None = Query(None, pattern=r"^(|running|done|failed|duplicate)$"),
                    limit: int = Query(50, ge=1, le=views.MAX_LIMIT),
                    principal: Principal = Depends(require("read")),  # noqa: B008
                    ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    pipeline, status = _blank(pipeline), _blank(status)
    _known(ctx, pipeline)
    rows = await asyncio.to_thread(views.list_runs, ctx.state, pipeline, status, limit)
    return render(request, "runs.html", principal, runs=rows, pipelines=sorted(ctx.cfg.pipelines),
                  statuses=views.STATUSES, pipeline=pipeline or "", status=status or "", limit=limit)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str = Path(pattern=views.RUN_ID_PATTERN),
                   principal: Principal = Depends(require("read")),  # noqa: B008
                   ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    try:
        detail = await asyncio.to_thread(views.run_detail, ctx.cfg, ctx.state, run_id)
    except views.Refused as exc:
        return render(request, "run_missing.html", principal, status_code=exc.status, message=exc.message)
    manifest = detail.manifest or {}
    page = render(request, "run.html", principal, run=detail.run, manifest_note=detail.manifest_note,
                  progress=detail.progress, counts=_dict(manifest.get("counts")),
                  scored_by=_dict(manifest.get("scored_by")), outputs=_dict(manifest.get("outputs")),
                  pii=_dict(manifest.get("pii")), control=_dict(manifest.get("control")),
                  has_report=detail.manifest is not None, may_replay=principal.may("operate"),
                  can_replay=ctx.replay is not None, process=ctx.process)
    page.headers["Content-Security-Policy"] = RUN_PAGE_CSP
    return page


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@router.post("/runs/{run_id}/replay")
async def replay_form(request: Request, run_id: str = Path(pattern=views.RUN_ID_PATTERN),
                      reason: str = Form("", max_length=500),
                      principal: Principal = Depends(require("operate")),  # noqa: B008
                      ctx: ConsoleContext = Depends(context)) -> Response:  # noqa: B008
    if not reason.strip():
        return back_to(request, f"/runs/{run_id}", "a replay needs a reason")
    try:
        started = await views.replay(ctx, run_id, principal.identity, reason.strip())
    except views.Refused as exc:
        return back_to(request, f"/runs/{run_id}", exc.message)
    return back_to(request, f"/runs/{run_id}",
                   f"replay of {started.replay_of} {started.status}: its run appears in the runs list")


@router.get("/rejects", response_class=HTMLResponse)
async def rejects_page(request: Request, pipeline: str | None = Query(None, pattern=r"^$|" + PIPELINE_PATTERN),
                       run: str | None = Query(None, pattern=r"^$|" + views.RUN_ID_PATTERN[1:]),
                       reason: str | None = Query(None, pattern=r"^(|framing|decode|validation|model_rejected|"
                                                                r"model_output|pipeline_error)$"),
                       field: str | None = Query(None, pattern=r"^$|" + PIPELINE_PATTERN),
                       offset: int = Query(0, ge=0, le=1_000_000),
                       principal: Principal = Depends(require("read")),  # noqa: B008
                       ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    pipeline, run, reason, field = _blank(pipeline), _blank(run), _blank(reason), _blank(field)
    _known(ctx, pipeline)
    page = await asyncio.to_thread(views.list_rejects, ctx.cfg, ctx.state, pipeline=pipeline, run=run,
                                   reason=reason, field=field, limit=PAGE_SIZE, offset=offset)
    filters = {k: v for k, v in (("pipeline", pipeline), ("run", run), ("reason", reason), ("field", field)) if v}

    def link(to: int) -> str:
        return "?" + urlencode({**filters, "offset": to})

    return render(request, "rejects.html", principal, page=page, pipelines=sorted(ctx.cfg.pipelines),
                  reasons=views.ReasonClass.__args__,  # type: ignore[attr-defined]
                  pipeline=pipeline or "", run=run or "", reason=reason or "", field=field or "",
                  prev=link(max(0, offset - PAGE_SIZE)) if offset > 0 else None,
                  next=link(offset + PAGE_SIZE) if page.more else None)


async def _drift(ctx: ConsoleContext, name: str) -> views.DriftView:
    _known(ctx, name)
    return await asyncio.to_thread(views.drift_of, ctx.cfg, ctx.state, name, name in ctx.pipelines)


def _drift_values(view: views.DriftView) -> dict[str, Any]:
    drift = view.drift or {}
    psi = {**{f"feature {k}": v for k, v in _dict(drift.get("psi")).items()},
           **{f"score {k}": v for k, v in _dict(drift.get("score_psi")).items()}, **view.psi}
    quality = view.quality or {}
    return {"view": view, "psi": dict(sorted(psi.items())), "breaches": drift.get("breaches") or [],
            "thresholds": _dict(drift.get("thresholds")), "verdict": quality.get("verdict"),
            "fields": _dict(quality.get("fields"))}


@router.get("/pipelines/{name}/drift", response_class=HTMLResponse)
async def drift_page(request: Request, name: str = Path(pattern=PIPELINE_PATTERN),
                     principal: Principal = Depends(require("read")),  # noqa: B008
                     ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    view = await _drift(ctx, name)
    return render(request, "drift.html", principal, name=name, **_drift_values(view))


@router.get("/partials/drift/{name}", response_class=HTMLResponse)
async def drift_partial(request: Request, name: str = Path(pattern=PIPELINE_PATTERN),
                        principal: Principal = Depends(require("read")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    view = await _drift(ctx, name)
    return render(request, "_drift.html", principal, name=name, **_drift_values(view))


__all__ = ["router"]
