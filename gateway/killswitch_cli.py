"""`lgw killswitch set|status|history`: flip a pipeline's kill switch in the shared state
store; every replica picks the flip up within its watcher's TTL, without a restart.

    lgw killswitch set card_txn --mode force_fallback --reason "model drift, INC-4711"
    lgw killswitch status --config gateway.yaml
    lgw killswitch history card_txn --limit 20
    lgw killswitch clear card_txn --reason "model fixed" --api https://gw:9464 --token-file ~/.lgw-token

Every flip needs a reason and is recorded as the operator action `killswitch.set` (old
mode, new mode, who, why) in the audit log, in the same transaction as the switch. Who
is the kernel's uid of the process (gateway.governance.identity), not `$LOGNAME`.

With `--api URL --token-file FILE`, `set` and `clear` go through a running gateway's
admin API (an operator's token): no database credentials, and the audit names `token:NAME`.

The state store is the one the pipelines of --config use (the same rule as every
command: its `state.url`, `LGW_STATE_URL`, else SQLite beside the config or, without
one, in the data directory), unless --state-url names another.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from sqlalchemy.engine import Connection

from gateway.exit_codes import EXIT_ERROR, EXIT_OK
from gateway.governance.audit_model import OperatorAction
from gateway.governance.identity import operator_identity
from gateway.state import KILL_SWITCH_MODES, KillSwitch, StateStore
from schemas.errors import ConfigError, InfrastructureError


def default_state_url(config: str | None = None) -> str:
    """The state store URL the pipelines of `config` (None: the embedded defaults) use."""
    from gateway.config import load_config

    return load_config(config).state.url


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `killswitch set|status|history` on the CLI's subparsers."""
    ks = sub.add_parser("killswitch", help="force fallback scoring or pause a pipeline, on every replica")
    ksub = ks.add_subparsers(dest="killswitch_command", required=True, parser_class=type(ks))
    st = ksub.add_parser("set", help="set a pipeline's kill switch")
    st.add_argument("pipeline")
    st.add_argument("--mode", required=True, choices=KILL_SWITCH_MODES)
    st.add_argument("--reason", required=True, metavar="TEXT",
                    help="why (required: kept in the audit log, shown in status, history and logs)")
    add_store_options(st, refuse=True)
    cl = ksub.add_parser("clear", help="clear a pipeline's kill switch (mode off)")
    cl.add_argument("pipeline")
    cl.add_argument("--reason", required=True, metavar="TEXT", help="why (required: kept in the audit log)")
    add_store_options(cl, refuse=True)
    for p in (st, cl):
        p.add_argument("--api", metavar="URL", default=None,
                       help="go through a running gateway's admin API (no database credentials needed)")
        p.add_argument("--token-file", metavar="FILE", default=None,
                       help="with --api: a file (mode 0600) holding an operator's bearer token")
    ss = ksub.add_parser("status", help="show every pipeline's kill switch")
    ss.add_argument("pipeline", nargs="?", default=None, help="only this pipeline")
    add_store_options(ss)
    add_history_parser(ksub)
    return ks


