"""The one interface every model backend implements (in-process ONNX, KServe V2 over
HTTP, MLflow /invocations). A backend moves features in and scores out, nothing else:
no retries, breaker or fallback here (those wrap it in `gateway.resilience`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# The largest HTTP answer body a model backend reads (KServe, MLflow) unless configured:
# public here because the gateway's config offers it as the default of `max_response_bytes`.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    inputs: list[str] = field(default_factory=list)  # feature names, in column order
    outputs: list[str] = field(default_factory=list)


@runtime_checkable
class ModelBackend(Protocol):
    """Scores one batch per call.

    `predict` takes float32 features of shape (N, F), columns in `info.inputs` order, and
    returns each output by name as a 1-D array of length N. It raises
    `schemas.errors.ModelUnavailable` / `ModelTimeout` when the endpoint cannot answer
    (connection errors, 5xx, timeouts) and `ModelRejected` for a 4xx.
    """

    info: ModelInfo

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
