"""Small builders shared by the unit tests, and the one rule for a missing service."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
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


POSTGRES_URL = os.environ.get("LGW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """The local PostgreSQL's URL, in a schema of the caller's own (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        engine.dispose()
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
