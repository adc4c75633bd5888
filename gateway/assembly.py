"""Assembles what the config describes, once: model backends behind their guards and
the pipelines built around them."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.models.base import ModelBackend
from gateway.config import GatewayConfig, KServeModelConfig, MlflowModelConfig, ModelConfig, OnnxModelConfig, Policy
from gateway.governance.review import ReviewConfig, check_review
from gateway.kill_switch import KillSwitches, KillSwitchWatcher
from gateway.outputs import outputs_from_contract
from gateway.pipeline import Pipeline
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from schemas.contract import Contract
from schemas.errors import ConfigError


def build_model(name: str, cfg: ModelConfig, contract: Contract | None, base: GatewayConfig) -> GuardedModel:
    """The endpoint's backend wrapped in its circuit breaker, retries, timeout and limit."""
    ep = cfg.endpoint
    backend: ModelBackend
    features = list((contract.config.model or {}).get("features", {})) if contract else []
    outputs = list((contract.config.model or {}).get("outputs", {})) if contract else []
    if isinstance(ep, OnnxModelConfig):
        from adapters.models.onnx import OnnxModel

        backend = OnnxModel(base.resolve(ep.path), sha256=ep.sha256, name=name, version=ep.version,
                            inputs=features, outputs=outputs)
    elif isinstance(ep, KServeModelConfig):
        from adapters.models.kserve import KServeV2Model
        from adapters.models.security import client_security

        backend = KServeV2Model(ep.url, ep.model_name, version=ep.version, timeout_s=cfg.timeout_s,
                                max_connections=cfg.max_concurrency, inputs=features, outputs=outputs,
                                max_response_bytes=cfg.max_response_bytes,
                                **client_security(ep.auth, ep.tls, where=f"models.{name}.endpoint"))
    elif isinstance(ep, MlflowModelConfig):
        from adapters.models.mlflow import MlflowModel
        from adapters.models.security import client_security

        backend = MlflowModel(ep.url, timeout_s=cfg.timeout_s, name=name, version=ep.version,
                              inputs=features, outputs=outputs, max_response_bytes=cfg.max_response_bytes,
                              **client_security(ep.auth, ep.tls, where=f"models.{name}.endpoint"))
    else:  # pragma: no cover - the config's discriminator allows nothing else
        raise ConfigError(f"model {name}: unknown backend")
    breaker = CircuitBreaker(name, cfg.breaker)
    return GuardedModel(backend, breaker=breaker, retry=cfg.retry, timeout_s=cfg.timeout_s,
                        max_concurrency=cfg.max_concurrency,
                        outputs=outputs_from_contract(contract) if contract else None)


def build_pipeline(name: str, contract: Contract, cfg: GatewayConfig, *, model_name: str | None,
                   policy: Policy = Policy.FALLBACK, shadow: bool = False, force_fallback: bool = False,
                   state: KillSwitches | None = None, pii: Mapping[str, str] | None = None,
                   review: ReviewConfig | None = None) -> Pipeline:
    """`pii`: the pipeline's overrides of the contract's pii policy (gateway.governance.pii)."""
    from gateway.governance.pii import policy_for

    model = None
    if model_name is not None and not force_fallback:
        if model_name not in cfg.models:
            raise ConfigError(f"contract {contract.name} scores with model {model_name!r}, which the config "
                              f"does not define (models: {', '.join(cfg.models) or 'none'})")
        model = build_model(model_name, cfg.models[model_name], contract, cfg)
    watcher = KillSwitchWatcher(state, name) if state is not None else None
    if review is not None:  # the judged output filled in, the band and rule checked against the contract
        review = check_review(review, contract)
    return Pipeline(contract, name=name, model=model, policy=policy, kill_switch=watcher, shadow=shadow,
                    pii=policy_for(contract, pii), review=review)
