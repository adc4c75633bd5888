"""`lgw profile build|show`: make and read the reference profile drift is measured against.

    lgw profile build --contract card_txn.yaml --input REFERENCE.DAT --output card_txn.profile.json
    lgw profile build --config gateway.yaml --pipeline card_txn --input REFERENCE.DAT

With `--pipeline`, the records are scored by that pipeline's model (and its contract is
the pipeline's); with `--contract` alone, by the contract's model on the embedded
defaults, as `lgw score` does. Point the pipeline's `drift.reference` at the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from gateway.exit_codes import EXIT_OK
from schemas.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    pr = sub.add_parser("profile", help="reference profiles for drift: build one from a reference input, show one")
    psub = pr.add_subparsers(dest="profile_command", required=True, parser_class=type(pr))
    build = psub.add_parser("build", help="decode, score and profile a reference input")
    build.add_argument("--input", required=True, metavar="FILE", help="the reference records (a file the "
                                                                       "contract reads)")
    build.add_argument("--contract", metavar="FILE", help="the records' contract (default: the pipeline's)")
    build.add_argument("--config", metavar="gateway.yaml", help="models and pipelines (default: embedded)")
    build.add_argument("--pipeline", metavar="NAME", help="score with this pipeline's model and contract")
    build.add_argument("--output", "-o", metavar="FILE",
                       help="where to write the profile (default: INPUT.profile.json beside the input)")
    build.add_argument("--max-records", type=int, default=1_000_000, metavar="N",
                       help="records kept for the quantiles; a larger input is sampled evenly (default 1,000,000)")
    show = psub.add_parser("show", help="print a stored profile's columns")
    show.add_argument("profile", metavar="FILE")
    return pr


def command(args: argparse.Namespace) -> int:
    if args.profile_command == "show":
        return _show(args)
    return _build(args)


def _build(args: argparse.Namespace) -> int:
    from gateway.assembly import build_pipeline
    from gateway.config import load_config
    from gateway.contract_scoring import load_scoring_contract
    from gateway.governance.profile_build import build_reference, save_profile

    cfg = load_config(args.config)
    source = Path(args.input)
    if not source.is_file():
        raise ConfigError(f"--input {source} is not a file")
    if args.pipeline:
        pipe = cfg.pipelines.get(args.pipeline)
        if pipe is None:
            raise ConfigError(f"no pipeline {args.pipeline!r} in the config (pipelines: "
                              f"{', '.join(cfg.pipelines) or 'none'})")
        contract = load_scoring_contract(args.contract or cfg.resolve(pipe.contract))
        pipeline = build_pipeline(args.pipeline, contract, cfg, model_name=pipe.model, pii=pipe.pii)
    else:
        if not args.contract:
            raise ConfigError("profile build needs --contract, or --pipeline with its config")
        contract = load_scoring_contract(args.contract)
        pipeline = build_pipeline(contract.name, contract, cfg, model_name=(contract.config.model or {}).get("name"))
    output = Path(args.output) if args.output else source.with_name(source.name + ".profile.json")

    async def run() -> None:
        try:
            profile = await build_reference(pipeline, source, max_records=args.max_records)
        finally:
            if pipeline.model is not None:
                await pipeline.model.close()
        save_profile(profile, output)
        print(json.dumps({"profile": str(output), "records": profile.records, "columns": len(profile.columns),
                          "scored_by": dict(pipeline.stats.scored_by)}))

    asyncio.run(run())
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from gateway.governance.profile_build import load_profile

    profile = load_profile(Path(args.profile))
    out = sys.stdout
    for name, col in profile.columns.items():
        line = {"column": name, "kind": col.kind, "null_rate": round(col.null_rate, 6)}
        if col.kind == "numeric":
            line.update(min=col.min, max=col.max, bins=len(col.shares))
        else:
            line["categories"] = None if col.shares is None else len(col.shares)
        out.write(json.dumps(line) + "\n")
    return EXIT_OK


__all__ = ["add_parser", "command"]
