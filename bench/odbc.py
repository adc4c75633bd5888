"""ODBC batch throughput: a PostgreSQL table of card transactions read over ODBC, scored,
and upserted into a results table over ODBC; against plain pyodbc in the same run.

    python bench/odbc.py [--rows 1000000] [--batch 50000] [--baseline-rows 100000] [--wide]

Setup (not timed): the card_txn example records are generated and decoded, loaded into
`lgw_bench_src_*` with COPY (psycopg), and analysed.

Timed:
1. End to end, through the batch driver a table run uses (gateway/drivers/batch.py):
   OdbcSource (incrementing on TXN_ID, arrow-odbc pages) -> Pipeline.score (embedded
   defaults, in-process ONNX "fraud") -> OdbcSink upsert (unnest arrays, one transaction
   per batch with its checkpoint) -> ack (watermark). Reading, scoring and writing
   overlap: one batch is read ahead and one is written behind. The results table holds
   TXN_ID, the model's outputs and the provenance (`--wide` writes every input column too).
2. Each stage on its own: read only, score only, write only.
3. Baseline: pyodbc `fetchmany` -> Arrow for the read, pyodbc `fast_executemany` for
   the write (on `--baseline-rows`: it runs at ~9k rows/s), the same scoring between.
Target: end to end >= 100,000 rows/s. The bench drops its tables at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.files.sink import StreamRejects
from adapters.odbc import Dialect, OdbcConnection, OdbcSink, OdbcSource
from adapters.odbc.sink import column_type
from adapters.odbc.source import contract_columns
from gateway.assembly import build_pipeline
from gateway.config import embedded_defaults
from gateway.drivers.batch import BatchLoop
from gateway.pipeline import PROVENANCE, Pipeline
from gateway.state import StateStore
from gateway.watermarks import WatermarkStore
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file

ODBC = os.environ.get("LGW_BENCH_ODBC",
                      "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;Pwd=;")
PG = os.environ.get("LGW_BENCH_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")
TARGET = 100_000


# ------------------------------------------------------------------------------ setup
def decoded_cards(contract: Contract, rows: int, tmp: Path) -> pa.Table:
    path = tmp / "CARDTXN.DAT"
    generate_card_file(path, records=rows, seed=5)
    table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    path.unlink()
    return table


def load_source(cards: pa.Table, contract: Contract, name: str) -> None:
    """A legacy-looking table (VARCHAR(n), BIGINT, NUMERIC(p,s), key TXN_ID) loaded by COPY."""
    import psycopg

    cols = []
    for c in contract_columns(contract):
        if pa.types.is_string(c.type):
            typ = f"VARCHAR({c.field.size})"
        elif pa.types.is_decimal(c.type):
            typ = f"NUMERIC({c.type.precision},{c.type.scale})"
        else:
            typ = "BIGINT"
        cols.append(f'"{c.key}" {typ}' + (" NOT NULL PRIMARY KEY" if c.key == "TXN_ID" else ""))
    buf = io.BytesIO()
    pacsv.write_csv(cards, buf, pacsv.WriteOptions(include_header=False))
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{name}" ({", ".join(cols)})')
        with conn.cursor().copy(f'COPY "{name}" FROM STDIN (FORMAT csv)') as copy:
            copy.write(buf.getvalue())
        conn.execute(f'ANALYZE "{name}"')


def drop(*tables: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        for t in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{t}"')
        conn.execute("DELETE FROM lgw_checkpoints WHERE pipeline LIKE 'bench-%'")


# ------------------------------------------------------------------------------ gateway
RESULTS = ["TXN_ID", "fraud_score", *PROVENANCE]  # the results table: key, the model's output, provenance


async def end_to_end(source: OdbcSource, pipeline: Pipeline, sink: OdbcSink) -> int:
    """The batch driver a table run uses (gateway.drivers.batch): the next page is read
    while this one is scored, and written (one transaction with its checkpoint) while the
    next is scored; each page is acked once it is durable."""
    loop = BatchLoop(pipeline, sink, StreamRejects(None), label="bench")
    await loop.run(source)
    loop.counts.check("bench")
    return loop.counts.records_out


async def read_only(source: OdbcSource) -> list[pa.Table]:
    tables = []
    while (batch := await source.read_batch()) is not None:
        tables.append(batch.table)
        await batch.ack()
    return tables


# ------------------------------------------------------------------------------ baseline
def baseline_read(table: str, batch: int) -> tuple[list[pa.Table], float]:
    import pyodbc

    conn = pyodbc.connect(ODBC)
    started = time.perf_counter()
    cur = conn.cursor()
    cur.execute(f'SELECT * FROM "{table}"')
    names = [d[0] for d in cur.description]
    tables = []
    while rows := cur.fetchmany(batch):
        tables.append(pa.table({n: pa.array(list(c)) for n, c in zip(names, zip(*rows, strict=True), strict=True)}))
    seconds = time.perf_counter() - started
    conn.close()
    return tables, seconds


def baseline_write(tables: list[pa.Table], name: str) -> float:
    import pyodbc

    conn = pyodbc.connect(ODBC)
    cols = tables[0].column_names
    columns = ", ".join(f'"{f.name}" {column_type(f, Dialect.POSTGRESQL)}' for f in tables[0].schema)
    conn.execute(f'CREATE TABLE "{name}" ({columns}, PRIMARY KEY ("TXN_ID"))')
    conn.commit()
    cur = conn.cursor()
    cur.fast_executemany = True
    names = ", ".join(f'"{c}"' for c in cols)
    sql = f'INSERT INTO "{name}" ({names}) VALUES ({", ".join("?" * len(cols))})'

    started = time.perf_counter()
    for t in tables:
        cur.executemany(sql, list(zip(*[t.column(c).to_pylist() for c in cols], strict=True)))
        conn.commit()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


# ------------------------------------------------------------------------------ main
CPU: dict[str, float] = {}


async def timed(fn: Callable[[], Awaitable[Any]], label: str = "") -> tuple[Any, float]:
    started, cpu = time.perf_counter(), os.times()
    result = await fn()
    seconds = time.perf_counter() - started
    now = os.times()
    CPU[label] = (now.user - cpu.user + now.system - cpu.system) / seconds
    return result, seconds


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} rows/s  ({seconds:6.2f} s, {n:,} rows)"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--baseline-rows", type=int, default=100_000)
    ap.add_argument("--wide", action="store_true", help="write every input column into the results too")
    args = ap.parse_args()
    n = args.rows
    contract = load_contract(contract_path())
    tag = uuid.uuid4().hex[:8]
    src, out, out2, base = (f"lgw_bench_{k}_{tag}" for k in ("src", "out", "out2", "base"))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cards = decoded_cards(contract, n, Path(tmp))
        load_source(cards, contract, src)
        print(f"setup: {n:,} card_txn rows generated, decoded and COPYed into {src} in {time.perf_counter() - t:.1f} s")
        del cards
        state = StateStore(f"sqlite:///{tmp}/state.db")
        watermarks = WatermarkStore(state)
        connection = OdbcConnection(ODBC)
        pipeline = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud")
        try:
            def source(name: str) -> OdbcSource:
                return OdbcSource(connection, contract=contract, pipeline=f"bench-{name}", table=src,
                                  mode="incrementing", key="TXN_ID", batch_size=args.batch, watermarks=watermarks)

            # 1. end to end
            columns = None if args.wide else RESULTS
            e2e_source = source("e2e")
            sink = OdbcSink(connection, out, "TXN_ID", pipeline=f"bench-{tag}", columns=columns)
            await e2e_source.connect()
            await sink.connect()
            rows, t_e2e = await timed(lambda: end_to_end(e2e_source, pipeline, sink), "e2e")
            await e2e_source.close()
            checkpoint = sink.last_checkpoint()
            await sink.close()

            # 2. stages on their own
            read_source = source("read")
            await read_source.connect()
            tables, t_read = await timed(lambda: read_only(read_source), "read")
            await read_source.close()

            async def score_all() -> list[pa.Table]:
                return [(await pipeline.score(x)).table for x in tables]

            scored, t_score = await timed(score_all, "score")
            write_sink = OdbcSink(connection, out2, "TXN_ID", columns=columns)
            await write_sink.connect()

            async def write_all() -> None:
                for x in scored:
                    await write_sink.write_batch(x)

            _, t_write = await timed(write_all, "write")
            await write_sink.close()

            # 3. baseline
            base_tables, t_base_read = await asyncio.to_thread(baseline_read, src, args.batch)
            base_n = sum(x.num_rows for x in base_tables)
            sample, left = [], args.baseline_rows
            for x in scored:
                x = x.select(columns or x.column_names)
                if left <= 0:
                    break
                sample.append(x.slice(0, left))
                left -= sample[-1].num_rows
            sample_n = sum(x.num_rows for x in sample)
            t_base_write = await asyncio.to_thread(baseline_write, sample, base)
        finally:
            if pipeline.model is not None:
                await pipeline.model.close()
            drop(src, out, out2, base)
            state.close()

    info = connection.info
    assert info is not None
    print(f"driver: {info.driver} ({info.dbms_name} {info.dbms_version}); sink method {sink.method}; "
          f"batch {args.batch:,}; results columns: {len(sample[0].column_names)}")
    print(f"end to end: ODBC read -> score -> ODBC upsert  {rate(rows, t_e2e)}")
    print(f"  checkpoint in target: chunk {checkpoint.chunk if checkpoint else None}, "
          f"position {checkpoint.position if checkpoint else None}")
    print(f"read only   (OdbcSource, arrow-odbc)          {rate(n, t_read)}")
    print(f"score only  (Pipeline, in-process ONNX)       {rate(n, t_score)}")
    print(f"write only  (OdbcSink, {sink.method:<6})               {rate(n, t_write)}")
    print(f"baseline read  (pyodbc fetchmany -> Arrow)   {rate(base_n, t_base_read)}")
    print(f"baseline write (pyodbc fast_executemany)     {rate(sample_n, t_base_write)}")
    base_e2e = 1 / (t_base_read / base_n + t_score / n + t_base_write / sample_n)
    print(f"baseline end to end (read + score + write)   {base_e2e:>12,.0f} rows/s")
    ratio = (rows / t_e2e) / base_e2e
    print(f"gateway / baseline                            {ratio:.1f}x")
    print("gateway process CPU per wall second: " + ", ".join(f"{k} {v:.2f}" for k, v in CPU.items()))
    verdict = "met" if rows / t_e2e >= TARGET else "NOT met"
    print(f"end to end >= {TARGET:,} rows/s: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
