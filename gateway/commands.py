"""The work behind each `lgw` subcommand (argument parsing lives in `gateway.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gateway.config import DropFolderConfig, OdbcSourceConfig
from gateway.contract_scoring import load_scoring_contract
from gateway.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_PAUSED, EXIT_REJECTS
from schemas.contract import Contract, ControlReport, RecordSpec
from schemas.copybook import load_copybook
from schemas.errors import ConfigError, InputFormatError
from schemas.layout import Limits
from schemas.reject_rate import RejectLimit
from schemas.safefiles import NewFile, create_outputs, discard_all
from schemas.stream import Reject, no_records

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.batch import JobResult, ProgressView
    from gateway.config import GatewayConfig
    from gateway.runs import RunStore
    from gateway.state import StateStore


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
        "control_chars": args.control_chars,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    limits = {"record_bytes": args.max_record_bytes, "field_bytes": args.max_field_bytes,
              "occurs": args.max_occurs, "line_bytes": args.max_line_bytes}
    limits = {k: v for k, v in limits.items() if v is not None}
    if args.contract:
        contract = load_scoring_contract(args.contract, limits=limits)
        return contract, contract.record_spec(**overrides)
    bounds = Limits(**limits)
    layout = load_copybook(args.copybook, limits=bounds)
    return None, RecordSpec.from_layout(layout, **overrides, limits=bounds)


def reject_limit(args: argparse.Namespace) -> RejectLimit:
    return RejectLimit(args.max_reject_rate, args.reject_rate_after)


def report_records(path: str | Path, records: int, *, required: bool) -> None:
    """An input without records says so on stderr (an error with --require-records)."""
    if records:
        return
    message = no_records(path)
    if required:
        raise InputFormatError(f"{message} (--require-records)")
    print(f"lgw: warning: {message}", file=sys.stderr)


def write_rejects(rejects: list[Reject], out: IO[str]) -> None:
    """One JSON line per rejected record, as `lgw decode` writes them to --rejects or stderr."""
    for r in rejects:
        out.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def decode(args: argparse.Namespace) -> int:
    """Records as JSON Lines. With --copybook every record is written, and each field that
    could not be decoded (in every view: REDEFINES, and each 01 record of a multi-record
    copybook, are all decoded from the same bytes) is reported in the reject shape; exit 1
    when any was. With --contract the contract's validation decides what is written."""
    from schemas.decoder import RecordDecoder
    from schemas.jsonl import write_jsonl

    contract, spec = resolve_spec(args)
    if not Path(args.input).is_file():
        raise ConfigError(f"input {args.input} is not a file")
    rejected = records = 0
    limit = reject_limit(args)
    with _output_files(args.input, {"--output": args.output, "--rejects": args.rejects}) as files, \
            ExitStack() as stack:
        out = files["--output"].fh if "--output" in files else sys.stdout.buffer
        rej_out = sys.stderr
        if "--rejects" in files:
            rej_out = io.TextIOWrapper(files["--rejects"].fh, encoding="utf-8", write_through=True)
            stack.callback(rej_out.detach)  # the file itself stays open for its publish
        every_view = RecordDecoder(spec.layout, spec.page, spec.options, report_redefines=True)
        report = ControlReport()
        for dc in spec.decode_file(args.input, batch_size=args.chunk_records, reject_limit=limit,
                                   decoder=every_view) if contract is None else \
                contract.decode_file(args.input, spec, batch_size=args.chunk_records, reject_limit=limit,
                                     report=report):
            write_jsonl(dc.table, out)
            records += dc.table.num_rows
            if dc.rejects:
                rejected += len({r.record for r in dc.rejects})
                write_rejects(dc.rejects, rej_out)
        out.flush()
        for line in (contract.file_report(report) if contract is not None else []):
            print(line, file=sys.stderr)
            if contract is not None and contract.rejects_file(report):
                rejected += 1
        if contract is not None:
            records = report.details  # detail records decoded, before validation
        report_records(args.input, records, required=args.require_records)
    return EXIT_REJECTS if rejected else EXIT_OK


