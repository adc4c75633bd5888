"""Test data and fixtures shared by the real-time integration tests (Kafka and AMQP):
the bundled card-transaction records as copybook bytes and as JSON, the reading of the
scores a fixed-format result appends to its record, the gateway served in process, and a
model with a bug that makes the pipeline raise on chosen records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import numpy as np
import pytest

from adapters.models.onnx import OnnxModel
from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig
from gateway.pipeline import Pipeline, fixed_columns
from gateway.realtime.serve import run_until
from schemas.contract import Contract, load_contract
from schemas.examples import card_detail_records, contract_path, model_info
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


# --------------------------------------------------------------------------- the gateway in process
class Gateway:
    """`run_until` as a task of the test's loop; `stop()` sets its Event and returns its stats."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.event = asyncio.Event()
        self.task: asyncio.Task[dict[str, Any]] | None = asyncio.create_task(run_until(cfg, self.event))

    async def stop(self, timeout: float = 45.0) -> dict[str, Any]:
        assert self.task is not None, "already stopped"
        self.event.set()
        task, self.task = self.task, None
        return await asyncio.wait_for(task, timeout)

    def check_alive(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # raises what stopped it
            pytest.fail("the gateway stopped by itself", pytrace=False)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[GatewayConfig], Gateway]]:
    """Starts a gateway in process; every one still serving is stopped after the test."""
    started: list[Gateway] = []

    def start(cfg: GatewayConfig) -> Gateway:
        g = Gateway(cfg)
        started.append(g)
        return g

    yield start
    for g in started:
        if g.task is not None:
            with contextlib.suppress(Exception):
                await g.stop()


class Alive(Protocol):
    def check_alive(self) -> None: ...


async def until(condition: Callable[[], bool], timeout: float, what: str, gateway: Alive | None = None) -> None:
    """Waits for `condition`, failing the test at `timeout` or as soon as `gateway` died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if gateway is not None:
            gateway.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- a pipeline that raises
class CrashesOnAmounts:
    """The bundled ONNX model, with a bug: a batch holding one of `amounts` raises a plain
    RuntimeError (no gateway error: nothing says whose fault it is)."""

    def __init__(self, amounts: set[float]) -> None:
        info = model_info("fraud")
        self.inner = OnnxModel(info["path"], sha256=info["sha256"], name="fraud")
        self.info = self.inner.info
        self.amounts = amounts

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        if self.amounts & set(features[:, 0].tolist()):
            raise RuntimeError("index 3 is out of bounds for axis 0 with size 3")
        return await self.inner.predict(features)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        await self.inner.close()


def json_amount(message: bytes) -> float:
    """A JSON record's TXN_AMOUNT as the model sees it (float32)."""
    return float(np.float32(json.loads(message)["TXN_AMOUNT"]))


def crash_on(monkeypatch: pytest.MonkeyPatch, amounts: set[float]) -> None:
    """Every pipeline the real-time app builds from now on has a model that raises a
    RuntimeError for a batch holding one of `amounts` (a bug, not an outage)."""
    import gateway.realtime.app as app

    build = app.build_pipeline

    def build_with_bug(*args: Any, **kw: Any) -> Pipeline:
        pipeline = build(*args, **kw)
        assert pipeline.model is not None
        pipeline.model.backend = CrashesOnAmounts(amounts)
        return pipeline

    monkeypatch.setattr(app, "build_pipeline", build_with_bug)
