from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz_harness import FuzzWorker

pytest_plugins = ["tests.model_servers", "tests.kafka_broker", "tests.realtime_data", "tests.lgw_processes"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LGW_SHARED", ROOT.parent / "shared"))
COBRIX = SHARED / "conformance" / "cobrix"

# `lgw serve` and `lgw run` serve their ops endpoints on 127.0.0.1:9464 by default: the
# processes tests start (several at once, under xdist too) each take a free port instead.
os.environ.setdefault("LGW_OPS_ADDRESS", "127.0.0.1:0")


@pytest.fixture(scope="session")
def cobrix_dir() -> Path:
    if not (COBRIX / "cases.json").is_file():
        # Under CI the shared conformance data is part of the checkout's surroundings: a
        # missing folder is a broken environment, not a reason to skip.
        pytest.fail(f"Cobrix conformance data not found at {COBRIX} (set LGW_SHARED)")
    return COBRIX


@pytest.fixture(scope="session")
def lgw_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "lgw"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]


@pytest.fixture(scope="session")
def fuzz_worker() -> Iterator[FuzzWorker]:
    """The fuzz suite's worker process (memory cap, per-input timer), shared by its tests."""
    worker = FuzzWorker()
    worker.start()
    yield worker
    worker.stop()
