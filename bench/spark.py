"""The same large card file decoded, validated, scored with the bundled ONNX model and written as
Parquet, by `lgw batch run` on one process and by the Spark job (deploy/spark/score_job.py) on
local[N], both end to end as separate processes (Spark: JVM and session start-up included).

    python bench/spark.py [--records 4000000] [--master local[2]] [--partition-bytes 67108864] [--rounds 1]

- lgw: `lgw batch run card_txn` on a drop folder holding the file (claim, decode, validate,
  score, Parquet outbox, checkpoints, control totals, manifest, publish).
- spark: the score job on the same file (one `output=all` read: records, rejects and control
  rows; mapInArrow scoring; persisted; Parquet records and rejects; control.json).

Prints, per round (the two alternate), wall seconds, CPU seconds (the machine's, from
/proc/stat: run it on an idle machine) and CPU seconds per million records, records/s, and
the ratio (lgw time / spark time: above 1 means Spark was faster). Then what a cluster would
add: the per-partition rate, measured in this process on one partition (decode + score of
`--partition-bytes`, no Spark), and the partitions the file makes: with P partitions on C
cores a cluster needs about ceil(P / C) x the partition time, plus its start-up and the
write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import example_dropfolder_config  # noqa: E402
from schemas.examples import contract_path, generate_card_file  # noqa: E402


def _lgw() -> list[str]:
    exe = Path(sys.executable).parent / "lgw"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (user, nice, system, irq, softirq;
    /proc/stat): a Spark job's JVM and Python workers are not children that the job's own
    process waits for, so rusage would miss them. Run this bench on an idle machine."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """(wall s, CPU s the machine spent meanwhile, the result)."""
    cpu0, t0 = machine_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - t0, machine_cpu() - cpu0, done


def lgw_batch(data: Path, root: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt="parquet")
    inbox = root / "drop" / "inbox"
    inbox.mkdir(parents=True)
    config = root / "gateway.yaml"
    config.write_text(json.dumps(cfg))
    os.link(data, inbox / data.name)
    wall, cpu, done = timed([*_lgw(), "batch", "run", "card_txn", "--config", str(config)], env, root)
    if done.returncode not in (0, 1):
        raise SystemExit(f"lgw batch run failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    manifest = json.loads(next((root / "drop" / "outbox").glob("*.manifest.json")).read_text())
    return wall, cpu, manifest["counts"]


def spark_job(data: Path, root: Path, env: dict[str, str], master: str, partition_bytes: int
              ) -> tuple[float, float, dict[str, Any]]:
    drop = root / "drop"
    drop.mkdir(parents=True)
    os.link(data, drop / data.name)
    wall, cpu, done = timed([sys.executable, str(ROOT / "deploy" / "spark" / "score_job.py"), "--contract",
                             str(contract_path()), "--drop", str(drop), "--out", str(root / "out"), "--master", master,
                             "--partition-bytes", str(partition_bytes)], env, root)
    if done.returncode != 0:
        raise SystemExit(f"spark job failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    return wall, cpu, json.loads(done.stdout.decode().strip().splitlines()[-1])


def one_partition(data: Path, partition_bytes: int) -> tuple[int, float, float]:
    """(records, wall s, CPU s) of decoding and scoring the file's second partition in this
    process, the work of one Spark task without Spark."""
    import pyarrow as pa

    from gateway.spark.score import ScoringJob
    from gateway.spark.source import Settings, decode_part, resolved, split_file
    from schemas.contract import ControlReport

    settings = Settings.from_options({"contract": str(contract_path()), "partitionBytes": str(partition_bytes),
                                      "sourceColumns": "true"})
    _contract, spec = resolved(settings)
    parts = split_file(str(data), spec, partition_bytes)
    part = parts[1] if len(parts) > 1 else parts[0]
    pipeline = ScoringJob(contract=str(contract_path())).pipeline()
    asyncio.run(pipeline.score(pa.table({})))  # the model session is built: not part of a task's steady rate
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = 0
    for dc in decode_part(settings, part, ControlReport()):
        asyncio.run(pipeline.score(dc.table))
        n += dc.table.num_rows
    return n, time.perf_counter() - t0, time.process_time() - cpu0


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--records", type=int, default=4_000_000)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--partition-bytes", type=int, default=64 << 20)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYSPARK_PYTHON": sys.executable}
    per_m = 1e6 / args.records
    with tempfile.TemporaryDirectory(prefix="lgw-bench-spark-") as tmp:
        data = Path(tmp, "CARDTXN.DAT")
        generate_card_file(data, records=args.records, seed=5, bad_every=1000)
        os.sync()
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            figures: dict[str, Any] = {}
            for who in ("lgw", "spark") if r % 2 == 0 else ("spark", "lgw"):
                root = Path(tmp, f"{who}-{r}")
                if who == "lgw":
                    wall, cpu, counts = lgw_batch(data, root, env)
                else:
                    wall, cpu, counts = spark_job(data, root, env, args.master, args.partition_bytes)
                figures[who] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                                "cpu_s_per_million": round(cpu * per_m, 2),
                                "records_per_s": round(args.records / wall), "counts": counts}
            figures["spark_speedup"] = round(figures["lgw"]["seconds"] / figures["spark"]["seconds"], 2)
            rounds.append(figures)
            print(json.dumps({"round": r + 1, **figures}), flush=True)
        n, part_wall, part_cpu = one_partition(data, args.partition_bytes)
        size = data.stat().st_size
    parts = max(1, math.ceil(size / args.partition_bytes))
    rate = n / part_wall
    print(json.dumps({
        "records": args.records, "bytes": size, "master": args.master, "partitions": parts,
        "median_seconds": {"lgw": round(statistics.median(r["lgw"]["seconds"] for r in rounds), 2),
                           "spark": round(statistics.median(r["spark"]["seconds"] for r in rounds), 2)},
        "median_spark_speedup": statistics.median(r["spark_speedup"] for r in rounds),
        "per_partition": {"records": n, "seconds": round(part_wall, 2), "cpu_seconds": round(part_cpu, 2),
                          "records_per_s": round(rate)},
        "cluster_estimate": (f"{parts} partitions of {args.partition_bytes >> 20} MiB at {rate:,.0f} records/s "
                             f"each: on {parts} cores about {part_wall:.1f} s of decoding and scoring "
                             "plus start-up and the write"),
    }, indent=1))


if __name__ == "__main__":
    main()