@contextmanager
def _output_files(input_path: str, outputs: dict[str, str | None]) -> Iterator[dict[str, NewFile]]:
    """The output files a command was given ('-' and None: stdout or none), created hidden
    beside their targets before any work and published when the block ends; on an error
    removed. An output that is the input, or another output, is refused."""
    given = {name: path for name, path in outputs.items() if path not in (None, "-")}
    files = create_outputs({"INPUT": input_path} if input_path != "-" else {}, given)
    try:
        yield files
    except BaseException:
        discard_all(files.values())
        raise
    for new in files.values():
        new.publish()


def encode(args: argparse.Namespace) -> int:
    from schemas.encode import encode_jsonl

    _contract, spec = resolve_spec(args)
    src = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    with src, _output_files(args.input, {"--output": args.output}) as files:
        count, errors = encode_jsonl(src, files["--output"].fh, spec, newline=args.newline)
    for e in errors:
        print(json.dumps(e, ensure_ascii=False), file=sys.stderr)
    print(json.dumps({"records": count, "rejected": len(errors)}), file=sys.stderr)
    return EXIT_REJECTS if errors else EXIT_OK


def contract(args: argparse.Namespace) -> int:
    from gateway.contract_scoring import scoring_summary
    from schemas import compat, docs

    cmd = args.contract_command
    if cmd == "check":
        c = load_scoring_contract(args.file)
        scoring = scoring_summary(c)
        docs.print_layout(c, sys.stdout)
        if scoring:
            print(scoring)
        return EXIT_OK
    if cmd == "schema":
        c = load_scoring_contract(args.file)
        print(json.dumps(c.json_schema(), indent=2, ensure_ascii=False))
        return EXIT_OK
    if cmd == "diff":
        old, new = load_scoring_contract(args.old), load_scoring_contract(args.new)
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
                                    seed=args.seed, bad_every=args.bad_every, drift=args.drift)
    print(json.dumps(summary), file=sys.stderr)
    return EXIT_OK


def score(args: argparse.Namespace) -> int:
    from gateway.config import Policy, load_config
    from gateway.kill_switch import kill_switches_at
    from gateway.score import ScoringPaused, run_score

    contract = load_scoring_contract(args.contract)
    if not Path(args.input).is_file():
        raise ConfigError(f"input {args.input} is not a file")
    cfg = load_config(args.config)
    state = kill_switches_at(cfg.state.url)  # its pipeline's switch, read-only
    try:
        summary = run_score(contract, Path(args.input), Path(args.output),
                            rejects_path=Path(args.rejects) if args.rejects else None,
                            rejects_stream=None if args.rejects else sys.stderr,
                            fmt=args.format, config=cfg, force_fallback=args.force_fallback,
                            policy=Policy(args.policy), shadow=args.shadow, batch_size=args.chunk_records,
                            state=state, reject_limit=reject_limit(args), require_records=args.require_records)
    except ScoringPaused as exc:
        print(f"lgw: paused: {exc}", file=sys.stderr)
        return EXIT_PAUSED
    report_records(args.input, summary.pop("records"), required=False)
    print(json.dumps(summary))
    return EXIT_REJECTS if summary["rejected"] or summary.get("file_rejected") else EXIT_OK


