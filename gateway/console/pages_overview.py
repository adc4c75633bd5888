"""Console pages: log in and out, the overview of every pipeline, one pipeline's page with
its kill switch (see gateway.console.pages).

Log in: the browser posts a token (the same token the API takes as a bearer); a good one
gets a signed session cookie (HttpOnly, SameSite=Strict, Secure over https), a bad one
counts against the address's failed-authentication limit. The login form has no session
yet, so it cannot carry a CSRF nonce: against login CSRF it takes a post only when its
Origin (else its Referer), where the browser sends one, is this very host.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from gateway.console.api import KillSwitchRequest, apply_kill_switch
from gateway.console.app import (
    authenticate,
    check_token,
    context,
    end_session,
    known_pipeline,
    require,
    same_origin,
    start_session,
)
from gateway.console.auth import Principal
from gateway.console.context import ConsoleContext
from gateway.console.pages import PREFIX, back_to, render
from gateway.console.status import PipelineStatus, pipeline_statuses

router = APIRouter()

PipelineName = Path(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
MODES = ("off", "force_fallback", "pause")

BREAKER_CLASS = {"closed": "ok", "half_open": "warn", "open": "bad", "forced_open": "warn", "disabled": "muted"}
SWITCH_CLASS = {"off": "ok", "force_fallback": "warn", "pause": "bad"}


# ----------------------------------------------------------------------------- views
@dataclass
class BreakerView:
    model: str
    state: str
    replica: str
    css: str


@dataclass
class PipelineView:
    """One pipeline as the overview shows it: counters summed over its live replicas."""

    status: PipelineStatus
    switch_css: str
    breakers: list[BreakerView] = field(default_factory=list)
    records_in: int = 0
    scored_by: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    lag: int | None = None
    inbox: int | None = None
    live_replicas: int = 0
    stale_replicas: int = 0


def view(status: PipelineStatus) -> PipelineView:
    out = PipelineView(status=status, switch_css=SWITCH_CLASS.get(status.kill_switch.mode, "warn"))
    out.scored_by = {"model": 0, "fallback": 0}
    for replica in status.replicas:
        if not replica.live:
            out.stale_replicas += 1
            continue
        out.live_replicas += 1
        c = replica.counters
        out.records_in += c.records_in
        for by, n in c.scored_by.items():
            out.scored_by[by] = out.scored_by.get(by, 0) + n
        out.rejected += sum(c.rejected.values())
        if c.lag is not None:
            out.lag = (out.lag or 0) + c.lag
        if c.inbox is not None:
            out.inbox = max(out.inbox or 0, c.inbox)  # one folder, seen by every replica
        for m in replica.models:
            out.breakers.append(BreakerView(m.name, m.breaker, replica.replica, BREAKER_CLASS.get(m.breaker, "warn")))
    return out


async def statuses(ctx: ConsoleContext, only: str | None = None) -> list[PipelineView]:
    found = await asyncio.to_thread(pipeline_statuses, ctx.cfg, ctx.state, ctx.pipelines, ctx.process, only)
    return [view(s) for s in found]


# ----------------------------------------------------------------------------- log in / out
def _local_next(target: str | None) -> str:
    """`next` only when it is a path of this console (no scheme, no host, no //evil)."""
    default = f"{PREFIX}/"
    if not target or len(target) > 2000 or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or (not parts.path.startswith(f"{PREFIX}/") and parts.path != PREFIX):
        return default
    if target.startswith("//") or parts.path.startswith(f"{PREFIX}/login"):
        return default
    return target


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    return render(request, "login.html", None, next=_local_next(next), error="")


LOGIN_ERRORS = {
    401: "Unknown or revoked token.",
    403: "This login form was posted from another site; open the login page here and try again.",
    429: "Too many failed logins from this address; try again in {wait} s.",
}


@router.post("/login")
async def login(request: Request, token: str = Form("", max_length=4096),
                next: str = Form("", max_length=2000)) -> Response:
    target = _local_next(next)
    try:
        if not same_origin(request):  # before the token is looked at: another site's post counts nothing
            raise HTTPException(403)
        principal = await check_token(request, token)
        redirect = RedirectResponse(target, status_code=303)
        start_session(request, redirect, principal)
        return redirect
    except HTTPException as exc:
        wait = (exc.headers or {}).get("Retry-After", "")
        response = render(request, "login.html", None, status_code=exc.status_code, next=target,
                          error=LOGIN_ERRORS.get(exc.status_code, "Log in failed.").format(wait=wait))
        if wait:
            response.headers["Retry-After"] = wait
        return response


@router.post("/logout")
async def logout(request: Request, principal: Principal = Depends(authenticate)) -> Response:  # noqa: B008
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    end_session(response)
    return response


# ----------------------------------------------------------------------------- overview
def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")


@router.get("/")
async def overview(request: Request, principal: Principal = Depends(require("read"))) -> Response:  # noqa: B008
    pipes = await statuses(context(request))
    return render(request, "overview.html", principal, pipelines=pipes, now=_now())


@router.get("/partials/overview")
async def overview_partial(request: Request, principal: Principal = Depends(require("read"))) -> Response:  # noqa: B008
    pipes = await statuses(context(request))
    return render(request, "_overview.html", principal, pipelines=pipes, now=_now())


@router.get("/pipelines/{name}")
async def pipeline_page(request: Request, name: str = PipelineName,
                        principal: Principal = Depends(require("read"))) -> Response:  # noqa: B008
    ctx = context(request)
    known_pipeline(ctx, name)
    pipe = (await statuses(ctx, name))[0]
    return render(request, "pipeline.html", principal, p=pipe, modes=MODES, may_operate=principal.may("operate"))


@router.get("/partials/pipelines/{name}")
async def pipeline_partial(request: Request, name: str = PipelineName,
                           principal: Principal = Depends(require("read"))) -> Response:  # noqa: B008
    ctx = context(request)
    known_pipeline(ctx, name)
    pipe = (await statuses(ctx, name))[0]
    return render(request, "_pipeline.html", principal, p=pipe)


@router.post("/pipelines/{name}/kill-switch")
async def kill_switch(request: Request, name: str = PipelineName, mode: str = Form("", max_length=40),
                      reason: str = Form("", max_length=2000),
                      principal: Principal = Depends(require("operate"))) -> Response:  # noqa: B008
    ctx = context(request)
    known_pipeline(ctx, name)
    try:
        body = KillSwitchRequest(mode=mode, reason=reason)  # type: ignore[arg-type]
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        problems = [text for key, text in (("mode", f"choose a mode ({', '.join(MODES)})"),
                                           ("reason", "a reason is required (at most 500 characters)"))
                    if key in fields]
        return back_to(request, f"/pipelines/{name}", "Kill switch not changed: " + "; ".join(problems))
    switch = await apply_kill_switch(ctx, name, body.mode, body.reason, principal)
    return back_to(request, f"/pipelines/{name}",
                   f"Kill switch of {name}: {switch.mode} (set by {switch.set_by}: {switch.reason})")


__all__ = ["PipelineView", "router", "statuses", "view"]
