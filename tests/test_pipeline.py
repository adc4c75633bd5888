"""The scoring pipeline's decisions, with the bundled ONNX model in process.

Backends that misbehave on purpose wrap the real ONNX model (unit level); the same
situations against a real model server process are in tests/test_fault_injection.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from adapters.models.base import ModelInfo
from adapters.models.onnx import OnnxModel
from gateway.config import Policy
from gateway.pipeline import Pipeline
from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from gateway.resilience.retry import RetryPolicy
from gateway.state import KillSwitchWatcher, StateStore
from schemas.contract import Contract, load_contract
from schemas.errors import ModelServerError, ModelUnavailable
from schemas.examples import contract_path, generate_card_file, model_info


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def records(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    path = tmp_path_factory.mktemp("cards") / "cards.dat"
    generate_card_file(path, records=2_000, seed=11)
    return pa.concat_tables([dc.table for dc in contract.decode_file(path)])


def onnx_model() -> OnnxModel:
    info = model_info("fraud")
    return OnnxModel(info["path"], sha256=info["sha256"], name="fraud", version="1",
                     inputs=[c for c in info["inputs"][0]["columns"]], outputs=["fraud_score"])


class Flaky:
    """The real ONNX model behind a switch: `down` raises ModelUnavailable, `poison`
    answers 5xx for any batch holding a row whose amount equals the poison value,
    `nan_rows` turns those rows' scores into NaN."""

    def __init__(self) -> None:
        self.inner = onnx_model()
        self.info: ModelInfo = self.inner.info
        self.down = False
        self.poison: float | None = None
        self.nan_every = 0
        self.calls = 0

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.down:
            raise ModelUnavailable("connection refused")
        if self.poison is not None and (features[:, 0] == self.poison).any():
            raise ModelServerError("HTTP 500 from model server", status=500)
        out = await self.inner.predict(features)
        if self.nan_every:
            out["fraud_score"] = out["fraud_score"].copy()
            out["fraud_score"][:: self.nan_every] = np.nan
        return out

    async def ready(self) -> bool:
        return not self.down

    async def close(self) -> None:
        await self.inner.close()


def guarded(backend: object, **breaker: object) -> GuardedModel:
    cfg = BreakerConfig(**{"minimum_number_of_calls": 4, "sliding_window_size": 10,  # type: ignore[arg-type]
                           "wait_duration_in_open_s": 60, **breaker})
    return GuardedModel(backend, breaker=CircuitBreaker("fraud", cfg),  # type: ignore[arg-type]
                        retry=RetryPolicy(max_attempts=1), timeout_s=5, max_concurrency=2)


async def test_model_scores_every_record_with_provenance(contract: Contract, records: pa.Table) -> None:
    model = onnx_model()
    pipe = Pipeline(contract, name="card_txn", model=guarded(model))
    batch = await pipe.score(records)
    assert batch.table.num_rows == records.num_rows and batch.rejects == []
    direct = model.predict_sync(pipe.features.matrix(records))["fraud_score"]
    assert np.allclose(batch.table.column("fraud_score").to_numpy(), direct)
    prov = batch.table.select(["scored_by", "model_name", "model_version", "contract", "contract_version",
                               "rule_id", "reason"]).to_pylist()[0]
    assert prov == {"scored_by": "model", "model_name": "fraud", "model_version": "1", "contract": "card_txn",
                    "contract_version": 1, "rule_id": None, "reason": None}


async def test_unavailable_model_falls_back_and_flags_every_record(contract: Contract, records: pa.Table) -> None:
    backend = Flaky()
    backend.down = True
    model = guarded(backend)
    pipe = Pipeline(contract, name="card_txn", model=model)
    for _ in range(5):
        batch = await pipe.score(records.slice(0, 100))
        assert batch.table.num_rows == 100
        assert set(batch.table.column("scored_by").to_pylist()) == {"fallback"}
        assert None not in batch.table.column("reason").to_pylist()
    assert model.breaker.state == BreakerState.OPEN
    calls = backend.calls
    await pipe.score(records.slice(0, 100))
    assert backend.calls == calls  # open breaker: the model is not called at all


async def test_pause_policy_holds_the_batch_back(contract: Contract, records: pa.Table) -> None:
    backend = Flaky()
    backend.down = True
    pipe = Pipeline(contract, name="card_txn", model=guarded(backend), policy=Policy.PAUSE)
    batch = await pipe.score(records.slice(0, 10))
    assert batch.paused and batch.table.num_rows == 0