def add_history_parser(ksub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`killswitch history [PIPELINE] [--limit N]`: who flipped which switch, when and why."""
    sh = ksub.add_parser("history", help="every flip of the kill switches, newest first: who, when, why")
    sh.add_argument("pipeline", nargs="?", default=None, help="only this pipeline")
    sh.add_argument("--limit", type=int, default=50, metavar="N", help="at most N flips (default 50)")
    add_store_options(sh)
    return sh


def add_store_options(p: argparse.ArgumentParser, *, refuse: bool = False) -> None:
    """--config and --state-url: which state store a killswitch command uses."""
    p.add_argument("--config", default=None, metavar="gateway.yaml",
                   help=("refuse a pipeline this config does not define; " if refuse else "")
                   + "use the state store its pipelines use (default: the embedded defaults')")
    p.add_argument("--state-url", default=None, metavar="URL",
                   help="this state store instead (default: the config's, $LGW_STATE_URL, else SQLite beside "
                        "the config or in the data directory)")


def set_command(args: argparse.Namespace, out: IO[str] | None = None, *, actor: str | None = None) -> int:
    """`actor`: an identity the caller authenticated (default: this process's uid)."""
    out = out or sys.stdout
    try:
        reason = (getattr(args, "reason", None) or "").strip()
        if not reason:
            raise ConfigError("killswitch set needs --reason TEXT: say why (an incident, a ticket); "
                              "it is kept in the audit log")
        if getattr(args, "api", None):
            return _set_through_api(args, reason, out)
        state_url = _check_pipeline(args)
        who = operator_identity(actor)
        with StateStore(getattr(args, "state_url", None) or state_url) as store:
            switch = store.set_kill_switch(args.pipeline, args.mode, reason, who,
                                           on_change=audited_flip(store, who, reason))
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    if _is_tty(out):
        out.write(f"{switch.pipeline}: kill switch {switch.mode} (replicas follow within their refresh interval)\n")
    else:
        out.write(json.dumps(_as_json(switch)) + "\n")
    return EXIT_OK


def clear_command(args: argparse.Namespace, out: IO[str] | None = None, *, actor: str | None = None) -> int:
    """`killswitch clear PIPELINE --reason`: mode off (score with the model again)."""
    args.mode = "off"
    return set_command(args, out, actor=actor)


def _set_through_api(args: argparse.Namespace, reason: str, out: IO[str]) -> int:
    """PUT /api/v1/pipelines/{name}/kill-switch: the API's process checks the pipeline,
    flips and audits it with the token's identity; no state store is opened here."""
    from gateway.console.client import ApiClient, path_part

    body = ApiClient.from_args(args).put(f"/api/v1/pipelines/{path_part(args.pipeline)}/kill-switch",
                                         {"mode": args.mode, "reason": reason})
    if _is_tty(out):
        out.write(f"{args.pipeline}: kill switch {body['mode']} by {body['set_by']} (replicas follow within "
                  "their refresh interval)\n")
    else:
        out.write(json.dumps({"pipeline": args.pipeline, **body}) + "\n")
    return EXIT_OK


def status_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    only = getattr(args, "pipeline", None)
    try:
        with StateStore(getattr(args, "state_url", None) or default_state_url(getattr(args, "config", None))) \
                as store:
            switches = [store.get_kill_switch(only)] if only else store.list_kill_switches()
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    if _is_tty(out):
        _print_table(switches, out)
    else:
        for switch in switches:
            out.write(json.dumps(_as_json(switch)) + "\n")
    return EXIT_OK


def history_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from gateway.governance.audit_sql import ActionLog

    out = out or sys.stdout
    try:
        if getattr(args, "limit", 50) < 1:
            raise ConfigError(f"--limit: expected at least 1, found {args.limit}")
        with StateStore(getattr(args, "state_url", None) or default_state_url(getattr(args, "config", None))) \
                as store:
            flips = ActionLog(store).actions(getattr(args, "pipeline", None), "killswitch.",
                                             limit=getattr(args, "limit", 50))
    except (ConfigError, InfrastructureError) as exc:
        return _fail(exc)
    if _is_tty(out):
        _print_history(flips, out)
    else:
        for flip in flips:
            out.write(json.dumps(flip.as_json()) + "\n")
    return EXIT_OK


def audited_flip(store: StateStore, actor: str, reason: str) -> Callable[[Connection, KillSwitch, KillSwitch], None]:
    """The `on_change` that records a flip as the operator action `killswitch.set`, in the
    flip's own transaction (both stand or neither)."""
    from gateway.governance.audit_sql import ActionLog
    from gateway.governance.audit_tables import ensure_tables

    ensure_tables(store)
    actions = ActionLog(store)

    def record(conn: Connection, old: KillSwitch, new: KillSwitch) -> None:
        actions.append_in(conn, OperatorAction(at=new.set_at or datetime.now(UTC), actor=actor,
                                               action="killswitch.set", pipeline=new.pipeline, old=old.mode,
                                               new=new.mode, reason=reason))

    return record


def _check_pipeline(args: argparse.Namespace) -> str:
    """With --config, the pipeline must be one of its pipelines (a typo would switch
    nothing off). Without one, a name the embedded defaults do not know is stored all the
    same (`lgw score` keys the switch by the contract's name), with a warning. Returns the
    state store URL of the config (or of the embedded defaults)."""
    from gateway.config import load_config

    config = getattr(args, "config", None)
    cfg = load_config(config)
    names = ", ".join(cfg.pipelines) or "none"
    if args.pipeline not in cfg.pipelines:
        if config is not None:
            raise ConfigError(f"pipeline {args.pipeline!r} is not in {config}; its pipelines: {names}")
        print(f"lgw: warning: no configured pipeline is named {args.pipeline!r} (embedded defaults: {names}; "
              "pass --config to check against yours); stored for whatever runs under that name, such as "
              "`lgw score` with a contract of that name", file=sys.stderr)
    return cfg.state.url


def _is_tty(out: IO[str]) -> bool:
    return hasattr(out, "isatty") and out.isatty()


def _fail(exc: Exception) -> int:
    print(f"lgw: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _as_json(switch: KillSwitch) -> dict[str, str | None]:
    return {
        "pipeline": switch.pipeline,
        "mode": switch.mode,
        "reason": switch.reason,
        "set_by": switch.set_by,
        "set_at": switch.set_at.isoformat() if switch.set_at else None,
    }


def _print_table(switches: list[KillSwitch], out: IO[str]) -> None:
    if not switches:
        out.write("no kill switch set: every pipeline is off (scoring normally)\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("pipeline", "mode", "reason", "set by", "set at (UTC)")
    style = {"off": "green", "force_fallback": "yellow", "pause": "red"}
    for s in switches:
        when = s.set_at.strftime("%Y-%m-%d %H:%M:%S") if s.set_at else "-"
        table.add_row(escape(s.pipeline), f"[{style[s.mode]}]{s.mode}[/]", escape(s.reason), escape(s.set_by), when)
    Console(file=out).print(table)


def _print_history(flips: list[OperatorAction], out: IO[str]) -> None:
    if not flips:
        out.write("no kill switch was ever set here\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("at (UTC)", "pipeline", "from", "to", "by", "reason")
    for f in flips:
        table.add_row(f.at.strftime("%Y-%m-%d %H:%M:%S"), escape(f.pipeline), escape(f.old or "-"),
                      escape(f.new or "-"), escape(f.actor), escape(f.reason))
    Console(file=out).print(table)


__all__ = ["add_history_parser", "add_parser", "add_store_options", "clear_command", "default_state_url",
           "history_command", "set_command", "status_command"]
