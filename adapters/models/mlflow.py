"""Model backend for an MLflow scoring server (`mlflow models serve`, or a model deployed
from the MLflow registry to Databricks, SageMaker, Azure ML...):

    GET  /ping          ready (also /health)
    POST /invocations   {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                     -> {"predictions": ...}

`predictions` comes in the shapes MLflow writes for what the model returned: a list of
numbers (one output), a list of records ({output: value} per row), a dict of columns, or
a list of one-element lists. Each output is read by name. Failures map as in `_http`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from adapters.models import _http
from adapters.models._tensors import feature_matrix, output_column
from adapters.models.base import ModelInfo
from adapters.tls import TLSConfig
from schemas.errors import ConfigError, ModelOutputError

__all__ = ["MlflowModel"]


class MlflowModel:
    """`inputs` are the DataFrame's column names, in the features' column order (the
    model's signature, if it has one, checks them). `outputs` name the scores; a model
    that returns a bare list of numbers has exactly one."""

    def __init__(self, base_url: str, *, timeout_s: float = 2.0, max_connections: int = 8,
                 client: httpx.AsyncClient | None = None, name: str = "model", version: str = "1",
                 inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None,
                 max_response_bytes: int = _http.DEFAULT_MAX_RESPONSE_BYTES,
                 headers: dict[str, str] | None = None, verify: ssl.SSLContext | None = None,
                 tls: TLSConfig | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        self.max_response_bytes = max_response_bytes
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.info = ModelInfo(name=name, version=version, inputs=list(inputs or []),
                              outputs=list(outputs or ["prediction"]))
        self._owns_client = client is None
        self._tls = tls  # named when a handshake fails
        self._client = client or _http.make_client(self.base_url, timeout_s=timeout_s,
                                                   max_connections=max_connections,
                                                   headers=headers, verify=verify)
        self._what = f"model {name} at {self.base_url}"

    async def ready(self) -> bool:
        return await _http.probe(self._client, f"{self.base_url}/ping", timeout_s=self.timeout_s)

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        if not self.info.inputs:
            raise ConfigError(f"model {self.info.name}: an MLflow model needs its input column names (inputs)")
        x = feature_matrix(features, len(self.info.inputs), model=self.info.name, columns=self.info.inputs)
        rows = x.shape[0]
        if rows == 0:
            return {o: np.zeros(0, dtype=np.float32) for o in self.info.outputs}
        body = {"dataframe_split": {"columns": self.info.inputs, "data": x}}
        raw = await _http.call(self._client, "POST", f"{self.base_url}/invocations", timeout_s=self.timeout_s,
                               what=self._what, tls=self._tls, content=_http.dumps(body),
                               max_bytes=self.max_response_bytes)
        answer = _http.loads(raw, what=self._what)
        # MLflow 1.x answered with the bare predictions; 2.x+ wraps them.
        predictions = answer["predictions"] if isinstance(answer, dict) and "predictions" in answer else answer
        columns = self._columns(predictions, raw)
        return {o: output_column(values, rows, model=self.info.name, output=o) for o, values in columns.items()}

    def _columns(self, predictions: Any, raw: bytes) -> dict[str, np.ndarray]:
        outputs = self.info.outputs
        try:
            if isinstance(predictions, dict):  # {output: [values]}
                return {o: np.asarray(predictions[o], dtype=np.float64) for o in outputs}
            if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):  # records
                return {o: np.asarray([row[o] for row in predictions], dtype=np.float64) for o in outputs}
            if isinstance(predictions, list):  # numbers, or one-element rows
                if len(outputs) != 1:
                    raise ModelOutputError(f"{self._what}: answer is one unnamed column; "
                                           f"{len(outputs)} outputs ({', '.join(outputs)}) were expected")
                return {outputs[0]: np.asarray(predictions, dtype=np.float64)}
        except KeyError as exc:
            raise ModelOutputError(f"{self._what}: answer has no output {exc}: {_http.excerpt(raw)}") from None
        except (TypeError, ValueError) as exc:
            raise ModelOutputError(f"{self._what}: predictions are not numbers ({exc}): {_http.excerpt(raw)}") from None
        raise ModelOutputError(f"{self._what}: answer holds no predictions: {_http.excerpt(raw)}")

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"MlflowModel({self.base_url!r}, name={self.info.name!r}, version={self.info.version!r})"
