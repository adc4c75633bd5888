"""Small builders shared by the unit tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.batch import RecordDecoder
from schemas.codepages import code_page
from schemas.copybook import parse_copybook
from schemas.fields import DecodeOptions


def copybook(*entries: str) -> str:
    """Fixed-format copybook text from entries written without the sequence area."""
    return "\n".join("       " + e for e in entries) + "\n"


def decode_rows(cpy: str, rows: list[bytes], encoding: str = "cp037", trim: str = "both",
                lengths: list[int] | None = None) -> tuple[list[dict[str, Any]], Any]:
    layout = parse_copybook(cpy)
    width = layout.record_length
    matrix = np.zeros((len(rows), width), dtype=np.uint8)
    for i, r in enumerate(rows):
        matrix[i, : len(r)] = np.frombuffer(r[:width], dtype=np.uint8)
    decoder = RecordDecoder(layout, code_page(encoding), DecodeOptions(trim=trim))
    batch = decoder.decode(matrix, None if lengths is None else np.array(lengths))
    return batch.table.to_pylist(), batch


def ebcdic(text: str, encoding: str = "cp037") -> bytes:
    return text.encode(encoding)
