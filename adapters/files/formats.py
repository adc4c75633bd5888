"""The output formats of record files, in one place: the names gateway.yaml's `format`
and `lgw score --format` accept, and the extension of each (no heavy imports: the CLI
reads this to build its options)."""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["csv", "jsonl", "fixed", "parquet"]
# format -> file extension
FORMATS: dict[Format, str] = {"csv": "csv", "jsonl": "jsonl", "fixed": "dat", "parquet": "parquet"}
assert set(FORMATS) == set(get_args(Format))  # one list: the Literal is what config validation sees

__all__ = ["FORMATS", "Format"]
