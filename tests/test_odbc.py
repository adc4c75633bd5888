"""ODBC source and sink against three real drivers: SQLite (SQLite3 ODBC, a temp file),
PostgreSQL (psqlODBC) and MariaDB (Connector/ODBC) on the machine's servers.

Under CI=true an unreachable database or a missing driver fails the test (CI provides
them); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.base import Sink, Source
from adapters.odbc import (
    Dialect,
    IdentifierError,
    OdbcConnection,
    OdbcConnectionConfig,
    OdbcDataError,
    OdbcSink,
    OdbcSource,
    SchemaDriftError,
    quote,
)
from adapters.odbc.connection import detect_dialect, redact, resolve_placeholders
from adapters.odbc.sink import pg_array_literal
from gateway.state import StateStore, StateStoreError
from gateway.watermarks import WatermarkStore
from schemas.contract import Contract, parse_contract
from schemas.errors import ConfigError
from tests.helpers import unavailable

PG = os.environ.get("LGW_TEST_ODBC_POSTGRES",
                    "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;Pwd=;")
MARIADB = os.environ.get("LGW_TEST_ODBC_MARIADB",
                         "Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=test;Uid=root;Pwd=;")

STATE_POSTGRES = os.environ.get("LGW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

CONTRACT = """
contract: acct_txn
version: 3
record:
  format: fixed_width
  encoding: ascii
  fields:
    - {name: TXN-ID, type: integer, digits: 9}
    - {name: ACCOUNT, type: string, length: 10}
    - {name: AMOUNT, type: decimal, digits: 9, scale: 2}
fields:
  ACCOUNT: {required: true}
