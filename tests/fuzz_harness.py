"""The parent side of the fuzz suite: a worker process (tests.fuzz_worker) that runs
inputs under a memory cap and a timer, the outcomes it reports, and the list of known
defects that are being fixed elsewhere.

`FuzzWorker.run(target, input)` sends one input and returns its `Outcome`; a worker that
dies or hangs is restarted and the input reported as a `crash` or `hang` finding. Used by
tests/test_fuzz_*.py (bounded, derandomised) and bench/fuzz.py (long, random seeds).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HANG_AFTER_S = 15.0  # the worker's own timer stops an input after 5 s; this catches a stuck C call


@dataclass(frozen=True)
class Outcome:
    status: str  # ok | user_error | bug
    # for a bug: exception | memory | timeout | accounting | message | traceback | exit | check-gap | crash | hang
    kind: str = ""
    type: str = ""
    where: str = ""
    message: str = ""
    traceback: str = ""
    peak_mb: float = 0.0  # peak RSS of this input above the worker's RSS before it
    peak_rss_mb: float = 0.0  # the worker's peak RSS during this input
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def is_bug(self) -> bool:
        return self.status == "bug"

    @property
    def signature(self) -> str:
        """What makes two findings the same defect: kind, exception type and place."""
        return f"{self.kind} {self.type} at {self.where}"

    def describe(self) -> str:
        return f"{self.signature}: {self.message}\n{self.traceback}"


@dataclass(frozen=True)
class KnownDefect:
    """A defect class reported in issue 10 and fixed by another part of it. Matching
    findings do not fail the bounded CI run; delete the entry once the fix is merged."""

    id: str
    part: str
    what: str
    targets: tuple[str, ...]  # the fuzz targets it shows up in
    kinds: tuple[str, ...]  # Outcome.kind
    pattern: str  # regular expression searched in "type where message"

    def matches(self, target: str, outcome: Outcome) -> bool:
        text = f"{outcome.type} {outcome.where} {outcome.message}"
        return target in self.targets and outcome.kind in self.kinds and re.search(self.pattern, text) is not None


LAYOUT_TARGETS = ("copybook", "decode", "contract")

# Defect classes the fuzz suite finds on the code of 2026-12-03. The CI fuzz tests let
# these through (and only these); delete an entry when its fix is merged, and the fuzz
# tests then hold the fix on the same inputs. `part`: who fixes it ("new": found by this
# suite, not in issue 10, no owner yet).
KNOWN_DEFECTS: list[KnownDefect] = []  # every class found so far is fixed (their reproducers run clean)


def known_defect(target: str, outcome: Outcome) -> KnownDefect | None:
    return next((d for d in KNOWN_DEFECTS if d.matches(target, outcome)), None)


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class FuzzWorker:
    """One worker process at a time; restarted after a crash or hang."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.peak_rss_mb = 0.0  # the worker's largest peak RSS during one input

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fuzz_worker"], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        hello = self._read_line(120.0)
        if hello is None or not json.loads(hello).get("ready"):
            self.stop()
            raise RuntimeError("the fuzz worker did not start (run `python -m tests.fuzz_worker` to see why)")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def _read_line(self, timeout_s: float) -> bytes | None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = self.process.stdout.readline()
                return line or None
        return None

    def run(self, target: str, inp: dict[str, Any]) -> Outcome:
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self.start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps({"target": target, "input": inp}) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died(target)
        line = self._read_line(HANG_AFTER_S)
        if line is None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                self._restart()
                return Outcome("bug", "hang", "Hang", target, f"no answer within {HANG_AFTER_S:g} s")
            return self._died(target)
        raw = json.loads(line)
        outcome = Outcome(**{k: raw[k] for k in Outcome.__dataclass_fields__ if k in raw})
        self.peak_rss_mb = max(self.peak_rss_mb, outcome.peak_rss_mb)
        return outcome

    def _died(self, target: str) -> Outcome:
        assert self.process is not None
        code = self.process.wait()
        self._restart()
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        return Outcome("bug", "crash", "WorkerDied", target, f"the worker process died ({how})")

    def _restart(self) -> None:
        self.restarts += 1
        self.stop()


def check(worker: FuzzWorker, target: str, inp: dict[str, Any]) -> Outcome:
    """Runs one input; a finding that is not a known defect fails the calling test."""
    outcome = worker.run(target, inp)
    if outcome.is_bug and known_defect(target, outcome) is None:
        raise AssertionError(f"{target}: {outcome.describe()}\ninput: {json.dumps(inp)[:2000]}")
    return outcome


def ci_settings(max_examples: int) -> Any:
    """Bounded and reproducible for CI: derandomised (a fixed seed), no example database,
    no Hypothesis deadline (the worker's own timer bounds each input), and no shrinking:
    shrinking an input that runs into the memory cap or the timer can take Hypothesis's
    full five minutes. A failure prints the input as generated; bench/fuzz.py keeps the
    smallest input seen per finding."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None, print_blob=False,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])
