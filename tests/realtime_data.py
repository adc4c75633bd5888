"""Test data and fixtures shared by the real-time integration tests (Kafka and AMQP):
the bundled card-transaction records as copybook bytes and as JSON, and the reading of
the scores a fixed-format result appends to its record."""

from __future__ import annotations

import pytest

from gateway.config import GatewayConfig
from gateway.runtime import build_pipeline
from gateway.score import fixed_columns
from schemas.contract import Contract, load_contract
from schemas.examples import card_detail_records, contract_path
from schemas.jsonl import lines
from schemas.messages import MessageCodec

RECORD = 120  # CARD-TXN, bytes
CP = "cp037"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def appended(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Widths of the fields a fixed-format result appends to the record, in order."""
    cfg = GatewayConfig.model_validate({"base_dir": tmp_path_factory.mktemp("cfg")})
    return fixed_columns(build_pipeline("widths", contract, cfg, model_name=None))


def copybook_records(start: int, count: int) -> list[bytes]:
    """EBCDIC (cp037) CARD-TXN detail records, 120 bytes each, one message each."""
    matrix = card_detail_records(start, count, seed=11)
    assert matrix.shape == (count, RECORD)
    return [bytes(row) for row in matrix]


def json_records(contract: Contract, start: int, count: int) -> list[bytes]:
    """The same records as JSON objects (one line each), as a newer system would send them."""
    decoded = MessageCodec(contract, "copybook").decode(copybook_records(start, count))
    assert decoded.table.num_rows == count and not decoded.rejects
    return [s.encode() for s in lines(decoded.table).to_pylist()]


def with_field(record: bytes, offset: int, text: str) -> bytes:
    value = text.encode(CP)
    return record[:offset] + value + record[offset + len(value):]


def appended_fields(body: bytes, widths: dict[str, int]) -> dict[str, str]:
    tail = body[RECORD:].decode(CP)
    assert len(tail) == sum(widths.values()), f"appended {len(tail)} bytes, expected {sum(widths.values())}"
    out: dict[str, str] = {}
    pos = 0
    for name, width in widths.items():
        out[name] = tail[pos:pos + width].strip()
        pos += width
    return out
