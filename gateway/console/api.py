"""The admin API's JSON endpoints, under /api/v1. Reads need any role; the kill switch and
replays need operator, review decisions reviewer, tokens admin. Every state-changing call
is recorded in the audit trail with the caller's identity (`token:NAME`, `oidc:SUB`)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from gateway.console.app import authenticate, context, known_pipeline, require
from gateway.console.auth import Principal
from gateway.console.context import ConsoleContext
from gateway.console.status import PipelineStatus, Switch, pipeline_statuses
from gateway.console.views_runs import REASON_PATTERN

router = APIRouter(prefix="/api/v1")

PipelineName = Path(pattern=r"^[A-Za-z0-9_.-]{1,200}$", description="a pipeline of gateway.yaml")
Reason = Field(min_length=1, max_length=500, pattern=REASON_PATTERN, description="why (an incident, a ticket); audited")


class WhoAmI(BaseModel):
    identity: str
    name: str
    roles: list[str]
    source: str


class KillSwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "force_fallback", "pause"]
    reason: str = Reason


@router.get("/whoami", tags=["auth"], summary="The caller's identity and roles")
async def whoami(principal: Principal = Depends(authenticate)) -> WhoAmI:  # noqa: B008
    return WhoAmI(identity=principal.identity, name=principal.name, roles=sorted(principal.roles),
                  source=principal.source)


@router.get("/pipelines", tags=["pipelines"], summary="Every pipeline with its source, breaker, kill switch, "
            "policy and counters", dependencies=[Depends(require("read"))])
async def pipelines(ctx: ConsoleContext = Depends(context)) -> list[PipelineStatus]:  # noqa: B008
    return await asyncio.to_thread(pipeline_statuses, ctx.cfg, ctx.state, ctx.pipelines, ctx.process)


@router.get("/pipelines/{name}", tags=["pipelines"], summary="One pipeline's status",
            dependencies=[Depends(require("read"))], responses={404: {"description": "no such pipeline"}})
async def pipeline(name: str = PipelineName, ctx: ConsoleContext = Depends(context)) -> PipelineStatus:  # noqa: B008
    known_pipeline(ctx, name)
    found = await asyncio.to_thread(pipeline_statuses, ctx.cfg, ctx.state, ctx.pipelines, ctx.process, name)
    return found[0]


@router.put("/pipelines/{name}/kill-switch", tags=["pipelines"], summary="Set or clear a pipeline's kill switch",
            responses={404: {"description": "no such pipeline"}})
async def set_kill_switch(body: KillSwitchRequest, name: str = PipelineName,
                          principal: Principal = Depends(require("operate")),  # noqa: B008
                          ctx: ConsoleContext = Depends(context)) -> Switch:  # noqa: B008
    known_pipeline(ctx, name)
    return await apply_kill_switch(ctx, name, body.mode, body.reason, principal)


async def apply_kill_switch(ctx: ConsoleContext, name: str, mode: str, reason: str, principal: Principal) -> Switch:
    """Sets (or clears: mode off) a configured pipeline's kill switch, audited as the caller in
    the same transaction; this process acts on it at its next batch. The API's PUT and the
    console's form both come here."""
    from gateway.killswitch_cli import audited_flip

    reason = reason.strip()

    def flip() -> Switch:
        sw = ctx.state.set_kill_switch(name, mode, reason, principal.identity,
                                       on_change=audited_flip(ctx.state, principal.identity, reason))
        return Switch(mode=sw.mode, reason=sw.reason, set_by=sw.set_by, set_at=sw.set_at)

    switch = await asyncio.to_thread(flip)
    live = ctx.pipelines.get(name)
    if live is not None and live.kill_switch is not None:
        live.kill_switch.invalidate()  # this process acts on it at its next batch, not after its cache expires
    return switch


def _include_areas() -> None:
    from gateway.console import api_review, api_runs

    for area in (api_runs, api_review):
        router.include_router(area.router)


_include_areas()
