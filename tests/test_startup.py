"""What the CLI does to its own process before any command (gateway.startup): each check
runs in a fresh interpreter, as `lgw` starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _fresh(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


TUNED = """
import ctypes, json, os, sys
from gateway.startup import tune_process
tune_process()
import numpy, pyarrow
thp = ctypes.CDLL(None).prctl(42, 0, 0, 0, 0)
print(json.dumps({"openblas": os.environ.get("OPENBLAS_NUM_THREADS"), "thp_disabled": thp,
                  "pool": pyarrow.default_memory_pool().backend_name}))
"""


def test_the_cli_process_opts_out_of_huge_pages_blas_threads_and_mimalloc() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL")}
    out = subprocess.run([sys.executable, "-c", TUNED], capture_output=True, text=True, check=True, env=env)
    found = json.loads(out.stdout)
    assert found["openblas"] == "1"
    assert found["pool"] == "system"
    assert found["thp_disabled"] == 1  # the gateway runs on Linux (CI, the images)


def test_an_operators_own_settings_are_kept() -> None:
    found = _fresh(TUNED, {"OPENBLAS_NUM_THREADS": "4", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"})
    assert (found["openblas"], found["pool"]) == ("4", "jemalloc")


def test_what_the_process_starts_inherits_the_huge_page_setting() -> None:
    child = ("import ctypes, json, subprocess, sys\n"
             "from gateway.startup import tune_process\n"
             "tune_process()\n"
             "code = 'import ctypes; print(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))'\n"
             "out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout\n"
             "print(json.dumps({'child': int(out)}))\n")
    assert _fresh(child)["child"] == 1


ARENAS = """
import ctypes, json, os, sys, tempfile, threading
from gateway.startup import arena_limit, tune_process
if sys.argv[1:] == ["tuned"]:
    tune_process()
held = []
n = 4 * arena_limit()
together = threading.Barrier(n)
def allocate():
    held.append(bytearray(64 * 1024))  # under malloc's mmap threshold: from the thread's arena
    together.wait()  # all alive at once: no thread's arena is free for another to take
threads = [threading.Thread(target=allocate) for _ in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
handle, path = tempfile.mkstemp()
os.close(handle)
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
with open(path) as fh:
    heaps = fh.read().count("<heap nr=")
os.unlink(path)
print(json.dumps({"heaps": heaps, "limit": arena_limit()}))
"""


def _arenas(*args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", ARENAS, *args], capture_output=True, text=True, check=True,
                         env={**environ, **(env or {})})
    found: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def test_the_cli_process_has_one_malloc_arena_per_core_however_many_threads_allocate() -> None:
    untuned, tuned = _arenas(), _arenas("tuned")
    assert untuned["heaps"] > untuned["limit"]  # what glibc does on its own: an arena per thread, up to 8 a core
    assert tuned["heaps"] <= tuned["limit"]


def test_an_operators_malloc_arena_setting_is_kept() -> None:
    limit = _arenas()["limit"]
    found = _arenas("tuned", env={"MALLOC_ARENA_MAX": str(2 * limit)})
    assert found["heaps"] > limit


def test_pyarrow_first_conversion_leaves_pandas_unimported_and_to_pandas_still_works() -> None:
    code = ("import json, sys\n"
            "from gateway.startup import pyarrow_without_pandas\n"
            "pyarrow_without_pandas()\n"
            "import pyarrow as pa\n"
            "t = pa.table({'a': pa.array([1, 2]), 's': pa.array(['x', None])})\n"
            "before = 'pandas' in sys.modules\n"
            "frame = t.to_pandas()\n"
            "print(json.dumps({'before': before, 'rows': len(frame)}))\n")
    assert _fresh(code) == {"before": False, "rows": 2}


LEAVING = """
import atexit, sys, threading, time
from pathlib import Path
from gateway.startup import leave
folder = Path(sys.argv[1])
atexit.register(lambda: (folder / "atexit").write_text("ran"))
def late():
    time.sleep(0.2)
    (folder / "thread").write_text("joined")
threading.Thread(target=late).start()
print("said before leaving", end="")  # no newline: still in stdout's buffer
leave(3)
"""


def test_leaving_flushes_output_joins_threads_runs_exit_functions_and_keeps_the_code(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", LEAVING, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 3
    assert out.stdout == "said before leaving"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_the_lgw_executable_keeps_argparse_exit_codes() -> None:
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "usage: lgw" in shown.stdout
    wrong = subprocess.run([sys.executable, "-m", "gateway.cli", "decode", "--no-such-option"], capture_output=True,
                           text=True)
    assert wrong.returncode == 2 and "lgw: error:" in wrong.stderr


COLLECTOR_IN_COMMAND = """
import gc, json, sys, weakref
import gateway.commands as commands
from gateway.cli import run

def score(args):
    class Node: pass
    node = Node(); node.me = node  # a cycle only the collector frees
    freed = weakref.ref(node); del node
    gc.collect()
    print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "cycle_freed": freed() is None}))
    return 0

commands.score = score
sys.argv = ["lgw", "score", "--contract", "c.yaml", "--input", "in.dat", "--output", "out.csv"]
run()
"""


def test_the_lgw_executable_loads_without_collection_and_runs_the_command_with_it() -> None:
    found = _fresh(COLLECTOR_IN_COMMAND)
    assert found["enabled"] is True and found["cycle_freed"] is True
    assert isinstance(found["frozen"], int) and found["frozen"] > 50_000  # what was loaded, kept out of later passes


HELD_ELSEWHERE = """
import gc, json
from gateway.startup import hold_collector, release_collector
gc.disable()  # the embedding program's own choice
hold_collector()
import pyarrow
release_collector()
print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def test_a_collector_switched_off_by_someone_else_stays_off_and_unfrozen() -> None:
    assert _fresh(HELD_ELSEWHERE) == {"enabled": False, "frozen": 0}


def test_the_collector_is_left_alone_where_main_is_called_in_process(capsys) -> None:
    import gc

    from gateway.cli import main

    frozen = gc.get_freeze_count()
    assert main(["components"]) == 0
    assert "dropfolder" in capsys.readouterr().out
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # a test process's objects stay collectable
