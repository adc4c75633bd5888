"""Admin API: the review queue and its decisions (reviewer), the audit history (operator
actions; a record's decision records), API tokens (admin). Included by gateway.console.api
under /api/v1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.console import views_review as views
from gateway.console.app import context, require
from gateway.console.auth import Principal
from gateway.console.config import ROLES
from gateway.console.context import ConsoleContext
from schemas.errors import ConfigError

router = APIRouter()
T = TypeVar("T")

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
TOKEN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,119}$"
ItemId = Annotated[int, Path(ge=1, le=2**62, description="a review item's id")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many")]
Status = Annotated[Literal["pending", "approved", "overridden", "all"], Query(description="items of this status")]
Pipeline = Annotated[str | None, Query(pattern=NAME_PATTERN, description="only this pipeline")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "not found"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "conflicts with the current state"}}
BAD: dict[int | str, dict[str, Any]] = {422: {"description": "the request cannot be carried out as given"}}


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking view in a thread; its errors as HTTP statuses."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except views.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except views.Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None


# ---------------------------------------------------------------------------- review
class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    override: Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, Field(max_length=200)] | None = None
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S", description="why; kept with the decision")


@router.get("/review", tags=["review"], summary="Review items (oldest first) and the queue's counts",
            dependencies=[Depends(require("read"))], responses=BAD)
async def review_list(pipeline: Pipeline = None, status: Status = "pending", limit: Limit = 100,
                      ctx: ConsoleContext = Depends(context)) -> views.ReviewQueueView:  # noqa: B008
    return await _call(views.review_queue, ctx, pipeline, status, limit)


@router.get("/review/{item_id}", tags=["review"], summary="One review item: the record (pii masked), its "
            "provenance and decision", dependencies=[Depends(require("read"))], responses={**NOT_FOUND, **BAD})
async def review_get(item_id: ItemId, ctx: ConsoleContext = Depends(context)  # noqa: B008
                     ) -> views.ReviewItemView:
    return await _call(views.review_item, ctx, item_id)


@router.post("/review/{item_id}/decision", tags=["review"], summary="Approve an item's score or override it; "
             "the correction is published through the pipeline's sink",
             responses={**NOT_FOUND, **CONFLICT, **BAD})
async def review_decide(body: DecisionRequest, item_id: ItemId,
                        principal: Principal = Depends(require("review")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> views.DecisionView:  # noqa: B008
    override = None if body.approve and body.override in (None, "") else body.override
    decision = await _call(views.decide, ctx, item_id, approve=body.approve, override=override,
                           reason=body.reason, actor=principal.identity)
    return await views.publish(ctx, decision)


# ---------------------------------------------------------------------------- audit
@router.get("/audit/actions", tags=["audit"], summary="Operator actions, newest first: kill switch flips, "
            "review decisions, replays, token changes", dependencies=[Depends(require("read"))], responses=BAD)
async def audit_actions(pipeline: Pipeline = None,
                        action: Annotated[str | None, Query(pattern=r"^[a-z_.]{1,60}$",
                                                            description="actions starting with this "
                                                                        "(killswitch., review.decide, token.)")
                                          ] = None,
                        limit: Limit = 100, ctx: ConsoleContext = Depends(context)  # noqa: B008
                        ) -> list[views.ActionView]:
    return await _call(views.actions, ctx, pipeline, action, limit)


@router.get("/audit/decisions/{record_id:path}", tags=["audit"], summary="The decision records of one record "
            "(which model or rule scored it, each re-score and review), oldest first",
            dependencies=[Depends(require("read"))], responses={**NOT_FOUND, **BAD})
async def audit_decisions(record_id: Annotated[str, Path(pattern=r"^[^\x00-\x1f]{1,600}$",
                                                         description="a record id (RUN:RECORD, "
                                                                     "topic/partition/offset, pipeline/N)")],
                          ctx: ConsoleContext = Depends(context)  # noqa: B008
                          ) -> list[views.DecisionRecord]:
    return await _call(views.decisions_for, ctx, record_id)


# ---------------------------------------------------------------------------- tokens
class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOKEN_NAME, description="who or what holds it (audit records say token:NAME)")
    roles: list[Literal[ROLES]] = Field(min_length=1, max_length=4)  # type: ignore[valid-type]
    note: str = Field(default="", max_length=500)


TokenName = Annotated[str, Path(pattern=TOKEN_NAME)]


@router.get("/tokens", tags=["tokens"], summary="API tokens of the tokens file and of the state store "
            "(names and roles, never a token or its hash)", dependencies=[Depends(require("admin"))], responses=BAD)
async def tokens_list(ctx: ConsoleContext = Depends(context)) -> list[views.TokenView]:  # noqa: B008
    return await _call(views.tokens, ctx)


@router.post("/tokens", tags=["tokens"], status_code=201, summary="A new API token, kept hashed in the state "
             "store; the token is in this response only", responses={**CONFLICT, **BAD})
async def tokens_create(body: TokenRequest, principal: Principal = Depends(require("admin")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> views.NewToken:  # noqa: B008
    return await _call(views.create_token, ctx, body.name, list(body.roles), body.note, principal.identity)


@router.delete("/tokens/{name}", tags=["tokens"], status_code=204, summary="Revoke a token made through the API "
               "(a file token: edit the tokens file)", responses={**NOT_FOUND, **CONFLICT, **BAD})
async def tokens_revoke(name: TokenName, principal: Principal = Depends(require("admin")),  # noqa: B008
                        ctx: ConsoleContext = Depends(context)) -> Response:  # noqa: B008
    await _call(views.revoke_token, ctx, name, principal.identity)
    return Response(status_code=204)


__all__ = ["router"]
