"""The fuzz worker: a child process that runs one fuzz input at a time against a public
entry point and says how it ended, under a cap on address space and a timer.

    python -m tests.fuzz_worker        (started by tests.fuzz_harness.FuzzWorker)

Protocol: one JSON request per line on stdin ({"target": ..., "input": {...}}, bytes as
base64 under keys ending in `_b64`), one JSON outcome per line on the original stdout.
The entry points print to stdout/stderr themselves, so the protocol gets its own file
descriptor and fd 1/2 go to /dev/null.

An input ends as one of:
- ok: the entry point succeeded and every property held;
- user_error: it raised the project's user-facing error (`ConfigError` and its subclasses,
  which the CLI turns into one `lgw: error:` line and exit 2), with a one-line message;
- bug: any other exception (MemoryError under the cap included), an escaped CLI
  exception, a broken property (records not accounted for, a multi-line error message),
  more memory than `MEMORY_BUDGET_MB` above the worker's baseline, or the time limit.
A worker that dies (a C-level crash, an abort) is seen by the parent.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import resource
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from gateway import cli
from gateway.config import load_config
from gateway.contract_scoring import load_scoring_contract
from gateway.expressions import compile_expression, field_types
from gateway.fallback import FallbackRules
from gateway.features import FeatureMap
from schemas import docs
from schemas.codepages import code_page
from schemas.contract import Contract, RecordSpec, load_contract
from schemas.copybook import parse_copybook
from schemas.decoder import RecordDecoder
from schemas.errors import ConfigError
from schemas.examples import contract_path
from schemas.stream import RAW_QUOTE_BYTES, DecodedChunk

ROOT = Path(__file__).resolve().parents[1]
# What one small input may take above the worker's own footprint (peak RSS), and the
# address-space cap on top of the baseline after which allocations fail outright.
MEMORY_BUDGET_MB = 256
ADDRESS_SPACE_CAP_MB = 1024
TIME_LIMIT_S = 5.0
PROJECT_DIRS = ("schemas", "gateway", "adapters")


class Finding(Exception):
    """A property broke (the entry point itself did not raise)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class FuzzTimeout(BaseException):
    """The per-input timer ran out (BaseException: no `except Exception` swallows it)."""


# --------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0): the peak of this input alone.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


# --------------------------------------------------------------------------- checks
def _one_line(exc: ConfigError) -> None:
    text = str(exc)
    if not text.strip() or "\n" in text.strip():
        raise Finding("message", f"{type(exc).__name__} message is not one non-empty line: {text[:300]!r}")


