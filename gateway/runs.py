"""Batch runs in the state store: which files were processed (by content hash), each
run's status and owner, and its latest checkpoint.

A run is claimed by inserting its row: the run id is derived from the pipeline and the
input's sha256, so two replicas that see the same file race on one primary key and only
one wins. The owner keeps a lease (its heartbeat moves on with every checkpoint); a run
whose owner is gone (a process of this host that no longer exists, or a lease older than
`lease_s`: `state.lease_s` of gateway.yaml, default `LEASE_S`) may be taken over and resumed
from its checkpoint. "This host" is the host name, or `LGW_INSTANCE` when set: replicas
that share a host name but not a process namespace (containers with a fixed hostname)
must set distinct values, else one would take the pid of another's process for its own. Checkpoints are stored
only by the current owner: a process that lost its lease stops instead of writing.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text, and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from gateway.state import StateStore, metadata
from schemas.errors import InfrastructureError

LEASE_S = 120.0
RUNNING, DONE, FAILED, DUPLICATE = "running", "done", "failed", "duplicate"

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_id", String(240), primary_key=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("input_name", String(1000), nullable=False),
    Column("input_sha256", String(64), nullable=False, index=True),
    Column("input_bytes", BigInteger, nullable=False),
    Column("work_name", String(1000), nullable=False),  # the input's name in the work folder
    Column("output_stem", String(1000), nullable=False),
    Column("status", String(16), nullable=False),
    Column("replay_of", String(240)),
    Column("attempts", Integer, nullable=False),
    Column("owner", String(300)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("final_path", Text),  # where the input went: done/NAME or failed/NAME
    Column("summary", Text),  # the manifest's counts (JSON), or why it failed
)

batch_checkpoints = Table(
    "batch_checkpoints",
    metadata,
    Column("run_id", String(240), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("saved_at", DateTime(timezone=True), nullable=False),
)

processed_files = Table(
    "processed_files",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("run_id", String(240), nullable=False),
    Column("input_name", String(1000), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)


class LeaseLost(InfrastructureError):
    """Another process took this run over (this one was presumed dead): stop writing."""


@dataclass(frozen=True)
class Run:
    run_id: str
    pipeline: str
    input_name: str
    input_sha256: str
    input_bytes: int
    work_name: str
    output_stem: str
    status: str
    replay_of: str | None
    attempts: int
    owner: str | None
    heartbeat_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    final_path: str | None
    summary: str | None

    def summary_json(self) -> dict[str, Any]:
        if not self.summary:
            return {}
        try:
            value = json.loads(self.summary)
        except ValueError:
            return {"message": self.summary}
        return value if isinstance(value, dict) else {"message": value}


@dataclass(frozen=True)
class Claim:
    """The outcome of offering a file: a new run, or the run that already has its content."""

    run: Run | None = None
    existing: Run | None = None  # processed already (duplicate) or being processed (busy)

    @property
    def busy(self) -> bool:
        return self.run is None and self.existing is not None and self.existing.status == RUNNING


def run_stamp() -> str:
    """When a run started, to the microsecond (UTC), for names that must not repeat: a table
    run's files, a stream's governance run. A run that follows a stopped one within the
    same second must not publish over its file."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def this_host() -> str:
    """The host part of an owner: `LGW_INSTANCE`, else the host name."""
    from gateway.settings import env_setting

    return (env_setting("instance") or socket.gethostname()).replace(":", "_")


