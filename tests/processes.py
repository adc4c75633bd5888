"""What the server processes the tests start (model servers, the Kafka broker) have in
common: the process handle and the log file it writes."""

from __future__ import annotations

import subprocess
from pathlib import Path


class LoggedProcess:
    process: subprocess.Popen[bytes] | None = None
    log_path: Path

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
