"""`lgw audit verify|show|prune`: check the audit log's chains, answer "who or what
decided this record, with which model, and why", and apply the retention.

    lgw audit verify [--day 2026-12-04] [--config gateway.yaml]   # 0 intact, 1 problems (one line each)
    lgw audit show --record RUN:42 [--config gateway.yaml]        # decisions + operator actions on it
    lgw audit prune --reason "retention" [--config gateway.yaml]  # days older than audit.retention_days

The log is the one `--config` (else the embedded defaults) configures: `audit:` in
gateway.yaml, its state store for operator actions. Only argparse is imported here at
start: the CLI builds its parser on every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

from gateway.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_REJECTS

if TYPE_CHECKING:
    from gateway.governance.audit import AuditLog


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `audit verify|show|prune` on the CLI's subparsers."""
    au = sub.add_parser("audit", help="verify, query and prune the audit log of decisions and operator actions")
    asub = au.add_subparsers(dest="audit_command", required=True, parser_class=type(au))
    ver = asub.add_parser("verify", help="walk every hash chain: exit 0 intact, 1 with one line per problem")
    ver.add_argument("--day", type=_day, default=None, metavar="YYYY-MM-DD", help="only this day (default: all kept)")
    show = asub.add_parser("show", help="who or what decided a record, with which model, and why")
    show.add_argument("--record", required=True, metavar="ID",
                      help="the record id (RUN:RECORD, topic/partition/offset)")
    prune = asub.add_parser("prune", help="delete the whole days older than audit.retention_days (recorded)")
    prune.add_argument("--reason", required=True, metavar="TEXT", help="why (required: kept as an operator action)")
    for p in (ver, show, prune):
        p.add_argument("--config", default=None, metavar="gateway.yaml",
                       help="the audit log and state store it configures (default: the embedded defaults')")
    return au


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    commands = {"verify": verify_command, "show": show_command, "prune": prune_command}
    return commands[args.audit_command](args, out)


def verify_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    from schemas.errors import ConfigError, InfrastructureError

    try:
        with _open(args) as log:
            report = log.verify(getattr(args, "day", None))
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    for problem in report.problems:
        out.write(problem + "\n")
    summary = (f"{len(report.days)} days, {report.batches} batches, {report.records} records, "
               f"{report.actions} operator actions")
    if report.ok:
        out.write(f"audit log intact: {summary}\n")
        return EXIT_OK
    print(f"lgw: audit log NOT intact: {len(report.problems)} problems in {summary}", file=sys.stderr)
    return EXIT_REJECTS


def show_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    from schemas.errors import ConfigError, InfrastructureError

    try:
        with _open(args) as log:
            decisions = log.decisions_for(args.record).to_pylist()
            actions = log.actions(target=args.record, limit=None)
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    rows = [{"kind": "decision", **_jsonable(d)} for d in decisions]
    rows += [{"kind": "action", **a.as_json()} for a in reversed(actions)]  # oldest first, as decisions
    if not rows:
        print(f"lgw: no decision and no operator action for record {args.record!r} in the audit log",
              file=sys.stderr)
        return EXIT_REJECTS
    if _is_tty(out):
        _print_tables(args.record, rows, out)
    else:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return EXIT_OK


def prune_command(args: argparse.Namespace, out: IO[str] | None = None, *, now: datetime | None = None) -> int:
    out = out or sys.stdout
    from schemas.errors import ConfigError, InfrastructureError

    try:
        if not (args.reason or "").strip():
            raise ConfigError("audit prune needs --reason TEXT: say why; it is kept as an operator action")
        with _open(args) as log:
            gone = log.prune(now, reason=args.reason.strip())
            days = log.config.retention_days
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    if gone:
        out.write(f"pruned {len(gone)} days ({gone[0]}..{gone[-1]}), older than {days} days\n")
    else:
        out.write(f"nothing to prune: no day is older than {days} days\n")
    return EXIT_OK


def _open(args: argparse.Namespace) -> AuditLog:
    from gateway.config import load_config
    from gateway.governance.audit import open_audit
    from schemas.errors import ConfigError

    config = getattr(args, "config", None)
    log = open_audit(load_config(config))
    if log is None:
        raise ConfigError(f"{config or 'the embedded defaults'}: audit.enabled is false: there is no audit log")
    return log


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, found {text!r}") from None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _is_tty(out: IO[str]) -> bool:
    return hasattr(out, "isatty") and out.isatty()


def _fail(exc: Exception) -> int:
    print(f"lgw: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _print_tables(record_id: str, rows: list[dict[str, Any]], out: IO[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=out)
    decisions = [r for r in rows if r["kind"] == "decision"]
    if decisions:
        table = Table("decided at (UTC)", "scored by", "model", "rule", "score", "reason", "breaker", "review",
                      "contract", "run", "source", title=f"decisions on {escape(record_id)}")
        for d in decisions:
            model = f"{d['model_name']} {d['model_version']}" if d["model_name"] else "-"
            table.add_row(*(escape(str(v)) for v in (
                d["decided_at"], d["scored_by"], model, d["rule_id"] or "-", d["score"], d["reason"] or "-",
                d["breaker_state"] or "-", d["review"] or "-", f"{d['contract']} v{d['contract_version']}",
                d["run"], f"{d['source']} #{d['record']}")))
        console.print(table)
    actions = [r for r in rows if r["kind"] == "action"]
    if actions:
        table = Table("at (UTC)", "action", "by", "from", "to", "reason",
                      title=f"operator actions on {escape(record_id)}")
        for a in actions:
            table.add_row(*(escape(str(v)) for v in (a["at"], a["action"], a["actor"], a["old"] or "-",
                                                     a["new"] or "-", a["reason"])))
        console.print(table)


__all__ = ["add_parser", "prune_command", "run", "show_command", "verify_command"]
