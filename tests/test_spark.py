"""spark.read.format("lgw") in Spark local mode decodes what `lgw decode` decodes: the same
records, rejects and control verdict, with every file cut into several partitions."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import unavailable

EXAMPLE_CONTRACT = Path(__file__).parent.parent / "schemas" / "examples" / "card_txn.yaml"
EXTRA = Path(__file__).parent / "data" / "cobrix_extra"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("no Java runtime (scripts/system-packages.sh installs openjdk-17-jre-headless)")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        unavailable("pyspark is not installed (the dev extra)")
    from gateway.spark.source import register

    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors run this interpreter and its packages
    session = (SparkSession.builder.master("local[2]").appName("lgw-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()


def _jsonl(table: Any) -> list[dict[str, Any]]:
    from schemas.jsonl import write_jsonl

    buf = io.BytesIO()
    write_jsonl(table, buf)
    return [json.loads(line) for line in buf.getvalue().split(b"\n") if line.strip()]


def _lines(path: Path) -> list[dict[str, Any]]:
    # JSON Lines split at \n only: decoded text may hold \r, U+0085 and the like (escaped or not)
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def _reject_rows(df: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if v is not None and k != "file"} for row in df.toArrow().to_pylist()]


def test_example_file_decodes_as_lgw_decode_does_across_partitions(spark: Any, tmp_path: Path,
                                                                   lgw_cmd: list[str]) -> None:
    from gateway.spark.source import control_reports
    from schemas.contract import load_contract

    data = tmp_path / "DAILY.BIN"
    subprocess.run([*lgw_cmd, "examples", "generate", "--records", "3000", "--bad-every", "97", "-o", str(data)],
                   check=True, capture_output=True, timeout=120)
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    cli = subprocess.run([*lgw_cmd, "decode", str(data), "--contract", str(EXAMPLE_CONTRACT), "-o", str(out),
                          "--rejects", str(rej)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr  # the damaged records are rejected
    cli_control = json.loads(cli.stderr.splitlines()[-1])

    def reader(output: str) -> Any:
        return (spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT))
                .option("partitionBytes", 40_000).option("output", output))

    df = reader("records").load(str(data))
    assert df.rdd.getNumPartitions() >= 8  # 360 kB in 40 kB ranges
    got = _jsonl(df.toArrow())
    want = _lines(out)
    assert len(want) > 2900
    assert got == want

    rejects = _reject_rows(reader("rejects").load(str(data)))
    assert len(rejects) >= 30
    assert rejects == _lines(rej)

    reports = control_reports(load_contract(EXAMPLE_CONTRACT), reader("control").load(str(data)).collect())
    assert list(reports) == [str(data.resolve())]
    verdict = json.loads(json.dumps(reports[str(data.resolve())].to_json(), default=str))
    assert verdict["control"]["ok"] is True
    assert verdict == cli_control


def test_control_totals_mismatch_is_found_across_partitions(spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    from gateway.spark.source import control_reports
    from schemas.contract import load_contract

    data = tmp_path / "DAILY.BIN"
    subprocess.run([*lgw_cmd, "examples", "generate", "--records", "1000", "-o", str(data)],
                   check=True, capture_output=True, timeout=120)
    raw = bytearray(data.read_bytes())
    contract = load_contract(EXAMPLE_CONTRACT)
    width = contract.spec.framing.record_length
    raw[width * 500: width * 501] = b""  # one detail record fewer than the trailer counts
    data.write_bytes(bytes(raw))
    cli = subprocess.run([*lgw_cmd, "decode", str(data), "--contract", str(EXAMPLE_CONTRACT), "-o",
                          str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=120)
    cli_control = json.loads(cli.stderr.splitlines()[-1])
    rows = (spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).option("partitionBytes", 30_000)
            .option("output", "control").load(str(data)).collect())
    assert len(rows) >= 4
    report = control_reports(contract, rows)[str(data.resolve())]
    assert not report.ok
    assert contract.rejects_file(report)
    assert json.loads(json.dumps(report.to_json(), default=str)) == cli_control


def _fixed_cases() -> list[tuple[Path, dict[str, Any]]]:
    from tests.conftest import COBRIX

    out = []
    for base in (COBRIX, EXTRA):
        cases = base / "cases.json"
        if not cases.is_file():
            continue
        out += [(base, c) for c in json.loads(cases.read_text())["cases"]
                if c["options"].get("record-format") == "F"]
    return out


FIXED = _fixed_cases()


@pytest.mark.parametrize("base,case", FIXED, ids=[c["id"] for _, c in FIXED])
def test_cobrix_fixed_length_cases_decode_as_lgw_decode_does(spark: Any, tmp_path: Path, lgw_cmd: list[str],
                                                             cobrix_dir: Path, base: Path,
                                                             case: dict[str, Any]) -> None:
    data, copybook = base / case["data"], base / case["copybook"]
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    options = [x for k, v in case["options"].items() for x in (f"--{k}", str(v))]
    subprocess.run([*lgw_cmd, "decode", str(data), "--copybook", str(copybook), *options, "-o", str(out),
                    "--rejects", str(rej)], capture_output=True, timeout=120)
    want = _lines(out)
    assert len(want) == case["record_count"] or case["id"] == "test9_cp1141"

    def reader(output: str) -> Any:
        r = spark.read.format("lgw").option("copybook", str(copybook)).option("output", output)
        for k, v in case["options"].items():
            r = r.option(k, v)
        # at least two records a partition and at most about four partitions: every file of more
        # than two records is cut into several
        stride = data.stat().st_size // max(len(want), 1)
        return r.option("partitionBytes", stride * max(2, -(-len(want) // 4)))

    df = reader("records").load(str(data))
    assert df.rdd.getNumPartitions() >= min(2, len(want))
    assert _jsonl(df.toArrow()) == want
    assert _reject_rows(reader("rejects").load(str(data))) == _lines(rej)


def test_example_job_writes_parquet_records_rejects_and_refuses_a_file_whose_totals_fail(
        spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    import importlib.util

    import pyarrow.parquet as pq

    from schemas.contract import load_contract

    spec = importlib.util.spec_from_file_location(
        "decode_job", Path(__file__).parent.parent / "deploy" / "spark" / "decode_job.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)

    drop = tmp_path / "drop"
    drop.mkdir()
    good, bad = drop / "A.BIN", drop / "B.BIN"
    for path, seed in ((good, "1"), (bad, "2")):
        subprocess.run([*lgw_cmd, "examples", "generate", "--records", "800", "--bad-every", "50", "--seed", seed,
                        "-o", str(path)], check=True, capture_output=True, timeout=120)
    raw = bytearray(bad.read_bytes())
    width = load_contract(EXAMPLE_CONTRACT).spec.framing.record_length
    del raw[width * 10: width * 11]  # one detail record fewer than B's trailer counts
    bad.write_bytes(bytes(raw))
    out = tmp_path / "out"
    summary = job.run(spark, str(EXAMPLE_CONTRACT), str(drop), str(out), partition_bytes=30_000)
    assert summary["files_rejected"] == [str(bad.resolve())]

    cli_out, cli_rej = tmp_path / "a.jsonl", tmp_path / "a.rej.jsonl"
    subprocess.run([*lgw_cmd, "decode", str(good), "--contract", str(EXAMPLE_CONTRACT), "-o", str(cli_out),
                    "--rejects", str(cli_rej)], capture_output=True, timeout=120)
    records = pq.read_table(out / "records")
    assert records.num_rows == summary["records"] == len(_lines(cli_out))
    assert sorted(r["TXN_ID"] for r in records.to_pylist()) == sorted(r["TXN_ID"] for r in _lines(cli_out))
    rejects = pq.read_table(out / "rejects").to_pylist()
    assert {r["file"] for r in rejects} == {str(good.resolve()), str(bad.resolve())}
    assert sum(r["file"] == str(good.resolve()) for r in rejects) == len(_lines(cli_rej))
    assert json.loads((out / "control.json").read_text())["files_rejected"] == [str(bad.resolve())]


def test_a_read_capped_at_n_records_from_a_record_boundary_stops_there(tmp_path: Path) -> None:
    from schemas.records import Framing, ReadPosition, read_records

    data = tmp_path / "F.BIN"
    data.write_bytes(b"".join(f"{i:04d}\r\n".encode() for i in range(100)))  # 4-byte records, CRLF ends
    framing = Framing("F", 4, None, None, pad_byte=0x20, max_line_bytes=64)
    chunks = list(read_records(data, framing, batch_size=7, start=ReadPosition(30 * 6, 30), records=25))
    rows = [bytes(r).decode() for c in chunks for r in c.matrix]
    assert rows == [f"{i:04d}" for i in range(30, 55)]
    assert [c.start_index for c in chunks] == [30, 37, 44, 51]
    assert chunks[-1].end == ReadPosition(55 * 6, 55)
