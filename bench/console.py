"""What authentication and the admin API cost per request, against the same server's
/healthz (no auth, no work) in the same run.

    python bench/console.py [--requests 1000] [--rounds 3]

Setup (not timed): an `lgw console` process on the embedded defaults, in a temporary data
directory, with a tokens file holding a viewer token; a kill switch set so the overview
has a row to read. Then, sequentially over one keep-alive connection (httpx), each round:
- /healthz: the baseline (routing, the security headers middleware, JSON);
- /metrics with the bearer token (SHA-256 of the token and a constant-time lookup);
- /api/v1/pipelines with the token (a state store read, the status models);
- /console/ with a session cookie (signature check, token still valid, Jinja2 page), if
  the console's pages are there.
Prints p50/p99 per request, each path's p50 over /healthz's, and the server process's CPU
milliseconds per request (from /proc, comparable on a busy machine), medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.clock import process_cpu_seconds  # noqa: E402
from gateway.console.auth import add_to_tokens_file  # noqa: E402

LINE = re.compile(r"lgw console: serving (http://[0-9.]+:\d+)/console")


def start(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "LGW_DATA_DIR": str(data), "NO_COLOR": "1"}
    err = open(data / "console.stderr", "wb")  # noqa: SIM115 (kept open for the process's life)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "console", "--address", "127.0.0.1:0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=data, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = LINE.search((data / "console.stderr").read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit((data / "console.stderr").read_text())
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("lgw console did not start in 60 s")


def timed(client: httpx.Client, path: str, n: int, **kw: object) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, **kw)  # type: ignore[arg-type]
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code} {r.text[:200]}")
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lgw-bench-console-") as tmp:
        data = Path(tmp)
        token = add_to_tokens_file(data / "console-tokens.yaml", "bench", ["operator"])
        proc, url = start(data)
        try:
            # TCP_NODELAY: else the client's delayed ACK and Nagle add 40 ms to every request
            nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            with httpx.Client(base_url=url, timeout=10, transport=nodelay) as client:
                auth = {"Authorization": f"Bearer {token}"}
                client.put("/api/v1/pipelines/card_txn/kill-switch", headers=auth,
                           json={"mode": "off", "reason": "bench setup"}).raise_for_status()
                paths: dict[str, dict[str, object]] = {"/healthz": {}, "/metrics": {"headers": auth},
                                                       "/api/v1/pipelines": {"headers": auth}}
                login = client.post("/console/login", data={"token": token}, headers={"Origin": url},
                                    follow_redirects=False)
                if login.status_code == 303 and "lgw_session" in client.cookies:
                    paths["/console/"] = {}
                results: dict[str, list[tuple[float, float, float]]] = {p: [] for p in paths}
                for _ in range(args.rounds):
                    for path, kw in paths.items():
                        cpu = process_cpu_seconds(proc.pid)
                        t = timed(client, path, args.requests, **kw)
                        per_request = (process_cpu_seconds(proc.pid) - cpu) * 1000 / args.requests
                        results[path].append((pct(t, 0.5), pct(t, 0.99), per_request))
        finally:
            proc.terminate()
            proc.wait(10)
    base = statistics.median(r[0] for r in results["/healthz"])
    print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'p50 / healthz':>15}{'server CPU ms':>15}")
    for path, rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p99 = statistics.median(r[1] for r in rounds)
        cpu = statistics.median(r[2] for r in rounds)
        print(f"{path:<22}{p50:>9.2f}{p99:>9.2f}{p50 / base:>15.2f}{cpu:>15.3f}")


if __name__ == "__main__":
    main()
