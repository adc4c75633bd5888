"""How a run shows its progress: log lines, a terminal bar, or nothing."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

log = logging.getLogger("lgw.batch")


class ProgressView(Protocol):
    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None: ...

    def update(self, done_bytes: int, records: int) -> None: ...

    def end(self) -> None: ...


class _Rate:
    def __init__(self) -> None:
        self.total = self.done = self.records = self._records0 = self._bytes0 = 0
        self._t0 = time.monotonic()
        self.label = ""

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        self.label, self.total, self.done, self.records = label, total_bytes, done_bytes, records
        self._records0, self._bytes0, self._t0 = records, done_bytes, time.monotonic()

    def update(self, done_bytes: int, records: int) -> None:
        self.done, self.records = done_bytes, records

    def end(self) -> None:
        return None

    @property
    def per_s(self) -> float:
        return (self.records - self._records0) / max(time.monotonic() - self._t0, 1e-9)

    @property
    def eta_s(self) -> float | None:
        moved = self.done - self._bytes0
        if moved <= 0:
            return None
        return (self.total - self.done) * (time.monotonic() - self._t0) / moved


class LogProgress(_Rate):
    """Plain log lines (not a terminal): at most one every `every_s`, and at the end."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last = 0.0

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        super().begin(label, total_bytes, done_bytes, records)
        self._last = time.monotonic()
        resumed = f", resuming at byte {done_bytes:,} after {records:,} records" if done_bytes else ""
        log.info("%s: %s bytes%s", label, f"{total_bytes:,}", resumed)

    def update(self, done_bytes: int, records: int) -> None:
        super().update(done_bytes, records)
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._line()

    def end(self) -> None:
        self._line()

    def _line(self) -> None:
        share = self.done / self.total if self.total else 1.0
        eta = self.eta_s
        log.info("%s: %.0f%%, %s records, %s records/s, ETA %s", self.label, share * 100, f"{self.records:,}",
                 f"{self.per_s:,.0f}", "-" if eta is None else f"{eta:.0f} s")


class TerminalProgress(_Rate):
    """A progress bar on a terminal: share of the file, records, records/s, ETA."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)  # log lines go through it too, above the bar
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                  TextColumn("{task.fields[records]} records, {task.fields[rate]} records/s"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._task: Any = None

    def begin(self, label: str, total_bytes: int, done_bytes: int, records: int) -> None:
        super().begin(label, total_bytes, done_bytes, records)
        self._progress.start()
        self._task = self._progress.add_task(label, total=max(total_bytes, 1), completed=done_bytes,
                                             records=f"{records:,}", rate="-")

    def update(self, done_bytes: int, records: int) -> None:
        super().update(done_bytes, records)
        self._progress.update(self._task, completed=done_bytes, records=f"{records:,}", rate=f"{self.per_s:,.0f}")

    def end(self) -> None:
        self._progress.stop()


class NoProgress(_Rate):
    pass
