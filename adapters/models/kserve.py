"""Model backend for servers that speak the Open Inference Protocol (KServe V2 REST):
KServe, MLServer, Triton, TorchServe, OpenVINO Model Server...

    GET  /v2/health/ready                         server ready
    GET  /v2/models/{name}[/versions/{v}]/ready   model ready
    GET  /v2/models/{name}[/versions/{v}]         model metadata (inputs, outputs, versions)
    POST /v2/models/{name}[/versions/{v}]/infer   {"inputs": [{"name", "shape", "datatype", "data"}]}

The features go as one FP32 tensor [N, F] (flat, row-major data); the answer's
`outputs` are read by name, typed by their `datatype` and reshaped by their `shape`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from adapters.models import _http
from adapters.models._tensors import feature_matrix, output_column
from adapters.models.base import ModelInfo
from adapters.tls import TLSConfig
from schemas.errors import ModelOutputError

__all__ = ["V2_DATATYPES", "KServeV2Model"]

# Open Inference Protocol tensor datatypes -> numpy. BYTES come as JSON strings.
V2_DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


class KServeV2Model:
    """Scores one batch per POST .../infer. One pooled `httpx.AsyncClient` for every call
    (`max_connections` bounds the connections to the server); pass `client` to share one,
    in which case `close()` leaves it open."""

    def __init__(self, base_url: str, model_name: str, *, version: str | None = None, timeout_s: float = 2.0,
                 max_connections: int = 8, client: httpx.AsyncClient | None = None,
                 inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None,
                 input_name: str = "features", max_response_bytes: int = _http.DEFAULT_MAX_RESPONSE_BYTES,
                 headers: dict[str, str] | None = None, verify: ssl.SSLContext | None = None,
                 tls: TLSConfig | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        self.max_response_bytes = max_response_bytes
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.timeout_s = timeout_s
        self.input_name = input_name
        self.info = ModelInfo(name=model_name, version=version or "", inputs=list(inputs or []),
                              outputs=list(outputs or []))
        self._owns_client = client is None
        self._tls = tls  # named when a handshake fails
        self._client = client or _http.make_client(self.base_url, timeout_s=timeout_s,
                                                   max_connections=max_connections,
                                                   headers=headers, verify=verify)
        model_path = f"/v2/models/{quote(model_name, safe='')}"
        if version:
            model_path += f"/versions/{quote(version, safe='')}"
        self._model_path = model_path
        self._what = f"model {model_name} at {self.base_url}"

    def _url(self, path: str) -> str:
        # An explicit base keeps a shared client (with another base_url) pointed here.
        return f"{self.base_url}{path}"

    async def ready(self) -> bool:
        """Server ready and model ready; False when either says no or cannot be reached."""
        return (await _http.probe(self._client, self._url("/v2/health/ready"), timeout_s=self.timeout_s)
                and await _http.probe(self._client, self._url(f"{self._model_path}/ready"),
                                      timeout_s=self.timeout_s))

    async def metadata(self) -> dict[str, Any]:
        """The model's metadata: name, versions, platform, inputs and outputs (name, datatype, shape)."""
        raw = await _http.call(self._client, "GET", self._url(self._model_path), timeout_s=self.timeout_s,
                               what=self._what, tls=self._tls, max_bytes=self.max_response_bytes)
        meta = _http.loads(raw, what=self._what)
        if not isinstance(meta, dict):
            raise ModelOutputError(f"{self._what}: metadata is not a JSON object: {_http.excerpt(raw)}")
        return meta

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        width = len(self.info.inputs) or None
        x = feature_matrix(features, width, model=self.model_name, columns=self.info.inputs)
        rows = x.shape[0]
        if rows == 0:
            return {o: np.zeros(0, dtype=np.float32) for o in self.info.outputs}
        body = {"inputs": [{"name": self.input_name, "shape": list(x.shape), "datatype": "FP32",
                            "data": x.reshape(-1)}]}
        raw = await _http.call(self._client, "POST", self._url(f"{self._model_path}/infer"),
                               timeout_s=self.timeout_s, what=self._what, tls=self._tls,
                               content=_http.dumps(body), max_bytes=self.max_response_bytes)
        answer = _http.loads(raw, what=self._what)
        tensors = self._output_tensors(answer, raw)
        wanted = self.info.outputs or list(tensors)
        missing = [o for o in wanted if o not in tensors]
        if missing:
            raise ModelOutputError(f"{self._what}: answer has no output {', '.join(missing)} "
                                   f"(it has {', '.join(tensors) or 'none'})")
        return {o: output_column(self._tensor(tensors[o]), rows, model=self.model_name, output=o) for o in wanted}

    def _output_tensors(self, answer: Any, raw: bytes) -> dict[str, dict[str, Any]]:
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or not all(isinstance(t, dict) and "name" in t for t in outputs):
            raise ModelOutputError(f"{self._what}: answer has no V2 `outputs` list: {_http.excerpt(raw)}")
        return {str(t["name"]): t for t in outputs}

    def _tensor(self, tensor: dict[str, Any]) -> np.ndarray:
        name = tensor.get("name")
        datatype = tensor.get("datatype")
        dtype = V2_DATATYPES.get(str(datatype))
        if dtype is None:
            raise ModelOutputError(f"{self._what}: output {name} has datatype {datatype!r}, "
                                   f"expected one of {', '.join(V2_DATATYPES)}")
        if "data" not in tensor:
            # The binary tensor extension puts data after the JSON; we never ask for it.
            raise ModelOutputError(f"{self._what}: output {name} carries no JSON `data` (binary extension?)")
        try:
            values = np.asarray(tensor["data"], dtype=dtype)
            shape = tensor.get("shape")
            return values.reshape([int(d) for d in shape]) if shape is not None else values
        except (TypeError, ValueError) as exc:
            raise ModelOutputError(f"{self._what}: output {name} ({datatype}, shape {tensor.get('shape')}) "
                                   f"cannot be read: {exc}") from None

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"KServeV2Model({self.base_url!r}, {self.model_name!r}, version={self.version!r})"
