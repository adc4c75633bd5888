"""Serves an ONNX model over the Open Inference Protocol (KServe V2 REST) with KServe's
own ModelServer, in its own process:

    python -m adapters.models.servers.kserve_onnx --model schemas/examples/models/fraud.onnx \\
        --http-port 8080 --model-name fraud [--host 127.0.0.1]

The model is a small `kserve.Model` whose `predict` runs onnxruntime on the V2 input
tensor named like the graph's input. Inputs the graph cannot take (unknown tensor name,
wrong datatype or width) are answered 400 (KServe's `InvalidInput`), so clients see the
same status a production KServe runtime gives. gRPC is off. KServe's REST server always
binds 0.0.0.0; this one binds `--host` (loopback by default) instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m adapters.models.servers.kserve_onnx",
                                     description="Serve an ONNX model over KServe V2 REST.")
    parser.add_argument("--model", required=True, type=Path, help="the .onnx file")
    parser.add_argument("--model-name", default=None, help="name in the V2 URLs (default: the file's stem)")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return parser.parse_args(argv)


_V2_OF_ORT = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64",
              "tensor(int32)": "INT32", "tensor(bool)": "BOOL", "tensor(string)": "BYTES"}


def _shape(dims: list[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims]


def _onnx_v2_model(name: str, path: Path, threads: int) -> Any:
    """A loaded `kserve.Model` that runs `path` with onnxruntime. (Built in a function:
    kserve may only be imported once sys.argv is cleared, see `main`.)"""
    import asyncio

    import kserve
    import numpy as np
    import onnxruntime as ort
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class OnnxV2Model(kserve.Model):
        def __init__(self) -> None:
            super().__init__(name)
            self.session: Any = None

        def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path.read_bytes(), sess_options=options,
                                                providers=["CPUExecutionProvider"])
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": i.name, "datatype": _V2_OF_ORT.get(i.type, i.type), "shape": _shape(i.shape)}
                    for i in self.session.get_inputs()]

        def get_output_types(self) -> list[dict[str, Any]]:
            return [{"name": o.name, "datatype": _V2_OF_ORT.get(o.type, o.type), "shape": _shape(o.shape)}
                    for o in self.session.get_outputs()]

        def _feed(self, request: InferRequest) -> dict[str, np.ndarray]:
            feed: dict[str, np.ndarray] = {}
            for spec in self.session.get_inputs():
                tensor = request.get_input_by_name(spec.name)
                if tensor is None:
                    given = ", ".join(i.name for i in request.inputs) or "none"
                    raise InvalidInput(f"model {self.name} takes input tensor {spec.name!r}; the request has {given}")
                wanted = _V2_OF_ORT.get(spec.type)
                if tensor.datatype != wanted:
                    raise InvalidInput(f"input {spec.name}: datatype {tensor.datatype}, expected {wanted}")
                try:
                    array = tensor.as_numpy()
                except ValueError as exc:  # data that does not fill the declared shape, or not numbers
                    raise InvalidInput(f"input {spec.name}: {exc}") from None
                expected = _shape(spec.shape)
                fits = array.ndim == len(expected) and all(
                    e in (-1, a) for e, a in zip(expected, array.shape, strict=True))
                if not fits:
                    raise InvalidInput(f"input {spec.name}: shape {list(array.shape)}, expected {expected}")
                feed[spec.name] = array
            return feed

        async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
            if not isinstance(payload, InferRequest):
                raise InvalidInput("this server speaks the V2 protocol only (POST /v2/models/NAME/infer)")
            feed = self._feed(payload)
            specs = self.session.get_outputs()
            # onnxruntime releases the GIL: the server's event loop keeps answering meanwhile.
            values = await asyncio.to_thread(self.session.run, [o.name for o in specs], feed)
            outputs = []
            for spec, value in zip(specs, values, strict=True):
                out = InferOutput(name=spec.name, shape=list(value.shape), datatype=_V2_OF_ORT.get(spec.type, "FP32"))
                out.set_data_from_numpy(value, binary_data=False)
                outputs.append(out)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)

    model = OnnxV2Model()
    model.load()
    return model


def _bind_rest_server_to(host: str) -> None:
    """KServe's REST server hard-codes 0.0.0.0; this makes it bind `host`."""
    import kserve.model_server as kserve_model_server

    class RESTServerOnHost(kserve_model_server.RESTServer):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.config.host = host

    kserve_model_server.RESTServer = RESTServerOnHost


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    # kserve parses sys.argv when it is imported (its own --http_port, --model_name...):
    # hide ours from it so the two parsers cannot disagree.
    sys.argv = sys.argv[:1]
    import kserve

    model = _onnx_v2_model(args.model_name or args.model.stem, args.model, args.threads)
    _bind_rest_server_to(args.host)
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                       enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
