"""Audit log bulk appends: a million decision rows into each store.

    python bench/audit.py [--records 1000000] [--postgres URL] [--executemany-rows 100000]

Times, in this one process (no assertions; figures only):

- baseline: `pyarrow.parquet.write_table` of the same table with pyarrow's defaults
  (no digest, no fsync, no chain) into a temporary folder;
- parquet: `AuditLog.append_decisions` (content digest, one read-only file, fsync, chain);
- its content digest alone (gateway.governance.audit_model.content_digest);
- table on SQLite: executemany of tuples on the raw sqlite3 connection;
- table on PostgreSQL (a schema of its own, dropped afterwards): COPY of Arrow's CSV, and
  SQLAlchemy's executemany of dicts on `--executemany-rows` rows (extrapolated), the
  alternative the COPY path was measured against.

Prints seconds, rows/s and CPU seconds per million rows (of this process) for each, and the
parquet store's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import clock
from gateway.governance.audit import DECISION_SCHEMA, AuditConfig, AuditLog
from gateway.governance.audit_model import content_digest
from gateway.governance.audit_sql import TableDecisions
from gateway.state import StateStore


def sample_decisions(n: int, run: str = "BENCH") -> pa.Table:
    """`n` scored records shaped like a real batch: ids and hashes unique per record."""
    rng = np.random.default_rng(13)
    idx = np.arange(n, dtype=np.int64)

    def same(value: object, kind: pa.DataType | None = None) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind or pa.string()), n)

    hashes = pa.array(rng.integers(0, 2**63, n)).cast(pa.string())
    fallback = rng.random(n) < 0.05
    return pa.table({
        "run": same(run), "pipeline": same("card_txn"), "source": same("CARDS.D1204.dat"), "record": pa.array(idx),
        "record_id": pc.binary_join_element_wise(same(run), pa.array(idx).cast(pa.string()), ":"),
        "input_hash": pc.binary_join_element_wise(hashes, hashes, hashes, ""),
        "model_name": same("fraud"), "model_version": same("3"), "model_sha256": same("cd" * 32),
        "contract": same("card_txn"), "contract_version": same(1, pa.int32()),
        "scored_by": pc.if_else(pa.array(fallback), "fallback", "model"),
        "rule_id": pc.if_else(pa.array(fallback), "LARGE_FOREIGN", pa.scalar(None, pa.string())),
        "score": pa.array(rng.random(n)), "reason": pc.if_else(pa.array(fallback), "LARGE_FOREIGN", ""),
        "breaker_state": same("closed"), "review": same(None),
        "decided_at": pa.array(int(datetime.now(UTC).timestamp() * 1e6) + idx, pa.timestamp("us", tz="UTC")),
    }, schema=DECISION_SCHEMA)


def timed(label: str, rows: int, fn: Callable[[], object], *, extrapolate_to: int | None = None) -> float:
    """Runs `fn` once; prints its wall seconds, rows/s and CPU seconds per million rows (of
    this process: a database server's own CPU is not in it). Returns the wall seconds."""
    took, _ = clock.timed(fn)
    seconds, cpu, note = took.wall, took.cpu, ""
    if extrapolate_to:
        scale = extrapolate_to / rows
        seconds, cpu, note = seconds * scale, cpu * scale, f" (measured on {rows:,} rows, extrapolated)"
        rows = extrapolate_to
    print(f"{label:<44} {seconds:8.2f} s {rows / seconds:>12,.0f} rows/s {cpu * 1e6 / rows:6.2f} CPU s/M{note}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--executemany-rows", type=int, default=100_000)
    args = parser.parse_args()
    n = args.records
    table = sample_decisions(n)
    print(f"{n:,} decision rows, {table.nbytes / 2**20:.0f} MiB in memory")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = timed("baseline: pq.write_table, defaults", n, lambda: pq.write_table(table, root / "baseline.parquet"))
        timed("content digest alone", n, lambda: content_digest(table))
        with AuditLog(AuditConfig(store="parquet"), StateStore(f"sqlite:///{root}/state.db"), root / "audit",
                      writer="bench", owns_state=True) as log:
            ours = timed("parquet store: append_decisions", n, lambda: log.append_decisions(table))
            timed("parquet store: verify", n, lambda: log.verify())
        print(f"{'':<44} parquet store / baseline: {ours / base:.2f}x the time")
        with AuditLog(AuditConfig(store="table"), StateStore(f"sqlite:///{root}/table.db"), writer="bench",
                      owns_state=True) as log:
            timed("table store, SQLite: append_decisions", n, lambda: log.append_decisions(table))
    _postgres(args.postgres, table, args.executemany_rows)


def _postgres(url: str, table: pa.Table, executemany_rows: int) -> None:
    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # the bench still reports the other stores
        print(f"PostgreSQL at {url} not reachable ({type(exc).__name__}): skipped")
        return
    try:
        sep = "&" if "?" in url else "?"
        with AuditLog(AuditConfig(store="table"), StateStore(f"{url}{sep}options=-csearch_path%3D{schema}"),
                      writer="bench", owns_state=True) as log:
            n = table.num_rows
            timed("table store, PostgreSQL: append (COPY)", n, lambda: log.append_decisions(table))
            slow = TableDecisions(log.state, "bench-executemany", bulk="executemany")
            part = table.slice(0, min(executemany_rows, n))
            timed("table store, PostgreSQL: append (executemany)", part.num_rows, lambda: slow.append(part),
                  extrapolate_to=n)
            timed("table store, PostgreSQL: verify", n, lambda: log.verify())
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