def this_process() -> str:
    """host:pid:start-time (the start time tells a reused pid from the original)."""
    return f"{this_host()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_gone(owner: str | None) -> bool:
    """True when `owner` is a process of this host that no longer exists."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != this_host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return started not in ("?", "") and _start_time(pid) not in ("?", started)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_from_row(row: Any) -> Run:
    data = dict(row)
    for key in ("heartbeat_at", "started_at", "finished_at"):
        data[key] = _utc(data[key])
    return Run(**data)


class RunStore:
    def __init__(self, store: StateStore, owner: str | None = None, *, lease_s: float = LEASE_S) -> None:
        self.store = store
        self.owner = owner or this_process()
        self.lease_s = lease_s  # an owner renews its lease every lease_s / 4

    # ---- claiming
    def claim(self, pipeline: str, sha256: str, input_name: str, input_bytes: int, *,
              replay_of: str | None = None, force: bool = False) -> Claim:
        """A new run for this content, unless it was processed (or is being processed)
        already. `force` (a replay) always makes a new run."""
        now = datetime.now(UTC)
        with self.store._connect() as conn, conn.begin():
            if not force:
                done = conn.execute(select(processed_files.c.run_id).where(
                    processed_files.c.pipeline == pipeline, processed_files.c.sha256 == sha256)).scalar()
                if done is not None:
                    return Claim(existing=self._get(conn, done))
                active = conn.execute(select(batch_runs).where(
                    batch_runs.c.pipeline == pipeline, batch_runs.c.input_sha256 == sha256,
                    batch_runs.c.status == RUNNING)).mappings().first()
                if active is not None:
                    return Claim(existing=run_from_row(active))
            stem = self._output_stem(conn, pipeline, sha256, input_name)
            base = f"{pipeline}.{sha256[:16]}"
            taken = conn.execute(select(func.count()).select_from(batch_runs).where(or_(
                batch_runs.c.run_id == base, batch_runs.c.run_id.like(f"{base}.%")))).scalar() or 0
        for n in range(int(taken), int(taken) + 50):
            run_id = base if n == 0 else f"{base}.{n + 1}"
            values = dict(run_id=run_id, pipeline=pipeline, input_name=input_name, input_sha256=sha256,
                          input_bytes=input_bytes, work_name=f"{run_id}.{input_name}", output_stem=stem,
                          status=RUNNING, replay_of=replay_of, attempts=1, owner=self.owner, heartbeat_at=now,
                          started_at=now, finished_at=None, final_path=None, summary=None)
            try:
                with self.store._connect() as conn, conn.begin():
                    conn.execute(batch_runs.insert().values(**values))
            except IntegrityError:
                if n == 0 and not force:  # another replica claimed this content first
                    with self.store._connect() as conn:
                        return Claim(existing=self._get(conn, run_id))
                continue
            if n > 0 and not force:
                # Another replica may have claimed this content between our look and our
                # insert (under another run id: the count saw its row, our look did not).
                other = self._claimed_first(pipeline, sha256, run_id)
                if other is not None:
                    return Claim(existing=other)
            return Claim(run=Run(**values))  # type: ignore[arg-type]
        raise InfrastructureError(f"could not find a free run id for {base}")

    def _claimed_first(self, pipeline: str, sha256: str, run_id: str) -> Run | None:
        """The run that has this content instead of `run_id`, just inserted (which is then
        deleted): a processed one, or a running one of a lower run number. Run numbers
        are given in order (the next free one), so of two replicas that both inserted,
        the later one always yields and the earlier one never does."""
        base = f"{pipeline}.{sha256[:16]}"

        def number(rid: str) -> int:  # base: 1, base.2: 2, ...
            tail = rid[len(base) + 1:] if rid.startswith(base + ".") else ""
            return int(tail) if tail.isdigit() else 1

        with self.store._connect() as conn, conn.begin():
            done = conn.execute(select(processed_files.c.run_id).where(
                processed_files.c.pipeline == pipeline, processed_files.c.sha256 == sha256)).scalar()
            winner: Run | None = self._get(conn, done) if done is not None else None
            if winner is None:
                rows = conn.execute(select(batch_runs).where(
                    batch_runs.c.pipeline == pipeline, batch_runs.c.input_sha256 == sha256,
                    batch_runs.c.status == RUNNING, batch_runs.c.run_id != run_id)).mappings().all()
                earlier = [run_from_row(r) for r in rows if number(r["run_id"]) < number(run_id)]
                winner = min(earlier, key=lambda r: number(r.run_id)) if earlier else None
            if winner is not None:
                conn.execute(batch_runs.delete().where(batch_runs.c.run_id == run_id,
                                                       batch_runs.c.owner == self.owner))
        return winner

    def _output_stem(self, conn: Any, pipeline: str, sha256: str, name: str) -> str:
        """The input's own name, unless another content of this pipeline already uses it
        (a file of the same name every night): then the name with a hash prefix."""
        other = conn.execute(select(batch_runs.c.run_id).where(
            batch_runs.c.pipeline == pipeline, batch_runs.c.output_stem == name,
            batch_runs.c.input_sha256 != sha256).limit(1)).first()
        return name if other is None else f"{name}.{sha256[:12]}"

    def record_duplicate(self, pipeline: str, sha256: str, input_name: str, input_bytes: int, *,
                         of: Run, final_path: str) -> Run:
        claim = self.claim(pipeline, sha256, input_name, input_bytes, replay_of=of.run_id, force=True)
        assert claim.run is not None
        self.finish(claim.run.run_id, DUPLICATE, final_path=final_path,
                    summary={"duplicate_of": of.run_id, "message": f"same content as {of.input_name} "
                             f"(run {of.run_id}): not processed again"}, record=False)
        run = self.get(claim.run.run_id)
        assert run is not None
        return run

    # ---- ownership
    def take_over(self, run: Run, *, lease_s: float | None = None) -> bool:
        """Makes this process the owner of an unfinished run whose owner is gone."""
        lease_s = self.lease_s if lease_s is None else lease_s
        if run.status != RUNNING:
            return False
        if run.owner != self.owner:
            stale = run.heartbeat_at is None or datetime.now(UTC) - run.heartbeat_at > timedelta(seconds=lease_s)
            if not (stale or owner_gone(run.owner)):
                return False
        owner_matches = batch_runs.c.owner == run.owner if run.owner is not None else batch_runs.c.owner.is_(None)
        with self.store._connect() as conn, conn.begin():
            result = conn.execute(batch_runs.update().where(
                batch_runs.c.run_id == run.run_id, batch_runs.c.status == RUNNING, owner_matches,
            ).values(owner=self.owner, heartbeat_at=datetime.now(UTC), attempts=batch_runs.c.attempts + 1))
        return bool(result.rowcount == 1)

    def heartbeat(self, run_id: str) -> None:
        with self.store._connect() as conn, conn.begin():
            self._touch(conn, run_id)

    def _touch(self, conn: Any, run_id: str) -> None:
        result = conn.execute(batch_runs.update().where(
            batch_runs.c.run_id == run_id, batch_runs.c.owner == self.owner, batch_runs.c.status == RUNNING,
        ).values(heartbeat_at=datetime.now(UTC)))
        if result.rowcount != 1:
            raise LeaseLost(f"run {run_id} is no longer owned by this process ({self.owner})")

    # ---- checkpoints
    def save_checkpoint(self, run_id: str, seq: int, state: dict[str, Any]) -> None:
        """Stores the run's position and output lengths (one transaction with the lease)."""
        text = json.dumps(state, separators=(",", ":"), default=str)
        now = datetime.now(UTC)
        with self.store._connect() as conn, conn.begin():
            self._touch(conn, run_id)
            updated = conn.execute(batch_checkpoints.update().where(batch_checkpoints.c.run_id == run_id)
                                   .values(seq=seq, state=text, saved_at=now))
            if updated.rowcount == 0:
                conn.execute(batch_checkpoints.insert().values(run_id=run_id, seq=seq, state=text, saved_at=now))

    def checkpoint(self, run_id: str) -> dict[str, Any] | None:
        with self.store._connect() as conn:
            text = conn.execute(select(batch_checkpoints.c.state).where(
                batch_checkpoints.c.run_id == run_id)).scalar()
        if text is None:
            return None
        state: dict[str, Any] = json.loads(text)
        return state

    # ---- finishing
    def finish(self, run_id: str, status: str, *, final_path: str | None, summary: dict[str, Any],
               record: bool = True) -> None:
        """Marks the run finished and (`record`) its content processed for its pipeline."""
        now = datetime.now(UTC)
        with self.store._connect() as conn, conn.begin():
            run = self._get(conn, run_id)
            conn.execute(batch_runs.update().where(batch_runs.c.run_id == run_id).values(
                status=status, finished_at=now, final_path=final_path, heartbeat_at=now,
                summary=json.dumps(summary, default=str, ensure_ascii=False)))
            conn.execute(batch_checkpoints.delete().where(batch_checkpoints.c.run_id == run_id))
            if record:
                key = and_(processed_files.c.pipeline == run.pipeline, processed_files.c.sha256 == run.input_sha256)
                values = dict(run_id=run_id, input_name=run.input_name, processed_at=now)
                if conn.execute(processed_files.update().where(key).values(**values)).rowcount == 0:
                    conn.execute(processed_files.insert().values(pipeline=run.pipeline, sha256=run.input_sha256,
                                                                 **values))

    # ---- reading
    def get(self, run_id: str) -> Run | None:
        with self.store._connect() as conn:
            row = conn.execute(select(batch_runs).where(batch_runs.c.run_id == run_id)).mappings().first()
        return None if row is None else run_from_row(row)

    def _get(self, conn: Any, run_id: str) -> Run:
        row = conn.execute(select(batch_runs).where(batch_runs.c.run_id == run_id)).mappings().first()
        if row is None:
            raise InfrastructureError(f"run {run_id} vanished from the state store")
        return run_from_row(row)

    def latest_for(self, pipeline: str, sha256: str) -> Run | None:
        with self.store._connect() as conn:
            row = conn.execute(select(batch_runs).where(
                batch_runs.c.pipeline == pipeline, batch_runs.c.input_sha256 == sha256,
                batch_runs.c.status != DUPLICATE).order_by(batch_runs.c.started_at.desc()).limit(1)).mappings().first()
        return None if row is None else run_from_row(row)

    def unfinished(self, pipeline: str) -> list[Run]:
        with self.store._connect() as conn:
            rows = conn.execute(select(batch_runs).where(
                batch_runs.c.pipeline == pipeline, batch_runs.c.status == RUNNING,
            ).order_by(batch_runs.c.started_at)).mappings().all()
        return [run_from_row(r) for r in rows]

    def recent(self, pipeline: str | None = None, limit: int = 20) -> list[Run]:
        stmt = select(batch_runs).order_by(batch_runs.c.started_at.desc(), batch_runs.c.run_id.desc()).limit(limit)
        if pipeline is not None:
            stmt = stmt.where(batch_runs.c.pipeline == pipeline)
        with self.store._connect() as conn:
            return [run_from_row(r) for r in conn.execute(stmt).mappings().all()]

    def progress(self, run_id: str) -> dict[str, Any] | None:
        """What the latest checkpoint says of a running run: records and bytes so far."""
        state = self.checkpoint(run_id)
        if state is None:
            return None
        counts = state.get("counts", {})
        position = state.get("position") or {}
        return {"phase": state.get("phase"), "chunks": state.get("seq"),
                "bytes_read": (position.get("read") or {}).get("offset"),
                "records_in": counts.get("records_in"), "records_out": counts.get("records_out"),
                "rejected": counts.get("rejected")}


__all__ = [
    "DONE", "DUPLICATE", "FAILED", "LEASE_S", "RUNNING", "Claim", "LeaseLost", "Run", "RunStore",
    "batch_checkpoints", "batch_runs", "owner_gone", "processed_files", "this_process",
]
