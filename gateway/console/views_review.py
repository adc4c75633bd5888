"""What the review, audit and tokens endpoints and pages show, as pydantic models: the
API returns them, the pages render them. Blocking (store calls): run them in a thread.

PII: a review item's `data` is stored as the pipeline's PII policy left it (masked,
hashed or dropped before it was queued, gateway.governance.run). The view checks that
again against the pipeline's contract: a pii field whose value does not look treated (no
mask character, not a hash) is masked here, and a dropped one is left out, so a queue
filled by something that forgot the policy still shows nothing in clear. Decision
records (the audit log) hold no record value by construction (DECISION_SCHEMA: ids,
hashes, scores, provenance); only the model's fields are returned.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.console.context import ConsoleContext
    from gateway.governance.review_queue import ReviewDecision, ReviewItem

Status = Literal["pending", "approved", "overridden", "all"]
_HASHED = re.compile(r"^[0-9a-f]{64}$")


class NotFound(LookupError):
    """404: no such item, record or token."""


class Conflict(ConfigError):
    """409: the item is already decided, the token exists, is a file token, ..."""


# ---------------------------------------------------------------------------- review
class ReviewItemView(BaseModel):
    id: int
    pipeline: str
    run: str
    record_id: str
    status: str
    why: str
    score_name: str | None = None
    score: float | None = None
    scored_by: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision: str | None = None
    override_value: float | bool | str | None = None
    decision_reason: str | None = None
    data: dict[str, Any]  # the record as queued, pii fields masked/hashed/dropped
    provenance: dict[str, Any]


class ReviewQueueView(BaseModel):
    items: list[ReviewItemView]
    counts: dict[str, dict[str, int]]  # {pipeline: {status: items}}


class DecisionView(BaseModel):
    id: int
    pipeline: str
    record_id: str
    status: str
    score_name: str | None = None
    original_score: float | None = None
    final_score: float | bool | str | None = None
    reason: str
    decided_by: str
    decided_at: datetime
    correction: str | None = None  # where the correction record went
    correction_error: str | None = None  # why it did not (the decision stands; `lgw review publish ID`)


@functools.lru_cache(maxsize=64)
def _pii_actions(contract_path: str, overrides: tuple[tuple[str, str], ...]) -> dict[str, str]:
    from gateway.contract_scoring import load_scoring_contract
    from gateway.governance.pii import policy_for

    policy = policy_for(load_scoring_contract(contract_path), dict(overrides), key=b"-")
    return {column: action for column, action in policy.declared.items() if action != "clear"}


def pii_actions(cfg: GatewayConfig, pipeline: str) -> dict[str, str]:
    """{column: mask|hash|drop} of a pipeline's outputs ({} for a pipeline this config
    does not define: its contract is unknown here)."""
    pipe = cfg.pipelines.get(pipeline)
    if pipe is None:
        return {}
    return _pii_actions(str(cfg.resolve(pipe.contract)), tuple(sorted(pipe.pii.items())))


def masked_data(data: dict[str, Any], actions: dict[str, str]) -> dict[str, Any]:
    """`data` with every pii field as the policy leaves it, whatever was stored."""
    from gateway.governance.pii import MASK_CHAR, mask_values

    if not actions:
        return data
    out = dict(data)
    for column, action in actions.items():
        if column not in out or out[column] is None:
            continue
        value = out[column]
        treated = isinstance(value, str) and (
            (action == "hash" and _HASHED.match(value) is not None) or (action == "mask" and MASK_CHAR in value))
        if action == "drop":
            del out[column]
        elif not treated:
            out[column] = mask_values(pa.array([str(value)])).to_pylist()[0]
    return out


def item_view(cfg: GatewayConfig, item: ReviewItem) -> ReviewItemView:
    doc = item.to_json()
    doc["data"] = masked_data(item.data, pii_actions(cfg, item.pipeline))
    return ReviewItemView.model_validate(doc)


def review_queue(ctx: ConsoleContext, pipeline: str | None, status: str, limit: int) -> ReviewQueueView:
    from gateway.governance.review_queue import ReviewQueue

    queue = ReviewQueue(ctx.state)
    items = queue.list(pipeline, status=status, limit=limit)
    return ReviewQueueView(items=[item_view(ctx.cfg, i) for i in items], counts=queue.counts(pipeline))


def review_item(ctx: ConsoleContext, item_id: int) -> ReviewItemView:
    from gateway.governance.review import ReviewError
    from gateway.governance.review_queue import ReviewQueue

    try:
        return item_view(ctx.cfg, ReviewQueue(ctx.state).get(item_id))
    except ReviewError:
        raise NotFound(f"no review item {item_id}") from None


def decide(ctx: ConsoleContext, item_id: int, *, approve: bool, override: Any, reason: str,
           actor: str) -> ReviewDecision:
    """Decides (audited as `review.decide` by `actor`); NotFound, Conflict (decided
    already), ConfigError (a bad override, a pipeline this config does not run)."""
    from gateway.governance.review import PENDING, ReviewError
    from gateway.governance.review_cli import decide_item
    from gateway.governance.review_queue import ReviewQueue

    queue = ReviewQueue(ctx.state)
    try:
        item = queue.get(item_id)
    except ReviewError:
        raise NotFound(f"no review item {item_id}") from None
    if item.status != PENDING:
        raise Conflict(f"review item {item_id} is already {item.status} (by {item.decided_by}); a decision is final")
    try:
        return decide_item(ctx.cfg, ctx.state, item_id, approve=approve, override=override, reason=reason,
                           actor=actor, config_name="this process's config")
    except ReviewError as exc:
        if "is already" in str(exc):  # another reviewer was quicker
            raise Conflict(str(exc)) from None
        raise


async def publish(ctx: ConsoleContext, decision: ReviewDecision) -> DecisionView:
    """Publishes the decision's correction through the pipeline's sink, as `lgw review
    decide` does; a failure leaves the decision standing and is said in `correction_error`."""
    from gateway.governance.review_cli import written_to
    from gateway.governance.review_corrections import publish_corrections
    from schemas.errors import InfrastructureError

    where = error = None
    try:
        written = await publish_corrections(ctx.cfg, decision.item.pipeline, [decision], state=ctx.state)
        where = str(written.get("path") or written_to(written))
    except (ConfigError, InfrastructureError, OSError) as exc:
        error = (f"the decision is stored, but its correction was not published: {exc}; send it with "
                 f"`lgw review publish {decision.item.id}`")
    doc = decision.to_json()
    return DecisionView.model_validate({**doc, "correction": where, "correction_error": error})


# ---------------------------------------------------------------------------- audit
class ActionView(BaseModel):
    at: datetime
    actor: str
    action: str
    pipeline: str
    target: str | None = None
    old: str | None = None
    new: str | None = None
    reason: str


class DecisionRecord(BaseModel):
    """One decision record of the audit log: the fields of DECISION_SCHEMA, no record data."""

    model_config = ConfigDict(extra="ignore")

    run: str | None = None
    pipeline: str | None = None
    source: str | None = None
    record: int | None = None
    record_id: str | None = None
    input_hash: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    contract: str | None = None
    contract_version: int | None = None
    scored_by: str | None = None
    rule_id: str | None = None
    score: float | None = None
    reason: str | None = None
    breaker_state: str | None = None
    review: str | None = None
    decided_at: datetime | None = None


def actions(ctx: ConsoleContext, pipeline: str | None, action: str | None, limit: int) -> list[ActionView]:
    from gateway.governance.audit_sql import ActionLog

    found = ActionLog(ctx.state).actions(pipeline, action, limit=limit)
    return [ActionView.model_validate(a.model_dump()) for a in found]


def decisions_for(ctx: ConsoleContext, record_id: str) -> list[DecisionRecord]:
    from gateway.governance.audit import open_audit

    log = open_audit(ctx.cfg, state=ctx.state)
    if log is None:
        raise NotFound("the audit log is disabled (audit.enabled: false): no decision records")
    try:
        table = log.decisions_for(record_id)
    finally:
        log.close()
    keep = [c for c in table.column_names if c in DecisionRecord.model_fields]
    rows = [DecisionRecord.model_validate(r) for r in table.select(keep).to_pylist()]
    if not rows:
        raise NotFound(f"no decision records of {record_id!r}")
    return rows


def record_action(ctx: ConsoleContext, **fields: Any) -> None:
    """An operator action in the audit trail (token.create, token.revoke, ...)."""
    from gateway.governance.audit_model import OperatorAction
    from gateway.governance.audit_sql import ActionLog
    from gateway.governance.audit_tables import ensure_tables

    ensure_tables(ctx.state)
    ActionLog(ctx.state).append(OperatorAction(**fields))


# ---------------------------------------------------------------------------- tokens
class TokenView(BaseModel):
    name: str
    roles: list[str]
    source: Literal["file", "store"]
    created_by: str | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    note: str = ""


class NewToken(BaseModel):
    token: str  # shown this once; only its SHA-256 is kept
    name: str
    roles: list[str]


def tokens(ctx: ConsoleContext) -> list[TokenView]:
    from gateway.console.auth import TokenStore

    out = [TokenView(name=e.name, roles=sorted(e.roles), source="file")
           for e in sorted(ctx.auth.file.entries().values(), key=lambda e: e.name)]
    out += [TokenView(name=t.name, roles=sorted(t.roles), source="store", created_by=t.created_by,
                      created_at=t.created_at, revoked_at=t.revoked_at, note=t.note)
            for t in TokenStore(ctx.state).list()]
    return out


def create_token(ctx: ConsoleContext, name: str, roles: list[str], note: str, actor: str) -> NewToken:
    from gateway.console.auth import TokenStore

    if ctx.auth.file.has_name(name):
        raise Conflict(f"a token named {name!r} is in the tokens file; expected a new name")
    try:
        token, stored = TokenStore(ctx.state).create(name, roles, actor, note)
    except ConfigError as exc:
        if "exists already" in str(exc):
            raise Conflict(str(exc)) from None
        raise
    record_action(ctx, actor=actor, action="token.create", target=name, new=" ".join(sorted(stored.roles)),
                  reason=note.strip() or f"new API token {name}")
    return NewToken(token=token, name=stored.name, roles=sorted(stored.roles))


def revoke_token(ctx: ConsoleContext, name: str, actor: str) -> TokenView:
    from gateway.console.auth import TokenStore

    if ctx.auth.file.has_name(name):
        raise Conflict(f"token {name!r} is in the tokens file: edit the tokens file to remove it")
    store = TokenStore(ctx.state)
    try:
        if not store.active(name):  # revoked already: nothing to do, nothing to audit
            raise KeyError(name)
        t = store.revoke(name)
    except KeyError:
        raise NotFound(f"no active token {name!r}") from None
    record_action(ctx, actor=actor, action="token.revoke", target=name, old=" ".join(sorted(t.roles)),
                  reason=f"API token {name} revoked")
    return TokenView(name=t.name, roles=sorted(t.roles), source="store", created_by=t.created_by,
                     created_at=t.created_at, revoked_at=t.revoked_at, note=t.note)


__all__ = ["ActionView", "Conflict", "DecisionRecord", "DecisionView", "NewToken", "NotFound", "ReviewItemView",
           "ReviewQueueView", "TokenView", "actions", "create_token", "decide", "decisions_for", "masked_data",
           "publish", "review_item", "review_queue", "revoke_token", "tokens"]
