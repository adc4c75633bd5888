"""A real Prometheus server (Debian's `prometheus`) for the operations tests: started on a
free loopback port with a config of the test's own that scrapes the given targets every
second, its TSDB in the test's temp folder; asked through its HTTP API; stopped by PID.

A missing binary skips the test, and fails it under CI (tests.helpers.unavailable)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import unavailable
from tests.model_servers import ModelServerProcess, free_port

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or PROMETHEUS
    if not Path(binary).exists():
        unavailable("prometheus is not installed (scripts/system-packages.sh installs it)")
    return binary


class PrometheusServer(ModelServerProcess):
    """Prometheus scraping `targets` ({job: "host:port"}) every second."""

    def __init__(self, targets: dict[str, str], workdir: Path) -> None:
        binary = prometheus_binary()
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{"job_name": job, "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                                "static_configs": [{"targets": [target]}]} for job, target in targets.items()],
        }), encoding="utf-8")

        def command(port: int) -> list[str]:
            return [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"]

        super().__init__("prometheus", command, ready_paths=["/-/ready"], log_dir=workdir)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the result vector ([{metric, value: [t, "v"]}])."""
        url = f"{self.base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            doc = json.loads(response.read())
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.query(expr)]

    def wait_for(self, expr: str, what: str, timeout: float = 60.0) -> list[float]:
        """Polls `expr` until it returns a sample."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.values(expr)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expr} returned nothing within {timeout:g}s\n{self.log_tail(20)}")
            time.sleep(0.5)

