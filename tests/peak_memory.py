"""Peak resident memory of a child Python process, for tests and bench scripts.

`os.wait4`'s `ru_maxrss` does not measure the child alone: Linux carries the forking
parent's high-water mark over `exec` into the child's figure, so a child of a 500 MB
pytest process reads 500 MB whatever it did. `VmHWM` in /proc/self/status is the
high-water mark of the process image, which `exec` resets: the probe below runs a module
or script and writes that figure (kB) to a file at exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PROBE = """
import atexit, runpy, sys
out, target, *rest = sys.argv[1:]
def report():
    with open("/proc/self/status") as fh:
        peak = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(out, "w") as fh:
        fh.write(peak)
atexit.register(report)
sys.argv = [target, *rest]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def probed(report: Path, target: str, args: list[str]) -> list[str]:
    """The command line that runs `python -m target args` (or `python target.py args`) and
    writes its peak resident memory to `report` when it exits."""
    return [sys.executable, "-c", _PROBE, str(report), target, *args]


def peak_bytes(report: Path) -> int:
    """What the probe wrote, in bytes."""
    return int(report.read_text()) * 1024
