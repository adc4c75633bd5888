"""Console pages: the review queue and its decisions, the audit history, API tokens
(admin). The same views (gateway.console.views_review) as the API."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.console import views_review as views
from gateway.console.api_review import TOKEN_NAME
from gateway.console.app import context, require
from gateway.console.auth import Principal
from gateway.console.config import ROLES
from gateway.console.context import ConsoleContext
from gateway.console.pages import back_to, render
from schemas.errors import ConfigError

router = APIRouter()

STATUSES = ("pending", "approved", "overridden", "all")
ACTION_KINDS = ("killswitch.", "review.decide", "batch.replay", "token.", "drift.", "audit.")
PipelineFilter = Annotated[str, Query(pattern=r"^([A-Za-z0-9_.-]{1,200})?$")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/review", response_class=HTMLResponse)
async def review_page(request: Request, pipeline: PipelineFilter = "",
                      status: Annotated[str, Query(pattern=r"^(pending|approved|overridden|all)$")] = "pending",
                      limit: Limit = 100, principal: Principal = Depends(require("read")),  # noqa: B008
                      ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    queue = await asyncio.to_thread(views.review_queue, ctx, pipeline or None, status, limit)
    return render(request, "review.html", principal, queue=queue, pipeline=pipeline, status=status, limit=limit,
                  statuses=STATUSES, pipelines=sorted(ctx.cfg.pipelines), may_review=principal.may("review"))


@router.post("/review/{item_id}")
async def review_decide(request: Request, item_id: Annotated[int, Path(ge=1, le=2**62)],
                        reason: Annotated[str, Form(max_length=500)] = "",
                        override: Annotated[str, Form(max_length=200)] = "",
                        approve: Annotated[str, Form(pattern=r"^[01]$")] = "1",
                        principal: Principal = Depends(require("review")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> RedirectResponse:  # noqa: B008
    approving = approve == "1"
    if not reason.strip():
        return back_to(request, "/review", f"review item {item_id}: a decision needs a reason")
    if not approving and not override.strip():
        return back_to(request, "/review", f"review item {item_id}: Override needs an override score")
    try:
        decision = await asyncio.to_thread(views.decide, ctx, item_id, approve=approving,
                                           override=None if approving else override.strip(), reason=reason,
                                           actor=principal.identity)
    except (views.NotFound, ConfigError) as exc:
        return back_to(request, "/review", f"review item {item_id}: {exc}")
    done = await views.publish(ctx, decision)
    message = (f"review item {item_id} {done.status}: {done.score_name} {done.final_score}"
               + (f"; correction published to {done.correction}" if done.correction else f"; {done.correction_error}"))
    return back_to(request, "/review", message)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, pipeline: PipelineFilter = "",
                     action: Annotated[str, Query(pattern=r"^([a-z_.]{1,60})?$")] = "",
                     record: Annotated[str, Query(pattern=r"^[^\x00-\x1f]{0,600}$")] = "",
                     limit: Limit = 100, principal: Principal = Depends(require("read")),  # noqa: B008
                     ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    found = await asyncio.to_thread(views.actions, ctx, pipeline or None, action or None, limit)
    decisions: list[views.DecisionRecord] = []
    error = ""
    if record:
        try:
            decisions = await asyncio.to_thread(views.decisions_for, ctx, record)
        except (views.NotFound, ConfigError) as exc:
            error = str(exc)
    return render(request, "audit.html", principal, actions=found, pipeline=pipeline, action=action, limit=limit,
                  pipelines=sorted(ctx.cfg.pipelines), action_kinds=ACTION_KINDS, record=record,
                  decisions=decisions, decisions_error=error)


async def _tokens_page(request: Request, principal: Principal, ctx: ConsoleContext,
                       new_token: views.NewToken | None = None, status_code: int = 200) -> HTMLResponse:
    found = await asyncio.to_thread(views.tokens, ctx)
    return render(request, "tokens.html", principal, status_code=status_code, tokens=found, roles=ROLES,
                  new_token=new_token)


@router.get("/tokens", response_class=HTMLResponse)
async def tokens_page(request: Request, principal: Principal = Depends(require("admin")),  # noqa: B008
                      ctx: ConsoleContext = Depends(context)) -> HTMLResponse:  # noqa: B008
    return await _tokens_page(request, principal, ctx)


@router.post("/tokens", response_model=None)
async def tokens_create(request: Request, name: Annotated[str, Form(max_length=120)] = "",
                        roles: Annotated[list[str] | None, Form()] = None,
                        note: Annotated[str, Form(max_length=500)] = "",
                        principal: Principal = Depends(require("admin")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> HTMLResponse | RedirectResponse:  # noqa: B008
    import re

    chosen = sorted(set(roles or []))
    if not re.match(TOKEN_NAME, name) or not chosen or any(r not in ROLES for r in chosen):
        return back_to(request, "/tokens", "a token needs a name (letters, digits, _ . @ -) and at least one role")
    try:
        made = await asyncio.to_thread(views.create_token, ctx, name, chosen, note, principal.identity)
    except ConfigError as exc:
        return back_to(request, "/tokens", str(exc))
    # the token is in this response only: rendered here, never put in a redirect's URL
    return await _tokens_page(request, principal, ctx, new_token=made)


@router.post("/tokens/{name}/revoke")
async def tokens_revoke(request: Request, name: Annotated[str, Path(pattern=TOKEN_NAME)],
                        principal: Principal = Depends(require("admin")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> RedirectResponse:  # noqa: B008
    try:
        await asyncio.to_thread(views.revoke_token, ctx, name, principal.identity)
    except (views.NotFound, ConfigError) as exc:
        return back_to(request, "/tokens", str(exc))
    return back_to(request, "/tokens", f"token {name} revoked")


__all__ = ["router"]
