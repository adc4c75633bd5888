"""Small builders shared by the unit tests, and the one rule for a missing service."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import numpy as np
import pytest

from schemas.codepages import code_page
from schemas.copybook import parse_copybook
from schemas.decoder import RecordDecoder
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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def unavailable(message: str) -> NoReturn:
    """A service, binary or package the test needs is missing: a skip on a laptop, a
    failure under CI (CI provides them all: their absence is a broken build)."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