def components(args: argparse.Namespace) -> int:
    """`lgw components` (`lgw sources`, `lgw sinks`): what gateway.yaml can name as a
    pipeline's `source`, `sink` and `rejects`, from the one registry (adapters.registry)."""
    from adapters import registry

    found = registry.components(args.role)
    if args.json:
        for c in found:
            print(json.dumps({"role": c.role, "type": c.kind, "modes": sorted(c.modes), "delivery": c.delivery,
                              "summary": c.summary, "config": c.config.__name__}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("role", "type", "modes", "what", "delivery", box=None, show_edge=False)
    for c in found:
        table.add_row(c.role, c.kind, ", ".join(sorted(c.modes)), c.summary, c.delivery)
    Console(soft_wrap=False).print(table)
    return EXIT_OK


def killswitch(args: argparse.Namespace) -> int:
    from gateway import killswitch_cli

    if args.killswitch_command == "set":
        return killswitch_cli.set_command(args)
    if args.killswitch_command == "clear":
        return killswitch_cli.clear_command(args)
    if args.killswitch_command == "history":
        return killswitch_cli.history_command(args)
    return killswitch_cli.status_command(args)


# --------------------------------------------------------------------------- batch mode

def setup_logging(args: argparse.Namespace, console: Console | None = None) -> None:
    """Log lines on stderr: rich through `console` (a terminal with auto), plain text, or
    JSON objects (--log-format json / LGW_LOG_FORMAT=json) with the run's context."""
    import logging

    from gateway.logs import chosen_format, json_handler

    root = logging.getLogger()
    if root.handlers:
        return
    handler: logging.Handler
    if chosen_format(getattr(args, "log_format", None)) == "json":
        handler = json_handler()
        logging.captureWarnings(True)  # a Python warning would otherwise be a line that is not JSON
    elif console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("lgw").setLevel(logging.INFO)


def _progress(args: argparse.Namespace) -> ProgressView:
    from gateway.batch import LogProgress, TerminalProgress
    from gateway.logs import chosen_format

    # the bar only where the format is left to the terminal: text and json ask for lines
    if sys.stderr.isatty() and not getattr(args, "no_progress", False) and \
            chosen_format(getattr(args, "log_format", None)) == "auto":
        view = TerminalProgress()
        setup_logging(args, view.console)
        return view
    setup_logging(args)
    return LogProgress()


def _stoppable(main: Callable[[asyncio.Event], Awaitable[int]], finishing: str = "the current chunk") -> int:
    """Runs `main(stop)` on an event loop; the first SIGTERM/SIGINT sets `stop` (`finishing`
    completes: a chunk is checkpointed, in-flight batches commit), a second one acts at once."""
    import logging
    import signal

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            logging.getLogger("lgw").warning("%s: finishing %s, then stopping "
                                             "(send it again to stop at once)", sig.name, finishing)
            stop.set()
            for s in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(s)

        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, on_signal, s)
        result: int = await main(stop)
        return result

    return asyncio.run(go())


def serve_realtime(args: argparse.Namespace) -> int:
    """`lgw serve`: the real-time pipelines (Kafka, AMQP) until SIGTERM/SIGINT."""
    from gateway.config import load_config

    cfg = load_config(args.config)
    _require_realtime("lgw serve", cfg, args.pipeline)
    _start_tracing(cfg)
    from gateway.ops_http import OpsServer, ops_address
    from gateway.realtime.serve import print_stats, run_until
    from gateway.state import StateStore

    state = StateStore(cfg.state.url)
    setup_logging(args)
    address = ops_address(cfg, getattr(args, "ops_address", None))

    async def main(stop: asyncio.Event) -> int:
        from gateway.console.context import build_console

        try:
            ops = (OpsServer(address, console=build_console(cfg, state, process="serve")).bind()
                   if address is not None else None)
            print_stats(await run_until(cfg, stop, only=args.pipeline, state=state, freeze=True, ops=ops))
        finally:
            state.close()
        return EXIT_OK

    return _stoppable(main, "the batches in flight")


def asyncapi(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    cfg = load_config(args.config)
    _require_realtime("lgw asyncapi", cfg, args.pipeline)
    from gateway.realtime.serve import asyncapi_document, write_document

    write_document(asyncapi_document(cfg, only=args.pipeline, fmt=args.format), args.output)
    return EXIT_OK


def _require_realtime(command: str, cfg: GatewayConfig, only: str | None) -> None:
    """FastStream with the client of each broker the served pipelines use; the kafka
    extra when none names a broker (the real-time app imports FastStream regardless)."""
    from gateway.extras import require

    parts = [part for name, pipe in cfg.pipelines.items() if only is None or name == only
             for part in (pipe.source, pipe.sink, pipe.rejects) if part is not None]
    kinds = {part.type for part in parts}
    if "amqp" in kinds:
        require("rabbit", command, "faststream", "aio_pika")
    if "kafka" in kinds or "amqp" not in kinds:
        require("kafka", command, "faststream", "aiokafka")


def config(args: argparse.Namespace) -> int:
    """`lgw config check`: every problem of a gateway.yaml at once (exit 2), or what it
    would use, secrets masked."""
    from gateway.config import check_config
    from gateway.config_check import render, summary

    cfg, problems = check_config(args.config)
    if cfg is None:
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_ERROR
    info = summary(cfg)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        print("\n".join(render(info)))
    return EXIT_OK


def _batch_context(args: argparse.Namespace) -> tuple[GatewayConfig, StateStore, RunStore]:
    from gateway.config import load_config
    from gateway.runs import RunStore  # its tables join the state store's metadata before first use
    from gateway.state import StateStore

    cfg = load_config(args.config)
    state = StateStore(cfg.state.url)
    return cfg, state, RunStore(state, lease_s=cfg.state.lease_s)


def _start_tracing(cfg: GatewayConfig) -> None:
    """Spans from here on, when `tracing:` (or OTEL_*) turns them on; the SDK exports what
    is left when the process exits."""
    from gateway import tracing

    tracing.configure(cfg.tracing)


def _print_result(result: JobResult) -> None:
    print(json.dumps(result.summary, ensure_ascii=False, default=str), flush=True)


def _exit_code(results: list[JobResult]) -> int:
    from gateway.batch import INTERRUPTED
    from gateway.runs import FAILED

    if any(r.status == INTERRUPTED for r in results):
        return EXIT_INTERRUPTED
    if any(r.status == FAILED or r.summary.get("rejected") for r in results):
        return EXIT_REJECTS
    return EXIT_OK


def batch(args: argparse.Namespace) -> int:
    if args.batch_command == "status":
        return _batch_status(args)
    if args.batch_command == "replay" and getattr(args, "api", None):
        return _replay_through_api(args)
    import logging

    from gateway.batch import BatchDriver, build_runtime
    from gateway.logs import log_context
    from schemas.errors import InfrastructureError

    cfg, state, runs = _batch_context(args)
    _start_tracing(cfg)
    if args.batch_command == "run" and args.pushgateway:
        cfg.pushgateway.url = args.pushgateway
    if args.batch_command == "run" and args.pipeline in cfg.pipelines and \
            isinstance(cfg.pipelines[args.pipeline].source, OdbcSourceConfig):
        return _table_run(args.pipeline, cfg, state, shard=args.shard)
    if args.batch_command == "run" and args.shard is not None:
        raise ConfigError(f"--shard splits an ODBC table pipeline; {args.pipeline} reads no ODBC table")
    pipe = cfg.pipelines.get(args.pipeline or "")
    if pipe is not None:
        from gateway.extras import require_parts

        require_parts(f"lgw batch {args.batch_command}", (pipe.sink, pipe.rejects))
    progress = _progress(args)
    if args.batch_command == "run":
        names = [args.pipeline]
    else:
        names = [args.pipeline] if args.pipeline else _replay_pipelines(args.target, cfg, runs)

    async def main(stop: asyncio.Event) -> int:
        results: list[JobResult] = []
        for name in names:
            rt = build_runtime(name, cfg, state, runs)
            driver = BatchDriver(rt, progress=progress, stop=stop)
            with log_context(pipeline=name):
                try:
                    if args.batch_command == "run":
                        results += await driver.run_once()
                    else:
                        results.append(await driver.replay(args.target))
                except (InfrastructureError, OSError) as exc:
                    raise ConfigError(f"pipeline {name} stopped: {type(exc).__name__}: {exc}; "
                                      "run the command again to resume from the last checkpoint") from None
                finally:
                    await rt.close()
                if not results:
                    logging.getLogger("lgw.batch").info(
                        "%s: nothing to do (no unfinished run, no complete file in %s)", name, rt.folders.inbox)
            for r in results:
                _print_result(r)
            if stop.is_set():
                break
        return _exit_code(results)

    if args.batch_command == "run":
        return _pushing(cfg, args.pipeline, lambda: _stoppable(main))
    return _stoppable(main)


def _replay_through_api(args: argparse.Namespace) -> int:
    """`batch replay RUN --api URL --token-file FILE --reason TEXT`: the `lgw run` behind
    the API replays the run beside its watchers and audits the request; no state store
    is opened here."""
    from gateway.console.client import ApiClient, path_part

    reason = (args.reason or "").strip()
    if not reason:
        raise ConfigError("batch replay --api needs --reason TEXT: say why (an incident, a ticket); it is audited")
    answer = ApiClient.from_args(args).post(f"/api/v1/runs/{path_part(args.target)}/replay", {"reason": reason})
    print(json.dumps(answer))
    return EXIT_OK


def _pushing(cfg: GatewayConfig, pipeline: str, run: Callable[[], int]) -> int:
    """`run()`, then its metrics to the Pushgateway (when one is configured), also after a
    failure: a failed nightly run is what the alert rules look for."""
    from gateway.metrics_push import Pusher

    pusher = Pusher(cfg.pushgateway)
    try:
        return run()
    finally:
        pusher.push(pipeline)


def _table_run(name: str, cfg: GatewayConfig, state: StateStore, *, shard: tuple[int, int] | None = None) -> int:
    from gateway.extras import require

    require("odbc", "lgw batch run", "pyodbc", "arrow_odbc")
    from gateway.table_job import run_table_pipeline

    async def main(stop: asyncio.Event) -> int:
        summary = await run_table_pipeline(name, cfg, state, stop=stop, shard=shard)
        print(json.dumps(summary.to_json()))
        if summary.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_REJECTS if summary.rejected else EXIT_OK

    return _pushing(cfg, name, lambda: _stoppable(main, "the current batch"))


def _replay_pipelines(target: str, cfg: GatewayConfig, runs: RunStore) -> list[str]:
    """The pipeline a replay target belongs to: the run's, or the one whose folders hold the file."""
    import os

    run = runs.get(target)
    if run is not None:
        return [run.pipeline]
    parent = Path(os.path.abspath(target)).parent.resolve()
    for name, pipe in cfg.pipelines.items():
        if not isinstance(pipe.source, DropFolderConfig):
            continue
        folders = pipe.source.folders(cfg.base_dir)
        if any(parent == Path(folders[k]).resolve() for k in ("inbox", "done", "failed")):
            return [name]
    raise ConfigError(f"{target} is neither a run id nor a file in a pipeline's inbox, done or failed folder")


def _batch_status(args: argparse.Namespace) -> int:
    from adapters.files.dropfolder import DropFolder, Folders

    cfg, _state, runs = _batch_context(args)
    recent = runs.recent(args.pipeline, args.limit)
    rows = []
    for run in recent:
        row = {"run": run.run_id, "pipeline": run.pipeline, "status": run.status, "input": run.input_name,
               "bytes": run.input_bytes, "started_at": run.started_at.isoformat(timespec="seconds"),
               "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
               "attempts": run.attempts, "owner": run.owner if run.status == "running" else None,
               "replay_of": run.replay_of, "moved_to": run.final_path, **run.summary_json()}
        if run.status == "running":
            row["progress"] = runs.progress(run.run_id)
        rows.append(row)
    inboxes: dict[str, dict[str, Any]] = {}
    for name, pipe in cfg.pipelines.items():
        if not isinstance(pipe.source, DropFolderConfig) or (args.pipeline and name != args.pipeline):
            continue
        folders = pipe.source.folders(cfg.base_dir)
        if not folders["inbox"].is_dir():
            inboxes[name] = {"inbox": str(folders["inbox"]), "missing": True}
            continue
        watcher = DropFolder(Folders.prepare(folders), glob=pipe.source.glob,
                             stable_for_s=pipe.source.stable_for_s, done_file=pipe.source.done_file)
        ready, waiting = watcher.scan()
        inboxes[name] = {"inbox": str(folders["inbox"]), "complete": [a.name for a in ready], "incomplete": waiting}
    if args.json:
        print(json.dumps({"runs": rows, "inboxes": inboxes}, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    print(f"{'RUN':<36} {'STATUS':<11} {'INPUT':<24} {'IN':>11} {'OUT':>11} {'REJECTED':>9}  STARTED")
    for row in rows:
        counts = row.get("progress") or row
        done = ""
        if row["status"] == "running" and row.get("progress") and row["progress"].get("bytes_read") is not None:
            done = f" {100 * row['progress']['bytes_read'] / max(row['bytes'], 1):.0f}%"
        print(f"{row['run']:<36} {row['status'] + done:<11} {row['input']:<24} "
              f"{_n(counts.get('records_in')):>11} {_n(counts.get('records_out')):>11} "
              f"{_n(counts.get('rejected')):>9}  {row['started_at']}")
    for name, box in inboxes.items():
        if box.get("missing"):
            print(f"{name}: inbox {box['inbox']} does not exist yet")
        else:
            print(f"{name}: inbox {box['inbox']}: {len(box['complete'])} complete, "
                  f"{len(box['incomplete'])} still arriving")
    return EXIT_OK


def _n(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def run_pipelines(args: argparse.Namespace) -> int:
    """`lgw run`: every pipeline with a drop folder, watched until stopped."""
    from gateway.batch import BatchDriver, LogProgress, build_runtime
    from gateway.console.replay import replay_in
    from gateway.ops_http import OpsServer, ops_address, run_brokers

    cfg, state, runs = _batch_context(args)
    _start_tracing(cfg)
    setup_logging(args)
    names = [name for name, pipe in cfg.pipelines.items() if isinstance(pipe.source, DropFolderConfig)]
    if not names:
        raise ConfigError("no pipeline has a `source`: nothing to watch")
    from gateway.extras import require_parts

    require_parts("lgw run", (part for name in names for part in (cfg.pipelines[name].sink,
                                                                   cfg.pipelines[name].rejects)))

    address = ops_address(cfg, getattr(args, "ops_address", None))

    async def main(stop: asyncio.Event) -> int:
        from gateway.console.context import build_console

        drivers: dict[str, BatchDriver] = {}
        ops = (OpsServer(address, console=build_console(cfg, state, process="run", replay=replay_in(drivers))).bind()
               if address is not None else None)
        runtimes = [build_runtime(name, cfg, state, runs) for name in names]
        drivers.update({rt.name: BatchDriver(rt, progress=LogProgress(), stop=stop) for rt in runtimes})
        try:
            if ops is not None:
                ops.readiness.add_state_store(state)
                run_brokers(ops.readiness, cfg, names)
                for rt in runtimes:
                    ops.readiness.add_pipeline(rt.pipeline)
                await ops.start()
            # one watcher per pipeline (the real-time subscribers will join them here)
            await asyncio.gather(*(driver.watch(_print_result) for driver in drivers.values()))
        finally:
            if ops is not None:
                await ops.stop()
            for rt in runtimes:
                await rt.close()
        return EXIT_OK

    return _stoppable(main)
