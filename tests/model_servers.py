"""Real model servers for the integration tests, each in its own process, serving the
bundled fraud.onnx on a free loopback port:

- KServe V2: `python -m adapters.models.servers.kserve_onnx` (KServe's ModelServer).
- MLflow: `mlflow models serve --env-manager local` on an MLflow ONNX-flavour model
  directory saved at test time (no pickle: the flavour stores the .onnx file as is).
- Garbage: `python -m tests.garbage_model_server`, a stdlib server speaking both
  protocols whose answers are garbage on demand (non-JSON, NaN tokens, wrong shape or
  dtype, a missing output, an endless body, a crash on one record).

`ModelServerProcess` starts a server, waits for its readiness URL with a deadline, and
stops it by its PID (SIGTERM to its process group, SIGKILL after a grace period: the
MLflow CLI runs uvicorn as a child). For fault injection: `kill()` (SIGKILL, the port
refuses connections), `pause()` / `resume()` (SIGSTOP / SIGCONT: connections are
accepted by the kernel but never answered, a hung server) and `restart()` on the same
port.

A server that cannot be started fails the test. Only a missing server package may skip
it, and not under CI (CI=true), where a missing package is a broken environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import unavailable
from tests.processes import LoggedProcess

ROOT = Path(__file__).resolve().parents[1]
FRAUD_ONNX = ROOT / "schemas" / "examples" / "models" / "fraud.onnx"
STARTUP_DEADLINE_S = float(os.environ.get("LGW_MODEL_SERVER_STARTUP_S", "90"))
T = TypeVar("T")
READY_POLL_S = 0.1  # how often start() asks a starting server whether it is ready
GRACE_S = 5.0


class ServerStartError(RuntimeError):
    """The server process exited, or was not ready before the deadline."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_package(module: str, what: str) -> None:
    """Skips (fails under CI) when a server's package is not installed."""
    if importlib.util.find_spec(module) is None:
        unavailable(f"{what} needs the {module!r} package (pip install -e '.[dev]')")


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # The MLflow CLI execs `uvicorn` by name: the venv's bin must come first on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"})
    return env


