"""Decode throughput: our column-wise decoder against a plain pandas `read_fwf` script.

    python bench/decode.py [--records 1000000] [--runs 2]

Generates CARD-TXN detail records (120 bytes: text, zoned, overpunch-signed zoned,
COMP-3 and binary fields) once in EBCDIC (cp037, plain fixed-length records) and once in
ASCII (one record per line, so pandas can read it), then times in this one process:

- ours: framing + column-wise decode + contract validation, the path of
  `lgw decode --contract` without writing JSON; and once more with JSON Lines writing;
- the baseline: `pandas.read_fwf` on the ASCII file with colspecs for the same fields.

Each figure is the best of `--runs` runs (time.perf_counter), with its CPU seconds per
million records (bench/clock.py). Prints records/s, the
ratio ours/pandas on the same ASCII file (target >= 8x) and whether ours reaches the
1,000,000 records/s target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clock import best_of
from schemas.contract import Contract, parse_contract
from schemas.examples import CHUNK_RECORDS, card_detail_records, contract_path
from schemas.jsonl import write_jsonl
from schemas.layout import Category, Layout, Usage
from schemas.yaml_loader import load_yaml

TARGET_RECORDS_PER_S = 1_000_000
TARGET_RATIO = 8.0
_BINARY = (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE)
_PACKED = (Usage.PACKED, Usage.PACKED_UNSIGNED)


def detail_contract(encoding: str) -> Contract:
    """The card_txn contract (same rules) without header and trailer: details only."""
    path = contract_path("card_txn")
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    raw["record"].pop("header", None)
    raw["record"].pop("trailer", None)
    raw["record"]["encoding"] = encoding
    return parse_contract(yaml.safe_dump(raw), base_dir=path.parent, source=f"bench card_txn ({encoding})")


def _line_safe(matrix: np.ndarray, layout: Layout) -> None:
    """Keeps LF/CR bytes out of binary and packed fields, so every ASCII record is exactly
    one line for read_fwf. Values stay valid: a packed last byte 0x0D (digit 0, minus)
    becomes 0x1D (digit 1, minus); a binary byte 0x0A/0x0D becomes 0x0B/0x0E. Packed digit
    bytes never hold 0x0A/0x0D (A and D are not digits)."""
    for f in layout.elementary():
        cols = slice(f.offset, f.offset + f.size)
        if f.usage in _PACKED:
            last = matrix[:, f.offset + f.size - 1]
            last[last == 0x0D] = 0x1D
        elif f.usage in _BINARY:
            block = matrix[:, cols]
            block[(block == 0x0A) | (block == 0x0D)] += 1


def write_files(records: int, folder: Path, layout: Layout) -> tuple[Path, Path]:
    ebcdic, ascii_ = folder / "cardtxn.ebc", folder / "cardtxn.txt"
    newline = np.full((1, 1), ord("\n"), dtype=np.uint8)
    with open(ebcdic, "wb") as e, open(ascii_, "wb") as a:
        for start in range(0, records, CHUNK_RECORDS):
            count = min(CHUNK_RECORDS, records - start)
            m = card_detail_records(start, count, encoding="cp037")
            _line_safe(m, layout)
            e.write(m.tobytes())
            m = card_detail_records(start, count, encoding="ascii")
            _line_safe(m, layout)
            a.write(np.hstack([m, np.repeat(newline, count, axis=0)]).tobytes())
    return ebcdic, ascii_


class _CountingSink:
    """A binary sink that keeps only the byte count (JSON is built, not stored)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self.bytes += len(data)
        return len(data)


def ours(contract: Contract, path: Path, *, json_lines: bool = False) -> int:
    """Decode + validate (+ JSON Lines); returns the records that passed."""
    sink = _CountingSink()
    passed = rejected = 0
    for dc in contract.decode_file(path):
        passed += dc.table.num_rows
        rejected += len(dc.rejects)
        if json_lines:
            write_jsonl(dc.table, sink)  # type: ignore[arg-type]
    if rejected:
        raise SystemExit(f"bench data should decode cleanly, {rejected} rejects in {path}")
    return passed


def pandas_fwf(layout: Layout, path: Path) -> int:
    """The baseline a team would write: read_fwf with colspecs for every named field.

    read_fwf cannot decode COMP-3 or binary fields, nor overpunched signs: those columns
    are still cut out and kept as text (latin-1 keeps every byte), so pandas does the same
    slicing work per field, but it does less than we do: no packed/binary/overpunch
    decoding and no contract validation."""
    fields = [f for f in layout.elementary() if not f.is_filler]
    as_text = {f.key: str for f in fields
               if f.category == Category.TEXT or f.usage != Usage.DISPLAY or f.signed}
    frame = pd.read_fwf(path, colspecs=[(f.offset, f.offset + f.size) for f in fields],
                        names=[f.key for f in fields], header=None, encoding="latin-1",
                        dtype=as_text, keep_default_na=False)
    return len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2, help="best of this many runs per figure")
    args = parser.parse_args()

    ebc_contract, ascii_contract = detail_contract("cp037"), detail_contract("ascii")
    layout = ebc_contract.layout
    with tempfile.TemporaryDirectory(prefix="lgw-bench-") as tmp:
        start = time.perf_counter()
        ebc_path, ascii_path = write_files(args.records, Path(tmp), layout)
        print(f"generated {args.records:,} CARD-TXN records x {layout.record_length} bytes "
              f"(EBCDIC + ASCII) in {time.perf_counter() - start:.1f} s")

        figures: dict[str, float] = {}

        def report(label: str, work: Callable[[], int]) -> None:
            took, count = best_of(args.runs, work)
            if count != args.records:
                raise SystemExit(f"{label}: read {count:,} records, expected {args.records:,}")
            figures[label] = count / took.wall
            print(f"{label:<40} {took.line(count)}")

        report("ours decode+validate, cp037", lambda: ours(ebc_contract, ebc_path))
        report("ours decode+validate, ascii", lambda: ours(ascii_contract, ascii_path))
        report("ours decode+validate+JSON lines, cp037",
               lambda: ours(ebc_contract, ebc_path, json_lines=True))
        report("pandas read_fwf, ascii (baseline)", lambda: pandas_fwf(layout, ascii_path))

    ratio = figures["ours decode+validate, ascii"] / figures["pandas read_fwf, ascii (baseline)"]
    print(f"ratio ours/pandas on the same ASCII file: {ratio:.1f}x "
          f"(target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    slowest = min(figures["ours decode+validate, cp037"], figures["ours decode+validate, ascii"])
    print(f"decode+validate >= {TARGET_RECORDS_PER_S:,} records/s on both encodings: "
          f"{'met' if slowest >= TARGET_RECORDS_PER_S else 'NOT met'} (slowest {slowest:,.0f} records/s)")


if __name__ == "__main__":
    main()
