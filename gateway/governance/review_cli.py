"""`lgw review list|show|decide|publish`: the human review queue (gateway.governance.review).

    lgw review list card_txn --config gateway.yaml
    lgw review show 42
    lgw review decide 42 --override 0.95 --reason "confirmed with the cardholder, INC-4711"
    lgw review decide 43 --approve --reason "known merchant"

A decision is taken by the authenticated local user, is final, and is published at once
as a correction record through the pipeline's sink (gateway.governance.review_corrections).
Should the sink be unreachable, the decision stands and `lgw review publish ID` sends
its correction again. The state store is the one the pipelines of --config use, unless
--state-url names another (as for `lgw killswitch`). A table on a terminal, JSON lines
otherwise. With `--api URL --token-file FILE`, `decide` goes through a running gateway's
admin API (a reviewer's token; the API's process publishes the correction): no database
credentials needed, and the decision names `token:NAME`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from gateway.exit_codes import EXIT_ERROR, EXIT_OK
from schemas.errors import ConfigError, InfrastructureError

if TYPE_CHECKING:
    from gateway.governance.review_queue import ReviewDecision, ReviewItem
    from gateway.state import StateStore

# gateway.governance.review.REVIEW_STATUSES: the parser, built for every command, does not
# import that module (pyarrow.compute, the expression compiler)
STATUSES = ("pending", "approved", "overridden")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `review list|show|decide|publish` on the CLI's subparsers."""
    rv = sub.add_parser("review", help="records held for a person's decision: list, show, decide")
    rsub = rv.add_subparsers(dest="review_command", required=True, parser_class=type(rv))
    ls = rsub.add_parser("list", help="review items, oldest first")
    ls.add_argument("pipeline", nargs="?", default=None, help="only this pipeline")
    ls.add_argument("--status", default="pending", choices=[*STATUSES, "all"])
    ls.add_argument("--limit", type=int, default=100, metavar="N")
    sh = rsub.add_parser("show", help="one item: the record, its provenance, the decision")
    sh.add_argument("id", type=int)
    de = rsub.add_parser("decide", help="approve an item's score or override it; publishes the correction")
    de.add_argument("id", type=int)
    how = de.add_mutually_exclusive_group(required=True)
    how.add_argument("--approve", action="store_true", help="the score stands")
    how.add_argument("--override", metavar="VALUE", help="the score is replaced by VALUE (checked against the "
                                                        "contract's output: type, min, max)")
    de.add_argument("--reason", required=True, metavar="TEXT", help="why (required; kept with the decision)")
    de.add_argument("--api", metavar="URL", help="decide through a running gateway's admin API (no database "
                                                 "credentials needed; the API publishes the correction)")
    de.add_argument("--token-file", metavar="FILE", help="with --api: a file holding a reviewer's bearer token")
    pb = rsub.add_parser("publish", help="publish a decided item's correction again (after a sink failure)")
    pb.add_argument("id", type=int)
    for p in (ls, sh, de, pb):
        p.add_argument("--config", default=None, metavar="gateway.yaml",
                       help="the pipelines (their sinks and contracts) and their state store "
                            "(default: the embedded defaults')")
        p.add_argument("--state-url", default=None, metavar="URL",
                       help="this state store instead (default: the config's, $LGW_STATE_URL, else SQLite beside "
                            "the config or in the data directory)")
    return rv


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    commands = {"list": _list, "show": _show, "decide": _decide, "publish": _publish}
    try:
        return commands[args.review_command](args, out)
    except (ConfigError, InfrastructureError) as exc:
        print(f"lgw: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _config(args: argparse.Namespace) -> Any:
    from gateway.config import load_config

    return load_config(getattr(args, "config", None))


def _store(args: argparse.Namespace, cfg: Any) -> StateStore:
    from gateway.state import StateStore

    return StateStore(getattr(args, "state_url", None) or cfg.state.url)


def _list(args: argparse.Namespace, out: IO[str]) -> int:
    from gateway.governance.review_queue import ReviewQueue

    cfg = _config(args)
    with _store(args, cfg) as store:
        items = ReviewQueue(store).list(args.pipeline, status=args.status, limit=args.limit)
    if _is_tty(out):
        _print_items(items, out)
    else:
        for item in items:
            out.write(json.dumps(_summary(item)) + "\n")
    return EXIT_OK


def _show(args: argparse.Namespace, out: IO[str]) -> int:
    from gateway.governance.review_queue import ReviewQueue

    cfg = _config(args)
    with _store(args, cfg) as store:
        item = ReviewQueue(store).get(args.id)
    if _is_tty(out):
        _print_item(item, out)
    else:
        out.write(json.dumps(item.to_json()) + "\n")
    return EXIT_OK


def _decide(args: argparse.Namespace, out: IO[str]) -> int:
    if getattr(args, "api", None):
        return _decide_through_api(args, out)
    cfg = _config(args)
    with _store(args, cfg) as store:
        decision = decide_item(cfg, store, args.id, approve=bool(args.approve), override=args.override,
                               reason=args.reason, config_name=args.config)
        return _send(cfg, store, decision, out)


def decide_item(cfg: Any, store: StateStore, item_id: int, *, approve: bool, override: Any, reason: str,
                actor: str | None = None, config_name: str | None = None) -> ReviewDecision:
    """Decides an item, its override checked against the judged output of the pipeline's
    contract, recorded as the operator action `review.decide` (the CLI and the API)."""
    from gateway.contract_scoring import load_scoring_contract
    from gateway.governance.review import ReviewError, score_output
    from gateway.governance.review_queue import ReviewQueue
    from gateway.outputs import outputs_from_contract

    queue = ReviewQueue(store)
    item = queue.get(item_id)
    pipe = cfg.pipelines.get(item.pipeline)
    if pipe is None:
        raise ReviewError(f"review item {item.id} belongs to pipeline {item.pipeline!r}, which "
                          f"{config_name or 'the embedded defaults'} does not define (pipelines: "
                          f"{', '.join(cfg.pipelines) or 'none'}): pass the --config that runs it")
    outputs = outputs_from_contract(load_scoring_contract(cfg.resolve(pipe.contract)))
    if item.score_name is not None and item.score_name in outputs:
        spec = outputs[item.score_name]
    elif pipe.review is not None:
        spec = score_output(pipe.review, outputs)
    else:
        spec = next(iter(outputs.values()))
    return queue.decide(item.id, approve=approve, override=override, reason=reason, actor=actor, spec=spec,
                        on_decided=audited_decision(store))


def _decide_through_api(args: argparse.Namespace, out: IO[str]) -> int:
    from gateway.console.client import ApiClient

    body = ApiClient.from_args(args).post(f"/api/v1/review/{args.id}/decision", {
        "approve": bool(args.approve), "override": args.override, "reason": args.reason})
    if _is_tty(out):
        out.write(f"review item {body['id']}: {body['status']} by {body['decided_by']}, {body['score_name']} "
                  f"{body['final_score']}; correction: {body.get('correction') or body.get('correction_error')}\n")
    else:
        out.write(json.dumps(body) + "\n")
    if body.get("correction") is None:
        print(f"lgw: error: review item {body['id']}: {body.get('correction_error')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def audited_decision(store: StateStore) -> Callable[[ReviewDecision], None]:
    """The `on_decided` that records a decision as the operator action `review.decide`
    (who, when, the score before and after, why) in the state store's audit trail."""
    from gateway.governance.audit_model import OperatorAction
    from gateway.governance.audit_sql import ActionLog
    from gateway.governance.audit_tables import ensure_tables

    ensure_tables(store)
    actions = ActionLog(store)

    def record(decision: ReviewDecision) -> None:
        item = decision.item
        actions.append(OperatorAction(at=decision.decided_at, actor=decision.actor, action="review.decide",
                                      pipeline=item.pipeline, target=item.record_id,
                                      old=None if item.score is None else str(item.score),
                                      new=f"{decision.status}:{decision.final_score}", reason=decision.reason))

    return record


def _publish(args: argparse.Namespace, out: IO[str]) -> int:
    from gateway.governance.review_queue import ReviewQueue

    cfg = _config(args)
    with _store(args, cfg) as store:
        decision = ReviewQueue(store).decision(args.id)
        return _send(cfg, store, decision, out)


def _send(cfg: Any, store: StateStore, decision: ReviewDecision, out: IO[str]) -> int:
    from gateway.governance.review_corrections import publish_corrections

    try:
        written = asyncio.run(publish_corrections(cfg, decision.item.pipeline, [decision], state=store))
    except (ConfigError, InfrastructureError, OSError) as exc:
        print(f"lgw: error: review item {decision.item.id} is {decision.status} (the decision is stored), but its "
              f"correction was not published: {exc}; send it with `lgw review publish {decision.item.id}`",
              file=sys.stderr)
        return EXIT_ERROR
    where = written.get("path") or written_to(written)
    if _is_tty(out):
        final = decision.final_score
        out.write(f"review item {decision.item.id}: {decision.status} by {decision.actor}, {decision.item.score_name} "
                  f"{final}; correction published to {where}\n")
    else:
        out.write(json.dumps({**decision.to_json(), "correction": where}) + "\n")
    return EXIT_OK


def written_to(written: dict[str, Any]) -> str:
    for key in ("topic", "target", "exchange", "name"):
        if written.get(key):
            return f"{written.get('format', '')}:{written[key]}".lstrip(":")
    return json.dumps(written)


def _is_tty(out: IO[str]) -> bool:
    return hasattr(out, "isatty") and out.isatty()


def _summary(item: ReviewItem) -> dict[str, Any]:
    doc = item.to_json()
    return {k: doc[k] for k in ("id", "pipeline", "run", "record_id", "status", "why", "score_name", "score",
                                "scored_by", "created_at", "decided_by", "decided_at", "decision",
                                "override_value", "decision_reason")}


def _print_items(items: list[ReviewItem], out: IO[str]) -> None:
    if not items:
        out.write("no review items\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("id", "pipeline", "record", "why", "score", "scored by", "status", "queued (UTC)", "decided by")
    style = {"pending": "yellow", "approved": "green", "overridden": "cyan"}
    for i in items:
        score = f"{i.score:.4f}" if i.score is not None else "-"
        table.add_row(str(i.id), escape(i.pipeline), escape(i.record_id), i.why, score, escape(i.scored_by or "-"),
                      f"[{style.get(i.status, 'white')}]{i.status}[/]", i.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      escape(i.decided_by or "-"))
    Console(file=out).print(table)


def _print_item(item: ReviewItem, out: IO[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("field", "value", title=f"review item {item.id} ({item.status})", show_header=False)
    doc = item.to_json()
    for key, value in doc.items():
        if key in ("data", "provenance"):
            continue
        table.add_row(key, escape("-" if value is None else str(value)))
    for section in ("provenance", "data"):
        for key, value in doc[section].items():
            table.add_row(f"{section}.{key}", escape("null" if value is None else str(value)))
    Console(file=out).print(table)


__all__ = ["add_parser", "audited_decision", "decide_item", "run"]
