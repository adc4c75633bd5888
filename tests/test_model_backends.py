"""Model backends: the bundled ONNX model in process, and the same model behind real
model-server processes (KServe V2 and MLflow) reached over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from adapters.models.base import ModelBackend
from adapters.models.kserve import KServeV2Model
from adapters.models.mlflow import MlflowModel
from adapters.models.onnx import OnnxModel
from schemas.contract import load_contract
from schemas.errors import (
    ConfigError,
    DataError,
    InfrastructureError,
    ModelOutputError,
    ModelRejected,
    ModelServerError,
    ModelTimeout,
    ModelUnavailable,
)
from schemas.examples import contract_path, generate_card_file
from tests.model_servers import FRAUD_ONNX, ModelServerProcess, free_port

FRAUD_JSON = FRAUD_ONNX.with_suffix(".json")
FEATURES = ["amount", "foreign", "mcc", "ecom", "cashback"]


def card_features(table: pa.Table) -> np.ndarray:
    """The card_txn contract's `model.features`, column by column, as float32 (N, 5)."""
    def flag(mask: pa.ChunkedArray) -> np.ndarray:
        return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=np.float32)

    return np.column_stack([
        pc.cast(table["TXN_AMOUNT"], pa.float64()).to_numpy(),
        flag(pc.not_equal(table["COUNTRY"], "US")),
        table["MCC"].to_numpy(),
        flag(pc.equal(table["CHANNEL"], "E")),
        pc.cast(table["CASHBACK_AMOUNT"], pa.float64()).to_numpy(),
    ]).astype(np.float32)


