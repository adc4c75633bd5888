"""gateway.yaml: the example loads, mistakes get one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import OnnxModelConfig, Policy, embedded_defaults, load_config
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_config_loads_with_every_backend() -> None:
    cfg = load_config(ROOT / "deploy" / "gateway.example.yaml")
    assert {m.endpoint.backend for m in cfg.models.values()} == {"onnx", "kserve", "mlflow"}
    assert cfg.pipelines["card_txn"].policy == Policy.FALLBACK and cfg.pipelines["card_txn"].shadow
    assert cfg.models["fraud_kserve"].breaker.sliding_window_size == 50


def test_embedded_defaults_pin_the_bundled_model() -> None:
    cfg = embedded_defaults()
    endpoint = cfg.models["fraud"].endpoint
    assert isinstance(endpoint, OnnxModelConfig) and endpoint.sha256 and Path(endpoint.path).is_file()


def test_env_overrides_the_state_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_STATE_URL", "sqlite:///elsewhere.db")
    assert embedded_defaults().state.url == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(("text", "fragment"), [
    ("models: {m: {endpoint: {backend: grpc}}}", "models.m.endpoint"),
    ("pipelines: {p: {contract: c.yaml, model: nope}}", "no model named 'nope'"),
    ("models: {m: {endpoint: {backend: onnx, path: x}, breaker: {window: 3}}}", "models.m.breaker.window"),
    ("- a list", "expected a mapping"),
    ("models: {m: {endpoint: {backend: kserve, url: 'http://x', model_name: m}, max_response_bytes: 100}}",
     "models.m.max_response_bytes: Input should be greater than or equal to 1024"),
])
def test_config_mistakes_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_the_answer_size_cap_reaches_the_http_backends(tmp_path: Path) -> None:
    from adapters.models.kserve import KServeV2Model
    from adapters.models.mlflow import MlflowModel
    from gateway.assembly import build_model
    from schemas.contract import load_contract
    from schemas.examples import contract_path

    (tmp_path / "gateway.yaml").write_text(
        "models: {k: {endpoint: {backend: kserve, url: 'http://x', model_name: m}, max_response_bytes: 4096},\n"
        "         m: {endpoint: {backend: mlflow, url: 'http://x'}}}")
    cfg = load_config(tmp_path / "gateway.yaml")
    contract = load_contract(contract_path("card_txn"))
    kserve = build_model("k", cfg.models["k"], contract, cfg)
    mlflow = build_model("m", cfg.models["m"], contract, cfg)
    assert isinstance(kserve.backend, KServeV2Model) and kserve.backend.max_response_bytes == 4096
    assert isinstance(mlflow.backend, MlflowModel) and mlflow.backend.max_response_bytes == 64 * 2**20  # default
    assert kserve.outputs is not None and list(kserve.outputs) == ["fraud_score"]  # answers are checked whole