async def test_fallback_and_rescore_marks_records_for_the_model(contract: Contract, records: pa.Table) -> None:
    backend = Flaky()
    backend.down = True
    pipe = Pipeline(contract, name="card_txn", model=guarded(backend), policy=Policy.FALLBACK_AND_RESCORE)
    batch = await pipe.score(records.slice(0, 10))
    assert batch.table.num_rows == 10 and batch.rescore_rows is not None and len(batch.rescore_rows) == 10


async def test_a_poison_record_is_isolated_without_tripping_the_breaker(contract: Contract,
                                                                        records: pa.Table) -> None:
    backend = Flaky()
    pipe = Pipeline(contract, name="card_txn", model=guarded(backend))
    table = records.slice(0, 64)
    poison_row = 37
    backend.poison = float(pipe.features.matrix(table)[poison_row, 0])
    batch = await pipe.score(table)
    assert [r.row for r in batch.rejects] == [poison_row]
    assert "model server failed on this record" in batch.rejects[0].reason
    assert batch.table.num_rows == 63 and set(batch.table.column("scored_by").to_pylist()) == {"model"}
    assert poison_row not in batch.rows.tolist()
    assert pipe.model is not None and pipe.model.breaker.state == BreakerState.CLOSED


async def test_nan_scores_are_rejected_not_published(contract: Contract, records: pa.Table) -> None:
    backend = Flaky()
    backend.nan_every = 10
    pipe = Pipeline(contract, name="card_txn", model=guarded(backend))
    batch = await pipe.score(records.slice(0, 100))
    assert [r.row for r in batch.rejects] == list(range(0, 100, 10))
    assert batch.table.num_rows == 90  # in = out + rejects
    assert "fraud_score" in batch.rejects[0].reason


async def test_kill_switch_takes_effect_without_restart(contract: Contract, records: pa.Table,
                                                         tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    watcher = KillSwitchWatcher(store, "card_txn", ttl_s=0.0)
    pipe = Pipeline(contract, name="card_txn", model=guarded(onnx_model()), kill_switch=watcher)
    assert set((await pipe.score(records.slice(0, 5))).table.column("scored_by").to_pylist()) == {"model"}
    StateStore(f"sqlite:///{tmp_path / 'state.db'}").set_kill_switch("card_txn", "force_fallback", "drill")
    assert set((await pipe.score(records.slice(0, 5))).table.column("scored_by").to_pylist()) == {"fallback"}
    store.set_kill_switch("card_txn", "pause", "drill")
    assert (await pipe.score(records.slice(0, 5))).paused
    store.set_kill_switch("card_txn", "off", "")
    assert set((await pipe.score(records.slice(0, 5))).table.column("scored_by").to_pylist()) == {"model"}


async def test_shadow_mode_reports_agreement_with_the_rules(contract: Contract, records: pa.Table) -> None:
    pipe = Pipeline(contract, name="card_txn", model=guarded(onnx_model()), shadow=True)
    batch = await pipe.score(records)
    assert batch.shadow_agreement is not None and 0.0 <= batch.shadow_agreement <= 1.0
    assert pipe.stats.to_json()["shadow_agreement"] == pytest.approx(batch.shadow_agreement, abs=1e-6)


async def test_fallback_and_rescore_publishes_model_corrections_when_it_is_back(contract: Contract,
                                                                                records: pa.Table) -> None:
    import asyncio

    from gateway.pipeline import Rescorer

    backend = Flaky()
    backend.down = True
    model = guarded(backend, wait_duration_in_open_s=0.05, minimum_number_of_calls=2, sliding_window_size=2)
    pipe = Pipeline(contract, name="card_txn", model=model, policy=Policy.FALLBACK_AND_RESCORE)
    rescorer = Rescorer(pipe)
    for part in (records.slice(0, 50), records.slice(50, 50)):
        batch = await pipe.score(part)
        assert set(batch.table.column("scored_by").to_pylist()) == {"fallback"}
        assert batch.rescore_rows is not None
        rescorer.hold(part.take(pa.array(batch.rescore_rows)))
    assert await rescorer.rescore() is None  # the model is still away: keep holding
    backend.down = False
    await asyncio.sleep(0.06)  # the breaker's wait in the open state
    corrections = await rescorer.rescore()
    assert corrections is not None and corrections.num_rows == 100 and rescorer.pending_records == 0
    assert set(corrections.column("scored_by").to_pylist()) == {"model"}
    assert set(corrections.column("corrects").to_pylist()) == {"fallback"}
    direct = onnx_model().predict_sync(pipe.features.matrix(records.slice(0, 100)))["fraud_score"]
    assert np.allclose(corrections.column("fraud_score").to_numpy(), direct)