@pytest.fixture(scope="module")
def card_batch(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Features of 5,000 decoded records of the bundled example file."""
    path = tmp_path_factory.mktemp("cards") / "CARDTXN.dat"
    generate_card_file(path, records=5_000, seed=11)
    chunks = list(load_contract(contract_path("card_txn")).decode_file(path))
    table = pa.concat_tables([c.table for c in chunks])
    assert table.num_rows == 5_000
    return card_features(table)


@pytest.fixture(scope="module")
def onnx_model() -> OnnxModel:
    # Built as the gateway builds it from a config: the file, its pinned hash, the names.
    meta = json.loads(FRAUD_JSON.read_text(encoding="utf-8"))
    return OnnxModel(FRAUD_JSON.parent / meta["file"], sha256=meta["sha256"], name=meta["name"],
                     version=str(meta["version"]), inputs=[c for i in meta["inputs"] for c in i["columns"]],
                     outputs=[o["name"] for o in meta["outputs"]])


# --------------------------------------------------------------------------- ONNX in process
def test_bundled_model_loads_with_its_pinned_hash(onnx_model: OnnxModel) -> None:
    meta = json.loads(FRAUD_JSON.read_text())
    assert onnx_model.sha256 == meta["sha256"] == hashlib.sha256(FRAUD_ONNX.read_bytes()).hexdigest()
    assert onnx_model.info.name == "fraud" and onnx_model.info.version == "1"
    assert onnx_model.info.inputs == FEATURES
    assert onnx_model.info.outputs == ["fraud_score"]
    assert onnx_model.width == 5
    assert isinstance(onnx_model, ModelBackend)
    assert FRAUD_ONNX.stat().st_size < 200_000


def test_bundled_model_defaults_come_from_the_graph_metadata() -> None:
    model = OnnxModel(FRAUD_ONNX)
    assert (model.info.name, model.info.version, model.info.inputs, model.info.outputs) == (
        "fraud", "1", FEATURES, ["fraud_score"])


@pytest.mark.asyncio
async def test_onnx_scores_a_decoded_example_batch(onnx_model: OnnxModel, card_batch: np.ndarray) -> None:
    out = await onnx_model.predict(card_batch)
    assert set(out) == {"fraud_score"}
    score = out["fraud_score"]
    assert score.shape == (len(card_batch),) and score.dtype == np.float32
    assert np.all((score >= 0) & (score <= 1)) and np.isfinite(score).all()
    assert len(np.unique(score)) > 20  # a model, not a constant
    foreign = card_batch[:, 1] == 1
    assert score[foreign].mean() > score[~foreign].mean()
    np.testing.assert_array_equal(onnx_model.predict_sync(card_batch)["fraud_score"], score)


@pytest.mark.asyncio
async def test_onnx_risky_transactions_score_higher(onnx_model: OnnxModel) -> None:
    rows = np.array([[25.0, 0, 5411, 0, 0],        # groceries at home
                     [9000.0, 1, 5944, 1, 0],      # jewellery abroad, online
                     [2500.0, 1, 6051, 1, 0]],     # quasi-cash abroad, online
                    dtype=np.float32)
    score = (await onnx_model.predict(rows))["fraud_score"]
    assert score[0] < 0.05 < 0.3 < score[1] and score[0] < score[2]


@pytest.mark.asyncio
async def test_onnx_a_large_batch_scored_in_slices_side_by_side_scores_as_one_call(onnx_model: OnnxModel) -> None:
    rng = np.random.default_rng(7)
    rows = np.column_stack([rng.uniform(1, 9000, 70_001), rng.integers(0, 2, 70_001), rng.integers(1000, 9999, 70_001),
                            rng.integers(0, 2, 70_001), rng.uniform(0, 100, 70_001)]).astype(np.float32)
    sliced = await onnx_model.predict(rows)
    whole = onnx_model.predict_sync(rows)
    assert sliced.keys() == whole.keys()
    for name, values in whole.items():
        assert sliced[name].shape == values.shape and np.array_equal(sliced[name], values)


@pytest.mark.asyncio
async def test_onnx_empty_batch_gives_empty_scores(onnx_model: OnnxModel) -> None:
    out = await onnx_model.predict(np.zeros((0, 5), dtype=np.float32))
    assert out["fraud_score"].shape == (0,)


def test_onnx_sha256_mismatch_refuses_to_load() -> None:
    wrong = "0" * 64
    with pytest.raises(ConfigError) as err:
        OnnxModel(FRAUD_ONNX, sha256=wrong)
    message = str(err.value)
    assert wrong in message and hashlib.sha256(FRAUD_ONNX.read_bytes()).hexdigest() in message
    assert "refusing" in message


def test_onnx_tampered_file_refuses_to_load(tmp_path: Path) -> None:
    pinned = json.loads(FRAUD_JSON.read_text())["sha256"]
    tampered = tmp_path / "fraud.onnx"
    blob = bytearray(FRAUD_ONNX.read_bytes())
    blob[-1] ^= 0x01
    tampered.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match="does not match the pinned"):
        OnnxModel(tampered, sha256=pinned)


def test_onnx_not_a_model_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "fraud.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        OnnxModel(junk)
    with pytest.raises(ConfigError, match="cannot read model file"):
        OnnxModel(tmp_path / "missing.onnx")


@pytest.mark.asyncio
async def test_onnx_wrong_width_is_a_clear_error(onnx_model: OnnxModel) -> None:
    with pytest.raises(ConfigError) as err:
        await onnx_model.predict(np.zeros((3, 4), dtype=np.float32))
    message = str(err.value)
    assert "expects 5 features per row (amount, foreign, mcc, ecom, cashback), found 4" in message
    with pytest.raises(ConfigError, match="2-D"):
        await onnx_model.predict(np.zeros(5, dtype=np.float32))


def test_onnx_feature_names_must_match_the_graph_width() -> None:
    with pytest.raises(ConfigError, match="takes 5 features per row, 4 feature names"):
        OnnxModel(FRAUD_ONNX, inputs=FEATURES[:4])
    with pytest.raises(ConfigError, match="no output probability"):
        OnnxModel(FRAUD_ONNX, outputs=["probability"])


@pytest.mark.asyncio
async def test_onnx_predict_leaves_the_event_loop_free(onnx_model: OnnxModel) -> None:
    big = np.tile(np.array([[120.0, 1, 5999, 1, 0]], dtype=np.float32), (400_000, 1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await onnx_model.predict(big)
    task.cancel()
    assert ticks > 1  # the loop ran other work while the session computed


@pytest.mark.asyncio
async def test_onnx_small_batch_is_scored_on_the_loops_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A micro-batch costs less to score than the hop to a worker thread; a big batch goes
    to the worker. The choice comes from the session's measured time per row."""
    model = OnnxModel(FRAUD_ONNX)
    threads: list[int] = []
    real = model.predict_sync

    def spy(features: np.ndarray) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        return real(features)

    monkeypatch.setattr(model, "predict_sync", spy)
    row = np.array([[120.0, 1, 5999, 1, 0]], dtype=np.float32)
    first = await model.predict(np.tile(row, (50, 1)))  # nothing measured yet: a worker
    again = await model.predict(np.tile(row, (50, 1)))
    await model.predict(np.tile(row, (400_000, 1)))
    here = threading.get_ident()
    assert threads[0] != here and threads[1] == here and threads[2] != here
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


@pytest.mark.asyncio
async def test_onnx_closed_model_is_unavailable(tmp_path: Path) -> None:
    copy = tmp_path / "fraud.onnx"
    shutil.copy(FRAUD_ONNX, copy)
    model = OnnxModel(copy)
    assert await model.ready()
    await model.close()
    assert not await model.ready()
    with pytest.raises(ModelUnavailable):
        await model.predict(np.zeros((1, 5), dtype=np.float32))


# --------------------------------------------------------------------------- KServe V2 (real server)
def kserve_client(server: ModelServerProcess, **kw: object) -> KServeV2Model:
    options: dict = {"timeout_s": 10.0, "max_connections": 4, "inputs": FEATURES, "outputs": ["fraud_score"]}
    options.update(kw)
    return KServeV2Model(server.base_url, "fraud", **options)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_ready_and_metadata(kserve_server: ModelServerProcess) -> None:
    model = kserve_client(kserve_server)
    try:
        assert isinstance(model, ModelBackend)
        assert await model.ready()
        meta = await model.metadata()
        assert meta["name"] == "fraud"
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 5]}]
        assert meta["outputs"] == [{"name": "fraud_score", "datatype": "FP32", "shape": [-1]}]
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_scores_equal_in_process_onnx(kserve_server: ModelServerProcess, onnx_model: OnnxModel,
                                                   card_batch: np.ndarray) -> None:
    model = kserve_client(kserve_server)
    try:
        remote = await model.predict(card_batch)
        local = await onnx_model.predict(card_batch)
        assert remote["fraud_score"].dtype == np.float32
        np.testing.assert_allclose(remote["fraud_score"], local["fraud_score"], rtol=0, atol=1e-6)
        # Concurrent batches share the pooled connections and each gets its own answer.
        parts = np.array_split(card_batch, 6)
        answers = await asyncio.gather(*(model.predict(p) for p in parts))
        np.testing.assert_allclose(np.concatenate([a["fraud_score"] for a in answers]), local["fraud_score"],
                                   rtol=0, atol=1e-6)
        assert (await model.predict(card_batch[:0]))["fraud_score"].shape == (0,)
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_wrong_tensor_name_is_rejected(kserve_server: ModelServerProcess,
                                                    card_batch: np.ndarray) -> None:
    model = kserve_client(kserve_server, input_name="input_0")
    try:
        with pytest.raises(ModelRejected) as err:
            await model.predict(card_batch[:10])
        assert "HTTP 400" in str(err.value) and "'features'" in str(err.value)
        assert isinstance(err.value, DataError)
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_wrong_width_is_rejected_by_the_server(kserve_server: ModelServerProcess) -> None:
    model = kserve_client(kserve_server, inputs=None)  # no local width check: the server's 400 decides
    try:
        with pytest.raises(ModelRejected, match=r"shape \[3, 4\], expected \[-1, 5\]"):
            await model.predict(np.zeros((3, 4), dtype=np.float32))
    finally:
        await model.close()
    checked = kserve_client(kserve_server)
    try:
        with pytest.raises(ConfigError, match="expects 5 features"):
            await checked.predict(np.zeros((3, 4), dtype=np.float32))
    finally:
        await checked.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_unknown_model_is_unavailable_not_rejected(kserve_server: ModelServerProcess) -> None:
    model = KServeV2Model(kserve_server.base_url, "no-such-model", timeout_s=10.0, max_connections=1)
    try:
        assert not await model.ready()
        with pytest.raises(ModelUnavailable, match="HTTP 404") as err:
            await model.predict(np.zeros((2, 5), dtype=np.float32))
        assert not isinstance(err.value, DataError)
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_tiny_timeout_is_a_model_timeout(kserve_server: ModelServerProcess,
                                                      card_batch: np.ndarray) -> None:
    model = kserve_client(kserve_server, timeout_s=0.001)
    try:
        with pytest.raises(ModelTimeout, match=r"no answer within 0\.001s"):
            await model.predict(np.tile(card_batch, (4, 1)))
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_killed_server_is_unavailable_until_restarted(
        disposable_kserve_server: ModelServerProcess, onnx_model: OnnxModel, card_batch: np.ndarray) -> None:
    server = disposable_kserve_server
    model = kserve_client(server, timeout_s=5.0)
    batch = card_batch[:500]
    try:
        before = await model.predict(batch)  # leaves a pooled keep-alive connection behind
        server.kill()
        assert not await model.ready()
        for _ in range(2):  # the dead pooled connection, then a refused new one
            with pytest.raises(ModelUnavailable) as err:
                await model.predict(batch)
            assert isinstance(err.value, InfrastructureError) and not isinstance(err.value, ModelTimeout)
        server.restart()
        assert await model.ready()
        after = await model.predict(batch)  # the same client recovers
        np.testing.assert_array_equal(after["fraud_score"], before["fraud_score"])
        np.testing.assert_allclose(after["fraud_score"], onnx_model.predict_sync(batch)["fraud_score"],
                                   rtol=0, atol=1e-6)
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kserve_hung_server_times_out(disposable_kserve_server: ModelServerProcess,
                                            card_batch: np.ndarray) -> None:
    server = disposable_kserve_server
    model = kserve_client(server, timeout_s=0.5)
    try:
        await model.predict(card_batch[:100])
        server.pause()
        try:
            with pytest.raises(ModelTimeout):
                await model.predict(card_batch[:100])
            assert not await model.ready()
        finally:
            server.resume()
        assert (await model.predict(card_batch[:100]))["fraud_score"].shape == (100,)
    finally:
        await model.close()


