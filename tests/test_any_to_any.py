"""Batch sources into sinks they were not welded to before, against the real databases:
an ODBC table scored into a fixed-width file for the mainframe, a dropped file upserted
into a table with its rejects in a table, and a table run stopped by SIGTERM."""

from __future__ import annotations

import asyncio
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

from adapters.files.sink import encode_records
from adapters.odbc import OdbcSink
from gateway import table_job
from gateway.cli import main
from gateway.config import GatewayConfig, load_config
from gateway.governance.pii import policy_for
from gateway.state import StateStore
from gateway.table_job import TableRunSummary, run_table_pipeline
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file, model_info
from tests.test_odbc import PG, Db, db, open_db  # noqa: F401 - `db`: the fixture over SQLite, PostgreSQL, MariaDB

ROOT = Path(__file__).resolve().parent.parent
LRECL = 120
OUTPUT_WIDTHS = 12 + 8 + 12 + 12 + 24  # fraud_score (its fixed width), scored_by, model_version, rule_id, reason


def _database(kind: str, connection_string: str) -> Iterator[Db]:
    database = Db(kind, connection_string, open_db(kind, connection_string))
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
    asyncio.run(loader.close())
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
    # it) with its pii field masked in place (the contract's policy), followed by the score
    # fields in the same code page
    expected = policy_for(card).redact_raw(encode_records(card.spec, decoded))
    assert [r[:LRECL] for r in records] == [bytes(row) for row in expected]
    pan = next(node for node, rules in card.rules.values() if rules.pii)
    assert all(r[pan.offset + 6: pan.offset + 12].decode("cp037") == "******" for r in records)
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


# ------------------------------------------------------------------ the same behaviours for a table source
async def _table_pipeline(lite: Db, card: Contract, tmp_path: Path, *, records: int = 1_000,
                          model: dict[str, Any] | None = None) -> tuple[GatewayConfig, str, pa.Table]:
    table, decoded = await asyncio.to_thread(_load_cards, lite, card, tmp_path, records)
    source = {"type": "odbc", "connection": {"connection_string": lite.connection_string}, "table": table,
              "mode": "incrementing", "key": "TXN_ID", "batch_size": 250}
    path = _config(tmp_path, "cards", source, {"type": "file", "folder": "out", "format": "jsonl"})
    doc = yaml.safe_load(path.read_text())
    if model is not None:
        doc["models"] = {"fraud": model}
    path.write_text(yaml.safe_dump(doc))
    return load_config(path), "cards", decoded


def _scored(summary: TableRunSummary) -> list[dict[str, Any]]:
    assert summary.output is not None
    return [json.loads(line) for line in Path(summary.output).read_text().splitlines()]



@pytest.mark.integration
async def test_a_run_right_after_a_stopped_one_publishes_its_own_file(
        lite: Db, card: Contract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both runs here start within a second of each other: a name stamped to the second
    gave them one file, and the second run's published file replaced the first's."""
    cfg, name, decoded = await _table_pipeline(lite, card, tmp_path, records=2_000)
    stop = asyncio.Event()
    real_loop = table_job.BatchLoop

    def stops_after_the_first_batch(*args: Any, on_acked: Any, **kw: Any) -> Any:
        def acked(*a: Any) -> None:
            on_acked(*a)
            stop.set()
        return real_loop(*args, on_acked=acked, **kw)

    monkeypatch.setattr(table_job, "BatchLoop", stops_after_the_first_batch)
    with StateStore(cfg.state.url) as state:
        first = await run_table_pipeline(name, cfg, state, stop=stop)
        monkeypatch.setattr(table_job, "BatchLoop", real_loop)
        rest = await run_table_pipeline(name, cfg, state)
    assert first.interrupted and 0 < first.records_out < 2_000
    assert first.output != rest.output and first.records_out + rest.records_out == 2_000
    ids = [r["TXN_ID"] for r in _scored(first) + _scored(rest)]
    assert sorted(ids) == sorted(decoded.column("TXN_ID").to_pylist())


@pytest.mark.integration
async def test_a_record_that_crashes_a_table_run_is_isolated_and_rejected(
        lite: Db, card: Contract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, name, decoded = await _table_pipeline(lite, card, tmp_path)
    poison = decoded.column("TXN_ID")[617].as_py()
    real_build = table_job.build_pipeline

    def poisoned_pipeline(*args: Any, **kw: Any) -> Any:
        pipeline = real_build(*args, **kw)
        score = pipeline.score

        async def chokes(table: pa.Table) -> Any:
            if poison in table.column("TXN_ID").to_pylist():
                raise ValueError(f"cannot score {poison}")
            return await score(table)

        pipeline.score = chokes  # type: ignore[method-assign]
        return pipeline

    monkeypatch.setattr(table_job, "build_pipeline", poisoned_pipeline)
    with StateStore(cfg.state.url) as state:
        summary = await run_table_pipeline(name, cfg, state)
    assert (summary.records_in, summary.records_out, summary.rejected) == (1_000, 999, 1)
    assert poison not in {r["TXN_ID"] for r in _scored(summary)}
    assert summary.rejects_path is not None
    [reject] = [json.loads(x) for x in Path(summary.rejects_path).read_text().splitlines()]
    assert reject["record"] == 618 and f"ValueError: cannot score {poison}" in reject["reason"]


@pytest.mark.integration
async def test_a_table_run_scores_with_the_rules_while_the_model_is_down(lite: Db, card: Contract,
                                                                        tmp_path: Path) -> None:
    down = {"endpoint": {"backend": "kserve", "url": "http://127.0.0.1:9", "model_name": "fraud"},
            "timeout_s": 0.5, "retry": {"max_attempts": 1}}
    cfg, name, _ = await _table_pipeline(lite, card, tmp_path, model=down)
    with StateStore(cfg.state.url) as state:
        summary = await run_table_pipeline(name, cfg, state)
    assert summary.records_out == 1_000 and summary.scored_by == {"fallback": 1_000}
    assert {r["scored_by"] for r in _scored(summary)} == {"fallback"}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["force_fallback", "pause"])
async def test_the_kill_switch_holds_for_a_table_run(lite: Db, card: Contract, tmp_path: Path, mode: str) -> None:
    cfg, name, _ = await _table_pipeline(lite, card, tmp_path)
    with StateStore(cfg.state.url) as state:
        state.set_kill_switch(name, mode, "drill", "ops")
        stop = asyncio.Event()
        if mode == "pause":  # nothing is scored while paused; a stop request ends the wait
            asyncio.get_running_loop().call_later(1.5, stop.set)
        summary = await run_table_pipeline(name, cfg, state, stop=stop)
        if mode == "force_fallback":
            assert summary.scored_by == {"fallback": 1_000} and not summary.interrupted
            return
        assert summary.interrupted and summary.records_in == summary.records_out == 0
        state.set_kill_switch(name, "off", "drill over", "ops")
        summary = await run_table_pipeline(name, cfg, state)  # the watermark did not move: all of it now
    assert summary.records_out == 1_000 and summary.scored_by == {"model": 1_000}
