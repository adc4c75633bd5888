"""Batch mode end to end against a plain pandas script doing the same job, in one run.

    python bench/batch.py [--records 1000000] [--memory 1000000,4000000] [--runs 1]

The job: a nightly CARD-TXN file of `--records` records (120-byte EBCDIC records with
zoned, overpunched, COMP-3 and binary fields, header and trailer with control totals)
is decoded, validated, scored with the bundled ONNX fraud model and written as CSV.

- ours: `lgw batch run` on a drop folder, in this process: hash and claim the file,
  decode and validate it chunk by chunk against the contract, score, write CSV, fsync
  and checkpoint after every chunk, check the trailer's control totals, write the
  manifest, publish, move the input to done/. Model loading is included.
- pandas: the script a team would write, given the friendliest input there is: an ASCII
  text variant of the same records with every field as plain text (pandas cannot read
  COMP-3, binary or overpunched fields), newline-terminated, details only.
  `read_fwf` with colspecs, the same five features, the same ONNX model (session
  created inside the timing too), the same provenance columns, `to_csv`. No validation,
  no control totals, no fsync.

Each figure is the best of `--runs` runs. Prints both times, records/s and the ratio
(target: ours >= 5x pandas), then the peak resident memory (VmHWM, Linux) of a separate
`lgw batch run` process for each size in `--memory` (it must not grow with the input)
and of the pandas script at `--records`.

    python bench/batch.py --governance [--records 1000000] [--rounds 5]

The cost of governance (issue 13): the same `lgw batch run` with the audit trail (Parquet
decision records of every record, hash-chained) and the drift comparison against a
reference profile (PSI per feature and output, segments, quality scorecard) on, against
it with the audit trail off and no `drift:`, alternately for `--rounds` rounds in this
process: medians of wall and CPU seconds and their ratio (target: on <= 1.3x off), and
how the audit trail of the run was written (files and rows: in bulk, not a row at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clock import Took, timed
from gateway.config import example_dropfolder_config
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file, model_info
from schemas.layout import Elementary
from schemas.records import DEFAULT_BATCH_SIZE
from tests.peak_memory import peak_bytes, probed

TARGET_RATIO = 5.0
CHUNK = DEFAULT_BATCH_SIZE  # the product's: a drop folder's files are read in chunks this size


# --------------------------------------------------------------------------- inputs
def _width(f: Elementary) -> int:
    if f.is_text:
        return f.size
    assert f.picture is not None
    return f.picture.digits + (1 if f.signed else 0) + (1 if f.picture.scale else 0)


def text_fields() -> list[tuple[str, int, int, bool]]:
    """(name, start, end, is_text) of each field in the all-text ASCII variant."""
    out, pos = [], 0
    for f in load_contract(contract_path()).layout.elementary():
        if f.is_filler:
            continue
        out.append((f.key, pos, pos + _width(f), f.is_text))
        pos += _width(f)
    return out


TEXT_TRAILER = (("count", 12), ("amount_cents", 18))  # the all-text trailer: "T", then these, right-aligned


def write_text_variant(ebcdic: Path, target: Path, *, control: bool = False) -> None:
    """The same detail records as plain ASCII text lines (decoded by us, not timed).
    `control`: between a header line ("H") and a trailer line ("T", the detail count and
    the TXN_AMOUNT total in cents, as TEXT_TRAILER lays them out) that a reader checks."""
    contract = load_contract(contract_path())
    fields = text_fields()
    count, cents = 0, 0
    with open(target, "wb") as out:
        if control:
            out.write(b"H\n")
        for dc in contract.decode_file(ebcdic):
            cols = []
            for name, start, end, is_text in fields:
                s = pc.fill_null(pc.cast(dc.table.column(name), pa.string()), "")
                cols.append(pc.utf8_rpad(s, end - start) if is_text else pc.utf8_lpad(s, end - start))
            lines = pc.binary_join_element_wise(*cols, "")
            out.write(("\n".join(lines.to_pylist()) + "\n").encode("ascii"))
            count += dc.table.num_rows
            amounts = pc.multiply(dc.table.column("TXN_AMOUNT").cast(pa.decimal128(18, 2)), 100)
            cents += int(pc.sum(amounts.cast(pa.int64())).as_py() or 0)
        if control:
            (w_count, w_cents) = (w for _, w in TEXT_TRAILER)
            out.write(f"T{count:>{w_count}}{cents:>{w_cents}}\n".encode("ascii"))


def write_config(root: Path, **pipeline: Any) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt="csv", batch_size=CHUNK)
    audit = pipeline.pop("audit", None)
    if audit is not None:
        cfg["audit"] = audit
    cfg["pipelines"]["card_txn"].update(pipeline)
    (root / "drop" / "inbox").mkdir(parents=True, exist_ok=True)
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the two jobs
def ours(config: Path) -> dict[str, Any]:
    """`lgw batch run card_txn` in this process; returns the run's summary."""
    from gateway.batch import BatchDriver, build_runtime
    from gateway.config import load_config
    from gateway.state import StateStore

    async def go() -> dict[str, Any]:
        cfg = load_config(config)
        rt = build_runtime("card_txn", cfg, StateStore(cfg.state.url))
        try:
            [result] = await BatchDriver(rt).run_once()
        finally:
            await rt.close()
        return result.summary

    return asyncio.run(go())


