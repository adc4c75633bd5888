"""Wall and CPU seconds of a piece of work, for the bench scripts. CPU seconds per million
records stay comparable on a busy machine, where wall time does not (issue 16), so every
figure prints both."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Took:
    wall: float  # seconds (time.perf_counter)
    cpu: float  # CPU seconds of this process, every thread (time.process_time)

    def per_million(self, records: int) -> float:
        """CPU seconds per million records."""
        return self.cpu * 1e6 / max(records, 1)

    def line(self, records: int) -> str:
        """`  1.23 s  812,345 records/s  1.10 CPU s/M`"""
        return (f"{self.wall:7.3f} s  {records / self.wall:>12,.0f} records/s  "
                f"{self.per_million(records):6.2f} CPU s/M")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) another process has used so far, from
    /proc: for a server or worker the bench started but does not wait for."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(work: Callable[[], T]) -> tuple[Took, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return Took(time.perf_counter() - wall, time.process_time() - cpu), result


def best_of(runs: int, work: Callable[[], T]) -> tuple[Took, T]:
    """The fastest of `runs` runs (by wall time), with its CPU seconds and result."""
    best: tuple[Took, T] | None = None
    for _ in range(max(runs, 1)):
        took, result = timed(work)
        if best is None or took.wall < best[0].wall:
            best = (took, result)
    assert best is not None
    return best


def host_speed(rounds: int = 3) -> float:
    """Seconds of one fixed piece of single-thread work (hash 64 MB, sort 2M doubles, a
    Python loop), the median of `rounds`: the same code takes longer when this host is in
    a slow state (a noisy neighbour, a lower clock), so a bench prints it before and after
    its runs and figures from different sittings can be told apart."""
    import hashlib
    import statistics

    import numpy as np

    data = bytes(range(256)) * (1 << 18)  # 64 MiB
    values = np.random.default_rng(7).random(2_000_000)

    def work() -> None:
        hashlib.sha256(data).digest()
        np.sort(values)
        total = 0
        for i in range(1_000_000):
            total += i & 7

    return round(statistics.median(timed(work)[0].wall for _ in range(max(rounds, 1))), 3)
