"""What the CLI does to its own process: once before any command, to start fast, and at
its end, to stop fast."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn


class _PandasNotLookedAt(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not looked at by pyarrow's first conversion (gateway.startup)")
        return None


def pyarrow_without_pandas() -> None:
    """pyarrow's first conversion of Python values (`pa.array([...])`, `pa.scalar(...)`)
    imports pandas, where it is installed, only to ask whether the values are pandas
    objects: 0.35-0.6 s of every CLI run, and the gateway never hands it any. That first
    look is made here with pandas unfindable, so pyarrow notes "no pandas" and does not
    ask again; a real use later (`to_pandas()`) still imports it, as pyarrow tries again
    then. Nothing to do where pandas is already imported or not installed."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _PandasNotLookedAt()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


class _Collector:
    held = False


def hold_collector() -> None:
    """No cyclic garbage collection while the command's modules load (the `lgw` executable
    only: `release_collector` ends it before the command runs). Loading pyarrow,
    SQLAlchemy, pydantic and the gateway makes some 130,000 objects the collector tracks,
    and it ran some 150 times over them while they were made: 40-50 ms of a 0.8 s
    `lgw score` start-up (14 interleaved rounds each, twice)."""
    if gc.isenabled():
        gc.disable()
        _Collector.held = True


def release_collector() -> None:
    """Collection back on, with what was loaded so far frozen out of it: module-level
    objects live as long as the process, and later full collections need not walk them."""
    if _Collector.held:
        gc.freeze()
        gc.enable()
        _Collector.held = False


PR_SET_THP_DISABLE = 41  # linux/prctl.h
M_ARENA_MAX = -8  # malloc.h (glibc)


def arena_limit() -> int:
    """The C library's malloc arenas the CLI allows: one per core (at least two)."""
    return max(2, os.cpu_count() or 2)


def tune_process() -> None:
    """Settings of the CLI's own process, made before numpy or pyarrow load.

    - No transparent huge pages (Linux, where the kernel's setting is `always`): a batch
      allocates and frees buffers of megabytes per chunk, and each fresh 2 MiB page is
      zeroed whole on first touch; that was 10-13 % of a million-record run's CPU
      (`perf`: clear_page_erms under mimalloc's and memmove's page faults). As databases
      that allocate this way advise (Redis, MongoDB), the process opts out for itself.
    - OpenBLAS with one thread: numpy starts a thread per core that spins at start and
      after any BLAS call; the gateway makes none that needs them, and on two cores the
      spinning took CPU from decoding and scoring.
    - pyarrow's buffers from the C library's allocator rather than its bundled mimalloc:
      with huge pages off, it served a 4M-record run with 5 % less CPU and wall time
      (three interleaved rounds each, twice), at the same peak memory.
    - glibc's malloc with one arena per core (`arena_limit`) instead of eight: each
      thread that allocates (the decoding, the model's slices, the CSV writers, the audit)
      got an arena of its own, and the chunks' buffers freed in one were not reused by
      another. A million-record run peaked at 306-327 MB instead of 398-427 MB (five
      interleaved rounds), at the same speed.
    Each is a default: a value the operator set in the environment stands
    (MALLOC_ARENA_MAX included). Child processes inherit the first three."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)  # fails harmlessly on kernels older than 3.15
            if "MALLOC_ARENA_MAX" not in os.environ:  # glibc read it at start; else it is ours to set
                libc.mallopt(M_ARENA_MAX, arena_limit())  # before any thread: none has an arena of its own yet
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            pass


def leave(code: int) -> NoReturn:
    """Ends the `lgw` process with `code` once the command has returned, without tearing
    down every module and object it loaded (0.08-0.1 s of each run with pyarrow,
    SQLAlchemy and pydantic loaded, longer with a large heap). What an orderly exit does
    that matters is done first: stdout and stderr flushed, threads that are not daemons
    joined with the executors' exit hooks (`threading._shutdown`, what the interpreter
    calls), then the `atexit` functions (logging's flush, the tracer's export, temporary
    folders' clean-up). Every file the gateway writes is closed and fsynced by the
    command itself, so nothing waits on a finaliser. Not for in-process callers (tests
    call `main`)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: its reader is gone
            stream.flush()
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