def _account(chunks: Iterator[DecodedChunk], contract: Contract | None) -> dict[str, int]:
    """Drains a decode and checks in = out + rejects (+ header/trailer records) on every
    chunk: each framed record number is in exactly one of the table, the rejects and the
    control records; no record number appears in two chunks."""
    seen: set[int] = set()
    totals = {"framed": 0, "out": 0, "rejected": 0, "control": 0}
    for dc in chunks:
        numbers = dc.record_numbers()
        framed = {int(n) for n in numbers} | {r.index + 1 for r in dc.chunk.rejects}
        table_rows = dc.batch.chunk_rows()
        out = [int(n) for n in numbers[table_rows]]
        rejected = {r.record for r in dc.rejects}
        control: set[int] = set()
        if contract is not None:
            hit = np.zeros(dc.chunk.num_rows, dtype=bool)
            for rt in (contract.header, contract.trailer):
                if rt is not None:
                    hit |= rt.matches(dc.chunk.matrix)
            control = {int(n) for n in numbers[hit]}
        if len(out) != len(set(out)) or len(out) != dc.table.num_rows:
            raise Finding("accounting", f"table rows {dc.table.num_rows} vs record numbers {len(out)}")
        if contract is not None:
            overlap = (set(out) & rejected) | (set(out) & control) | (rejected & control)
            if overlap or set(out) | rejected | control != framed:
                raise Finding("accounting", f"records {sorted(framed)[:10]}: out {sorted(out)[:10]}, rejected "
                                            f"{sorted(rejected)[:10]}, control {sorted(control)[:10]}")
        elif set(out) | rejected != framed:
            raise Finding("accounting", f"records {sorted(framed)[:10]}: out {sorted(out)[:10]}, "
                                        f"rejected {sorted(rejected)[:10]}")
        if seen & framed:
            raise Finding("accounting", f"records {sorted(seen & framed)[:10]} framed twice")
        seen |= framed
        for r in dc.rejects:
            # a reject quotes at most RAW_QUOTE_BYTES of its field; raw_length counts them all
            if r.field is not None and (r.length is None or r.raw_length != r.length
                                        or len(r.raw) != min(r.length, RAW_QUOTE_BYTES)):
                raise Finding("reject", f"reject of {r.field} has {len(r.raw)} of {r.raw_length} raw bytes, "
                                        f"length {r.length}")
            if not r.reason:
                raise Finding("reject", f"reject of record {r.record} has no reason")
        totals["framed"] += len(framed)
        totals["out"] += len(out)
        totals["rejected"] += len(rejected)
        totals["control"] += len(control)
    return totals


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`lgw argv` in this process: (exit code, stdout, stderr). An exception that escapes
    `main` is a traceback for the user: a finding."""
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except MemoryError:
            raise  # a memory finding wherever it happens
        except Exception as exc:
            raise Finding("traceback", f"lgw {argv[0]} ended in a traceback: {type(exc).__name__}: {exc}") from exc
        out.flush()
    stdout = out.buffer.getvalue().decode("utf-8", "replace")
    stderr = err.getvalue()
    if code not in (0, 1, 2):
        raise Finding("exit", f"lgw {argv[0]} exited {code}")
    if code == 2:
        errors = [ln for ln in stderr.splitlines() if ln.startswith("lgw: error:")]
        other = [ln for ln in stderr.splitlines() if ln and not ln.startswith(("lgw: error:", "usage:", "  "))]
        if len(errors) != 1 or other:
            raise Finding("message", f"lgw {argv[0]} exit 2 without exactly one error line: {stderr[:300]!r}")
    return code, stdout, stderr


# --------------------------------------------------------------------------- targets
class Targets:
    """One method per fuzz target; `work` is a fresh empty directory for the input."""

    def __init__(self) -> None:
        card = load_contract(contract_path("card_txn"))
        self.card_fields = field_types(card)
        sample = self._card_sample(card)
        self.tables = [sample, sample.slice(0, 0), _all_null(sample.schema)]

    @staticmethod
    def _card_sample(card: Contract) -> pa.Table:
        from schemas.examples import generate_card_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "card.dat"
            generate_card_file(path, records=12, seed=3)
            return pa.concat_tables([dc.table for dc in card.decode_file(path)])

    def copybook(self, inp: dict[str, Any], work: Path) -> dict[str, Any]:
        """The parser, then one all-zero record through the decoder built from the layout."""
        layout = parse_copybook(inp["text"], source="fuzz.cpy")
        length = layout.record_length
        for node in layout.elementary():
            if node.offset < 0 or node.offset + node.extent > length:
                raise Finding("layout", f"{node.path} at {node.offset}+{node.extent} outside the {length}-byte record")
        decoder = RecordDecoder(layout, code_page(inp.get("encoding", "cp037")))
        batch = decoder.decode(np.zeros((1, length), dtype=np.uint8))
        if batch.num_rows != 1:
            raise Finding("accounting", f"one record in, {batch.num_rows} out")
        return {"record_length": length}

    def decode(self, inp: dict[str, Any], work: Path) -> dict[str, Any]:
        """`lgw decode --copybook` both ways: the library (every record accounted for) and
        the CLI (exit 0/1/2, one error line, one output line per record)."""
        cpy, data = work / "layout.cpy", work / "input.dat"
        cpy.write_text(inp["copybook"], encoding="utf-8")
        data.write_bytes(base64.b64decode(inp["data_b64"]))
        options = inp.get("options", {})
        argv = ["decode", str(data), "--copybook", str(cpy), "-o", str(work / "out.jsonl"),
                "--rejects", str(work / "rejects.jsonl"), "--chunk-records", str(inp.get("batch_size", 50_000))]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        totals: dict[str, int] | None = None
        try:
            layout = parse_copybook(inp["copybook"], source=str(cpy))
            spec = RecordSpec.from_layout(layout, **_spec_options(options))
            totals = _account(spec.decode_file(data, batch_size=inp.get("batch_size", 50_000)), None)
        except ConfigError as exc:
            _one_line(exc)
            code, _out, _err = _run_cli(argv)
            if code != 2:
                raise Finding("exit", f"the library refused the input ({exc}) but lgw decode exited {code}") from None
            raise
        code, _out, _err = _run_cli(argv)
        written = (work / "out.jsonl").read_bytes().count(b"\n") if (work / "out.jsonl").exists() else 0
        if code == 2 or written != totals["out"]:
            raise Finding("accounting", f"lgw decode exited {code} with {written} records written; "
                                        f"the library decoded {totals['out']}")
        return totals

    def contract(self, inp: dict[str, Any], work: Path) -> dict[str, Any]:
        """`lgw contract check`, then what scoring does with the contract it passed:
        features and fallback rules compiled and run on the decoded records."""
        path = _contract_files(inp, work)
        code, _out, _err = _run_cli(["contract", "check", str(path)])
        try:
            contract = load_scoring_contract(path)
        except ConfigError as exc:
            if code != 2:
                raise Finding("exit", f"load_scoring_contract refused the contract ({exc}) but lgw contract check "
                                      f"exited {code}") from None
            raise
        if code != 0:
            raise Finding("exit", f"load_scoring_contract passed but lgw contract check exited {code}")
        contract.json_schema()
        docs.print_layout(contract, io.StringIO())
        data = work / "input.dat"
        data.write_bytes(base64.b64decode(inp.get("data_b64", "")))
        tables: list[pa.Table] = []

        def keep(chunks: Iterator[DecodedChunk]) -> Iterator[DecodedChunk]:
            for dc in chunks:
                tables.append(dc.table)
                yield dc

        totals = _account(keep(contract.decode_file(data, batch_size=inp.get("batch_size", 50_000))), contract)
        if contract.config.model or contract.config.fallback:
            try:
                features = FeatureMap.from_contract(contract) if contract.config.model else None
                rules = FallbackRules.from_contract(contract) if contract.config.fallback else None
            except ConfigError as exc:  # what check passes, scoring must take
                raise Finding("check-gap", f"lgw contract check passed; scoring refuses it: {exc}") from exc
            for table in tables:
                if features is not None:
                    features.matrix(table)
                if rules is not None:
                    scored = rules.score(table)
                    if scored.num_rows != table.num_rows:
                        raise Finding("accounting", f"fallback scored {scored.num_rows} of {table.num_rows} rows")
        return totals

    def config(self, inp: dict[str, Any], work: Path) -> dict[str, Any]:
        path = work / "gateway.yaml"
        path.write_bytes(base64.b64decode(inp["yaml_b64"]))
        cfg = load_config(path)
        return {"pipelines": len(cfg.pipelines), "models": len(cfg.models)}

    def expression(self, inp: dict[str, Any], work: Path) -> dict[str, Any]:
        """Compile against the card_txn fields; a compiled expression must run on any
        table of that schema (records, no rows, all null) and give one value per row."""
        expr = compile_expression(inp["text"], self.card_fields, where="fuzz")
        for table in self.tables:
            values = expr.evaluate(table, keep_nulls=inp.get("keep_nulls", False))
            if len(values) != table.num_rows:
                raise Finding("accounting", f"{len(values)} values for {table.num_rows} rows")
            if expr.is_condition:
                expr.mask(table)
        return {"type": str(expr.result_type)}


def _all_null(schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{}, {}], schema=schema)


_SPEC_KEYS = {"encoding", "record_format", "record_length", "rdw_endian", "trim", "float_format"}


def _spec_options(options: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in options.items() if k in _SPEC_KEYS}
    if "rdw_includes_header" in options:
        out["rdw_includes_header"] = options["rdw_includes_header"] == "yes"
    return out


def _contract_files(inp: dict[str, Any], work: Path) -> Path:
    """The contract YAML and the copybooks it may name (relative to it)."""
    (work / "copybooks").mkdir()
    for name, text in inp.get("copybooks", {}).items():
        (work / "copybooks" / name).write_text(text, encoding="utf-8")
    path = work / "contract.yaml"
    path.write_bytes(base64.b64decode(inp["yaml_b64"]))
    return path


# --------------------------------------------------------------------------- running
def _where(tb: traceback.StackSummary) -> str:
    """The innermost frame in the project's own code (else the innermost frame)."""
    frames = [f for f in tb if any(f"/{d}/" in f.filename for d in PROJECT_DIRS) and "/tests/" not in f.filename]
    if not frames and not tb:
        return "?"
    frame = (frames or list(tb))[-1]
    rel = os.path.relpath(frame.filename, ROOT) if frame.filename.startswith(str(ROOT)) else frame.filename
    return f"{rel}:{frame.lineno} in {frame.name}"


