"""What the server processes the tests start (model servers, the Kafka broker) have in
common: the process handle, the log file it writes, and how it is signalled and stopped
(each leads its own process group: start_new_session)."""

from __future__ import annotations

import contextlib
import os
import signal
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

    def _signal(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)  # the group it leads, children included

    def _terminate(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL if the process is still there after `grace_s`."""
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=grace_s)