class ModelServerProcess(LoggedProcess):
    """One model server process on a fixed loopback port (kept across restarts)."""

    def __init__(self, name: str, command: Callable[[int], list[str]], *, ready_paths: list[str],
                 log_dir: Path, startup_deadline_s: float = STARTUP_DEADLINE_S) -> None:
        self.name = name
        self.command = command
        self.ready_paths = ready_paths
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.startup_deadline_s = startup_deadline_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None  # how long the last start took until ready

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ModelServerProcess:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.command(self.port))}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command(self.port), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=ROOT, env=_server_env(),
                                            start_new_session=True)  # its own process group
        try:
            self._wait_ready(started + self.startup_deadline_s)
        except ServerStartError:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(f"{self.name} exited with status {code} before it was ready:\n{self.log_tail()}")
            if all(self._answers_200(p) for p in self.ready_paths):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name} not ready after {self.startup_deadline_s:g}s "
                                       f"({self.base_url}{self.ready_paths}):\n{self.log_tail()}")
            time.sleep(READY_POLL_S)

    def _answers_200(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM, then SIGKILL if the server is still there after `grace_s`."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self._terminate(grace_s)
        self._signal(signal.SIGKILL)  # children that outlived their parent (uvicorn under the MLflow CLI)
        self.process = None

    def kill(self) -> None:
        """Fault injection: the server dies at once; its port refuses connections."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=GRACE_S)
        self.process = None

    def pause(self) -> None:
        """Fault injection: the server hangs (requests are accepted, never answered)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> ModelServerProcess:
        """Stops (if still running) and starts again on the same port."""
        self.stop()
        return self.start()

    async def rounds_while_restarting(self, round_of: Callable[[], Awaitable[list[T]]], pause_s: float
                                      ) -> tuple[list[T], list[T]]:
        """Restarts the server in a thread and runs `round_of` (with `pause_s` between) until
        it is back: (every answer, the answers of the rounds that surely met it down). The
        last rounds may have met it up already: readiness is only polled every READY_POLL_S."""
        restart = asyncio.create_task(asyncio.to_thread(self.restart))
        rounds: list[list[T]] = []
        while not restart.done():
            rounds.append(await round_of())
            await asyncio.sleep(pause_s)
        await restart
        uncertain = 1 + math.ceil(READY_POLL_S / pause_s)
        down = [a for r in rounds[:-uncertain] for a in r]
        assert down, f"the server restarted within {len(rounds)} rounds"
        return [a for r in rounds for a in r], down

    # ------------------------------------------------------------------ state
    def __enter__(self) -> ModelServerProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- the servers
def kserve_fraud_server(log_dir: Path, *, model: Path = FRAUD_ONNX, model_name: str = "fraud") -> ModelServerProcess:
    """KServe ModelServer serving `model` as `model_name` (not started yet)."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "adapters.models.servers.kserve_onnx", "--model", str(model),
                "--http-port", str(port), "--model-name", model_name]

    return ModelServerProcess("kserve", command, log_dir=log_dir,
                              ready_paths=["/v2/health/ready", f"/v2/models/{model_name}/ready"])


_SAVE_MLFLOW_MODEL = """
import sys, onnx, mlflow.onnx
mlflow.onnx.save_model(onnx.load(sys.argv[1]), sys.argv[2],
                       onnx_execution_providers=["CPUExecutionProvider"])
"""


def save_mlflow_onnx_model(model: Path, out_dir: Path) -> Path:
    """An MLflow model directory (ONNX flavour) for `model`, written by a child process so
    that importing mlflow costs the test process nothing."""
    done = subprocess.run([sys.executable, "-c", _SAVE_MLFLOW_MODEL, str(model), str(out_dir)], cwd=ROOT,
                          env=_server_env(), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ServerStartError(f"mlflow.onnx.save_model failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return out_dir


def mlflow_fraud_server(log_dir: Path, model_dir: Path) -> ModelServerProcess:
    """`mlflow models serve` on an MLflow model directory (not started yet)."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port), "-w", "1"]

    return ModelServerProcess("mlflow", command, log_dir=log_dir, ready_paths=["/ping"])


def started(server: ModelServerProcess) -> ModelServerProcess:
    """Starts `server`; a server that does not come up fails the test (never a skip)."""
    try:
        return server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def running(server: ModelServerProcess) -> Iterator[ModelServerProcess]:
    started(server)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- fixtures
# Import these into a test module (or list this module in a conftest's `pytest_plugins`).
@pytest.fixture(scope="session")
def model_server_logs() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lgw-model-servers-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def kserve_server(model_server_logs: Path) -> Iterator[ModelServerProcess]:
    """One KServe server for the session. Tests must not kill or pause it."""
    require_package("kserve", "the KServe model server")
    with running(kserve_fraud_server(model_server_logs)) as server:
        yield server


@pytest.fixture
def disposable_kserve_server(model_server_logs: Path) -> Iterator[ModelServerProcess]:
    """A KServe server of the test's own, free to kill, pause and restart."""
    require_package("kserve", "the KServe model server")
    with running(kserve_fraud_server(model_server_logs)) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(model_server_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    require_package("mlflow", "the MLflow scoring server")
    try:
        model_dir = save_mlflow_onnx_model(FRAUD_ONNX, tmp_path_factory.mktemp("mlflow") / "fraud")
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    with running(mlflow_fraud_server(model_server_logs, model_dir)) as server:
        yield server


# --------------------------------------------------------------------------- a server that answers garbage
class GarbageModelServer(ModelServerProcess):
    """tests/garbage_model_server.py: KServe V2 and MLflow endpoints whose answers are
    garbage in the chosen mode (that module's docstring lists them); switchable while it runs."""

    def set_mode(self, mode: str, *, poison_amount: float | None = None) -> None:
        query = f"mode={mode}" + (f"&amount={poison_amount!r}" if poison_amount is not None else "")
        request = urllib.request.Request(f"{self.base_url}/_mode?{query}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stats(self) -> dict[str, int]:
        """How many scoring requests and rows the server got, and the bytes it sent."""
        with urllib.request.urlopen(f"{self.base_url}/_stats", timeout=5) as response:
            return dict(json.loads(response.read()))


def garbage_model_server(log_dir: Path, mode: str = "ok", *, huge_bytes: int | None = None) -> GarbageModelServer:
    def command(port: int) -> list[str]:
        extra = ["--huge-bytes", str(huge_bytes)] if huge_bytes is not None else []
        return [sys.executable, "-m", "tests.garbage_model_server", "--port", str(port), "--mode", mode, *extra]

    return GarbageModelServer("garbage", command, log_dir=log_dir, ready_paths=["/v2/health/ready", "/ping"])


@pytest.fixture
def garbage_server(model_server_logs: Path) -> Iterator[GarbageModelServer]:
    """A garbage-answering model server of the test's own, in mode ok until `set_mode`."""
    server = garbage_model_server(model_server_logs)
    started(server)
    try:
        yield server
    finally:
        server.stop()
