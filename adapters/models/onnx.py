"""In-process model backend: an ONNX file run by onnxruntime.

The file is the only thing loaded (no pickle, no joblib): an ONNX graph is data, not
code. When a sha256 is pinned, the bytes are hashed before the session is built from
those same bytes, so the file that was checked is the file that runs.

`predict` runs the session in a worker thread: onnxruntime releases the GIL while it
computes, so the event loop keeps serving other batches (and timeouts) meanwhile. A batch
the session is expected to score within INLINE_BUDGET_S (a real-time micro-batch of a
small model: ~0.2 ms for 300 rows of the example, ~0.5 ms under load) is scored on the
loop's own thread instead: the hop to a worker and back costs about as much (~0.15 ms
and a GIL hand-off, measured idle; more under load) and would be added to every
message's latency. The expectation is the session's own measured time per row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adapters.models._tensors import feature_matrix, output_column
from adapters.models.base import ModelInfo
from adapters.slices import row_slices
from schemas.errors import ConfigError, ModelServerError, ModelUnavailable

__all__ = ["OnnxModel", "sha256_of"]

INLINE_BUDGET_S = 0.002
PARALLEL_MIN_ROWS = 16_384  # a batch this large or more is scored in slices, one per core
log = logging.getLogger(__name__)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OnnxModel:
    """Scores with an ONNX graph that has one float input of shape [N, F].

    `name`, `version`, `inputs` (feature names in column order) and `outputs`, when not
    given (None or empty), come from the graph's metadata properties (`name`, `version`,
    `features`, `outputs`, as scripts/train_fraud_model.py writes them), else from the file
    name, "1", nothing, and every graph output."""

    def __init__(self, path: str | os.PathLike[str], *, sha256: str | None = None, name: str | None = None,
                 version: str | None = None, inputs: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        try:
            blob = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read model file {self.path}: {exc.strerror}") from None
        found = sha256_of(blob)
        if sha256 is not None and found != sha256.strip().lower():
            raise ConfigError(f"model file {self.path}: sha256 {found} does not match the pinned {sha256}; "
                              "refusing to load it (replace the file or update the pinned hash)")
        if sha256 is None:
            log.warning("model file %s is not pinned: no sha256 given, so any file at that path would load "
                        "(this one's is %s); pin it in gateway.yaml, or set require_model_pins: true to refuse "
                        "unpinned models", self.path, found)
        self.sha256 = found
        self._seconds_per_row: float | None = None  # measured; None until the first batch

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only; onnxruntime warns about unused initializers
        try:
            session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types, not a common base
            raise ConfigError(f"model file {self.path} is not a loadable ONNX model: {exc}") from None

        graph_inputs = session.get_inputs()
        if len(graph_inputs) != 1 or graph_inputs[0].type != "tensor(float)" or len(graph_inputs[0].shape) != 2:
            shapes = ", ".join(f"{i.name} {i.type} {i.shape}" for i in graph_inputs)
            raise ConfigError(f"model file {self.path}: expected one float input of shape [N, F], found {shapes}")
        self.input_name: str = graph_inputs[0].name
        width = graph_inputs[0].shape[1]
        self.width: int | None = width if isinstance(width, int) else None  # a named dim: any width

        meta = session.get_modelmeta().custom_metadata_map
        graph_outputs = [o.name for o in session.get_outputs()]
        if not inputs:
            inputs = [c for c in meta.get("features", "").split(",") if c]
        if not outputs:
            outputs = [c for c in meta.get("outputs", "").split(",") if c] or graph_outputs
        missing = [o for o in outputs if o not in graph_outputs]
        if missing:
            raise ConfigError(f"model file {self.path}: no output {', '.join(missing)}; "
                              f"the graph has {', '.join(graph_outputs)}")
        if inputs and self.width is not None and len(inputs) != self.width:
            raise ConfigError(f"model file {self.path}: takes {self.width} features per row, "
                              f"{len(inputs)} feature names were given ({', '.join(inputs)})")
        self.info = ModelInfo(name=name or meta.get("name") or self.path.stem,
                              version=str(version or meta.get("version") or "1"),
                              inputs=list(inputs), outputs=list(outputs))
        self._session: Any = session

    def predict_sync(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Scores one batch on the calling thread (benches, scripts)."""
        session = self._session
        if session is None:
            raise ModelUnavailable(f"model {self.info.name}: closed")
        x = feature_matrix(features, self.width, model=self.info.name, columns=self.info.inputs)
        if x.shape[0] == 0:
            return {o: np.zeros(0, dtype=np.float32) for o in self.info.outputs}
        started = time.perf_counter()
        try:
            values = session.run(self.info.outputs, {self.input_name: x})
        except Exception as exc:  # onnxruntime's errors (bad values, out of memory) have no common base
            # The in-process twin of a 5xx: the pipeline may split the batch to find a poison record.
            raise ModelServerError(f"model {self.info.name}: onnxruntime failed: {exc}") from exc
        per_row = (time.perf_counter() - started) / x.shape[0]
        previous = self._seconds_per_row
        self._seconds_per_row = per_row if previous is None else 0.8 * previous + 0.2 * per_row
        return {o: output_column(np.asarray(v), x.shape[0], model=self.info.name, output=o)
                for o, v in zip(self.info.outputs, values, strict=True)}

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        per_row = self._seconds_per_row
        if per_row is not None and per_row * len(features) <= INLINE_BUDGET_S:
            return self.predict_sync(features)
        slices = row_slices(len(features), PARALLEL_MIN_ROWS)
        if len(slices) == 1:
            return await asyncio.to_thread(self.predict_sync, features)
        # a session's `run` is thread-safe: slices of a large batch score side by side, each
        # on one thread (the session's own intra-op threads spin and cost more than they give)
        parts = await asyncio.gather(*(asyncio.to_thread(self.predict_sync, features[lo: lo + n])
                                       for lo, n in slices))
        return {o: np.concatenate([p[o] for p in parts]) for o in self.info.outputs}

    async def ready(self) -> bool:
        return self._session is not None

    async def close(self) -> None:
        self._session = None

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, name={self.info.name!r}, version={self.info.version!r})"
