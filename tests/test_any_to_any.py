"""Batch sources into sinks they were not welded to before, against the real databases:
an ODBC table scored into a fixed-width file for the mainframe, a dropped file upserted
into a table with its rejects in a table, and a table run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from adapters.files.outbox import encode_records
from adapters.odbc import OdbcSink
from gateway.cli import main
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file, model_info
from tests.test_odbc import PG, Db, _open, db  # noqa: F401 - `db`: the fixture over SQLite, PostgreSQL, MariaDB

ROOT = Path(__file__).resolve().parent.parent
LRECL = 120
OUTPUT_WIDTHS = 12 + 8 + 12 + 12 + 24  # fraud_score (its fixed width), scored_by, model_version, rule_id, reason


def _database(kind: str, connection_string: str) -> Iterator[Db]:
    database = Db(kind, connection_string, _open(kind, connection_string))
    yield database
    for table in database.tables:
        database.execute(f"DROP TABLE IF EXISTS {database.q(table)}")
    database.conn.close()


@pytest.fixture
def pg() -> Iterator[Db]:
    yield from _database("postgresql", PG)


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Db]:
    yield from _database("sqlite", f"Driver={{SQLite3}};Database={tmp_path / 'legacy.db'};")


@pytest.fixture(scope="module")
def card() -> Contract:
    return load_contract(contract_path())


def _model() -> dict[str, Any]:
    info = model_info("fraud")
    return {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}}


def _load_cards(target: Db, card: Contract, tmp_path: Path, records: int, *,
                bad_every: int = 0) -> tuple[str, pa.Table]:
    """A legacy table holding the detail records of a generated card file."""
    generate_card_file(tmp_path / "CARDTXN.DAT", records=records, seed=21, bad_every=bad_every)
    decoded = pa.concat_tables([dc.table for dc in card.decode_file(tmp_path / "CARDTXN.DAT")])
    table = target.name("lgw_cards")
    loader = OdbcSink(target.connection_string, table, "TXN_ID")
    loader.write_table(decoded)
    loader._close()
    return table, decoded


def _config(tmp_path: Path, pipeline: str, source: dict[str, Any], sink: dict[str, Any],
            rejects: dict[str, Any] | None = None, batch_size: int = 50_000) -> Path:
    pipe: dict[str, Any] = {"contract": str(contract_path()), "model": "fraud", "source": source, "sink": sink,
                            "batch_size": batch_size}
    if rejects is not None:
        pipe["rejects"] = rejects
    doc = {"models": _model(), "pipelines": {pipeline: pipe}, "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _run(config: Path, pipeline: str, capsys: pytest.CaptureFixture[str], expect: int = 0) -> dict[str, Any]:
    code = main(["batch", "run", pipeline, "--config", str(config)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == expect, out
    return json.loads(out[-1])


@pytest.mark.integration
def test_a_table_is_scored_into_a_fixed_width_file_for_the_mainframe(db: Db, card: Contract, tmp_path: Path,  # noqa: F811
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    table, decoded = _load_cards(db, card, tmp_path, 1_200)
    pipeline = db.pipeline()
    source = {"type": "odbc", "connection": {"connection_string": db.connection_string}, "table": table,
              "mode": "incrementing", "key": "TXN_ID", "batch_size": 500}
    config = _config(tmp_path, pipeline, source, {"type": "file", "folder": "out", "format": "fixed"})
    first = _run(config, pipeline, capsys)
    assert first["records_in"] == first["records_out"] == 1_200 and first["rejected"] == 0
    out = Path(first["output"])
    assert out.parent == tmp_path / "out" and out.name.startswith(f"{pipeline}.") and out.suffix == ".dat"
    data = out.read_bytes()
    width = LRECL + OUTPUT_WIDTHS
    assert len(data) == 1_200 * width
    records = [data[i: i + width] for i in range(0, len(data), width)]
    # each record is the contract's layout of the row (the mainframe reads it as it wrote
    # it), followed by the score fields in the same code page
    expected = encode_records(card.spec, decoded)
    assert [r[:LRECL] for r in records] == [bytes(row) for row in expected]
    scored_by = {r[LRECL + 12: LRECL + 20].decode("cp037").strip() for r in records}  # the contract's code page
    assert scored_by == {"model"}
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left
    # the watermark moved past what the file holds: a second run has nothing new
    assert _run(config, pipeline, capsys)["records_in"] == 0


@pytest.mark.integration
def test_a_dropped_file_is_upserted_into_a_table_and_its_rejects_into_another(
        pg: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = pg
    results, rejected = database.name("lgw_scores"), database.name("lgw_rejects")
    connection = {"connection_string": database.connection_string}
    drop = {"inbox": "drop/inbox", "outbox": "drop/outbox", "stable_for_s": 0}
    config = _config(tmp_path, "cards", drop,
                     {"type": "odbc", "connection": connection, "table": results, "key": ["TXN_ID"]},
                     {"type": "odbc", "connection": connection, "table": rejected}, batch_size=400)
    (tmp_path / "drop" / "inbox").mkdir(parents=True)
    generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=2_000, seed=5, bad_every=97)
    summary = _run(config, "cards", capsys, expect=1)
    assert summary["status"] == "done" and summary["rejected"] > 0
    assert summary["records_out"] + summary["rejected"] == summary["records_in"] == 2_000
    assert summary["output"] == f"odbc:{results}"
    q = database.q
    (rows, keys), = database.rows(f"SELECT COUNT(*), COUNT(DISTINCT {q('TXN_ID')}) FROM {q(results)}")
    assert rows == keys == summary["records_out"]
    problems = database.rows(f"SELECT {q('record')}, {q('field')}, {q('reason')}, {q('raw')} "
                             f"FROM {q(rejected)} WHERE {q('pipeline')} = ?", "cards")
    assert len({r[0] for r in problems}) == summary["rejected"]
    assert all(r[2] and r[0] > 0 for r in problems)
    manifest = json.loads(next((tmp_path / "drop" / "outbox").glob("*.manifest.json")).read_text())
    assert manifest["outputs"]["scored"] == {"format": "odbc", "target": results, "records": rows}
    assert (tmp_path / "drop" / "done" / "CARDTXN.DAT").exists()


@pytest.mark.integration
def test_sigterm_ends_a_table_run_after_the_batch_in_hand_and_exits_3(lite: Db, card: Contract, tmp_path: Path,
                                                                      lgw_cmd: list[str]) -> None:
    database = lite
    table, decoded = _load_cards(database, card, tmp_path, 60_000)
    pipeline = database.pipeline()
    source = {"type": "odbc", "connection": {"connection_string": database.connection_string}, "table": table,
              "mode": "incrementing", "key": "TXN_ID", "batch_size": 500}
    config = _config(tmp_path, pipeline, source, {"type": "file", "folder": "out", "format": "jsonl"})
    (tmp_path / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [*lgw_cmd, "batch", "run", pipeline, "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not any((tmp_path / "out").glob(".*partial")) or \
            sum(p.stat().st_size for p in (tmp_path / "out").glob(".*partial")) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    first = json.loads(out.strip().splitlines()[-1])
    assert first["status"] == "interrupted" and 0 < first["records_out"] < 60_000
    assert "SIGTERM: finishing the current batch" in err
    # what was acked is what the published file holds; the next run takes the rest
    rest = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                                     check=True).stdout.strip().splitlines()[-1])
    assert first["records_out"] + rest["records_out"] == 60_000
    ids = [json.loads(line)["TXN_ID"] for f in sorted((tmp_path / "out").glob("*.jsonl"))
           for line in f.read_text().splitlines()]
    assert sorted(ids) == sorted(decoded.column("TXN_ID").to_pylist())  # every row once
