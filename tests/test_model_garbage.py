"""A model server that answers garbage (tests/garbage_model_server.py, a real process):
non-JSON, NaN/Infinity tokens, the wrong shape or dtype, a missing output, an endless
body, a crash on one record. A malformed answer is the model failing: the breaker counts
it, the fallback scores, and only a record the model provably cannot score is rejected."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from adapters.models.base import ModelBackend
from adapters.models.kserve import KServeV2Model
from adapters.models.mlflow import MlflowModel
from gateway.cli import main
from gateway.config import example_dropfolder_config
from gateway.outputs import outputs_from_contract
from gateway.pipeline import Pipeline
from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from gateway.resilience.retry import RetryPolicy
from schemas.contract import Contract, load_contract
from schemas.errors import DataError, InfrastructureError, ModelOutputError
from schemas.examples import contract_path, generate_card_file
from tests.model_servers import ROOT, GarbageModelServer
from tests.peak_memory import peak_bytes, probed

pytestmark = pytest.mark.integration

FEATURES = ["amount", "foreign", "mcc", "ecom", "cashback"]
GARBAGE = ["non_json", "nan", "wrong_shape", "wrong_dtype", "missing_output", "huge"]
CAP = 4 * 2**20  # max_response_bytes of the clients below


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path("card_txn"))


@pytest.fixture(scope="module")
def records(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    path = tmp_path_factory.mktemp("cards") / "cards.dat"
    generate_card_file(path, records=400, seed=7)
    return pa.concat_tables([dc.table for dc in contract.decode_file(path)])


def backend(server: GarbageModelServer, protocol: str) -> ModelBackend:
    if protocol == "kserve":
        return KServeV2Model(server.base_url, "fraud", timeout_s=10.0, inputs=FEATURES, outputs=["fraud_score"],
                             max_response_bytes=CAP)
    return MlflowModel(server.base_url, timeout_s=10.0, name="fraud", inputs=FEATURES, outputs=["fraud_score"],
                       max_response_bytes=CAP)


def guarded(server: GarbageModelServer, contract: Contract, protocol: str = "kserve") -> GuardedModel:
    """Judges after 4 calls, stays open for a minute: an open breaker is not a coincidence."""
    breaker = CircuitBreaker("fraud", BreakerConfig(sliding_window_size=10, minimum_number_of_calls=4,
                                                    wait_duration_in_open_s=60))
    return GuardedModel(backend(server, protocol), breaker=breaker,
                        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02), timeout_s=10.0,
                        max_concurrency=2, outputs=outputs_from_contract(contract))


# --------------------------------------------------------------------------- the guarded model
@pytest.mark.parametrize("protocol", ["kserve", "mlflow"])
@pytest.mark.parametrize("mode", GARBAGE)
async def test_a_garbage_answer_is_a_model_failure_the_breaker_counts(
        garbage_server: GarbageModelServer, contract: Contract, mode: str, protocol: str) -> None:
    garbage_server.set_mode(mode)
    model = guarded(garbage_server, contract, protocol)
    one_row = np.array([[120.0, 1, 5999, 1, 0]], dtype=np.float32)
    try:
        for _ in range(2):  # two records, two attempts each: the breaker's 4 calls
            with pytest.raises(ModelOutputError) as err:
                await model.predict(one_row)
            assert isinstance(err.value, InfrastructureError) and not isinstance(err.value, DataError)
        assert model.breaker.state == BreakerState.OPEN, model.breaker.snapshot()
        assert len(str(err.value)) < 1000  # a reason with an excerpt, never the body
        if mode == "huge":
            assert f"over the cap of {CAP:,} bytes" in str(err.value)
        if mode == "nan":
            assert "NaN and Infinity are not JSON" in str(err.value) or "NaN is not a JSON value" in str(err.value)
    finally:
        await model.close()


async def test_an_endless_body_is_read_no_further_than_the_cap(garbage_server: GarbageModelServer) -> None:
    garbage_server.set_mode("huge")
    model = backend(garbage_server, "kserve")
    try:
        for _ in range(3):
            with pytest.raises(ModelOutputError, match="over the cap"):
                await model.predict(np.ones((10, 5), dtype=np.float32))
    finally:
        await model.close()
    # the server got as far as the socket buffers let it, then the client hung up
    sent = garbage_server.stats()["bytes_sent"]
    assert sent < 3 * (CAP + 16 * 2**20), f"{sent:,} bytes sent for 3 answers capped at {CAP:,}"


# --------------------------------------------------------------------------- the pipeline
@pytest.mark.parametrize("mode", GARBAGE)
async def test_pipeline_falls_back_on_garbage_and_the_breaker_opens(
        garbage_server: GarbageModelServer, contract: Contract, records: pa.Table, mode: str) -> None:
    garbage_server.set_mode(mode)
    model = guarded(garbage_server, contract)
    pipe = Pipeline(contract, name="card_txn", model=model)
    try:
        n_in = n_out = 0
        for lo in range(0, 400, 100):
            batch = await pipe.score(records.slice(lo, 100))
            n_in += 100
            n_out += batch.table.num_rows
            assert batch.rejects == [], "a model answering garbage for every record rejects none of them"
            assert set(batch.table.column("scored_by").to_pylist()) == {"fallback"}
        assert n_in == n_out
        assert model.breaker.state == BreakerState.OPEN
        requests = garbage_server.stats()["requests"]
        await pipe.score(records.slice(0, 100))
        assert garbage_server.stats()["requests"] == requests  # open: the model is not called
    finally:
        await model.close()


async def test_a_record_the_model_crashes_on_is_rejected_and_the_rest_scored(
        garbage_server: GarbageModelServer, contract: Contract, records: pa.Table) -> None:
    model = guarded(garbage_server, contract)
    pipe = Pipeline(contract, name="card_txn", model=model)
    table = records.slice(0, 64)
    poison_row = 41
    garbage_server.set_mode("poison", poison_amount=float(pipe.features.matrix(table)[poison_row, 0]))
    try:
        batch = await pipe.score(table)
    finally:
        await model.close()
    assert [r.row for r in batch.rejects] == [poison_row]
    assert "model server failed on this record" in batch.rejects[0].reason
    assert "not JSON" in batch.rejects[0].reason and "Traceback" in batch.rejects[0].reason
    assert batch.table.num_rows == 63 and set(batch.table.column("scored_by").to_pylist()) == {"model"}
    assert model.breaker.state == BreakerState.CLOSED


# --------------------------------------------------------------------------- lgw score, end to end
def score_config(tmp_path: Path, server: GarbageModelServer, *, protocol: str = "kserve",
                 max_response_bytes: int = CAP) -> Path:
    endpoint: dict[str, Any] = ({"backend": "kserve", "url": server.base_url, "model_name": "fraud"}
                                if protocol == "kserve" else {"backend": "mlflow", "url": server.base_url})
    cfg = {"models": {"fraud": {
        "endpoint": endpoint, "timeout_s": 30, "max_response_bytes": max_response_bytes,
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
        "breaker": {"sliding_window_size": 10, "minimum_number_of_calls": 4, "wait_duration_in_open_s": 60}}},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def lgw_score(tmp_path: Path, config: Path, cards: Path) -> tuple[int, dict[str, Any], str, int]:
    """`lgw score` in a process of its own (this checkout's code): exit code, summary,
    stderr, and the process's own peak RSS in bytes (tests.peak_memory)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out, err, peak = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "peak.kb"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.run(probed(peak, "gateway.cli", [
            "score", "--contract", str(contract_path("card_txn")), "--input", str(cards), "--output",
            str(tmp_path / "scored.jsonl"), "--rejects", str(tmp_path / "rejects.jsonl"), "--config", str(config),
            "--chunk-records", "200"]), stdout=stdout, stderr=stderr, env=env, cwd=tmp_path)
    lines = out.read_text().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return proc.returncode, summary, err.read_text(), peak_bytes(peak)


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cards") / "CARDTXN.DAT"
    generate_card_file(path, records=2_000, seed=3)
    return path