"""
SCHEMA = pa.schema([("TXN_ID", pa.int64()), ("ACCOUNT", pa.string()), ("AMOUNT", pa.decimal128(9, 2))])
T0 = datetime(2024, 7, 1, 10, 0, 0)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return parse_contract(CONTRACT)


# ------------------------------------------------------------------------------ databases
@dataclass
class Db:
    """One reachable database: a connection string, an autocommit pyodbc connection for
    setting up and checking, and the tables to drop afterwards."""

    kind: str
    connection_string: str
    conn: Any
    tables: list[str] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)

    @property
    def dialect(self) -> Dialect:
        return detect_dialect(self.kind)

    def q(self, name: str) -> str:
        return quote(name, self.dialect)

    def name(self, prefix: str = "lgw_t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.tables.append(name)
        return name

    def pipeline(self) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        self.pipelines.append(name)
        return name

    def execute(self, sql: str, *params: Any) -> Any:
        return self.conn.execute(sql, *params)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, *params).fetchall()]

    @property
    def ts_type(self) -> str:
        return "DATETIME(6)" if self.dialect == Dialect.MARIADB else "TIMESTAMP"

    def accounts_table(self, rows: list[tuple[int, str, str, datetime]], *, drop: str | None = None) -> str:
        """TXN_ID / ACCOUNT / AMOUNT (the contract) plus UPDATED_AT, as a legacy table has them."""
        name = self.name()
        cols = {"TXN_ID": "BIGINT NOT NULL PRIMARY KEY", "ACCOUNT": "VARCHAR(10)", "AMOUNT": "DECIMAL(9,2)",
                "UPDATED_AT": self.ts_type}
        cols.pop(drop or "", None)
        self.execute(f"CREATE TABLE {self.q(name)} ({', '.join(f'{self.q(c)} {t}' for c, t in cols.items())})")
        self.insert(name, rows)
        return name

    def insert(self, table: str, rows: list[tuple[int, str, str, datetime]]) -> None:
        for r in rows:
            self.execute(f"INSERT INTO {self.q(table)} ({self.q('TXN_ID')}, {self.q('ACCOUNT')}, {self.q('AMOUNT')}, "
                         f"{self.q('UPDATED_AT')}) VALUES (?, ?, ?, ?)", r[0], r[1], Decimal(r[2]), r[3])


def open_db(kind: str, connection_string: str) -> Any:
    try:
        import pyodbc
    except ImportError:
        unavailable("pyodbc is not installed (pip install -e '.[odbc]')")
    try:
        return pyodbc.connect(connection_string, autocommit=True, timeout=3)
    except pyodbc.Error as exc:
        unavailable(f"{kind} not reachable over ODBC ({redact(connection_string)}): {exc}")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    kind = request.param
    cs = {"sqlite": f"Driver={{SQLite3}};Database={tmp_path / 'odbc.db'};", "postgresql": PG,
          "mariadb": MARIADB}[kind]
    conn = open_db(kind, cs)
    database = Db(kind, cs, conn)
    yield database
    for table in database.tables:
        conn.execute(f"DROP TABLE IF EXISTS {database.q(table)}")
    for pipeline in database.pipelines:
        with contextlib.suppress(Exception):  # no checkpoint table: nothing was written
            conn.execute(f"DELETE FROM {database.q('lgw_checkpoints')} WHERE {database.q('pipeline')} = ?", pipeline)
    conn.close()


@pytest.fixture
def watermarks(tmp_path: Path) -> Iterator[WatermarkStore]:
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    yield WatermarkStore(store)
    store.close()


def source_rows(n: int, start: int = 1, *, minutes: int = 1) -> list[tuple[int, str, str, datetime]]:
    return [(i, f"ACC{i:05d}", f"{i}.{i % 100:02d}", T0 + timedelta(minutes=minutes * (i - start)))
            for i in range(start, start + n)]


def expected_table(rows: list[tuple[int, str, str, datetime]]) -> pa.Table:
    return pa.table({"TXN_ID": [r[0] for r in rows], "ACCOUNT": [r[1] for r in rows],
                     "AMOUNT": [Decimal(r[2]) for r in rows]}, schema=SCHEMA)


async def drain_source(source: OdbcSource, *, ack: bool = True) -> pa.Table:
    tables = []
    while (batch := await source.read_batch()) is not None:
        tables.append(batch.table)
        if ack:
            await batch.ack()
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _source(db: Db, contract: Contract, table: str, **kwargs: Any) -> OdbcSource:
    kwargs.setdefault("pipeline", "test-odbc")
    return OdbcSource(db.connection_string, contract=contract, table=table, **kwargs)


# ------------------------------------------------------------------------------ source
@pytest.mark.integration
@pytest.mark.parametrize("key", ["TXN_ID", None])
async def test_full_read_gives_every_row_in_the_contracts_types(db: Db, contract: Contract, key: str | None) -> None:
    rows = source_rows(5)
    table = db.accounts_table(rows)
    source = _source(db, contract, table, mode="full", key=key, batch_size=2)
    await source.connect()
    got = await drain_source(source)
    await source.close()
    assert got.schema == SCHEMA
    assert got.sort_by("TXN_ID").equals(expected_table(rows))


@pytest.mark.integration
async def test_a_query_source_reads_what_the_query_selects(db: Db, contract: Contract) -> None:
    table = db.accounts_table(source_rows(6))
    query = f"SELECT * FROM {db.q(table)} WHERE {db.q('TXN_ID')} > 3"
    source = OdbcSource(db.connection_string, contract=contract, query=query, pipeline="test-odbc",
                        mode="full", key="TXN_ID", batch_size=2)
    await source.connect()
    got = await drain_source(source)
    await source.close()
    assert got.equals(expected_table(source_rows(3, start=4)))


@pytest.mark.integration
async def test_incrementing_reads_only_keys_above_the_acknowledged_one(db: Db, contract: Contract,
                                                                       watermarks: WatermarkStore) -> None:
    table = db.accounts_table(source_rows(5))
    kwargs: dict[str, Any] = dict(mode="incrementing", key="TXN_ID", batch_size=2, watermarks=watermarks)
    first = _source(db, contract, table, **kwargs)
    await first.connect()
    assert (await drain_source(first)).equals(expected_table(source_rows(5)))
    await first.close()
    assert watermarks.get("test-odbc", table) == {"mode": "incrementing", "key": 5}

    db.insert(table, source_rows(2, start=6))
    second = _source(db, contract, table, **kwargs)
    await second.connect()
    assert (await drain_source(second)).equals(expected_table(source_rows(2, start=6)))
    await second.close()


@pytest.mark.integration
async def test_an_unacknowledged_batch_is_read_again_by_the_next_run(db: Db, contract: Contract,
                                                                     watermarks: WatermarkStore) -> None:
    table = db.accounts_table(source_rows(4))
    kwargs: dict[str, Any] = dict(mode="incrementing", key="TXN_ID", batch_size=2, watermarks=watermarks)
    run = _source(db, contract, table, **kwargs)
    await run.connect()
    first, second = await run.read_batch(), await run.read_batch()
    assert first is not None and second is not None
    await second.ack()  # out of order: the watermark waits for the first batch
    assert watermarks.get("test-odbc", table) is None
    await first.nack("sink failed")
    await run.close()

    again = _source(db, contract, table, **kwargs)
    await again.connect()
    assert (await drain_source(again)).equals(expected_table(source_rows(4)))
    await again.close()


@pytest.mark.integration
async def test_timestamp_mode_picks_up_a_late_committed_row_exactly_once(db: Db, contract: Contract,
                                                                         watermarks: WatermarkStore) -> None:
    rows = source_rows(5)  # 10:00 .. 10:04
    table = db.accounts_table(rows)
    kwargs: dict[str, Any] = dict(mode="timestamp", key="TXN_ID", timestamp="UPDATED_AT", lag_s=60,
                                  overlap_s=300, batch_size=2, watermarks=watermarks)

    async def run() -> pa.Table:
        source = _source(db, contract, table, **kwargs)
        await source.connect()
        try:
            return await drain_source(source)
        finally:
            await source.close()

    first = await run()
    assert first.drop_columns(["UPDATED_AT"]).equals(expected_table(rows))
    stored = watermarks.get("test-odbc", table)
    assert stored is not None and datetime.fromisoformat(stored["ts"]) == T0 + timedelta(minutes=3)  # 10:04 - lag

    # Committed after the first run, stamped 10:02: older than the watermark, inside the overlap.
    late = (99, "LATE", "9.99", T0 + timedelta(minutes=2))
    too_late = (98, "TOOLATE", "9.98", T0 - timedelta(minutes=5))  # older than watermark - overlap
    db.insert(table, [late, too_late])
    second = await run()
    assert second.drop_columns(["UPDATED_AT"]).equals(expected_table([late]))
    assert (await run()).num_rows == 0  # the overlap re-reads it, the seen keys drop it

    # A row changed since (same key, newer timestamp) is delivered again.
    db.execute(f"UPDATE {db.q(table)} SET {db.q('AMOUNT')} = 1.5, {db.q('UPDATED_AT')} = ? "
               f"WHERE {db.q('TXN_ID')} = 2", T0 + timedelta(minutes=10))
    changed = await run()
    assert changed.column("TXN_ID").to_pylist() == [2]
    assert changed.column("AMOUNT").to_pylist() == [Decimal("1.50")]


@pytest.mark.integration
async def test_a_dropped_source_column_refuses_the_run_naming_it(db: Db, contract: Contract) -> None:
    table = db.accounts_table(source_rows(2))
    db.execute(f"ALTER TABLE {db.q(table)} DROP COLUMN {db.q('AMOUNT')}")
    source = _source(db, contract, table, mode="full")
    with pytest.raises(SchemaDriftError, match=r"no column AMOUNT.*contract acct_txn v3.*decimal\(9,2\)"):
        await source.connect()
    await source.close()


@pytest.mark.integration
async def test_a_column_of_another_type_is_refused_naming_both_types(db: Db, contract: Contract) -> None:
    name = db.name()
    db.execute(f"CREATE TABLE {db.q(name)} ({db.q('TXN_ID')} BIGINT, {db.q('ACCOUNT')} INTEGER, "
               f"{db.q('AMOUNT')} DECIMAL(9,2))")
    source = _source(db, contract, name, mode="full")
    with pytest.raises(SchemaDriftError, match=r"column ACCOUNT: contract acct_txn v3 expects text.*has (?i:int)"):
        source.check_schema()
    await source.close()


@pytest.mark.integration
async def test_rows_breaking_the_contracts_rules_become_rejects(db: Db, contract: Contract) -> None:
    rows = source_rows(3)
    table = db.accounts_table([rows[0], (2, "", "2.02", T0), rows[2]])
    source = _source(db, contract, table, mode="full", key="TXN_ID")
    await source.connect()
    batch = await source.read_batch()
    await source.close()
    assert batch is not None
    assert batch.table.column("TXN_ID").to_pylist() == [1, 3]
    assert [(r.record, r.field) for r in batch.rejects] == [(2, "ACCOUNT")]
    assert "TXN_ID=2" in batch.rejects[0].reason and "required" in batch.rejects[0].reason


# ------------------------------------------------------------------------------ sink
def _results(keys: list[int], score: float, note: str | None = "ok") -> pa.Table:
    return pa.table({"TXN_ID": pa.array(keys, pa.int64()),
                     "AMOUNT": pa.array([Decimal(f"{k}.25") for k in keys], pa.decimal128(11, 2)),
                     "fraud_score": pa.array([score] * len(keys), pa.float32()),
                     "note": pa.array([note] * len(keys), pa.string())})


def _methods(db: Db) -> list[str]:
    """Every write method the dialect can use, its default first."""
    return {"postgresql": ["unnest", "values"], "mariadb": ["staged", "values"],
            "sqlite": ["values", "staged"]}[db.kind]


@pytest.mark.integration
async def test_upsert_leaves_one_row_per_key_with_the_latest_values(db: Db) -> None:
    for method in _methods(db):
        table, pipeline = db.name("lgw_results"), db.pipeline()
        sink = OdbcSink(db.connection_string, table, "TXN_ID", pipeline=pipeline, method=method)  # type: ignore[arg-type]
        await sink.connect()
        await sink.write_batch(_results([1, 2, 3], 0.25), position={"key": 3})
        await sink.write_batch(_results([2, 3, 4, 4], 0.75), position={"key": 4})  # 4 twice: the last wins
        checkpoint = sink.last_checkpoint()
        await sink.close()
        got = db.rows(f"SELECT {db.q('TXN_ID')}, {db.q('AMOUNT')}, {db.q('fraud_score')} FROM {db.q(table)} "
                      f"ORDER BY {db.q('TXN_ID')}")
        assert [(k, Decimal(str(a)), s) for k, a, s in got] == [
            (1, Decimal("1.25"), 0.25), (2, Decimal("2.25"), 0.75), (3, Decimal("3.25"), 0.75),
            (4, Decimal("4.25"), 0.75)], method
        assert checkpoint is not None and (checkpoint.chunk, checkpoint.position) == (2, {"key": 4}), method


@pytest.mark.integration
async def test_a_chunk_failing_midway_rolls_back_its_rows_and_its_checkpoint(db: Db) -> None:
    for method in _methods(db):
        table, pipeline = db.name("lgw_results"), db.pipeline()
        db.execute(f"CREATE TABLE {db.q(table)} ({db.q('TXN_ID')} BIGINT NOT NULL PRIMARY KEY, "
                   f"{db.q('AMOUNT')} DECIMAL(11,2), {db.q('fraud_score')} REAL, {db.q('note')} VARCHAR(20) NOT NULL)")
        sink = OdbcSink(db.connection_string, table, "TXN_ID", pipeline=pipeline, method=method,  # type: ignore[arg-type]
                        rows_per_statement=100)
        await sink.connect()
        await sink.write_batch(_results([1, 2], 0.1), position={"chunk": "first"})
        chunk = _results(list(range(1001, 1501)), 0.9)
        notes = chunk.column("note").to_pylist()
        notes[299] = None  # row 300 of 500 breaks NOT NULL, after three statements went through
        chunk = chunk.set_column(3, "note", pa.array(notes, pa.string()))
        with pytest.raises(OdbcDataError, match=table):
            await sink.write_batch(chunk, position={"chunk": "second"})
        checkpoint = sink.last_checkpoint()
        await sink.close()
        assert db.rows(f"SELECT COUNT(*) FROM {db.q(table)}") == [(2,)], method
        assert checkpoint is not None and (checkpoint.chunk, checkpoint.position) == (1, {"chunk": "first"}), method


@pytest.mark.integration
async def test_sink_then_source_round_trips_card_transactions_exactly(db: Db, tmp_path: Path) -> None:
    from schemas.contract import load_contract
    from schemas.examples import contract_path, generate_card_file

    card = load_contract(contract_path())
    generate_card_file(tmp_path / "CARDTXN.DAT", records=1200, seed=11)
    decoded = pa.concat_tables([dc.table for dc in card.decode_file(tmp_path / "CARDTXN.DAT")])
    table = db.name("lgw_cards")
    sink = OdbcSink(db.connection_string, table, "TXN_ID")
    await sink.connect()
    await sink.write_batch(decoded)
    await sink.close()
    source = OdbcSource(db.connection_string, contract=card, table=table, pipeline="test-odbc", mode="full",
                        key="TXN_ID", batch_size=500)
    await source.connect()
    got = await drain_source(source)
    await source.close()
    assert got.equals(decoded.sort_by("TXN_ID"))


# ------------------------------------------------------------------------------ no database needed
@pytest.mark.parametrize("name", ["x; DROP TABLE y", 'a"b', "a`b", "1abc", "", "a.b.c", "a b", "x" * 64])
def test_identifiers_that_are_not_plain_names_are_refused(name: str, contract: Contract) -> None:
    with pytest.raises(IdentifierError):
        OdbcSink("Driver={SQLite3};Database=:memory:;", name, "id")
    with pytest.raises(IdentifierError):
        OdbcSink("Driver={SQLite3};Database=:memory:;", "results", name)
    with pytest.raises(IdentifierError):
        OdbcSource("Driver={SQLite3};Database=:memory:;", contract=contract, pipeline="p", table=name)


def test_identifiers_are_quoted_per_dialect() -> None:
    assert quote("TXN_ID", Dialect.POSTGRESQL) == '"TXN_ID"'
    assert quote("TXN_ID", Dialect.MARIADB) == "`TXN_ID`"
    assert quote("core.card_txn", Dialect.SQLITE, qualified=True) == '"core"."card_txn"'


def test_secrets_come_from_the_environment_and_never_show() -> None:
    cfg = OdbcConnectionConfig(driver="PostgreSQL Unicode", server="db1", port=5432, database="core",
                               user="lgw", password="${LGW_DB_PASSWORD}")
    conn = OdbcConnection(cfg, environ={"LGW_DB_PASSWORD": "s3cr;t}"})
    assert conn.connection_string() == ("Driver={PostgreSQL Unicode};Server=db1;Port=5432;Database=core;Uid=lgw;"
                                        "Pwd={s3cr;t}}};")
    assert "s3cr" not in repr(conn) and "s3cr" not in conn.display
    with pytest.raises(ConfigError, match="LGW_DB_PASSWORD"):
        OdbcConnection(cfg, environ={}).connection_string()
    assert resolve_placeholders("DSN=CORE;Pwd=${P:-x}", {}) == "DSN=CORE;Pwd=x"


def test_dialect_comes_from_the_dbms_name() -> None:
    assert detect_dialect("PostgreSQL") == Dialect.POSTGRESQL
    assert detect_dialect("MariaDB") == Dialect.MARIADB and detect_dialect("MySQL") == Dialect.MARIADB
    assert detect_dialect("SQLite") == Dialect.SQLITE
    with pytest.raises(ConfigError, match="DB2"):
        detect_dialect("DB2/LINUXX8664")


def test_postgres_array_literals_escape_text_and_keep_nulls() -> None:
    assert pg_array_literal(pa.array(['a"b', "c\\d", None, "NULL", "x,y"])) == '{"a\\"b","c\\\\d",NULL,"NULL","x,y"}'
    assert pg_array_literal(pa.array([Decimal("1.50"), None], pa.decimal128(5, 2))) == "{1.50,NULL}"
    assert pg_array_literal(pa.array([], pa.int64())) == "{}"


@pytest.mark.parametrize("state_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_watermarks_round_trip_in_the_state_store(state_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db" if state_url == "sqlite" else STATE_POSTGRES
    pipeline = f"test-{uuid.uuid4().hex[:10]}"
    with StateStore(url) as store:
        watermarks = WatermarkStore(store)
        try:
            assert watermarks.get(pipeline, "core.card_txn") is None
        except StateStoreError as exc:
            unavailable(f"state store {store.display_url} not reachable: {exc}")
        watermarks.set(pipeline, "core.card_txn", {"mode": "incrementing", "key": 41})
        watermarks.set(pipeline, "core.card_txn", {"mode": "incrementing", "key": 42})
        watermarks.set(pipeline, "other", {"mode": "timestamp", "ts": "2024-07-01T10:00:00", "seen": {"7": 1}})
        assert watermarks.get(pipeline, "core.card_txn") == {"mode": "incrementing", "key": 42}
        watermarks.delete(pipeline, "core.card_txn")
        assert watermarks.get(pipeline, "core.card_txn") is None
        assert watermarks.get(pipeline, "other") == {"mode": "timestamp", "ts": "2024-07-01T10:00:00", "seen": {"7": 1}}
        watermarks.delete(pipeline, "other")


def test_the_source_and_sink_implement_the_adapter_protocols(contract: Contract) -> None:
    cs = "Driver={SQLite3};Database=:memory:;"
    assert isinstance(OdbcSource(cs, contract=contract, pipeline="p", table="t"), Source)
    assert isinstance(OdbcSink(cs, "results", "TXN_ID"), Sink)


def test_sink_settings_are_checked_before_anything_runs() -> None:
    cs = "Driver={SQLite3};Database=:memory:;"
    with pytest.raises(ConfigError, match="plain SQL type"):
        OdbcSink(cs, "results", "id", column_types={"note": "TEXT); DROP TABLE y; --"})
    with pytest.raises(ConfigError, match="key column"):
        OdbcSink(cs, "results", "id", columns=["score"])
    OdbcSink(cs, "results", "id", column_types={"note": "VARCHAR(40)", "amount": "NUMERIC(11, 2)"})


# ------------------------------------------------------------------------------ the batch driver for tables
def table_pipeline_config(db: Db, pipeline: str, source_table: str, results_table: str, tmp_path: Path, *,
                          key: str, batch_size: int, state_url: str) -> dict[str, Any]:
    """gateway.yaml for the card contract read incrementally from `source_table` by `key`,
    scored by the bundled ONNX model and upserted by TXN_ID into `results_table`."""
    from schemas.examples import contract_path, model_info

    info = model_info("fraud")
    return {
        "pipelines": {pipeline: {
            "contract": str(contract_path()), "model": "fraud",
            "source": {"type": "odbc", "connection": {"connection_string": db.connection_string},
                       "table": source_table, "mode": "incrementing", "key": key, "batch_size": batch_size},
            "sink": {"connection": {"connection_string": db.connection_string}, "table": results_table,
                     "key": ["TXN_ID"], "columns": ["TXN_ID", "fraud_score", "scored_by", "model_version",
                                                    "contract_version", "rule_id", "reason"],
                     "rejects": str(tmp_path / "rejects")}}},
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "state": {"url": state_url},
    }


def test_lgw_batch_run_scores_a_table_into_a_results_table_and_resumes_by_watermark(
        db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from gateway.cli import main
    from schemas.contract import load_contract
    from schemas.examples import contract_path, generate_card_file

    card = load_contract(contract_path())
    generate_card_file(tmp_path / "CARDTXN.DAT", records=1500, seed=13)
    decoded = pa.concat_tables([dc.table for dc in card.decode_file(tmp_path / "CARDTXN.DAT")])
    source_table, results_table = db.name("lgw_src"), db.name("lgw_scores")
    loader = OdbcSink(db.connection_string, source_table, "TXN_ID")
    asyncio.run(loader.connect())
    loader.write_table(decoded.slice(0, 1000))
    pipeline = f"cards_{db.kind}"
    db.pipelines.append(pipeline)
    config = table_pipeline_config(db, pipeline, source_table, results_table, tmp_path, key="TXN_ID",
                                   batch_size=400, state_url=f"sqlite:///{tmp_path / 'state.db'}")
    cfg_path = tmp_path / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(config))

    def run() -> dict:
        code = main(["batch", "run", pipeline, "--config", str(cfg_path)])
        assert code == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = run()
    assert first["records_in"] == first["records_out"] == 1000 and first["scored_by"] == {"model": 1000}
    assert run()["records_in"] == 0  # the watermark was advanced: nothing is read twice
    loader.write_table(decoded.slice(1000))  # new rows arrive with higher keys
    asyncio.run(loader.close())
    third = run()
    assert third["records_in"] == 500
    count = db.conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT {db.q('TXN_ID')}) FROM {db.q(results_table)}").fetchone()
    assert tuple(count) == (1500, 1500)  # every record once
