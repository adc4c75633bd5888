"""`lgw`: the gateway's command line.

Exit status: 0 success; 1 the job ran but some records were rejected; 2 the command
could not run (bad option, contract, copybook or input shape), with one error line;
3 a batch command stopped by SIGTERM/SIGINT before its work was done (run it again to
resume); 70 an internal error (a bug: one line on stderr naming the file that holds the
traceback); 75 `lgw score` found its pipeline paused by the kill switch (nothing written);
130 another command interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.files.formats import FORMATS
from gateway.exit_codes import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_REJECTS,
    EXIT_SIGINT,
)
from gateway.logs import stderr_line
from gateway.startup import hold_collector, leave, pyarrow_without_pandas, release_collector, tune_process
from schemas.errors import ConfigError

# schemas.records.DEFAULT_BATCH_SIZE (tests/test_limits.py holds them equal), not imported:
# it loads numpy, and the parser is built before any command's modules load
CHUNK_RECORDS = 75_000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"lgw: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _add_layout_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--copybook", metavar="CPY", help="COBOL copybook describing the record")
    src.add_argument("--contract", metavar="FILE", help="contract YAML (layout, encoding, constraints)")
    p.add_argument("--encoding", metavar="CODEPAGE",
                   help="cp037 (default with --copybook), cp273, cp500, cp1047, cp1140-cp1148, ascii, latin-1, utf-8")
    p.add_argument("--record-format", choices=["F", "V", "VB", "D"], help="F fixed (default), V/VB RDW, D text lines")
    p.add_argument("--record-length", type=int, metavar="N", help="bytes per record for F (default: the layout's)")
    p.add_argument("--rdw-endian", choices=["big", "little"], help="RDW byte order (default: detected)")
    p.add_argument("--rdw-includes-header", choices=["yes", "no"],
                   help="whether the RDW length counts its own 4 bytes (default: detected)")
    p.add_argument("--trim", choices=["both", "left", "right", "none"], help="string trimming (default both)")
    p.add_argument("--float-format", choices=["ibm", "ieee", "ibm-le", "ieee-le"],
                   help="COMP-1/COMP-2 representation (default ibm)")
    p.add_argument("--control-chars", choices=["drop", "keep"],
                   help="bytes 0x00-0x1F in ascii/utf-8 text: drop them as Cobrix does (default) or keep them")
    p.add_argument("--batch-size", "--chunk-records", dest="chunk_records", type=int,
                   default=CHUNK_RECORDS, metavar="N",
                   help="records decoded per batch (memory stays flat at any file size)")
    limits = p.add_argument_group("limits (override the contract's record.limits)")
    limits.add_argument("--max-record-bytes", type=_positive, metavar="N",
                        help="longest record the layout may describe (default 64 MiB)")
    limits.add_argument("--max-field-bytes", type=_positive, metavar="N",
                        help="largest PIC item (default 16 MiB)")
    limits.add_argument("--max-occurs", type=_positive, metavar="N",
                        help="occurrences of one item in a record, nested OCCURS multiplied (default 1,000,000)")
    limits.add_argument("--max-line-bytes", type=_positive, metavar="N",
                        help="longest line of a D (text) file; at least the record length (default 1 MiB)")


def _add_reject_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-reject-rate", type=_rate, default=0.5, metavar="RATE",
                   help="stop when more than this share of the records is rejected, judged after "
                        "--reject-rate-after records (default 0.5; 1 never stops)")
    p.add_argument("--reject-rate-after", type=_positive, default=1000, metavar="N",
                   help="records read before the reject rate is judged (default 1000)")
    p.add_argument("--require-records", action="store_true",
                   help="an input without any record is an error (exit 2), not only a warning")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, found {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, found {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, found {value}")
    return value


_OPS_HELP = ("serve /healthz, /readyz and /metrics here (default: $LGW_OPS_ADDRESS, ops.address, "
             "127.0.0.1:9464; port 0 takes a free port)")


def _api_options(p: argparse.ArgumentParser, role: str, what: str = "go through a running gateway's admin API") -> None:
    """--api URL --token-file FILE: the command calls the admin API, needs no database
    credentials and opens no state store (gateway.console.client)."""
    p.add_argument("--api", metavar="URL", default=None, help=f"{what} (no database credentials needed)")
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help=f"with --api: a file (mode 0600) holding {role} bearer token")


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (such as 0/4), found {text!r}")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lgw", description="Legacy adapter gateway")
    parser.add_argument("--log-format", choices=["auto", "text", "json"], default=None,
                        help="log lines on stderr: auto (rich on a terminal, text otherwise; the default), "
                             "text, or json (one object per line, no progress bar); overrides $LGW_LOG_FORMAT")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dec = sub.add_parser("decode", help="decode legacy records to JSON Lines")
    dec.add_argument("input", help="data file")
    _add_layout_options(dec)
    dec.add_argument("--rejects", metavar="FILE", help="write rejects here (JSON Lines) instead of stderr")
    dec.add_argument("--output", "-o", metavar="FILE", help="write records here instead of stdout")
    _add_reject_options(dec)

    enc = sub.add_parser("encode", help="encode JSON Lines back into legacy records")
    enc.add_argument("input", help="JSON Lines file ('-' for stdin)")
    _add_layout_options(enc)
    enc.add_argument("--output", "-o", metavar="FILE", required=True, help="record file to write")
    enc.add_argument("--newline", action="store_true", help="end every fixed-length record with a newline")

    con = sub.add_parser("contract", help="check, document and compare contracts")
    csub = con.add_subparsers(dest="contract_command", required=True, parser_class=_Parser)
    chk = csub.add_parser("check", help="validate a contract and print its layout")
    chk.add_argument("file")
    sch = csub.add_parser("schema", help="print the JSON Schema of a contract's records")
    sch.add_argument("file")
    dif = csub.add_parser("diff", help="can a reader of NEW read data written for OLD?")
    dif.add_argument("old")
    dif.add_argument("new")

    sc = sub.add_parser("score", help="decode, validate and score one file end to end")
    sc.add_argument("--contract", required=True, metavar="FILE")
    sc.add_argument("--input", required=True, metavar="FILE")
    sc.add_argument("--output", required=True, metavar="FILE")
    sc.add_argument("--rejects", metavar="FILE")
    sc.add_argument("--format", choices=list(FORMATS), default="jsonl")
    sc.add_argument("--force-fallback", action="store_true", help="score with the fallback rules only")
    sc.add_argument("--config", metavar="gateway.yaml", help="models and state store (default: embedded)")
    sc.add_argument("--policy", choices=["fallback", "fallback_and_rescore"], default="fallback",
                    help="what to do while the model is unavailable")
    sc.add_argument("--shadow", action="store_true", help="also evaluate the rules and report agreement")
    sc.add_argument("--batch-size", "--chunk-records", dest="chunk_records", type=int,
                    default=CHUNK_RECORDS, metavar="N", help="records scored per batch")
    _add_reject_options(sc)

    ks = sub.add_parser("killswitch", help="force fallback or pause a pipeline, for every replica")
    ksub = ks.add_subparsers(dest="killswitch_command", required=True, parser_class=_Parser)
    kset = ksub.add_parser("set", help="set a pipeline's kill switch")
    kset.add_argument("pipeline")
    kset.add_argument("--mode", required=True, choices=["off", "force_fallback", "pause"])
    kset.add_argument("--reason", required=True, metavar="TEXT",
                      help="why (required: kept in the audit log with who set it)")
    kclr = ksub.add_parser("clear", help="clear a pipeline's kill switch (mode off: score with the model again)")
    kclr.add_argument("pipeline")
    kclr.add_argument("--reason", required=True, metavar="TEXT",
                      help="why (required: kept in the audit log with who cleared it)")
    for p in (kset, kclr):
        _api_options(p, "an operator's")
    kst = ksub.add_parser("status", help="show every kill switch")
    khist = ksub.add_parser("history", help="every flip of the kill switches, newest first: who, when, why")
    khist.add_argument("pipeline", nargs="?", default=None, help="only this pipeline")
    khist.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N flips (default 50)")
    for p, refuse in ((kset, "refuse a pipeline this config does not define; "),
                      (kclr, "refuse a pipeline this config does not define; "), (kst, ""), (khist, "")):
        p.add_argument("--config", metavar="gateway.yaml",
                       help=f"{refuse}use the state store its pipelines use (default: the embedded defaults')")
        p.add_argument("--state-url", default=None, metavar="URL",
                       help="this state store instead (default: the config's, $LGW_STATE_URL, else SQLite "
                            "beside the config or in the data directory)")

    from gateway.governance import review_cli

    review_cli.add_parser(sub)

    from gateway.governance import audit_cli

    audit_cli.add_parser(sub)

    bt = sub.add_parser("batch", help="drop-folder files through a pipeline: restartable, idempotent")
    bsub = bt.add_subparsers(dest="batch_command", required=True, parser_class=_Parser)
    brun = bsub.add_parser("run", help="resume unfinished runs, then process every complete file in the inbox")
    brun.add_argument("pipeline")
    brun.add_argument("--pushgateway", metavar="URL", default=None,
                      help="push the run's metrics to this Prometheus Pushgateway (default: pushgateway.url)")
    brun.add_argument("--shard", metavar="K/N", default=None, type=_shard,
                      help="ODBC table pipelines: read only the rows whose key %% N is K (0 <= K < N), with a "
                           "watermark of this shard's own; N workers with 0/N .. N-1/N read every row once")
    bst = bsub.add_parser("status", help="recent runs, their progress, and what waits in the inboxes")
    bst.add_argument("--pipeline", default=None)
    bst.add_argument("--limit", type=int, default=20, metavar="N")
    bst.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    brep = bsub.add_parser("replay", help="process a file again although its content was processed")
    brep.add_argument("target", metavar="FILE|RUN", help="a run id, or a file in a pipeline's inbox, done or failed")
    brep.add_argument("--pipeline", default=None, help="the pipeline (default: the one whose folder holds FILE)")
    brep.add_argument("--reason", default=None, metavar="TEXT",
                      help="why (required with --api: the replay is audited with the token's identity)")
    _api_options(brep, "an operator's", "replay a run (RUN) in a running `lgw run` through its admin API")
    for p in (brun, bst, brep):
        p.add_argument("--config", metavar="gateway.yaml", help="pipelines, folders, models, state (default: embedded)")
    for p in (brun, brep):
        p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")

    srv = sub.add_parser("run", help="keep watching every pipeline's inbox until stopped (SIGTERM: finish the "
                                     "current chunk, then exit)")
    srv.add_argument("--config", metavar="gateway.yaml", help="pipelines, folders, models, state (default: embedded)")
    srv.add_argument("--ops-address", metavar="HOST:PORT", default=None, help=_OPS_HELP)

    rt = sub.add_parser("serve", help="real time: score Kafka topics and AMQP request queues until stopped "
                                      "(SIGTERM: finish in-flight batches, commit, exit)")
    rt.add_argument("--config", metavar="gateway.yaml", required=True,
                    help="pipelines with a kafka or amqp source, models, brokers")
    rt.add_argument("--pipeline", metavar="NAME", help="serve this pipeline only")
    rt.add_argument("--ops-address", metavar="HOST:PORT", default=None, help=_OPS_HELP)
    api = sub.add_parser("asyncapi", help="AsyncAPI document of the real-time channels")
    api.add_argument("--config", metavar="gateway.yaml", required=True)
    api.add_argument("--pipeline", metavar="NAME", help="document this pipeline only")
    api.add_argument("--format", choices=["json", "yaml"], default="json")
    api.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    for name, role, what in (("components", None, "every registered source, sink and reject sink"),
                             ("sources", "source", "the registered sources"),
                             ("sinks", "sink", "the registered sinks (scored records)")):
        comp = sub.add_parser(name, help=f"list {what}: its `type:` in gateway.yaml, modes, delivery")
        comp.set_defaults(role=role)
        comp.add_argument("--json", action="store_true", help="one JSON object per component")

    from gateway.governance import report_cli

    report_cli.add_parser(sub)

    cfg = sub.add_parser("config", help="check a gateway.yaml")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    cchk = cfgsub.add_parser("check", help="list every problem at once, or what it would use (secrets masked)")
    cchk.add_argument("--config", metavar="gateway.yaml", help="the file to check (default: embedded)")
    cchk.add_argument("--json", action="store_true", help="one JSON object instead of lines")

    ex = sub.add_parser("examples", help="bundled example contracts and data")
    esub = ex.add_subparsers(dest="examples_command", required=True, parser_class=_Parser)
    gen = esub.add_parser("generate", help="write a sample card-transaction file")
    gen.add_argument("--records", type=int, default=10_000)
    gen.add_argument("--output", "-o", required=True)
    gen.add_argument("--encoding", default=None, help="override the contract's encoding (e.g. ascii)")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--bad-every", type=int, default=0, metavar="N",
                     help="corrupt every Nth detail record (for reject demos)")
    gen.add_argument("--drift", type=float, default=0.0, metavar="D",
                     help="shift the amounts up (0 to 1; 0.5: 2.5 times as large), nothing else (for drift demos)")
    pth = esub.add_parser("path", help="print the path of a bundled contract")
    pth.add_argument("name", nargs="?", default="card_txn")

    from gateway.governance import profile_cli

    profile_cli.add_parser(sub)
    from gateway.console import cli as console_cli

    console_cli.add_parser(sub, _Parser)
    return parser


class _VersionAction(argparse.Action):
    """`--version`: the installed version, looked up when asked for (importlib.metadata
    costs every other command 20-100 ms of start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"lgw {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("legacy-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    tune_process()
    args = build_parser().parse_args(argv)
    if args.command == "batch" and getattr(args, "batch_command", None) == "run":
        from gateway.inbox_early import begin_hashing

        begin_hashing(getattr(args, "config", None), getattr(args, "pipeline", None))
    pyarrow_without_pandas()

    def say(text: str, level: int = logging.ERROR) -> None:
        print(stderr_line(text, flag=getattr(args, "log_format", None), level=level), file=sys.stderr)

    try:
        return _dispatch(args)
    except ConfigError as exc:
        say(f"lgw: error: {exc}")
        return EXIT_ERROR
    except FileNotFoundError as exc:
        say(f"lgw: error: file not found: {exc.filename}")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        if args.command == "run" or getattr(args, "batch_command", None) in ("run", "replay"):
            # Ctrl-C means what SIGTERM means for the resumable batch commands
            say("lgw: interrupted (SIGINT) before the work was done; run the command again to resume",
                logging.WARNING)
            return EXIT_INTERRUPTED
        say("lgw: interrupted (SIGINT); nothing was published", logging.WARNING)
        return EXIT_SIGINT
    except Exception as exc:  # anything not raised on purpose is a bug: its own exit code, no traceback on the tty
        say(internal_error_line(exc, argv), logging.CRITICAL)
        return EXIT_INTERNAL


def internal_error_line(exc: BaseException, argv: Sequence[str] | None = None) -> str:
    """The one line an unexpected exception gets on stderr: its type and where it was
    raised, and the file holding the whole traceback. The exception's message stays out
    of the line (it may quote record data, pii included); the traceback file has it."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    try:
        saved = f"the traceback is in {write_traceback(exc, argv)}"
    except OSError as err:
        saved = f"the traceback could not be saved: {err.strerror}"
    return f"lgw: internal error: {type(exc).__name__}{where}; this is a bug in lgw, not a problem " \
           f"with the input; {saved}"


def write_traceback(exc: BaseException, argv: Sequence[str] | None = None) -> Path:
    """Writes the traceback into a new private folder under the temp dir (mode 0700, made
    by tempfile.mkdtemp) as a file created exclusively, never through a symbolic link,
    readable by the owner only (0600). It holds what the traceback holds: the message and
    the code lines, which may include record values."""
    import os
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.mkdtemp(prefix="lgw-crash-"))
    path = folder / f"traceback-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"lgw {' '.join(sys.argv[1:] if argv is None else argv)}\n")
        out.write("".join(traceback.format_exception(exc)))
    return path


def _profile(args: argparse.Namespace) -> int:
    from gateway.governance import profile_cli

    return profile_cli.command(args)


def _review(args: argparse.Namespace) -> int:
    from gateway.governance import review_cli

    return review_cli.run(args)


def _audit(args: argparse.Namespace) -> int:
    from gateway.governance import audit_cli

    return audit_cli.run(args)


def _console(args: argparse.Namespace) -> int:
    from gateway.console import cli as console_cli

    return console_cli.run(args)


def _dispatch(args: argparse.Namespace) -> int:
    from gateway import commands
    from gateway.governance.report_cli import report_command
    from gateway.logs import chosen_format

    chosen_format(getattr(args, "log_format", None))  # a bad LGW_LOG_FORMAT fails every command at once
    handlers = {
        "decode": commands.decode, "encode": commands.encode, "contract": commands.contract,
        "examples": commands.examples, "score": commands.score, "killswitch": commands.killswitch,
        "review": _review,
        "batch": commands.batch, "run": commands.run_pipelines,
        "serve": commands.serve_realtime, "asyncapi": commands.asyncapi,
        "config": commands.config, "profile": _profile, "audit": _audit, "report": report_command,
        "console": _console,
        "components": commands.components, "sources": commands.components, "sinks": commands.components,
    }
    release_collector()
    return handlers[args.command](args)


def run() -> None:
    """The `lgw` executable: `main`, then the process ends at once (gateway.startup.leave)."""
    hold_collector()
    try:
        code: Any = main()
    except SystemExit as exc:  # argparse's --help and its errors
        code = exc.code
    if code is None:
        code = EXIT_OK
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = EXIT_ERROR
    leave(code)


# The exit codes are re-exported: scripts and tests read them from the CLI they run.
__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PAUSED", "EXIT_REJECTS",
           "EXIT_SIGINT", "build_parser", "internal_error_line", "main", "run", "write_traceback"]

if __name__ == "__main__":
    run()
