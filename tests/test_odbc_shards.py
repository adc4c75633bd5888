"""An ODBC table split across workers by key: `shard=(K, N)` reads the rows whose
ABS(key % N) is K, with a watermark of its own, so N workers together read every row
once, and each one resumes after its own rows. Against the real SQLite, PostgreSQL and
MariaDB ODBC drivers (the fixtures of test_odbc)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from adapters.odbc import OdbcSink, OdbcSource
from gateway.watermarks import WatermarkStore
from schemas.contract import Contract
from schemas.errors import ConfigError
from tests.helpers import postgres_schema
from tests.test_odbc import (  # noqa: F401  (fixtures)
    T0,
    Db,
    contract,
    db,
    drain_source,
    expected_table,
    source_rows,
    table_pipeline_config,
    watermarks,
)

SHARDS = 3


def _ids(table: pa.Table) -> list[int]:
    return [int(v) for v in table.column("TXN_ID").to_pylist()]


@pytest.mark.integration
async def test_shards_read_every_row_once_and_keep_watermarks_of_their_own(
        db: Db, contract: Contract, watermarks: WatermarkStore) -> None:  # noqa: F811
    rows = source_rows(20, start=-6)  # negative keys too: ABS(key % N) puts each in one shard
    table = db.accounts_table(rows)

    def shard(k: int) -> OdbcSource:
        return OdbcSource(db.connection_string, contract=contract, table=table, pipeline="test-odbc",
                          mode="incrementing", key="TXN_ID", batch_size=2, watermarks=watermarks, shard=(k, SHARDS))

    async def read(k: int) -> list[int]:
        source = shard(k)
        await source.connect()
        got = await drain_source(source)
        await source.close()
        return _ids(got)

    first = [await read(k) for k in range(SHARDS)]
    assert all(first)  # every shard had rows
    assert sorted(i for part in first for i in part) == [r[0] for r in rows]  # each row once
    for k, part in enumerate(first):
        assert {abs(i) % SHARDS for i in part} == {k}
        assert watermarks.get("test-odbc", f"{table}#{k}/{SHARDS}") == {"mode": "incrementing", "key": max(part)}
    assert watermarks.get("test-odbc", table) is None  # no shared watermark

    db.insert(table, source_rows(7, start=14))
    second = [await read(k) for k in range(SHARDS)]
    assert sorted(i for part in second for i in part) == list(range(14, 21))  # only the new rows
    assert all({abs(i) % SHARDS for i in part} <= {k} for k, part in enumerate(second))


@pytest.mark.integration
async def test_a_shard_of_a_timestamp_source_reads_its_rows_only(db: Db, contract: Contract,  # noqa: F811
                                                                 watermarks: WatermarkStore) -> None:  # noqa: F811
    rows = source_rows(9)
    table = db.accounts_table(rows)
    got: list[int] = []
    for k in range(2):
        source = OdbcSource(db.connection_string, contract=contract, table=table, pipeline="test-odbc",
                            mode="timestamp", key="TXN_ID", timestamp="UPDATED_AT", batch_size=2,
                            watermarks=watermarks, shard=(k, 2))
        await source.connect()
        part = await drain_source(source)
        await source.close()
        assert part.select(["TXN_ID", "ACCOUNT", "AMOUNT"]).equals(expected_table([r for r in rows if r[0] % 2 == k]))
        got += _ids(part)
    assert sorted(got) == [r[0] for r in rows]
    for k, newest in ((0, 8), (1, 9)):  # each shard's watermark is its own newest row's timestamp
        stored = watermarks.get("test-odbc", f"{table}#{k}/2")
        assert stored is not None and datetime.fromisoformat(stored["ts"]).replace(tzinfo=None) == \
            T0 + timedelta(minutes=newest - 1)


def test_a_shard_needs_an_integer_key(tmp_path: Path, contract: Contract) -> None:  # noqa: F811
    cs = "Driver={SQLite3};Database=:memory:;"
    with pytest.raises(ConfigError, match="0 <= K < N"):
        OdbcSource(cs, contract=contract, pipeline="p", table="t", key="TXN_ID", shard=(2, 2))
    with pytest.raises(ConfigError, match="needs a key"):
        OdbcSource(cs, contract=contract, pipeline="p", table="t", shard=(0, 2))


@pytest.mark.integration
def test_lgw_batch_run_shards_split_a_table_between_two_processes(db: Db, tmp_path: Path,  # noqa: F811
                                                                   lgw_cmd: list[str]) -> None:
    from schemas.contract import load_contract
    from schemas.examples import contract_path, generate_card_file

    card = load_contract(contract_path())
    generate_card_file(tmp_path / "CARDTXN.DAT", records=3000, seed=17)
    decoded = pa.concat_tables([dc.table for dc in card.decode_file(tmp_path / "CARDTXN.DAT")])
    # TXN_ID is text: an integer SEQ column (as a legacy table's surrogate key) splits the table
    decoded = decoded.append_column("SEQ", pa.array(range(1, decoded.num_rows + 1), pa.int64()))
    source_table, results_table = db.name("lgw_src"), db.name("lgw_scores")
    loader = OdbcSink(db.connection_string, source_table, "SEQ")
    asyncio.run(loader.connect())
    loader.write_table(decoded.slice(0, 2000))
    pipeline = f"cards_{db.kind}"
    db.pipelines += [pipeline, f"{pipeline}#0/2", f"{pipeline}#1/2"]

    with postgres_schema("shards") as state_url:
        config = table_pipeline_config(db, pipeline, source_table, results_table, tmp_path, key="SEQ",
                                       batch_size=300, state_url=state_url)
        cfg_path = tmp_path / "gateway.yaml"
        cfg_path.write_text(yaml.safe_dump(config))

        def both() -> list[dict[str, Any]]:
            """The two shards as two `lgw batch run` processes at the same time."""
            procs = [subprocess.Popen([*lgw_cmd, "batch", "run", pipeline, "--config", str(cfg_path),
                                       "--shard", f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      cwd=tmp_path) for k in range(2)]
            summaries = []
            for p in procs:
                out, err = p.communicate(timeout=300)
                assert p.returncode == 0, err.decode()[-3000:]
                summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
            return summaries

        first = both()
        assert all(s["records_in"] > 0 for s in first)  # both did part of the work
        assert sum(s["records_in"] for s in first) == sum(s["records_out"] for s in first) == 2000
        assert [s["records_in"] for s in both()] == [0, 0]  # each shard's watermark moved past its rows
        loader.write_table(decoded.slice(2000))
        asyncio.run(loader.close())
        third = both()
        assert sum(s["records_in"] for s in third) == 1000

    count = db.conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT {db.q('TXN_ID')}) FROM {db.q(results_table)}").fetchone()
    assert tuple(count) == (3000, 3000)  # every record once

    bad = subprocess.run([*lgw_cmd, "batch", "run", pipeline, "--config", str(cfg_path), "--shard", "2/2"],
                         capture_output=True, cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and b"0 <= K < N" in bad.stderr
