"""A model server that answers garbage, for the tests: a real HTTP server process
(stdlib only, so it starts in a blink) speaking KServe V2 and MLflow /invocations.

    python -m tests.garbage_model_server --port 8080 [--mode MODE] [--poison-amount X]

Modes (what a scoring request gets, with HTTP 200):

    ok              a sound answer: fraud_score = (amount + 1) / (amount + 1001)
    non_json        an HTML error page
    nan             NaN and Infinity tokens where the scores go (not JSON)
    wrong_shape     one score more than there are rows
    wrong_dtype     strings where the scores go (V2 datatype BYTES)
    missing_output  an output of another name
    huge            a valid-looking answer that never ends: "0.5," streamed (chunked) until
                    --huge-bytes (default 1.5 GB) or until the client hangs up
    poison          sound, except for a batch holding a row whose amount is
                    --poison-amount: a Python traceback as text (the server "crashes")

Health (GET /v2/health/ready, /v2/models/NAME/ready, /ping) is always fine: the server is
up, its answers are not. Test hooks: POST /_mode?mode=M[&amount=X] switches the mode,
GET /_stats says how many scoring requests and rows it got and how many bytes it sent.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "non_json", "nan", "wrong_shape", "wrong_dtype", "missing_output", "huge", "poison")
CHUNK = 1 << 20


class State:
    def __init__(self, mode: str, poison_amount: float, huge_bytes: int) -> None:
        self.mode = mode
        self.poison_amount = poison_amount
        self.huge_bytes = huge_bytes
        self.requests = 0
        self.rows = 0
        self.bytes_sent = 0
        self.lock = threading.Lock()


def _rows(body: dict[str, Any], v2: bool) -> list[list[float]]:
    if v2:
        tensor = body["inputs"][0]
        n, width = tensor["shape"]
        data = tensor["data"]
        return [data[i * width:(i + 1) * width] for i in range(n)]
    return list(body["dataframe_split"]["data"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read /_stats
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.state.lock:
            self.state.bytes_sent += len(body)

    def _json(self, doc: Any, status: int = 200) -> None:
        self._send(status, json.dumps(doc).encode())

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_stats":
            s = self.state
            self._json({"mode": s.mode, "requests": s.requests, "rows": s.rows, "bytes_sent": s.bytes_sent})
        elif path.startswith("/v2/models/") and not path.endswith("/ready"):
            self._json({"name": path.split("/")[3], "versions": ["1"], "platform": "garbage",
                        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 5]}],
                        "outputs": [{"name": "fraud_score", "datatype": "FP32", "shape": [-1]}]})
        else:  # every readiness and health path: the server is up
            self._json({"ready": True})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("content-length", "0") or 0))
        if url.path == "/_mode":
            query = parse_qs(url.query)
            mode = query.get("mode", [""])[0]
            if mode not in MODES:
                self._json({"error": f"mode must be one of {MODES}"}, 400)
                return
            self.state.mode = mode
            if "amount" in query:
                self.state.poison_amount = float(query["amount"][0])
            self._json({"mode": mode})
            return
        v2 = url.path.endswith("/infer")
        if not v2 and url.path != "/invocations":
            self._json({"error": f"no such path {url.path}"}, 404)
            return
        rows = _rows(json.loads(body), v2)
        with self.state.lock:
            self.state.requests += 1
            self.state.rows += len(rows)
        self._answer(rows, v2)

    # ------------------------------------------------------------------ answers
    def _answer(self, rows: list[list[float]], v2: bool) -> None:
        mode, n = self.state.mode, len(rows)
        if mode == "poison" and any(abs(r[0] - self.state.poison_amount) < 0.005 for r in rows):
            self._send(200, b'Traceback (most recent call last):\n  File "serve.py", line 42, in predict\n'
                            b"ValueError: cannot score amount\n", "text/plain")
            return
        scores: list[Any] = [(r[0] + 1.0) / (r[0] + 1001.0) if r[0] >= 0 else 0.5 for r in rows]
        name, datatype = "fraud_score", "FP32"
        if mode == "non_json":
            self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if mode == "huge":
            self._stream_huge(n, v2)
            return
        if mode == "nan":
            scores = [(float("nan"), float("inf"), float("-inf"))[i % 3] for i in range(n)]
        elif mode == "wrong_shape":
            scores = [*scores, 0.5]
        elif mode == "wrong_dtype":
            scores, datatype = ["high" if s > 0.5 else "low" for s in scores], "BYTES"
        elif mode == "missing_output":
            name = "probability"
        if v2:
            doc: Any = {"model_name": "fraud", "outputs": [{"name": name, "datatype": datatype,
                                                            "shape": [len(scores)], "data": scores}]}
        elif name == "fraud_score":
            doc = {"predictions": scores}
        else:
            doc = {"predictions": [{name: s} for s in scores]}
        self._send(200, json.dumps(doc, allow_nan=True).encode())

    def _stream_huge(self, n: int, v2: bool) -> None:
        head = (f'{{"model_name":"fraud","outputs":[{{"name":"fraud_score","datatype":"FP32","shape":[{n}],"data":['
                if v2 else '{"predictions":[').encode()
        filler = b"0.5," * (CHUNK // 4)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        sent = 0
        try:
            for piece in (head, *(filler for _ in range(max(0, self.state.huge_bytes // len(filler)))),
                          b"0.5]}]}" if v2 else b"0.5]}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading: what it should do
        finally:
            with self.state.lock:
                self.state.bytes_sent += sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--poison-amount", type=float, default=-1.0)
    parser.add_argument("--huge-bytes", type=int, default=1_500_000_000)
    args = parser.parse_args()
    Handler.state = State(args.mode, args.poison_amount, args.huge_bytes)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
