"""kill -9 at random moments, restart, repeat: the outputs are byte for byte those of a
run that was never interrupted (nothing lost, nothing written twice)."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import example_dropfolder_config
from schemas.examples import generate_card_file

RECORDS = 200_000
CHUNK = 1_000
MIN_KILLS = 12


def write_config(root: Path, fmt: str) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt=fmt, batch_size=CHUNK)
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


def checkpoint_seq(db: Path) -> int:
    """The latest checkpoint number of the (only) run, -1 when there is none yet."""
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
                row = conn.execute("SELECT max(seq) FROM batch_checkpoints").fetchone()
            return -1 if row is None or row[0] is None else int(row[0])
        except sqlite3.OperationalError:  # not created yet, or locked by the writer for a moment
            time.sleep(0.02)
    return -1


def start(lgw_cmd: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=config.parent)


def outbox(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "drop" / "outbox").iterdir())}


def without_timings(manifest: bytes) -> dict:
    data = json.loads(manifest)
    data.pop("timings")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_resume_after_kill_is_byte_identical(tmp_path: Path, lgw_cmd: list[str], fmt: str) -> None:
    data = tmp_path / "CARDTXN.DAT"
    generate_card_file(data, records=RECORDS, seed=11, bad_every=997)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for root in (clean, killed):
        (root / "drop" / "inbox").mkdir(parents=True)
        (root / "drop" / "inbox" / data.name).write_bytes(data.read_bytes())

    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(write_config(clean, fmt))],
                          capture_output=True, cwd=clean, timeout=300)
    assert done.returncode == 1, done.stderr.decode()[-2000:]  # 1: the file has rejected records

    # The kill plan, from a seeded RNG: first some kills after random delays (while starting,
    # hashing, claiming or mid-chunk), then most once the run reached a random checkpoint (plus
    # a random fraction of a chunk), in increasing order, and two at the very end (while the
    # last outputs are finished and published). The checkpoints are drawn as fractions of what
    # is left after the delay kills: on a fast machine those kills alone may get far.
    rng = random.Random(f"kill-9-{fmt}")
    chunks = RECORDS // CHUNK + 1  # the header and trailer make one record more per 1,000
    delays = [rng.uniform(0.05, 1.5) for _ in range(3)]
    fractions = sorted(rng.random() for _ in range(MIN_KILLS - 3))

    config, log, db = write_config(killed, fmt), killed / "runs.log", killed / "state.db"
    kills, seen = 0, []

    def run_and_kill(wait_until: Callable[[subprocess.Popen[bytes]], None], final: bool = False) -> bool:
        """Start a run, let wait_until decide the moment, kill -9 it; False when it finished first."""
        nonlocal kills
        proc = start(lgw_cmd, config, log)
        wait_until(proc)
        if proc.poll() is not None:  # it finished before the kill came (only possible at the end)
            assert proc.returncode in (0, 1) and final, log.read_text()[-3000:]
            return False
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        kills += 1
        seen.append(checkpoint_seq(db))
        return True

    def after_delay(seconds: float) -> Callable[[subprocess.Popen[bytes]], None]:
        def wait(proc: subprocess.Popen[bytes]) -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=seconds)
        return wait

    def at_checkpoint(target: int) -> Callable[[subprocess.Popen[bytes]], None]:
        def wait(proc: subprocess.Popen[bytes]) -> None:
            deadline = time.monotonic() + 120
            while proc.poll() is None and checkpoint_seq(db) < target and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.02))
        return wait

    for seconds in delays:
        run_and_kill(after_delay(seconds))
    base = max(checkpoint_seq(db), 0)
    targets = [base + 1 + int(f * (chunks - 2 - base)) for f in fractions]
    for target in targets:
        run_and_kill(at_checkpoint(target))
    for target in (chunks, chunks + 1):
        if not run_and_kill(at_checkpoint(target), final=True):
            break
    else:
        proc = start(lgw_cmd, config, log)  # 1: it finished the run (some records were rejected); 0: nothing was left
        assert proc.wait(timeout=300) in (0, 1), log.read_text()[-3000:]
    assert kills >= MIN_KILLS, f"only {kills} kills landed before the run finished"
    assert len(set(seen)) >= MIN_KILLS - 3, f"kills landed at too few distinct checkpoints: {seen}"

    want, got = outbox(clean), outbox(killed)
    assert sorted(got) == sorted(want)  # no temporary file left behind
    manifest = next(name for name in want if name.endswith(".manifest.json"))
    for name in want:
        if name != manifest and not name.endswith(".report.html"):  # the report shows the manifest's timings
            assert got[name] == want[name], f"{name} differs after {kills} kills"
    assert without_timings(got[manifest]) == without_timings(want[manifest])
    assert json.loads(got[manifest])["timings"]["attempts"] > 1
    counts = json.loads(got[manifest])["counts"]
    assert counts["records_in"] == RECORDS == counts["records_out"] + counts["rejected"]
    assert [p.name for p in (killed / "drop" / "done").iterdir()] == [data.name]
    assert not list((killed / "drop" / "work").iterdir()) and not list((killed / "drop" / "inbox").iterdir())