@pytest.mark.parametrize(("mode", "protocol"), [("non_json", "kserve"), ("nan", "mlflow"),
                                                ("wrong_dtype", "kserve"), ("missing_output", "mlflow")])
def test_lgw_score_with_a_garbage_model_falls_back_and_finishes(
        garbage_server: GarbageModelServer, tmp_path: Path, cards: Path,
        mode: str, protocol: str) -> None:
    garbage_server.set_mode(mode)
    code, summary, stderr, _ = lgw_score(tmp_path, score_config(tmp_path, garbage_server,
                                                                         protocol=protocol), cards)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert summary["records_in"] == 2_000 == summary["records_out"] + summary["rejected"]
    assert summary["rejected"] == 0 and summary["scored_by"] == {"fallback": 2_000}
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 2_000 and {r["scored_by"] for r in scored} == {"fallback"}
    # ten chunks of 200: without a breaker each would split to its first record (and call
    # the model ~10 times); the breaker opened in the first chunk and the rest never called it
    assert garbage_server.stats()["requests"] < 20, garbage_server.stats()


def test_lgw_batch_run_with_a_garbage_model_scores_the_file_by_the_rules(
        garbage_server: GarbageModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage_server.set_mode("wrong_shape")
    cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}", batch_size=250)
    cfg["models"]["fraud"] = yaml.safe_load(score_config(tmp_path, garbage_server).read_text())["models"]["fraud"]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(cfg))
    inbox = tmp_path / "drop" / "inbox"
    inbox.mkdir(parents=True)
    generate_card_file(inbox / "CARDTXN.DAT", records=1_000, seed=4)
    assert main(["batch", "run", "card_txn", "--config", str(config)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["records_in"] == 1_000 == summary["records_out"]
    assert summary["rejected"] == 0
    scored = [json.loads(line) for line in (tmp_path / "drop" / "outbox" / "CARDTXN.DAT.scored.jsonl").open()]
    assert len(scored) == 1_000 and {r["scored_by"] for r in scored} == {"fallback"}


def test_lgw_score_memory_stays_bounded_when_the_model_answers_without_end(
        garbage_server: GarbageModelServer, tmp_path: Path, cards: Path) -> None:
    garbage_server.set_mode("huge")  # 1.5 GB per answer unless the client hangs up
    code, summary, stderr, peak_rss = lgw_score(tmp_path, score_config(tmp_path, garbage_server), cards)
    assert code == 0, stderr
    assert summary["records_in"] == 2_000 == summary["records_out"] and summary["scored_by"] == {"fallback": 2_000}
    print(f"lgw score against an endless model answer: peak RSS {peak_rss / 2**20:.0f} MiB, "
          f"{garbage_server.stats()['bytes_sent'] / 2**20:.0f} MiB sent by the server")
    assert peak_rss < 400 * 2**20, f"peak RSS {peak_rss / 2**20:.0f} MiB"