@pytest.mark.asyncio
async def test_kserve_nothing_listening_is_unavailable() -> None:
    model = KServeV2Model(f"http://127.0.0.1:{free_port()}", "fraud", timeout_s=2.0, max_connections=1)
    try:
        assert not await model.ready()
        with pytest.raises(ModelUnavailable, match="ConnectError") as err:
            await model.predict(np.zeros((1, 5), dtype=np.float32))
        assert not isinstance(err.value, ModelTimeout)
    finally:
        await model.close()


# --------------------------------------------------------------------------- answers of any V2 server
def _answering(status: int, body: object) -> httpx.AsyncClient:
    """A client whose every request gets this answer (parsing and status mapping only;
    the real-server tests above cover the transport)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))
    return httpx.AsyncClient(transport=transport)


@pytest.mark.asyncio
async def test_kserve_outputs_are_read_by_name_datatype_and_shape() -> None:
    answer = {"model_name": "m", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [3], "data": [0, 1, 0]},
        {"name": "score", "datatype": "FP64", "shape": [3, 1], "data": [[0.25], [0.5], [0.75]]},
    ]}
    async with _answering(200, answer) as client:
        model = KServeV2Model("http://model", "m", client=client, outputs=["score", "label"])
        out = await model.predict(np.zeros((3, 2), dtype=np.float32))
    assert out["score"].dtype == np.float64 and out["score"].tolist() == [0.25, 0.5, 0.75]
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [0, 1, 0]


@pytest.mark.parametrize(("status", "error", "not_error"), [
    (400, ModelRejected, InfrastructureError),
    (422, ModelRejected, InfrastructureError),
    (404, ModelUnavailable, DataError),
    (429, ModelUnavailable, DataError),
    (401, ModelUnavailable, DataError),
    (408, ModelTimeout, DataError),
    (500, ModelServerError, DataError),
    (503, ModelServerError, DataError),
])
@pytest.mark.asyncio
async def test_http_status_decides_where_the_record_goes(status: int, error: type, not_error: type) -> None:
    async with _answering(status, {"error": "x" * 2000}) as client:
        for model in (KServeV2Model("http://model", "m", client=client),
                      MlflowModel("http://model", client=client, inputs=["a"])):
            with pytest.raises(error) as err:
                await model.predict(np.zeros((1, 1), dtype=np.float32))
            assert not isinstance(err.value, not_error)
            assert f"HTTP {status}" in str(err.value) and len(str(err.value)) < 500  # an excerpt, not the body


@pytest.mark.asyncio
async def test_server_error_carries_its_status() -> None:
    async with _answering(503, {"error": "model is loading"}) as client:
        with pytest.raises(ModelServerError) as err:
            await KServeV2Model("http://model", "m", client=client).predict(np.zeros((1, 1), dtype=np.float32))
    assert err.value.status == 503 and "model is loading" in str(err.value)


@pytest.mark.parametrize("answer", [
    b"<html>gateway error</html>",
    {"outputs": [{"name": "other", "datatype": "FP32", "shape": [1], "data": [0.5]}]},
    {"outputs": [{"name": "fraud_score", "datatype": "FP32", "shape": [2], "data": [0.5, 0.5]}]},
    {"outputs": [{"name": "fraud_score", "datatype": "COMPLEX", "shape": [1], "data": [0.5]}]},
    {"error": "no outputs"},
])
@pytest.mark.asyncio
async def test_kserve_unusable_answer_is_an_output_error(answer: object) -> None:
    async with _answering(200, answer) as client:
        model = KServeV2Model("http://model", "m", client=client, outputs=["fraud_score"])
        with pytest.raises(ModelOutputError):
            await model.predict(np.zeros((1, 5), dtype=np.float32))


# --------------------------------------------------------------------------- MLflow (real server)
def mlflow_client(server: ModelServerProcess, **kw: object) -> MlflowModel:
    options: dict = {"timeout_s": 10.0, "name": "fraud", "inputs": FEATURES, "outputs": ["fraud_score"]}
    options.update(kw)
    return MlflowModel(server.base_url, **options)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_mlflow_invocations_equal_in_process_onnx(mlflow_server: ModelServerProcess, onnx_model: OnnxModel,
                                                        card_batch: np.ndarray) -> None:
    model = mlflow_client(mlflow_server)
    try:
        assert isinstance(model, ModelBackend)
        assert await model.ready()
        remote = await model.predict(card_batch)
        local = await onnx_model.predict(card_batch)
        np.testing.assert_allclose(remote["fraud_score"], local["fraud_score"], rtol=0, atol=1e-6)
    finally:
        await model.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_mlflow_input_the_model_cannot_take_is_rejected(mlflow_server: ModelServerProcess) -> None:
    model = mlflow_client(mlflow_server, inputs=FEATURES[:4])
    try:
        with pytest.raises(ModelRejected, match="HTTP 400"):
            await model.predict(np.ones((2, 4), dtype=np.float32))
    finally:
        await model.close()


@pytest.mark.parametrize("predictions", [
    {"predictions": [0.1, 0.2]},
    {"predictions": [[0.1], [0.2]]},
    {"predictions": [{"fraud_score": 0.1}, {"fraud_score": 0.2}]},
    {"predictions": {"fraud_score": [0.1, 0.2]}},
    [0.1, 0.2],  # MLflow 1.x: no wrapper
])
@pytest.mark.asyncio
async def test_mlflow_prediction_shapes(predictions: object) -> None:
    async with _answering(200, predictions) as client:
        model = MlflowModel("http://model", client=client, inputs=["a", "b"], outputs=["fraud_score"])
        out = await model.predict(np.zeros((2, 2), dtype=np.float32))
    assert out["fraud_score"].tolist() == [0.1, 0.2]


@pytest.mark.asyncio
async def test_mlflow_missing_output_is_an_output_error() -> None:
    async with _answering(200, {"predictions": [{"score": 0.1}]}) as client:
        model = MlflowModel("http://model", client=client, inputs=["a"], outputs=["fraud_score"])
        with pytest.raises(ModelOutputError, match="no output 'fraud_score'"):
            await model.predict(np.zeros((1, 1), dtype=np.float32))


@pytest.mark.asyncio
async def test_mlflow_nothing_listening_is_unavailable() -> None:
    model = MlflowModel(f"http://127.0.0.1:{free_port()}", timeout_s=2.0, inputs=FEATURES)
    try:
        assert not await model.ready()
        with pytest.raises(ModelUnavailable):
            await model.predict(np.zeros((1, 5), dtype=np.float32))
    finally:
        await model.close()
