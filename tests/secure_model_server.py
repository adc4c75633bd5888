"""A KServe V2 model server for the TLS and token tests: the bundled fraud.onnx under
onnxruntime, as a Starlette app that tests/tls_servers.py runs under uvicorn with TLS.
When LGW_TEST_MODEL_TOKEN is set, every request must carry `Authorization: Bearer
<that token>` (else 401), compared in constant time, as a real gateway in front of a
model server does."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODEL = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "models" / "fraud.onnx"
TOKEN = os.environ.get("LGW_TEST_MODEL_TOKEN")
_session = ort.InferenceSession(MODEL.read_bytes(), providers=["CPUExecutionProvider"])


def _authorised(request: Request) -> bool:
    if TOKEN is None:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {TOKEN}".encode())


def _refused() -> Response:
    return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True}) if _authorised(request) else _refused()


async def infer(request: Request) -> Response:
    if not _authorised(request):
        return _refused()
    body: Any = await request.json()
    tensor = body["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    specs = _session.get_outputs()
    values = _session.run([o.name for o in specs], {_session.get_inputs()[0].name: x})
    outputs = [{"name": spec.name, "shape": list(value.shape), "datatype": "FP32",
                "data": np.asarray(value, dtype=np.float32).reshape(-1).tolist()}
               for spec, value in zip(specs, values, strict=True)]
    return JSONResponse({"model_name": request.path_params["name"], "outputs": outputs})


app = Starlette(routes=[
    Route("/v2/health/ready", ready),
    Route("/v2/models/{name}/ready", ready),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
])
