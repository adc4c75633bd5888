"""Fallback scoring throughput: our column-wise rules against per-row rule evaluation.

    python bench/fallback.py [--records 1000000] [--baseline-rows 20000] [--runs 3]

Generates and decodes `--records` CARD-TXN detail records once (outside every timing),
then times in this one process, best of `--runs`:

- ours: `FallbackRules.score` over the whole decoded table (the card contract's rules),
  and once more chunk by chunk (50,000 rows, as the batch pipeline feeds it);
- baseline (a): the same rules in CEL (PyPI `common-expression-language`), compiled once
  and executed per row over `--baseline-rows` rows, first match wins; extrapolated;
- baseline (b): the same rules hand-written as Python per row over dicts, the cheapest
  per-row interpreter there is (not generic: written for these rules only).

The per-row baselines get their rows as Python dicts prepared before timing (decimals
as floats, since CEL has no decimal type), so their figures leave out that conversion.
Prints records/s and CPU seconds per million records (bench/clock.py), the ratio ours /
baseline, whether every baseline chose the same rule as ours on the rows it scored, and
whether ours reaches the 500,000 records/s target.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clock import best_of
from gateway.fallback import FallbackRules
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file

TARGET_RECORDS_PER_S = 500_000
CHUNK_ROWS = 50_000


def decoded_table(contract: Contract, records: int) -> pa.Table:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "CARDTXN.dat"
        start = time.perf_counter()
        generate_card_file(path, records=records)
        table = pa.concat_tables([chunk.table for chunk in contract.decode_file(path)])
        print(f"generated and decoded {table.num_rows:,} records in {time.perf_counter() - start:.1f} s "
              "(not timed below)")
    return table


def cel_source(text: str) -> str:
    """Our condition syntax -> CEL for the operators the card rules use. CEL does not mix
    int and double, and the amounts are doubles there, so whole literals get a '.0'."""
    text = re.sub(r"\band\b", "&&", text)
    text = re.sub(r"\bor\b", "||", text)
    text = re.sub(r"\bnot\s+", "!", text)
    return re.sub(r"(?<![\w.'])(\d+)(?![\w.'])", r"\1.0", text)


def python_rows(table: pa.Table, fields: frozenset[str], rows: int) -> list[dict[str, Any]]:
    out = table.slice(0, rows).select(sorted(fields)).to_pylist()
    for row in out:
        for k, v in row.items():
            if isinstance(v, Decimal):
                row[k] = float(v)
    return out


def per_row_cel(rules: FallbackRules, rows: list[dict[str, Any]]) -> list[int] | None:
    try:
        import cel
    except ImportError:
        print("baseline (a) CEL: package common-expression-language not installed (pip install it); skipped")
        return None
    programs = [cel.compile(cel_source(r.when.text)) if r.when else None for r in rules.rules]
    chosen: list[int] = []
    for row in rows:
        for i, program in enumerate(programs):
            if program is None or program.execute(row):
                chosen.append(i)
                break
    return chosen


def per_row_python(rows: list[dict[str, Any]]) -> list[int]:
    """The card contract's three rules, by hand."""
    chosen: list[int] = []
    for row in rows:
        amount, country, channel = row["TXN_AMOUNT"], row["COUNTRY"], row["CHANNEL"]
        if amount is not None and amount > 5000 and country is not None and country != "US":
            chosen.append(0)
        elif channel == "E" and amount is not None and amount > 2000:
            chosen.append(1)
        else:
            chosen.append(2)
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    contract = load_contract(contract_path("card_txn"))
    rules = FallbackRules.from_contract(contract)
    table = decoded_table(contract, args.records)
    n = table.num_rows
    print(f"rules: {len(rules.rules)} ({', '.join(r.reason for r in rules.rules)}); "
          f"table: {n:,} rows in {table.column(0).num_chunks} chunks")

    whole, _ = best_of(args.runs, lambda: rules.score(table))
    chunked, _ = best_of(args.runs, lambda: [rules.score(table.slice(i, CHUNK_ROWS)) for i in range(0, n, CHUNK_ROWS)])
    ours = n / whole.wall
    print(f"ours, whole table:          {whole.line(n)}")
    print(f"ours, {CHUNK_ROWS:,}-row chunks:   {chunked.line(n)}")

    m = min(args.baseline_rows, n)
    prep = time.perf_counter()
    rows = python_rows(table, rules.fields_used, m)
    prep = time.perf_counter() - prep
    print(f"per-row baselines: turning {m:,} rows into dicts took {prep * 1000:.1f} ms "
          f"({m / prep:,.0f} records/s), not included in their figures")
    ours_chosen = rules.choose(table.slice(0, m)).tolist()
    baselines: list[tuple[str, Callable[[], list[int] | None]]] = [
        ("(a) CEL per row", lambda: per_row_cel(rules, rows)),
        ("(b) Python per row", lambda: per_row_python(rows)),
    ]
    for name, run in baselines:
        chosen = run()
        if chosen is None:
            continue
        took, _ = best_of(args.runs, run)
        seconds, rate = took.wall, m / took.wall
        agree = "yes" if np.array_equal(chosen, ours_chosen) else "NO"
        print(f"baseline {name:<18} {rate:>14,.0f} records/s  {took.per_million(m):6.2f} CPU s/M  "
              f"({seconds * 1000:.1f} ms for {m:,} rows; "
              f"{n / rate:.1f} s extrapolated to {n:,}); same rules chosen: {agree}; "
              f"ours/baseline = {ours / rate:.0f}x")
    verdict = "reached" if ours >= TARGET_RECORDS_PER_S else "NOT reached"
    print(f"target >= {TARGET_RECORDS_PER_S:,} records/s: {verdict}")


if __name__ == "__main__":
    main()
