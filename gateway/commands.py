"""The work behind each `lgw` subcommand (argument parsing lives in `gateway.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from gateway.cli import EXIT_ERROR, EXIT_OK, EXIT_REJECTS, open_output, write_rejects
from schemas.contract import Contract, RecordSpec, load_contract
from schemas.copybook import load_copybook
from schemas.errors import ConfigError


def resolve_spec(args: argparse.Namespace) -> tuple[Contract | None, RecordSpec]:
    """The record spec from --contract or --copybook, with command-line options on top."""
    overrides = {
        "encoding": args.encoding,
        "record_format": args.record_format,
        "record_length": args.record_length,
        "rdw_endian": args.rdw_endian,
        "rdw_includes_header": None if args.rdw_includes_header is None else args.rdw_includes_header == "yes",
        "trim": args.trim,
        "float_format": args.float_format,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.contract:
        contract = load_contract(args.contract)
        return contract, contract.record_spec(**overrides)
    layout = load_copybook(args.copybook)
    return None, RecordSpec.from_layout(layout, **overrides)


def decode(args: argparse.Namespace) -> int:
    from schemas.jsonl import write_jsonl
    from schemas.stream import decode_file

    contract, spec = resolve_spec(args)
    if not Path(args.input).is_file():
        raise ConfigError(f"input {args.input} is not a file")
    rejected = 0
    with ExitStack() as stack:
        out = open_output(args.output)
        if args.output:
            stack.enter_context(out)
        rej_out = sys.stderr
        if args.rejects:
            rej_out = stack.enter_context(open(args.rejects, "w", encoding="utf-8"))
        for dc in spec.decode_file(args.input, chunk_records=args.chunk_records) if contract is None else \
                contract.decode_file(args.input, spec, chunk_records=args.chunk_records):
            write_jsonl(dc.table, out)
            if dc.rejects:
                rejected += len({r.record for r in dc.rejects})
                write_rejects(dc.rejects, rej_out)
        out.flush()
        for line in (contract.file_report() if contract is not None else []):
            print(line, file=sys.stderr)
            if contract is not None and contract.file_rejected:
                rejected += 1
    _ = decode_file
    return EXIT_REJECTS if rejected else EXIT_OK


def encode(args: argparse.Namespace) -> int:
    from schemas.encode import encode_jsonl

    _contract, spec = resolve_spec(args)
    src = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    with src, open(args.output, "wb") as out:
        count, errors = encode_jsonl(src, out, spec, newline=args.newline)
    for e in errors:
        print(json.dumps(e, ensure_ascii=False), file=sys.stderr)
    print(json.dumps({"records": count, "rejected": len(errors)}), file=sys.stderr)
    return EXIT_REJECTS if errors else EXIT_OK


def contract(args: argparse.Namespace) -> int:
    from schemas import compat, docs

    cmd = args.contract_command
    if cmd == "check":
        c = load_contract(args.file)
        docs.print_layout(c, sys.stdout)
        return EXIT_OK
    if cmd == "schema":
        c = load_contract(args.file)
        print(json.dumps(c.json_schema(), indent=2, ensure_ascii=False))
        return EXIT_OK
    if cmd == "diff":
        old, new = load_contract(args.old), load_contract(args.new)
        verdict = compat.compare(old, new)
        print(verdict.render())
        return EXIT_OK if verdict.compatible else EXIT_REJECTS
    return EXIT_ERROR


def examples(args: argparse.Namespace) -> int:
    from schemas import examples as ex

    if args.examples_command == "path":
        print(ex.contract_path(args.name))
        return EXIT_OK
    summary = ex.generate_card_file(args.output, records=args.records, encoding=args.encoding,
                                    seed=args.seed, bad_every=args.bad_every)
    print(json.dumps(summary), file=sys.stderr)
    return EXIT_OK


def score(args: argparse.Namespace) -> int:
    from gateway.config import Policy, load_config
    from gateway.score import run_score
    from gateway.state import StateStore

    contract = load_contract(args.contract)
    if not Path(args.input).is_file():
        raise ConfigError(f"input {args.input} is not a file")
    cfg = load_config(args.config)
    state = StateStore(cfg.state.url)
    summary = run_score(contract, Path(args.input), Path(args.output),
                        rejects_path=Path(args.rejects) if args.rejects else None,
                        rejects_stream=None if args.rejects else sys.stderr,
                        fmt=args.format, config=cfg, force_fallback=args.force_fallback,
                        policy=Policy(args.policy), shadow=args.shadow, chunk_records=args.chunk_records,
                        state=state)
    print(json.dumps(summary))
    return EXIT_REJECTS if summary["rejected"] or summary.get("file_rejected") else EXIT_OK


def killswitch(args: argparse.Namespace) -> int:
    from gateway import killswitch_cli

    if args.killswitch_command == "set":
        return killswitch_cli.set_command(args)
    return killswitch_cli.status_command(args)
