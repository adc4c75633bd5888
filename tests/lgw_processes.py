"""`lgw serve` and `lgw run` as processes of their own, for the operations tests: each in
its own process group, stdout and stderr in files, its ops endpoints found from the
"ops: serving ..." line it logs (LGW_OPS_ADDRESS=127.0.0.1:0: a free port each), stopped
by its PID.

Fixture (listed in conftest's `pytest_plugins`): `lgw_processes`, a list the test appends
its processes to; whatever is still running after the test is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

DEADLINE_S = 60.0
OPS_LINE = re.compile(r"ops: serving /healthz /readyz /metrics on (http://[0-9.]+:\d+)")


def parse_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The Prometheus text format as {sample name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


class LgwProcess:
    """`lgw serve` or `lgw run` in a process group of its own; stdout and stderr in files."""

    def __init__(self, cmd: list[str], args: list[str], workdir: Path, name: str = "lgw",
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "LGW_OPS_ADDRESS": "127.0.0.1:0",
               **(env or {})}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([*cmd, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=env, cwd=workdir, start_new_session=True)
        self._url: str | None = None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.stderr[-3000:]}", pytrace=False)

    @property
    def url(self) -> str:
        """The ops endpoints' base URL, from the line the process logs once they listen."""
        deadline = time.monotonic() + DEADLINE_S
        while self._url is None:
            found = OPS_LINE.search(self.stderr)
            if found:
                self._url = found.group(1)
                break
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} logged no ops line:\n{self.stderr[-3000:]}", pytrace=False)
            time.sleep(0.05)
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        doc: dict[str, Any] = json.loads(body)
        return status, doc

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """/metrics parsed: {sample name: [(labels, value)]}."""
        status, body = self.get("/metrics")
        assert status == 200
        return parse_samples(body.decode())

    def sample(self, name: str, **labels: str) -> float:
        hits = [v for lbl, v in self.samples().get(name, []) if all(lbl.get(k) == w for k, w in labels.items())]
        return sum(hits)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:g}s\n{self.stderr[-3000:]}", pytrace=False)
            time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it is still there after the grace period."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return int(self.process.returncode)


@pytest.fixture
def lgw_processes() -> Iterator[list[LgwProcess]]:
    started: list[LgwProcess] = []
    yield started
    for p in started:
        p.stop()
