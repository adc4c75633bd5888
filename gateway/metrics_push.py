"""`lgw batch run` is a nightly job that exits before Prometheus would scrape it, so it
pushes its metrics to a Pushgateway when one is configured (the Prometheus way for batch
jobs): job `lgw_batch`, grouped by pipeline, so the runs of two pipelines (two cron
entries) never replace each other's series. A push that fails is a warning: the run's
outputs are already durable and its exit code says how it went.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from adapters.secrets import env_value
from gateway import metrics
from schemas.errors import ConfigError

log = logging.getLogger("lgw.metrics")


class PushgatewayConfig(BaseModel):
    """`pushgateway:` in gateway.yaml (or `lgw batch run --pushgateway URL`)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # e.g. http://pushgateway:9091; None: no push
    job: str = Field(default="lgw_batch", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    timeout_s: float = Field(default=10.0, gt=0)
    username: str | None = None
    password_env: str | None = None  # the variable (or its _FILE) holding the basic-auth password


class PipelineSeries(Collector):
    """The registry's series of one pipeline (and the unlabelled process series)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterable[Any]:
        for family in metrics.REGISTRY.collect():
            samples = [s for s in family.samples if s.labels.get("pipeline", self.pipeline) == self.pipeline]
            if samples:
                family.samples = samples
                yield family


class Pusher:
    """Pushes a pipeline's series to the configured Pushgateway. Built before the run, so
    a config mistake (a missing password) is an error up front, not after the run."""

    def __init__(self, cfg: PushgatewayConfig) -> None:
        self.cfg = cfg
        self._handler = _handler(cfg) if cfg.url else default_handler

    def push(self, pipeline: str) -> bool:
        """True when the Pushgateway took the series."""
        cfg = self.cfg
        if not cfg.url:
            return False
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PipelineSeries(pipeline))
        # no instance label: each nightly pod has a new host name, and its group would stay
        # on the Pushgateway for good
        try:
            push_to_gateway(cfg.url, job=cfg.job, registry=registry, grouping_key={"pipeline": pipeline},
                            timeout=cfg.timeout_s, handler=self._handler)
        except Exception as exc:  # urllib's URLError, HTTPError, a timeout: the run itself went as it went
            log.warning("pushing the metrics of %s to the Pushgateway at %s failed: %s: %s", pipeline, cfg.url,
                        type(exc).__name__, exc)
            return False
        log.info("metrics of %s pushed to %s (job %s)", pipeline, cfg.url, cfg.job)
        return True


def _handler(cfg: PushgatewayConfig) -> Callable[..., Callable[[], None]]:
    if cfg.username is None:
        return default_handler
    password = env_value(cfg.password_env) if cfg.password_env else None
    if cfg.password_env and password is None:
        raise ConfigError(f"pushgateway.password_env: expected variable {cfg.password_env} (or "
                          f"{cfg.password_env}_FILE) to hold the Pushgateway password, found neither set")
    user = cfg.username

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return handler
