"""Peak memory and output of `lgw decode` on hostile inputs (issue 10), against a plain
decode of a small good file in the same run as the baseline.

    python bench/hostile.py [--line-mb 512] [--cap-gb 8]

Each case runs `lgw decode` (this checkout) in a child process; its peak RSS is the child's
own high-water mark (VmHWM, see tests/peak_memory.py). `--cap-gb` caps the child's address space
(RLIMIT_AS) so a regression fails instead of taking the machine. Prints per case: exit
status, peak RSS, the ratio to the baseline's, seconds and CPU seconds (the child's user +
system time), bytes written (records + rejects)
and the first line of stderr.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.examples import contract_path  # noqa: E402
from tests.peak_memory import peak_bytes, probed  # noqa: E402


def cpy(*entries: str) -> str:
    return "\n".join("       " + e for e in entries) + "\n"


def cases(work: Path, line_mb: int) -> list[tuple[str, list[str]]]:
    text = work / "TEXT.cpy"
    text.write_text(cpy("01  REC.", "    05  NAME  PIC X(20).", "    05  AMT   PIC 9(5)."))
    good = work / "good.txt"
    good.write_bytes(b"".join(b"NAME%016d%05d\n" % (i, i % 99999) for i in range(2400)))  # 60 KB
    odo = work / "ODO.cpy"
    odo.write_text(cpy("01  REC.", "    05  CNT  PIC 9(5).", "    05  ITEMS  OCCURS 1 TO 20000 DEPENDING ON CNT.",
                       "        10  ITEM-ID   PIC X(10).", "        10  ITEM-AMT  PIC S9(7)V99 COMP-3."))
    odo_data = work / "odo.txt"
    odo_data.write_bytes(b"".join(b"00003ABCDEFGHIJ\x00\x00\x12\x34\x5c\n" for _ in range(3000)))  # 60 KB
    big = work / "BIG.cpy"
    big.write_text(cpy("01  REC.", "    05  BLOB  PIC X(400000000)."))
    two = work / "two.bin"
    two.write_bytes(b"AB")
    nested = work / "NESTED.cpy"
    nested.write_text(cpy("01  REC.", "    05  A  OCCURS 100000.", "        10  B  OCCURS 100000.",
                          "            15  C  OCCURS 100000.", "                20  D  PIC X(1000)."))
    wide = work / "WIDE.cpy"
    wide.write_text(cpy("01  REC.", "    05  N  PIC 9(100000)."))
    long_line = work / "line.txt"
    with open(long_line, "wb") as fh:
        block = b"X" * (1 << 20)
        for _ in range(line_mb):
            fh.write(block)
        fh.write(b"\n")
    zeros = work / "zeros.bin"
    zeros.write_bytes(bytes(24_000_000))
    return [
        ("baseline: 60 KB text file", ["decode", str(good), "--copybook", str(text), "--encoding", "ascii",
                                       "--record-format", "D"]),
        ("OCCURS 1 TO 20000 DEPENDING ON, 60 KB", ["decode", str(odo_data), "--copybook", str(odo),
                                                  "--encoding", "ascii", "--record-format", "D"]),
        ("PIC X(400000000), 2-byte file", ["decode", str(two), "--copybook", str(big)]),
        ("nested OCCURS (a petabyte)", ["decode", str(two), "--copybook", str(nested)]),
        (f"one {line_mb} MB text line", ["decode", str(long_line), "--copybook", str(text), "--encoding", "ascii",
                                         "--record-format", "D"]),
        ("PIC 9(100000)", ["decode", str(two), "--copybook", str(wide)]),
        ("24 MB of zeros, card_txn contract", ["decode", str(zeros), "--contract", str(contract_path())]),
    ]


def run(argv: list[str], work: Path, cap: int) -> tuple[int, float, float, float, int, str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    out, err = work / "stdout", work / "stderr"
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as o, open(err, "wb") as e:
        child = subprocess.run(probed(work / "peak.kb", "gateway.cli", argv), stdout=o, stderr=e,
                               preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    first = err.read_text(errors="replace").splitlines()[:1]
    return (child.returncode, peak_bytes(work / "peak.kb") / 2**20, seconds, cpu,
            out.stat().st_size + err.stat().st_size, first[0][:160] if first else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--line-mb", type=int, default=512, help="size of the one-line text file (MB)")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="address-space cap of each child (GB)")
    args = parser.parse_args()
    cap = int(args.cap_gb * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = None
        print(f"{'case':<40} {'exit':>4} {'peak RSS':>10} {'x base':>7} {'seconds':>8} {'CPU s':>6} "
              f"{'written':>12}  stderr")
        for name, argv in cases(work, args.line_mb):
            code, rss, seconds, cpu, written, first = run(argv, work, cap)
            baseline = baseline or rss
            print(f"{name:<40} {code:>4} {rss:>8.0f}MB {rss / baseline:>7.2f} {seconds:>8.2f} {cpu:>6.2f} "
                  f"{written:>12,}  {first}")


if __name__ == "__main__":
    main()
