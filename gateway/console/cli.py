"""`lgw console`: the admin API and console alone, for a state store many replicas share;
`lgw console token new|list|revoke`: API tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gateway.console.config import ROLES
from gateway.exit_codes import EXIT_OK
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def add_parser(sub: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:
    con = sub.add_parser("console", help="serve the admin API and console alone (a shared state store); "
                                         "manage API tokens")
    con.add_argument("--config", metavar="gateway.yaml", help="pipelines and the state store (default: embedded)")
    con.add_argument("--address", metavar="HOST:PORT", default=None,
                     help="where to listen (default: LGW_OPS_ADDRESS, ops.address, 127.0.0.1:9464)")
    csub = con.add_subparsers(dest="console_command", parser_class=parser_class)
    tok = csub.add_parser("token", help="API tokens: new (printed once), list, revoke")
    tsub = tok.add_subparsers(dest="token_command", required=True, parser_class=parser_class)
    new = tsub.add_parser("new", help="add a token to the tokens file (or, with --api, ask an admin's API)")
    new.add_argument("--name", required=True, help="who or what holds it (audit records say token:NAME)")
    new.add_argument("--role", action="append", choices=ROLES, required=True, help="repeat for more roles")
    new.add_argument("--config", metavar="gateway.yaml")
    new.add_argument("--tokens-file", metavar="FILE", help="default: LGW_CONSOLE_TOKENS_FILE, console.tokens_file, "
                                                           "the data directory")
    _api_options(new)
    lst = tsub.add_parser("list", help="tokens of the file and of the state store (never the tokens)")
    lst.add_argument("--config", metavar="gateway.yaml")
    lst.add_argument("--tokens-file", metavar="FILE")
    lst.add_argument("--json", action="store_true")
    rev = tsub.add_parser("revoke", help="revoke a token an admin made through the API (file tokens: edit the file)")
    rev.add_argument("name")
    rev.add_argument("--config", metavar="gateway.yaml")
    _api_options(rev)


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL", help="call a running gateway's admin API instead of the files and store")
    p.add_argument("--token-file", metavar="FILE", help="with --api: a file holding the caller's bearer token")


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    if args.console_command is None:
        return serve(args)
    if args.token_command == "new":
        return _new(args, out)
    if args.token_command == "list":
        return _list(args, out)
    return _revoke(args, out)


def _tokens_path(args: argparse.Namespace) -> tuple[GatewayConfig, Path]:
    from gateway.config import load_config
    from gateway.console.auth import tokens_file_path

    cfg = load_config(args.config)
    path = Path(args.tokens_file) if getattr(args, "tokens_file", None) else tokens_file_path(cfg.console,
                                                                                              cfg.base_dir)
    return cfg, path


def _new(args: argparse.Namespace, out: IO[str]) -> int:
    if args.api:
        from gateway.console.client import ApiClient

        body = ApiClient.from_args(args).post("/api/v1/tokens", {"name": args.name, "roles": args.role})
        print(body["token"], file=out)
        print(f"lgw: token {args.name} ({', '.join(args.role)}) made by the API's state store; shown once",
              file=sys.stderr)
        return EXIT_OK
    from gateway.console.auth import add_to_tokens_file

    _, path = _tokens_path(args)
    token = add_to_tokens_file(path, args.name, args.role)
    print(token, file=out)
    print(f"lgw: token {args.name} ({', '.join(args.role)}) added to {path} (its SHA-256 only); shown once",
          file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace, out: IO[str]) -> int:
    from gateway.console.auth import TokenStore, read_tokens_file
    from gateway.state import StateStore

    cfg, path = _tokens_path(args)
    rows: list[dict[str, Any]] = [{"name": e.name, "roles": sorted(e.roles), "source": "file", "revoked": False}
            for e in read_tokens_file(path)]
    with StateStore(cfg.state.url) as state:
        rows += [{"name": t.name, "roles": t.roles, "source": "store", "revoked": t.revoked_at is not None,
                  "created_by": t.created_by} for t in TokenStore(state).list()]
    if args.json:
        for row in rows:
            print(json.dumps(row), file=out)
    else:
        for row in rows:
            print(f"{row['name']:<24} {','.join(row['roles']):<28} {row['source']:<6}"
                  f"{' revoked' if row['revoked'] else ''}", file=out)
    return EXIT_OK


def _revoke(args: argparse.Namespace, out: IO[str]) -> int:
    if args.api:
        from gateway.console.client import ApiClient

        ApiClient.from_args(args).delete(f"/api/v1/tokens/{args.name}")
    else:
        from gateway.config import load_config
        from gateway.console.auth import TokenStore
        from gateway.state import StateStore

        cfg = load_config(args.config)
        with StateStore(cfg.state.url) as state:
            try:
                TokenStore(state).revoke(args.name)
            except KeyError:
                raise ConfigError(f"no active token {args.name!r} in the state store (file tokens: remove "
                                  "the entry from the tokens file)") from None
    print(f"lgw: token {args.name} revoked", file=out)
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM/SIGINT."""
    from gateway.commands import setup_logging
    from gateway.config import load_config
    from gateway.console.auth import tokens_file_path
    from gateway.console.context import build_console
    from gateway.ops_http import OpsServer, ops_address
    from gateway.state import StateStore

    cfg = load_config(args.config)
    setup_logging(args)
    state = StateStore(cfg.state.url)
    console = build_console(cfg, state, process="console")
    if console is None:
        raise ConfigError(f"console: expected a tokens file at {tokens_file_path(cfg.console, cfg.base_dir)} or "
                          "`console.oidc`, found neither (`lgw console token new --name NAME --role admin` "
                          "makes one)")
    address = ops_address(cfg, args.address)
    if address is None:
        raise ConfigError("console: ops.enabled is false; expected --address HOST:PORT")

    async def main() -> int:
        ops = OpsServer(address, console=console).bind()
        ops.readiness.add_state_store(state)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await ops.start()
        print(f"lgw console: serving {ops.url}/console", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await ops.stop()
            state.close()
        return EXIT_OK

    return asyncio.run(main())


__all__ = ["add_parser", "run", "serve"]
