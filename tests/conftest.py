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


@pytest.fixture(scope="session", autouse=True)
def lgw_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data directory (gateway.settings) of every command the tests run, in process
    or as a child: a test never writes state or drop folders into the user's home."""
    saved = os.environ.get("LGW_DATA_DIR")
    path = tmp_path_factory.mktemp("lgw-data")
    os.environ["LGW_DATA_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("LGW_DATA_DIR", None)
    else:
        os.environ["LGW_DATA_DIR"] = saved


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
