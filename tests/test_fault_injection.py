"""The degraded mode against a real model server process (KServe V2 serving the bundled
ONNX model): killed mid-run, back again, slow, and switched off by an operator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.models.kserve import KServeV2Model
from gateway.pipeline import Pipeline
from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from gateway.resilience.retry import RetryPolicy
from gateway.state import KillSwitchWatcher, StateStore
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file
from tests.model_servers import ModelServerProcess

pytestmark = pytest.mark.integration

FEATURES = ["amount", "foreign", "mcc", "ecom", "cashback"]


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def batches(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> list[pa.Table]:
    path = tmp_path_factory.mktemp("cards") / "cards.dat"
    generate_card_file(path, records=4_000, seed=21)
    table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    return [table.slice(i, 100) for i in range(0, table.num_rows, 100)]


def kserve_pipeline(server: ModelServerProcess, contract: Contract, transitions: list[tuple[str, str]],
                    **breaker: object) -> Pipeline:
    cfg = BreakerConfig(**{"sliding_window_size": 10, "minimum_number_of_calls": 4,  # type: ignore[arg-type]
                           "failure_rate_threshold": 50, "wait_duration_in_open_s": 1.0,
                           "permitted_calls_in_half_open": 2, **breaker})
    cb = CircuitBreaker("fraud", cfg)
    cb.add_listener(lambda _b, old, new: transitions.append((old.value, new.value)))
    backend = KServeV2Model(server.base_url, "fraud", timeout_s=1.0, inputs=FEATURES, outputs=["fraud_score"])
    model = GuardedModel(backend, breaker=cb, retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02),
                         timeout_s=1.0, max_concurrency=2)
    return Pipeline(contract, name="card_txn", model=model)


async def test_server_killed_mid_run_then_back(disposable_kserve_server: ModelServerProcess, contract: Contract,
                                               batches: list[pa.Table]) -> None:
    transitions: list[tuple[str, str]] = []
    pipe = kserve_pipeline(disposable_kserve_server, contract, transitions)
    assert pipe.model is not None
    scored_by: list[set[str]] = []
    records_in = records_out = rejected = 0

    async def run(batch: pa.Table) -> None:
        nonlocal records_in, records_out, rejected
        result = await pipe.score(batch)
        records_in += batch.num_rows
        records_out += result.table.num_rows
        rejected += len(result.rejects)
        scored_by.append(set(result.table.column("scored_by").to_pylist()))
        assert None not in result.table.column("fraud_score").to_pylist()

    for batch in batches[:8]:
        await run(batch)
    assert all(s == {"model"} for s in scored_by)

    disposable_kserve_server.kill()
    for batch in batches[8:20]:
        await run(batch)
    after_kill = scored_by[8:]
    # every record still scored, by the rules, and the breaker opened within its window
    assert all(s == {"fallback"} for s in after_kill)
    assert ("closed", "open") in transitions
    assert pipe.model.breaker.state == BreakerState.OPEN
    opened_after = pipe.model.breaker.snapshot()
    assert opened_after["state"] == "open"

    disposable_kserve_server.restart()
    await asyncio.sleep(1.1)  # the breaker's wait in the open state
    for batch in batches[20:]:
        await run(batch)
    assert ("open", "half_open") in transitions and ("half_open", "closed") in transitions
    assert scored_by[-1] == {"model"} and pipe.model.breaker.state == BreakerState.CLOSED
    assert records_in == records_out + rejected == sum(b.num_rows for b in batches)  # nothing lost
    await pipe.model.close()


async def test_a_slow_model_trips_the_slow_call_rule(disposable_kserve_server: ModelServerProcess,
                                                     contract: Contract, batches: list[pa.Table]) -> None:
    transitions: list[tuple[str, str]] = []
    pipe = kserve_pipeline(disposable_kserve_server, contract, transitions, slow_call_duration_s=0.2,
                           slow_call_rate_threshold=50)
    assert pipe.model is not None
    loop = asyncio.get_running_loop()
    for batch in batches[:4]:  # the breaker judges after 4 calls (minimum_number_of_calls)
        disposable_kserve_server.pause()  # SIGSTOP: the server hangs, then answers late
        loop.call_later(0.35, disposable_kserve_server.resume)
        result = await pipe.score(batch)
        assert set(result.table.column("scored_by").to_pylist()) == {"model"}  # slow, yet answered
    snap = pipe.model.breaker.snapshot()
    assert ("closed", "open") in transitions, snap
    # every call above succeeded (scored by the model), so only the slow-call rate can have opened it
    result = await pipe.score(batches[5])
    assert set(result.table.column("scored_by").to_pylist()) == {"fallback"}
    await pipe.model.close()


async def test_kill_switch_flipped_from_the_cli_takes_effect_without_restart(
        kserve_server: ModelServerProcess, contract: Contract, batches: list[pa.Table], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    transitions: list[tuple[str, str]] = []
    pipe = kserve_pipeline(kserve_server, contract, transitions)
    pipe.kill_switch = KillSwitchWatcher(StateStore(url), "card_txn", ttl_s=0.2)
    assert set((await pipe.score(batches[0])).table.column("scored_by").to_pylist()) == {"model"}
    lgw = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*lgw, "killswitch", "set", "card_txn", "--mode", "force_fallback", "--reason", "drill",
                    "--state-url", url], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 5
    seen: set[str] = {"model"}
    while seen != {"fallback"} and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        seen = set((await pipe.score(batches[1])).table.column("scored_by").to_pylist())
    assert seen == {"fallback"}
    subprocess.run([*lgw, "killswitch", "set", "card_txn", "--mode", "off", "--reason", "drill over",
                    "--state-url", url],
                   check=True, capture_output=True, timeout=60)
    await asyncio.sleep(0.3)
    assert set((await pipe.score(batches[2])).table.column("scored_by").to_pylist()) == {"model"}
    status = subprocess.run([*lgw, "killswitch", "status", "--state-url", url], check=True, capture_output=True,
                            text=True, timeout=60)
    assert "card_txn" in status.stdout
    if pipe.model is not None:
        await pipe.model.close()
