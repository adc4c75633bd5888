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
from tests.model_servers import garbage_server, model_server_logs  # noqa: F401  (fixtures)

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


def _variable_copy(fixed: Path, width: int, target: Path, *, blocked: bool) -> Path:
    """The records of a fixed-length file as IBM V (RDW per record, its length counting
    the RDW) or VB (blocks of seven such records behind a BDW)."""
    data = fixed.read_bytes()
    rdws = [(width + 4).to_bytes(2, "big") + b"\0\0" + data[i: i + width] for i in range(0, len(data), width)]
    if blocked:
        blocks = [rdws[i: i + 7] for i in range(0, len(rdws), 7)]
        rdws = [(4 + sum(map(len, b))).to_bytes(2, "big") + b"\0\0" + b"".join(b) for b in blocks]
    target.write_bytes(b"".join(rdws))
    return target


@pytest.mark.parametrize("fmt", ["V", "VB"])
def test_variable_length_files_are_cut_by_an_index_pass_and_decode_as_lgw_decode_does(
        spark: Any, tmp_path: Path, lgw_cmd: list[str], fmt: str) -> None:
    from gateway.spark.source import control_reports, split
    from schemas.contract import load_contract

    contract = load_contract(EXAMPLE_CONTRACT)
    fixed = _card_file(lgw_cmd, tmp_path / "F.BIN", 3000)
    data = _variable_copy(fixed, contract.spec.framing.record_length, tmp_path / f"{fmt}.BIN", blocked=fmt == "VB")
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    cli = subprocess.run([*lgw_cmd, "decode", str(data), "--contract", str(EXAMPLE_CONTRACT), "--record-format", fmt,
                          "-o", str(out), "--rejects", str(rej)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr
    df = (spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).option("record_format", fmt)
          .option("partitionBytes", 40_000).option("output", "all").load(str(data)))
    assert df.rdd.getNumPartitions() >= 8  # 372 kB in 40 kB ranges
    records, rejects, control = split(df)
    got = _jsonl(records.drop("source_file", "source_record").toArrow())
    assert len(got) > 2900 and got == _lines(out)
    assert _reject_rows(rejects) == _lines(rej)
    [report] = control_reports(contract, control.collect()).values()
    assert json.loads(json.dumps(report.to_json(), default=str)) == json.loads(cli.stderr.splitlines()[-1])


def test_a_block_that_breaks_mid_file_ends_the_read_in_the_last_partition_as_in_lgw_decode(
        spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    width = load_contract_example().spec.framing.record_length
    data = _variable_copy(_card_file(lgw_cmd, tmp_path / "F.BIN", 2100), width, tmp_path / "VB.BIN", blocked=True)
    raw = bytearray(data.read_bytes())
    block = 4 + 7 * (width + 4)
    raw[block * 200: block * 200 + 4] = b"\x00\x03\x00\x00"  # block 201 (records 1401-): BDW length 3
    data.write_bytes(bytes(raw))
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    subprocess.run([*lgw_cmd, "decode", str(data), "--contract", str(EXAMPLE_CONTRACT), "--record-format", "VB",
                    "-o", str(out), "--rejects", str(rej)], capture_output=True, text=True, timeout=120)
    reader = (spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).option("record_format", "VB")
              .option("partitionBytes", 30_000))
    df = reader.load(str(data))
    assert df.rdd.getNumPartitions() >= 4
    got = _jsonl(df.toArrow())
    assert 1300 < len(got) < 1400 and got == _lines(out)
    rejects = _reject_rows(reader.option("output", "rejects").load(str(data)))
    assert rejects == [{k: v for k, v in r.items() if v is not None} for r in _lines(rej)]
    assert "invalid BDW length 3" in rejects[-1]["reason"]


def load_contract_example() -> Any:
    from schemas.contract import load_contract

    return load_contract(EXAMPLE_CONTRACT)


def _cases() -> list[tuple[Path, dict[str, Any]]]:
    from tests.conftest import COBRIX

    out = []
    for base in (COBRIX, EXTRA):
        cases = base / "cases.json"
        if not cases.is_file():
            continue
        out += [(base, c) for c in json.loads(cases.read_text())["cases"]]
    return out


CASES = _cases()


@pytest.mark.parametrize("base,case", CASES, ids=[c["id"] for _, c in CASES])
def test_cobrix_cases_decode_as_lgw_decode_does_in_several_partitions(spark: Any, tmp_path: Path, lgw_cmd: list[str],
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
        # every file of more than one record is cut: a small one into a partition a record
        # (V, VB and text: by the index pass), a larger one into about four
        size = data.stat().st_size
        return r.option("partitionBytes", 1 if len(want) <= 8 else size // 4)

    df = reader("records").load(str(data))
    assert df.rdd.getNumPartitions() >= min(2, len(want))
    assert _jsonl(df.toArrow()) == want
    assert _reject_rows(reader("rejects").load(str(data))) == _lines(rej)


@pytest.mark.parametrize("scored", [False, True], ids=["decode_job", "score_job"])
def test_example_job_writes_parquet_records_rejects_and_refuses_a_file_whose_totals_fail(
        spark: Any, tmp_path: Path, lgw_cmd: list[str], scored: bool) -> None:
    import pyarrow.parquet as pq

    from gateway.spark.job import run
    from gateway.spark.score import ScoringJob
    from schemas.contract import load_contract

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
    job = ScoringJob(contract=str(EXAMPLE_CONTRACT)) if scored else None
    summary = run(spark, str(EXAMPLE_CONTRACT), str(drop), str(out), partition_bytes=30_000, scoring=job)
    assert summary["files_rejected"] == [str(bad.resolve())]

    if scored:
        _, want, want_rejects = _lgw_score(lgw_cmd, good, EXAMPLE_CONTRACT, tmp_path)
    else:
        cli_out, cli_rej = tmp_path / "a.jsonl", tmp_path / "a.rej.jsonl"
        subprocess.run([*lgw_cmd, "decode", str(good), "--contract", str(EXAMPLE_CONTRACT), "-o", str(cli_out),
                        "--rejects", str(cli_rej)], capture_output=True, timeout=120)
        want, want_rejects = _lines(cli_out), _lines(cli_rej)
    records = pq.read_table(out / "records").sort_by("source_record")
    assert records.num_rows == summary["records"] == len(want)
    assert set(records.column("source_file").to_pylist()) == {str(good.resolve())}
    assert "source_raw" not in records.column_names and "lgw_reject" not in records.column_names
    got = _jsonl(records.drop_columns(["source_file"] if scored else ["source_file", "source_record"]))
    assert got == want
    if scored:
        assert summary["scored_by"] == {"model": len(want)}
    rejects = pq.read_table(out / "rejects").to_pylist()
    assert {r["file"] for r in rejects} == {str(good.resolve()), str(bad.resolve())}
    assert sum(r["file"] == str(good.resolve()) for r in rejects) == len(want_rejects)
    control = json.loads((out / "control.json").read_text())
    assert control["files_rejected"] == [str(bad.resolve())]
    assert control["control"][str(good.resolve())]["ok"] is True
    with pytest.raises(FileExistsError, match="expected a new output folder"):
        run(spark, str(EXAMPLE_CONTRACT), str(drop), str(out), scoring=job)


def test_the_score_job_runs_with_python_in_local_mode_and_appends_rejects_to_a_table(
        tmp_path: Path, lgw_cmd: list[str]) -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("no Java runtime (scripts/system-packages.sh installs openjdk-17-jre-headless)")
    drop = tmp_path / "drop"
    drop.mkdir()
    _card_file(lgw_cmd, drop / "DAILY.BIN", 1500)
    job = Path(__file__).parent.parent / "deploy" / "spark" / "score_job.py"
    run = subprocess.run([sys.executable, str(job), "--contract", str(EXAMPLE_CONTRACT), "--drop", str(drop),
                          "--out", str(tmp_path / "out"), "--master", "local[1]", "--partition-bytes", "50000",
                          "--rejects-table", "lgw_rejects"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["files"] == 1 and summary["files_rejected"] == []
    assert summary["records"] + summary["rejects"] == 1500  # each damaged record has one bad field
    assert summary["scored_by"] == {"model": summary["records"]}
    assert list((tmp_path / "spark-warehouse" / "lgw_rejects").glob("*.parquet"))  # the session's catalog table


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


# --------------------------------------------------------------------------- scoring (gateway.spark.score)
def _score_on_spark(spark: Any, data: Path, contract: Path, config: Path | None = None,
                    partition_bytes: int = 40_000) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(scored records without source_file, decode and scoring rejects by record) from one
    `output=all` read, as the example job makes them; the control totals checked."""
    from gateway.spark.score import ScoringJob
    from gateway.spark.source import control_reports, split
    from schemas.contract import load_contract

    records = (spark.read.format("lgw").option("contract", str(contract)).option("partitionBytes", partition_bytes)
               .option("output", "all").load(str(data)))
    assert records.rdd.getNumPartitions() >= 4
    job = ScoringJob(contract=str(contract), config=None if config is None else str(config))
    scored, rejects, control = split(job.score(records).persist())
    rows = _jsonl(scored.drop("source_file").toArrow())
    assert {r["source_file"] for r in scored.select("source_file").collect()} == {str(data.resolve())}
    [report] = control_reports(load_contract(contract), control.collect()).values()
    assert report.ok and report.details == len(rows) + len({r["record"] for r in _reject_rows(rejects)})
    return rows, sorted(_reject_rows(rejects), key=lambda r: (r["record"], r.get("field_offset") or 0))


def _lgw_score(lgw_cmd: list[str], data: Path, contract: Path, tmp_path: Path, *extra: str
               ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    out, rej = tmp_path / "scored.jsonl", tmp_path / "scored.rej.jsonl"
    cli = subprocess.run([*lgw_cmd, "score", "--contract", str(contract), "--input", str(data), "--output", str(out),
                          "--rejects", str(rej), *extra], capture_output=True, text=True, timeout=300)
    assert cli.returncode in (0, 1), cli.stderr
    rejects = sorted(({k: v for k, v in r.items() if v is not None} for r in _lines(rej)),
                     key=lambda r: (r["record"], r.get("field_offset") or 0))
    return json.loads(cli.stdout.splitlines()[-1]), _lines(out), rejects


def _card_file(lgw_cmd: list[str], path: Path, records: int, bad_every: int = 97) -> Path:
    subprocess.run([*lgw_cmd, "examples", "generate", "--records", str(records), "--bad-every", str(bad_every),
                    "-o", str(path)], check=True, capture_output=True, timeout=120)
    return path


def _config(tmp_path: Path, model: dict[str, Any]) -> Path:
    import yaml

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": {"fraud": model},
                                    "pipelines": {"card_txn": {"contract": str(EXAMPLE_CONTRACT), "model": "fraud"}},
                                    "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}}))
    return path


def test_scores_on_spark_equal_lgw_score_with_the_bundled_onnx_model(spark: Any, tmp_path: Path,
                                                                     lgw_cmd: list[str]) -> None:
    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 3000)
    summary, want, want_rejects = _lgw_score(lgw_cmd, data, EXAMPLE_CONTRACT, tmp_path)
    assert summary["scored_by"] == {"model": len(want)} and len(want) > 2900
    got, rejects = _score_on_spark(spark, data, EXAMPLE_CONTRACT)
    assert got == want  # provenance, pii masking and source_record included
    assert rejects == want_rejects and len(rejects) >= 30


@pytest.mark.integration
def test_a_poison_record_at_a_model_server_is_isolated_and_rejected_on_spark_as_by_lgw_score(
        spark: Any, tmp_path: Path, lgw_cmd: list[str], garbage_server: Any) -> None:  # noqa: F811
    from tests.test_realtime_kafka import kserve_model

    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 2000)
    _summary, clean, _ = _lgw_score(lgw_cmd, data, EXAMPLE_CONTRACT, tmp_path)
    poison = clean[1234]
    garbage_server.set_mode("poison", poison_amount=float(poison["TXN_AMOUNT"]))
    model = kserve_model(f"{garbage_server.base_url}/v2")
    model["breaker"]["minimum_number_of_calls"] = 1000  # the isolating calls must not open it
    config = _config(tmp_path, model)
    summary, want, want_rejects = _lgw_score(lgw_cmd, data, EXAMPLE_CONTRACT, tmp_path, "--config", str(config))
    assert summary["scored_by"] == {"model": len(want)}
    got, rejects = _score_on_spark(spark, data, EXAMPLE_CONTRACT, config)
    assert got == want
    assert poison["source_record"] not in {r["source_record"] for r in got}
    assert rejects == want_rejects
    [refused] = [r for r in rejects if r["record"] == poison["source_record"]]
    assert refused["reason"].startswith("model server failed on this record")
    assert refused["raw_withheld"] == "pii"  # the card contract marks the PAN pii: no bytes in clear


@pytest.mark.integration
def test_a_model_server_that_is_down_is_scored_around_with_the_fallback_rules_on_every_executor(
        spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    from tests.model_servers import free_port
    from tests.test_realtime_kafka import kserve_model

    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 2000)
    config = _config(tmp_path, kserve_model(f"http://127.0.0.1:{free_port()}/v2"))
    summary, want, want_rejects = _lgw_score(lgw_cmd, data, EXAMPLE_CONTRACT, tmp_path, "--config", str(config))
    assert summary["scored_by"] == {"fallback": len(want)}
    got, rejects = _score_on_spark(spark, data, EXAMPLE_CONTRACT, config)
    assert got == want
    assert {r["scored_by"] for r in got} == {"fallback"} and {r["model_name"] for r in got} == {None}
    assert rejects == want_rejects


def test_the_kill_switch_is_read_once_for_a_spark_scoring_job(spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    from gateway.score import ScoringPaused
    from gateway.spark.score import ScoringJob
    from tests.model_servers import FRAUD_ONNX

    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 1000)
    config = _config(tmp_path, {"endpoint": {"backend": "onnx", "path": str(FRAUD_ONNX)}})
    switch = [*lgw_cmd, "killswitch", "set", "card_txn", "--config", str(config), "--reason", "drill", "--mode"]
    subprocess.run([*switch, "force_fallback"], check=True, capture_output=True, timeout=60)
    got, _ = _score_on_spark(spark, data, EXAMPLE_CONTRACT, config)
    assert len(got) > 900 and {r["scored_by"] for r in got} == {"fallback"}
    subprocess.run([*switch, "pause"], check=True, capture_output=True, timeout=60)
    records = spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).option("sourceColumns", "true")
    with pytest.raises(ScoringPaused, match="paused by its kill switch"):
        ScoringJob(contract=str(EXAMPLE_CONTRACT), config=str(config)).score(records.load(str(data)))


def test_a_scored_records_read_splits_into_records_rejects_and_no_control_rows(
        spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    from gateway.spark.score import ScoringJob
    from gateway.spark.source import split

    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 500)
    records = (spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).option("sourceColumns", "true")
               .load(str(data)))
    scored, rejects, control = split(ScoringJob(contract=str(EXAMPLE_CONTRACT)).score(records))
    assert scored.count() == records.count() > 490
    assert rejects.count() == 0 and control.count() == 0
    assert "source_raw" not in scored.columns and "lgw_reject" not in scored.columns


def test_scoring_needs_the_source_columns(spark: Any, tmp_path: Path, lgw_cmd: list[str]) -> None:
    from gateway.spark.score import ScoringJob

    data = _card_file(lgw_cmd, tmp_path / "DAILY.BIN", 100)
    records = spark.read.format("lgw").option("contract", str(EXAMPLE_CONTRACT)).load(str(data))
    with pytest.raises(ValueError, match="option sourceColumns=true, found no column source_record"):
        ScoringJob(contract=str(EXAMPLE_CONTRACT)).score(records)
