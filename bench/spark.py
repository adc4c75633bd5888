"""Decode one large fixed-length file with one `lgw decode` process and with the Spark job
(deploy/spark/decode_job.py) on local[N], both end to end as subprocesses (the Spark figure
includes starting the JVM and the session).

    python bench/spark.py [--records 4000000] [--master local[2]] [--partition-bytes 67108864]

Prints seconds and records/s of each, the ratio, the number of partitions and the Spark
job's records/s per core. No scoring yet: the Spark job decodes and writes Parquet records,
Parquet rejects and the control verdict; `lgw decode` writes JSON Lines and its rejects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "schemas" / "examples" / "card_txn.yaml"


def _lgw() -> list[str]:
    exe = Path(sys.executable).parent / "lgw"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=4_000_000)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--partition-bytes", type=int, default=64 << 20)
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYSPARK_PYTHON": sys.executable}
    with tempfile.TemporaryDirectory(prefix="lgw-bench-spark-") as tmp:
        drop = Path(tmp, "drop")
        drop.mkdir()
        data = drop / "DAILY.BIN"
        subprocess.run([*_lgw(), "examples", "generate", "--records", str(args.records), "--bad-every", "1000",
                        "-o", str(data)], check=True, capture_output=True, env=env)
        size = data.stat().st_size
        t0 = time.perf_counter()
        cli = subprocess.run([*_lgw(), "decode", str(data), "--contract", str(CONTRACT), "-o",
                              str(Path(tmp, "out.jsonl")), "--rejects", str(Path(tmp, "rej.jsonl"))],
                             capture_output=True, env=env)
        one = time.perf_counter() - t0
        if cli.returncode not in (0, 1):
            raise SystemExit(cli.stderr.decode())
        t0 = time.perf_counter()
        job = subprocess.run([sys.executable, str(ROOT / "deploy" / "spark" / "decode_job.py"), "--contract",
                              str(CONTRACT), "--drop", str(drop), "--out", str(Path(tmp, "spark")), "--master",
                              args.master, "--partition-bytes", str(args.partition_bytes)],
                             capture_output=True, env=env)
        spark = time.perf_counter() - t0
        if job.returncode != 0:
            raise SystemExit(job.stderr.decode()[-4000:])
        summary = json.loads(job.stdout.decode().strip().splitlines()[-1])
        cores = int(args.master.removeprefix("local[").rstrip("]")) if args.master.startswith("local[") else 1
        parts = -(-size // args.partition_bytes)
        print(json.dumps({
            "records": args.records, "bytes": size, "partitions": parts,
            "lgw_decode": {"seconds": round(one, 2), "records_per_s": round(args.records / one)},
            "spark": {"master": args.master, "seconds": round(spark, 2), "records_per_s": round(args.records / spark),
                      "records_per_s_per_core": round(args.records / spark / cores),
                      "records_written": summary["records"], "rejects": summary["rejects"]},
            "spark_over_one_process": round(one / spark, 2)}, indent=1))


if __name__ == "__main__":
    main()