def _on_alarm(signum: int, frame: Any) -> None:
    raise FuzzTimeout(f"over {TIME_LIMIT_S:g} s")


def run_one(targets: Targets, target: str, inp: dict[str, Any]) -> dict[str, Any]:
    run: Callable[[dict[str, Any], Path], dict[str, Any]] = getattr(targets, target)
    baseline_kb = _status_kb("VmRSS")
    _reset_peak_rss()
    outcome: dict[str, Any]
    with tempfile.TemporaryDirectory(prefix="lgw-fuzz-") as tmp:
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
        try:
            detail = run(inp, Path(tmp))
            outcome = {"status": "ok", "detail": detail}
        except FuzzTimeout as exc:
            outcome = _bug("timeout", exc)
        except ConfigError as exc:
            try:
                _one_line(exc)
                outcome = {"status": "user_error", "type": type(exc).__name__, "message": str(exc)[:500]}
            except Finding as finding:
                outcome = _bug(finding.kind, finding, exc)
        except Finding as finding:
            outcome = _bug(finding.kind, finding, finding.__cause__)
        except MemoryError as exc:
            outcome = _bug("memory", exc)
        except Exception as exc:
            kind = "memory" if type(exc).__name__ == "ArrowMemoryError" else "exception"
            outcome = _bug(kind, exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    peak_kb = _status_kb("VmHWM")
    peak_mb = (peak_kb - baseline_kb) / 1024
    outcome["peak_mb"] = round(peak_mb, 1)
    outcome["peak_rss_mb"] = round(peak_kb / 1024, 1)
    if outcome["status"] != "bug" and peak_mb > MEMORY_BUDGET_MB:
        outcome = {"status": "bug", "kind": "memory", "type": "PeakRSS", "where": "?", "peak_mb": outcome["peak_mb"],
                   "peak_rss_mb": outcome["peak_rss_mb"],
                   "message": f"peak RSS {peak_mb:.0f} MB above the worker's baseline (budget {MEMORY_BUDGET_MB} MB)"}
    return outcome


def _bug(kind: str, exc: BaseException, cause: BaseException | None = None) -> dict[str, Any]:
    """The finding, located where the exception was raised (or, for a property, where the
    exception it stands for was)."""
    located = cause if cause is not None else exc
    if isinstance(exc, Finding):
        typ, message = (type(cause).__name__ if cause is not None else exc.kind), str(exc)
    else:
        typ, message = type(exc).__name__, f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(located.__traceback__)
    return {"status": "bug", "kind": kind, "type": typ, "where": _where(tb), "message": message[:500],
            "traceback": "".join(traceback.format_list(tb[-6:]))[-2000:]}


def _cap_address_space() -> None:
    extra = ADDRESS_SPACE_CAP_MB << 20
    limit = _status_kb("VmSize") * 1024 + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the worker
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    yaml.safe_load("warm: up")
    targets = Targets()
    signal.signal(signal.SIGALRM, _on_alarm)
    _cap_address_space()
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        outcome = run_one(targets, request["target"], request["input"])
        protocol.write(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
