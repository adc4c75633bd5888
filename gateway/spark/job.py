"""The example Spark job: a drop folder of mainframe files, decoded (and scored) on Spark,
written as Parquet records and a rejects table, with every file's control verdict.

    python deploy/spark/score_job.py --contract C --drop drop/ --out out/ [--config gateway.yaml]
    python deploy/spark/decode_job.py --contract C --drop drop/ --out out/     (no scoring)

Every file is read and decoded once (`output=all`: records, decode rejects and control rows
in one dataset), scored once (gateway.spark.score) and written in the same pass by
`df.write.format("lgw")` (gateway.spark.sink), with nothing cached:

- OUT/control.json: files, records, rejects, scored_by, the files refused, and each file's
  control verdict, as `lgw decode` prints it;
- OUT/records: the records (scored: with the outputs and provenance of `lgw score`), plus
  `source_record` and `source_file`; a file whose control totals fail a trailer that says
  `on_mismatch: reject_file` is left out whole, as `lgw run` refuses it;
- OUT/rejects: one row per reject, the fields of `lgw decode --rejects` plus `file`
  (`--rejects-table` also appends them to a table of the session's catalog); rejects stand
  also for a refused file.

Nothing here overwrites what it did not write: OUT/records and OUT/rejects must not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.spark.score import ScoringJob


def run(spark: Any, contract_path: str, drop: str, out: str, partition_bytes: int = 64 << 20, *,
        scoring: ScoringJob | None = None, rejects_table: str | None = None) -> dict[str, Any]:
    """Decodes (and scores) every file of `drop`; returns the summary it also writes to
    OUT/control.json."""
    from gateway.spark.source import input_files, register
    from schemas.contract import load_contract

    register(spark)
    load_contract(contract_path)  # a broken contract stops the job here, with its one error line
    files = input_files(drop, None)
    target = Path(out)
    for part in ("records", "rejects"):
        if (target / part).exists():
            raise FileExistsError(f"spark job: {target / part} exists; expected a new output folder")
    df = (spark.read.format("lgw").option("contract", contract_path).option("output", "all")
          .option("partitionBytes", partition_bytes).option("paths", ",".join(files)).load())
    if scoring is not None:
        df = scoring.score(df)
    df.write.format("lgw").option("contract", contract_path).mode("append").save(str(target))  # gateway.spark.sink
    summary: dict[str, Any] = json.loads((target / "control.json").read_text())
    if rejects_table:
        spark.read.parquet(str(target / "rejects")).write.mode("append").saveAsTable(rejects_table)
    return summary


def main(argv: list[str] | None = None, *, score: bool = True) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--contract", required=True)
    p.add_argument("--drop", required=True, help="a folder of input files (or one file, or a glob)")
    p.add_argument("--out", required=True)
    if score:
        p.add_argument("--config", default=None, help="gateway.yaml with the contract's model (default: the "
                                                      "embedded defaults, the bundled ONNX model)")
        p.add_argument("--force-fallback", action="store_true", help="score with the fallback rules only")
    p.add_argument("--rejects-table", default=None, help="also append the rejects to this table of the "
                                                        "session's catalog")
    p.add_argument("--master", default=None, help="e.g. local[2]; spark-submit sets it otherwise")
    p.add_argument("--partition-bytes", type=int, default=64 << 20)
    args = p.parse_args(argv)
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("lgw-score" if score else "lgw-decode")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    scoring = ScoringJob(contract=str(Path(args.contract).resolve()),
                         config=str(Path(args.config).resolve()) if args.config else None,
                         force_fallback=args.force_fallback) if score else None
    try:
        summary = run(spark, args.contract, args.drop, args.out, args.partition_bytes, scoring=scoring,
                      rejects_table=args.rejects_table)
    finally:
        spark.stop()
    print(json.dumps({k: v for k, v in summary.items() if k != "control"}))
    return 1 if summary["files_rejected"] else 0