def pandas_job(text: Path, output: Path) -> int:
    """The plain pandas script: read_fwf, the model's features, the ONNX model, to_csv."""
    import onnxruntime as ort
    import pandas as pd

    fields = text_fields()
    frame = pd.read_fwf(text, colspecs=[(s, e) for _, s, e, _ in fields], names=[n for n, *_ in fields],
                        header=None, dtype={n: str for n, _, _, is_text in fields if is_text},
                        keep_default_na=False)
    features = np.column_stack([
        frame["TXN_AMOUNT"].to_numpy(np.float64), (frame["COUNTRY"] != "US").to_numpy(),
        frame["MCC"].to_numpy(np.float64), (frame["CHANNEL"] == "E").to_numpy(),
        frame["CASHBACK_AMOUNT"].to_numpy(np.float64),
    ]).astype(np.float32)
    info = model_info("fraud")
    session = ort.InferenceSession(str(info["path"]), providers=["CPUExecutionProvider"])
    frame["fraud_score"] = session.run(None, {session.get_inputs()[0].name: features})[0].reshape(-1)
    for column, value in (("scored_by", "model"), ("model_name", "fraud"), ("model_version", "1"),
                          ("contract", "card_txn"), ("contract_version", 1)):
        frame[column] = value
    frame.to_csv(output, index=False)
    return len(frame)


