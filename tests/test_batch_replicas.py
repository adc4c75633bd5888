"""Two `lgw run` replicas on one drop folder, sharing a PostgreSQL state store: every
file is processed exactly once (content duplicates are recognised, not run again), and
a replica SIGKILLed in the middle of a run loses it to the other once its lease expires;
the survivor resumes it from its checkpoint, with complete outputs and no record twice.

The replicas run under distinct `LGW_INSTANCE` names, as pods on two hosts would: the
survivor cannot see that the killed process is gone (that shortcut holds on one host
only), so it is the lease (`state.lease_s`, shortened here to LEASE_S) that frees the
run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import example_dropfolder_config
from gateway.runs import DONE, DUPLICATE, RUNNING, Run, RunStore
from gateway.state import StateStore
from schemas.examples import generate_card_file
from tests.helpers import postgres_schema
from tests.lgw_processes import LgwProcess

RECORDS = 30_000  # per file: a few seconds per run on a loaded 2-core machine
CHUNK = 1_000
LEASE_S = 10.0  # renewed with every chunk's checkpoint (and every LEASE_S / 4 at least)
DEADLINE_S = 300.0
# name -> seed: four distinct contents, and two files that repeat a content under another name
FILES = {"CARD1.DAT": 1, "CARD2.DAT": 2, "CARD3.DAT": 3, "CARD4.DAT": 4, "AGAIN1.DAT": 1, "AGAIN3.DAT": 3}


def write_config(root: Path, state_url: str) -> Path:
    cfg = example_dropfolder_config(state_url, batch_size=CHUNK, poll_s=0.5)
    cfg["state"]["lease_s"] = LEASE_S
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


def drop(source: Path, inbox: Path, name: str) -> None:
    """Into the inbox under a name the glob does not match, then renamed: never half seen."""
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, inbox / name)


def wait_until(condition: Callable[[], bool], what: str, replicas: list[LgwProcess],
               timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.name}\n{r.stderr[-3000:]}" for r in replicas)
            pytest.fail(f"{what}: not within {timeout:g}s\n{logs}", pytrace=False)
        time.sleep(0.1)


def record_numbers(path: Path, key: str) -> list[int]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)[key] for line in fh]


@pytest.mark.slow
def test_two_replicas_process_each_file_once_and_take_over_a_killed_run(
        tmp_path: Path, lgw_cmd: list[str], lgw_processes: list[LgwProcess]) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for seed in sorted(set(FILES.values())):
        generate_card_file(sources / f"seed{seed}.DAT", records=RECORDS, seed=seed, bad_every=997)
    site = tmp_path / "site"
    inbox, outbox = site / "drop" / "inbox", site / "drop" / "outbox"
    inbox.mkdir(parents=True)

    with postgres_schema("replicas") as url, StateStore(url) as state:
        config = write_config(site, url)
        runs = RunStore(state, owner="test:0:0")
        replicas = {name: LgwProcess(lgw_cmd, ["run", "--config", str(config)], site, name=name,
                                     env={"LGW_INSTANCE": name})
                    for name in ("replica-a", "replica-b")}
        lgw_processes.extend(replicas.values())
        for replica in replicas.values():
            replica.url  # noqa: B018 - waits until it serves its ops endpoints (its config loaded)
        for name, seed in FILES.items():
            drop(sources / f"seed{seed}.DAT", inbox, name)

        # A run of replica-a, past its first checkpoint: kill -9 the whole replica there.
        def running_of_a() -> Run | None:
            for run in runs.unfinished("card_txn"):
                state_now = runs.checkpoint(run.run_id)
                if (run.owner or "").startswith("replica-a:") and state_now and state_now.get("seq", 0) >= 2:
                    return run
            return None

        wait_until(lambda: running_of_a() is not None, "replica-a running a run past a checkpoint",
                   list(replicas.values()))
        victim = running_of_a()
        assert victim is not None
        a = replicas["replica-a"]
        os.killpg(a.process.pid, signal.SIGKILL)
        a.process.wait(timeout=30)
        at_kill = runs.get(victim.run_id)
        assert at_kill is not None and at_kill.status == RUNNING and at_kill.owner == victim.owner
        assert at_kill.heartbeat_at is not None and (runs.checkpoint(victim.run_id) or {}).get("seq", 0) >= 2

        # replica-b finishes the rest and, once the lease ran out, the killed run
        b = replicas["replica-b"]
        seen_taken: list[datetime] = []

        def all_settled() -> bool:
            b.check_alive()
            run = runs.get(victim.run_id)
            if not seen_taken and run is not None and run.owner != victim.owner:
                seen_taken.append(datetime.now(UTC))
            settled = {r.input_name for r in runs.recent("card_txn", limit=100) if r.status != RUNNING}
            return settled >= set(FILES) and not runs.unfinished("card_txn")

        wait_until(all_settled, "every file settled", list(replicas.values()))

        final = {r.run_id: r for r in runs.recent("card_txn", limit=100)}
        taken = final[victim.run_id]
        assert taken.status == DONE, taken.summary
        assert taken.owner is not None and taken.owner.startswith("replica-b:"), taken.owner
        assert taken.attempts == 2  # claimed by replica-a, taken over once by replica-b
        # not before the lease of replica-a's last heartbeat ran out (replica-b cannot see the pid)
        assert seen_taken and seen_taken[0] >= at_kill.heartbeat_at + timedelta(seconds=LEASE_S)

        # exactly once: one done run per distinct content, the repeats recorded as duplicates
        by_status: dict[str, list[Run]] = {}
        for run in final.values():
            by_status.setdefault(run.status, []).append(run)
        assert sorted(by_status) == [DONE, DUPLICATE], {s: [r.input_name for r in rs] for s, rs in by_status.items()}
        done_runs = by_status[DONE]
        assert len(done_runs) == len(set(FILES.values())) == len({r.input_sha256 for r in done_runs})
        assert len(by_status[DUPLICATE]) == len(FILES) - len(done_runs)
        assert sorted(r.input_name for r in final.values()) == sorted(FILES)  # each file once

        # outputs complete: in = out + rejects for every run, every record number exactly once
        outputs = sorted(p.name for p in outbox.iterdir())
        stems = sorted(r.output_stem for r in done_runs)
        assert outputs == sorted(f"{s}.{kind}" for s in stems
                                 for kind in ("manifest.json", "rejects.jsonl", "report.html", "scored.jsonl"))
        for run in done_runs:
            manifest = json.loads((outbox / f"{run.output_stem}.manifest.json").read_text())
            counts = manifest["counts"]
            assert manifest["run_id"] == run.run_id and manifest["control"]["ok"]
            assert counts["records_in"] == RECORDS == counts["records_out"] + counts["rejected"]
            scored = record_numbers(outbox / f"{run.output_stem}.scored.jsonl", "source_record")
            rejected = record_numbers(outbox / f"{run.output_stem}.rejects.jsonl", "record")
            assert len(scored) == counts["records_out"] and len(rejected) == counts["rejected"] > 0
            # details are records 2 .. RECORDS + 1 (the header is record 1)
            assert sorted(scored + rejected) == list(range(2, RECORDS + 2)), f"{run.input_name}: lost or twice"

        assert sorted(p.name for p in (site / "drop" / "done").iterdir()) == sorted(FILES)
        assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
        assert not list((site / "drop" / "work").iterdir())

        # the taken-over run's outputs are byte for byte those of a run never interrupted
        clean = tmp_path / "clean"
        (clean / "drop" / "inbox").mkdir(parents=True)
        seed = FILES[taken.input_name]
        drop(sources / f"seed{seed}.DAT", clean / "drop" / "inbox", taken.input_name)
        done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config",
                               str(write_config(clean, f"sqlite:///{clean / 'state.db'}"))],
                              capture_output=True, cwd=clean, timeout=DEADLINE_S)
        assert done.returncode == 1, done.stderr.decode()[-2000:]  # 1: the file has rejected records
        for kind in ("scored.jsonl", "rejects.jsonl"):
            name = f"{taken.output_stem}.{kind}"
            assert (outbox / name).read_bytes() == (clean / "drop" / "outbox" / name).read_bytes(), name


def test_of_two_replicas_that_both_inserted_a_run_for_one_content_the_later_yields(tmp_path: Path) -> None:
    """The race the test above can hit: replica B looks (no run for the content yet),
    replica A claims it, B counts A's row and inserts the next run number. B then finds
    A's run and withdraws its own; A, the lower number, keeps its run."""
    from gateway.runs import batch_runs

    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as state:
        a, b = RunStore(state, owner="host-a:1:1"), RunStore(state, owner="host-b:2:2")
        sha = "cd" * 32
        first = a.claim("card_txn", sha, "X.DAT", 10).run
        assert first is not None
        late = first.run_id + ".2"  # what B's insert made of the count it saw
        with state._connect() as conn, conn.begin():
            conn.execute(batch_runs.insert().values(
                run_id=late, pipeline="card_txn", input_name="X.DAT", input_sha256=sha, input_bytes=10,
                work_name=f"{late}.X.DAT", output_stem="X.DAT", status=RUNNING, replay_of=None, attempts=1,
                owner=b.owner, heartbeat_at=first.started_at, started_at=first.started_at))
        winner = b._claimed_first("card_txn", sha, late)
        assert winner is not None and winner.run_id == first.run_id and winner.owner == a.owner
        assert b.get(late) is None  # withdrawn
        assert a._claimed_first("card_txn", sha, first.run_id) is None  # the earlier one never yields
        assert [r.run_id for r in a.unfinished("card_txn")] == [first.run_id]
        again = b.claim("card_txn", sha, "X.DAT", 10)  # and a fresh look sees it busy
        assert again.busy and again.existing is not None and again.existing.run_id == first.run_id
