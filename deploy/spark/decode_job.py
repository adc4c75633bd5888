"""Example Spark job: decode a drop folder of fixed-length mainframe files with a contract and
write the records and the rejects as Parquet, and the control verdict of every file as JSON.

    python deploy/spark/decode_job.py --contract schemas/examples/card_txn.yaml \
        --drop drop/ --out out/ [--master local[2]] [--partition-bytes 67108864]
    spark-submit deploy/spark/decode_job.py ...   (gateway and schemas on the executors' path)

A file whose control totals do not match a trailer that says `on_mismatch: reject_file` is
left out of the records whole (as `lgw run` rejects it) and named in control.json.
Scoring (mapInArrow with the contract's pipeline) is not part of this job yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def run(spark: Any, contract_path: str, drop: str, out: str, partition_bytes: int = 64 << 20) -> dict[str, Any]:
    """Decodes every file of `drop`; returns the summary it also writes to OUT/control.json."""
    from gateway.spark.source import control_reports, input_files, register
    from schemas.contract import load_contract

    register(spark)
    contract = load_contract(contract_path)
    files = input_files(drop, None)

    def reader(output: str, paths: list[str]) -> Any:
        return (spark.read.format("lgw").option("contract", contract_path).option("output", output)
                .option("partitionBytes", partition_bytes).option("paths", ",".join(paths)))

    reports = control_reports(contract, reader("control", files).load().collect())
    refused = sorted(f for f, rep in reports.items() if contract.rejects_file(rep))
    accepted = [f for f in files if f not in refused]
    Path(out).mkdir(parents=True, exist_ok=True)
    records = 0
    if accepted:
        df = reader("records", accepted).load()
        df.write.mode("overwrite").parquet(str(Path(out, "records")))
        records = spark.read.parquet(str(Path(out, "records"))).count()
    reader("rejects", files).load().write.mode("overwrite").parquet(str(Path(out, "rejects")))
    rejects = spark.read.parquet(str(Path(out, "rejects"))).count()
    summary = {"files": len(files), "files_rejected": refused, "records": records, "rejects": rejects,
               "control": {f: rep.to_json()["control"] for f, rep in reports.items()}}
    Path(out, "control.json").write_text(json.dumps(summary, default=str, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contract", required=True)
    p.add_argument("--drop", required=True, help="a folder of input files (or one file, or a glob)")
    p.add_argument("--out", required=True)
    p.add_argument("--master", default=None, help="e.g. local[2]; spark-submit sets it otherwise")
    p.add_argument("--partition-bytes", type=int, default=64 << 20)
    args = p.parse_args(argv)
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("lgw-decode")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    try:
        summary = run(spark, args.contract, args.drop, args.out, args.partition_bytes)
    finally:
        spark.stop()
    print(json.dumps({k: v for k, v in summary.items() if k != "control"}))
    return 1 if summary["files_rejected"] else 0


if __name__ == "__main__":
    sys.exit(main())
