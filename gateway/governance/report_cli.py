"""`lgw report RUN`: a run's HTML report, written beside its manifest.

    lgw report card_txn.35eb626293c029c2 --config gateway.yaml
    lgw report drop/outbox/CARDTXN.DAT.manifest.json --output /tmp/night.html

The run is looked up in the state store (the same rule as every command: --state-url,
else the config's `state.url`, `LGW_STATE_URL`, else SQLite beside the config or in the
data directory). A done run's manifest is the one its summary names (in the outbox); a
failed run's is its `NAME.report.json` in the pipeline's failed folder. The report goes to
`<manifest name without .manifest.json / .json>.report.html` beside it unless --output
names another file, and its path is printed.

Batch runs also write their report themselves, right after their manifest
(`save_report_beside`): a report that cannot be rendered costs one warning line, never
the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.exit_codes import EXIT_OK
from gateway.governance.report_files import read_json_file, write_report
from schemas.errors import ConfigError, InfrastructureError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.runs import Run


def manifest_of_run(run_id: str, config: str | None, state_url: str | None) -> Path:
    """The manifest a finished run left (`manifest_path`), found by its id."""
    from gateway.config import load_config
    from gateway.runs import RunStore
    from gateway.state import StateStore

    cfg = load_config(config)
    with StateStore(state_url or cfg.state.url) as store:
        run = RunStore(store).get(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r} in the state store (lgw batch status lists the runs)")
    return manifest_path(cfg, run)


def manifest_path(cfg: GatewayConfig, run: Run) -> Path:
    """Where a finished run's manifest is: a done run's summary names it; a failed run's is
    NAME.report.json in its pipeline's failed folder. ConfigError saying why when it has none."""
    from gateway.config import DropFolderConfig
    from gateway.runs import DONE, FAILED

    summary = run.summary_json()
    if run.status == DONE and isinstance(summary.get("manifest"), str):
        return Path(summary["manifest"])
    if run.status == FAILED and run.final_path and run.final_path.startswith("failed/"):
        pipe = cfg.pipelines.get(run.pipeline)
        if pipe is None or not isinstance(pipe.source, DropFolderConfig):
            raise ConfigError(f"run {run.run_id} failed; its report is in the failed folder of pipeline "
                              f"{run.pipeline}, which this config does not define")
        settled = run.final_path.removeprefix("failed/")
        return pipe.source.folders(cfg.base_dir)["failed"] / f"{settled}.report.json"
    if summary.get("duplicate_of"):
        raise ConfigError(f"run {run.run_id} was a duplicate of run {summary['duplicate_of']}: report that one")
    raise ConfigError(f"run {run.run_id} is {run.status}: it has no manifest to report on yet")


def report_command(args: argparse.Namespace) -> int:
    """`lgw report RUN|MANIFEST`: writes the report and prints its path."""
    target = str(args.run)
    if target.endswith(".json") and os.path.lexists(target):
        manifest = Path(target)
    else:
        try:
            manifest = manifest_of_run(target, args.config, args.state_url)
        except InfrastructureError as exc:
            raise ConfigError(f"the state store cannot be read: {exc}") from None
    reference = read_json_file(args.reference, "reference profile") if args.reference else None
    print(write_report(manifest, args.output, reference=reference), flush=True)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lgw report` on the CLI's subparsers."""
    rep = sub.add_parser("report", help="a run's report as one self-contained HTML page, beside its manifest")
    rep.add_argument("run", metavar="RUN", help="a run id (lgw batch status), or the path of a manifest (.json)")
    rep.add_argument("--config", metavar="gateway.yaml", help="pipelines and state store (default: embedded)")
    rep.add_argument("--state-url", default=None, metavar="URL",
                     help="this state store instead (default: the config's, $LGW_STATE_URL, else SQLite beside "
                          "the config or in the data directory)")
    rep.add_argument("--output", "-o", metavar="FILE",
                     help="write the page here (default: NAME.report.html beside the manifest)")
    rep.add_argument("--reference", metavar="PROFILE.json",
                     help="the reference profile the run was compared with, for its reference null rates")
    return rep


__all__ = ["add_parser", "manifest_of_run", "report_command"]