# --------------------------------------------------------------------------- peak memory
def peak_rss_mb(target: str, args: list[str], cwd: Path) -> float:
    """Peak resident memory of `python -m target args` (or `python target.py args`), in MB."""
    report = cwd / "peak.kb"
    done = subprocess.run(probed(report, target, args), cwd=cwd, capture_output=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{target} {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return peak_bytes(report) / 2**20


def memory_of_ours(records: int, folder: Path) -> float:
    root = folder / f"mem-{records}"
    config = write_config(root)
    generate_card_file(root / "drop" / "inbox" / "CARDTXN.DAT", records=records, seed=3)
    os.sync()
    peak = peak_rss_mb("gateway.cli", ["batch", "run", "card_txn", "--config", str(config)], root)
    summary = json.loads((root / "drop" / "outbox" / "CARDTXN.DAT.manifest.json").read_text())
    if summary["counts"]["records_out"] != records:
        raise SystemExit(f"memory run at {records:,}: {summary['counts']}")
    for sub in ("done", "outbox"):
        for p in (root / "drop" / sub).iterdir():
            p.unlink()
    return peak


# --------------------------------------------------------------------------- governance
def governance(n: int, rounds: int, folder: Path, source: Path) -> None:
    """Audit + drift on against off, alternately (see the module's docstring)."""
    import statistics

    from gateway.cli import main as lgw

    reference = folder / "REFERENCE.DAT"
    generate_card_file(reference, records=min(n, 200_000), seed=1)
    profile = folder / "reference.profile.json"
    if lgw(["profile", "build", "--contract", str(contract_path()), "--input", str(reference),
            "--output", str(profile)]) != 0:
        raise SystemExit("profile build failed")
    figures: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    audit_dir = folder / "audit"
    for round_no in range(rounds):
        for mode in ("off", "on") if round_no % 2 == 0 else ("on", "off"):
            root = folder / f"gov-{mode}-{round_no}"
            extra: dict[str, Any] = {"audit": {"enabled": False}}
            if mode == "on":
                extra = {"audit": {"store": "parquet", "path": str(audit_dir / str(round_no))},
                         "drift": {"reference": str(profile), "segments": ["COUNTRY", "CHANNEL"]}}
            config = write_config(root, **extra)
            os.link(source, root / "drop" / "inbox" / "CARDTXN.DAT")
            os.sync()
            wall, cpu = time.perf_counter(), time.process_time()
            summary = ours(config)
            figures[mode].append((time.perf_counter() - wall, time.process_time() - cpu))
            if summary["records_out"] != n or summary["status"] != "done":
                raise SystemExit(f"governance {mode}: {summary}")
            manifest = json.loads((root / "drop" / "outbox" / "CARDTXN.DAT.manifest.json").read_text())
            if mode == "on" and "drift" not in manifest:
                raise SystemExit("governance on: the manifest has no drift section")
            shutil.rmtree(root)
    med = {mode: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
           for mode, runs in figures.items()}
    for mode, label in (("off", "audit off, no drift"), ("on", "audit (parquet) + drift")):
        wall, cpu = med[mode]
        print(f"lgw batch run, {label:<24} median of {rounds}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, "
              f"{n / wall:>10,.0f} records/s, {cpu / n * 1e6:5.2f} CPU s per million records")
    ratio, cpu_ratio = med["on"][0] / med["off"][0], med["on"][1] / med["off"][1]
    print(f"governance on / off: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target <= 1.3x: "
          f"{'met' if ratio <= 1.3 else 'NOT met'})")
    files = sorted((audit_dir / "0").rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    print(f"audit trail of one run: {rows:,} decision records in {len(files)} Parquet files "
          f"({rows // max(1, len(files)):,} records per file: one per batch of {CHUNK:,})")


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--memory", default="1000000,4000000", help="sizes for the peak-memory runs ('' skips them)")
    parser.add_argument("--runs", type=int, default=2, help="best of this many timed runs each")
    parser.add_argument("--pandas-only", nargs=2, metavar=("TEXT", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--governance", action="store_true",
                        help="audit trail + drift comparison on against off, instead of the pandas comparison")
    parser.add_argument("--rounds", type=int, default=5, help="--governance: alternated rounds (medians)")
    args = parser.parse_args()
    if args.pandas_only:  # the baseline alone, for its peak memory
        pandas_job(Path(args.pandas_only[0]), Path(args.pandas_only[1]))
        return

    n = args.records
    with tempfile.TemporaryDirectory(prefix="lgw-bench-batch-") as tmp:
        folder = Path(tmp)
        source = folder / "CARDTXN.DAT"
        started = time.perf_counter()
        generate_card_file(source, records=n, seed=3)
        if args.governance:
            governance(n, args.rounds, folder, source)
            return
        text = folder / "cardtxn.txt"
        write_text_variant(source, text)
        os.sync()  # no write-back of the inputs competes with the timed runs
        print(f"generated {n:,} CARD-TXN records: EBCDIC {source.stat().st_size:,} bytes, ASCII text variant "
              f"{text.stat().st_size:,} bytes ({time.perf_counter() - started:.1f} s, not timed)")

        best_ours, best_pandas = Took(float("inf"), 0.0), Took(float("inf"), 0.0)
        summary: dict[str, Any] = {}
        for attempt in range(args.runs):
            root = folder / f"ours-{attempt}"
            config = write_config(root)
            os.link(source, root / "drop" / "inbox" / "CARDTXN.DAT")
            os.sync()
            took, summary = timed(functools.partial(ours, config))
            best_ours = min(best_ours, took, key=lambda t: t.wall)
            if summary["records_out"] != n or summary["status"] != "done":
                raise SystemExit(f"ours: {summary}")
            os.sync()
            took, count = timed(lambda: pandas_job(text, folder / "pandas.csv"))
            best_pandas = min(best_pandas, took, key=lambda t: t.wall)
            if count != n:
                raise SystemExit(f"pandas read {count:,} records, expected {n:,}")
        # the same model did the same job: the scores agree
        ours_scores = pacsv.read_csv(summary["output"]).column("fraud_score").to_numpy()
        pandas_scores = pacsv.read_csv(folder / "pandas.csv").column("fraud_score").to_numpy()
        if not np.allclose(ours_scores, pandas_scores, atol=1e-6):
            raise SystemExit("ours and pandas disagree on the scores")

        print(f"{'ours: lgw batch run (EBCDIC -> CSV)':<44} {best_ours.line(n)}")
        print(f"{'pandas: read_fwf + ONNX + to_csv (ASCII)':<44} {best_pandas.line(n)}")
        ratio = best_pandas.wall / best_ours.wall
        print(f"ratio ours/pandas: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x: "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")

        sizes = [int(s) for s in args.memory.split(",") if s.strip()]
        if sizes:
            peaks = {size: memory_of_ours(size, folder) for size in sizes}
            for size, peak in peaks.items():
                print(f"peak memory, lgw batch run, {size:>9,} records: {peak:7.0f} MB")
            pandas_peak = peak_rss_mb(__file__, ["--pandas-only", str(text), str(folder / "pandas.csv")], folder)
            print(f"peak memory, pandas script,  {n:>9,} records: {pandas_peak:7.0f} MB")
            growth = max(peaks.values()) / min(peaks.values())
            print(f"memory growth from {min(sizes):,} to {max(sizes):,} records: {growth:.2f}x "
                  f"({'flat' if growth < 1.15 else 'GROWS'})")


if __name__ == "__main__":
    main()
