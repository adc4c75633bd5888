"""What the runs area of the API and the console show: batch runs and their manifests,
the rejects they wrote, drift and quality per pipeline, replays. Plain functions over the
state store and the files the runs left (blocking: callers run them in a thread) that
return pydantic models; the API returns them as they are, the pages render them.

A run's manifest is found as `lgw report` finds it (gateway.governance.report_cli): a
done run's summary names it, a failed run's is NAME.report.json in its pipeline's failed
folder. It is read with report_files.read_json_file: never through a link, never past
its size cap. A run's rejects are the JSON lines its `file` rejects sink wrote
(adapters.files.sink.RejectsFile: NAME.rejects.jsonl in the sink's folder, or in failed/
beside a failed run's input); they already withhold the bytes of pii fields, and this
module withholds them again should a line ever carry a pii field's bytes. Rejects that
went to a Kafka or AMQP dead-letter queue or to an ODBC table are not read here: the
answer says where they went instead.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from gateway.metrics import REASON_CLASSES, reason_class
from gateway.runs import DONE, FAILED, RUNNING, Run, RunStore, batch_runs
from schemas.errors import ConfigError
from schemas.safefiles import UnsafePath, open_existing
from schemas.stream import PII_WITHHELD

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.console.context import ConsoleContext
    from gateway.state import StateStore

log = logging.getLogger("lgw.console")

MAX_LIMIT = 500  # rows in one answer
MAX_RUNS_SCANNED = 200  # runs whose rejects files one rejects query reads (most recent first)
MAX_REJECTS_BYTES = 64 * 1024 * 1024  # of one rejects file; the rest is not read (`truncated`)
MAX_LINE_BYTES = 64 * 1024  # a rejects line is a few hundred bytes; a longer one is not one
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,240}$"
STATUSES = (RUNNING, DONE, FAILED, "duplicate")
# one line of text with something in it: no control characters (a NUL cannot even be stored in PostgreSQL)
REASON_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
ReasonClass = Literal["framing", "decode", "validation", "model_rejected", "model_output", "pipeline_error"]
assert set(ReasonClass.__args__) == set(REASON_CLASSES)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- models
class RunSummary(BaseModel):
    run_id: str
    pipeline: str
    input_name: str
    input_bytes: int
    status: str
    replay_of: str | None = None
    attempts: int
    owner: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    final_path: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    rejected: int | None = None
    message: str | None = Field(default=None, description="why it failed, or what it duplicates")


class RunDetail(BaseModel):
    run: RunSummary
    manifest: dict[str, Any] | None = Field(
        default=None, description="the run's manifest (sections counts, pii, quality, drift, timeline, examples, "
                                  "review, ...), when it has one")
    manifest_note: str | None = Field(default=None, description="why there is no manifest")
    progress: dict[str, Any] | None = Field(default=None, description="a running run's latest checkpoint")


class RejectItem(BaseModel):
    run_id: str
    pipeline: str
    record: int | None = None
    record_offset: int | None = None
    field: str | None = None
    field_offset: int | None = None
    offset: int | None = Field(default=None, description="the bad bytes' offset in the input file")
    length: int | None = None
    raw: str | None = Field(default=None, description="hex of the bad bytes (at most 64); null when withheld")
    raw_withheld: str | None = None
    raw_truncated: bool = False
    raw_length: int | None = None
    reason: str
    reason_class: str


class RejectSource(BaseModel):
    pipeline: str
    kind: str = Field(description="the pipeline's `rejects` type: file, kafka, amqp, odbc")
    readable: bool
    note: str


class RejectsPage(BaseModel):
    items: list[RejectItem]
    offset: int
    limit: int
    more: bool = Field(description="more rejects match past this page")
    runs_scanned: int
    sources: list[RejectSource] = Field(description="where each pipeline's rejects go, and whether they are "
                                                    "listed here")
    truncated: list[str] = Field(default_factory=list, description="rejects files read only up to their cap")


class DriftView(BaseModel):
    pipeline: str
    kind: Literal["batch", "stream"]
    source: str = Field(description="where the figures come from (a run, this process's last window), or none")
    run_id: str | None = None
    finished_at: datetime | None = None
    quality: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    psi: dict[str, float] = Field(default_factory=dict, description="a stream's PSI by column (last window)")
    reject_ratio: float | None = None
    note: str | None = None


class ReplayStarted(BaseModel):
    pipeline: str
    replay_of: str
    status: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Refused(Exception):
    """A request that cannot be served, with its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- runs
def summary_of(run: Run) -> RunSummary:
    s = run.summary_json()
    counts = s.get("counts") if isinstance(s.get("counts"), dict) else s

    def n(key: str) -> int | None:
        value = counts.get(key) if isinstance(counts, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    message = s.get("reason") or s.get("message") or (f"duplicate of {s['duplicate_of']}"
                                                      if s.get("duplicate_of") else None)
    return RunSummary(run_id=run.run_id, pipeline=run.pipeline, input_name=run.input_name,
                      input_bytes=run.input_bytes, status=run.status, replay_of=run.replay_of, attempts=run.attempts,
                      owner=run.owner, started_at=run.started_at, finished_at=run.finished_at,
                      final_path=run.final_path, records_in=n("records_in"), records_out=n("records_out"),
                      rejected=n("rejected"), message=str(message)[:1000] if message else None)


def _runs(state: StateStore, pipeline: str | None, status: str | None, limit: int,
          run_id: str | None = None, finished: bool = False) -> list[Run]:
    from gateway.runs import run_from_row

    stmt = select(batch_runs).order_by(batch_runs.c.started_at.desc(), batch_runs.c.run_id.desc()).limit(limit)
    if pipeline is not None:
        stmt = stmt.where(batch_runs.c.pipeline == pipeline)
    if status is not None:
        stmt = stmt.where(batch_runs.c.status == status)
    if run_id is not None:
        stmt = stmt.where(batch_runs.c.run_id == run_id)
    if finished:
        stmt = stmt.where(batch_runs.c.status.in_((DONE, FAILED)))
    with state._connect() as conn:
        return [run_from_row(r) for r in conn.execute(stmt).mappings().all()]


def list_runs(state: StateStore, pipeline: str | None = None, status: str | None = None,
              limit: int = 50) -> list[RunSummary]:
    return [summary_of(r) for r in _runs(state, pipeline, status, min(limit, MAX_LIMIT))]


def read_manifest(cfg: GatewayConfig, run: Run) -> dict[str, Any]:
    from gateway.governance.report_cli import manifest_path
    from gateway.governance.report_files import read_json_file

    return read_json_file(manifest_path(cfg, run))


def run_detail(cfg: GatewayConfig, state: StateStore, run_id: str) -> RunDetail:
    run = RunStore(state).get(run_id)
    if run is None:
        raise Refused(404, f"no run {run_id!r} (GET /api/v1/runs lists them)")
    detail = RunDetail(run=summary_of(run))
    if run.status == RUNNING:
        detail.progress = RunStore(state).progress(run_id)
        detail.manifest_note = "the run is still running: its manifest comes when it ends"
        return detail
    try:
        detail.manifest = read_manifest(cfg, run)
    except ConfigError as exc:
        detail.manifest_note = str(exc)
    return detail


def report_html(cfg: GatewayConfig, state: StateStore, run_id: str) -> str:
    from gateway.governance.report import render_report

    run = RunStore(state).get(run_id)
    if run is None:
        raise Refused(404, f"no run {run_id!r}")
    try:
        manifest = read_manifest(cfg, run)
    except ConfigError as exc:
        raise Refused(404, f"no report: {exc}") from None
    return render_report(manifest)


# --------------------------------------------------------------------------- replay
async def replay(ctx: ConsoleContext, run_id: str, actor: str, reason: str) -> ReplayStarted:
    """Starts a replay through the process's replay callable (it audits the request);
    Refused(404/409) with one line when it cannot."""
    import asyncio
    import re

    if len(reason) > 500 or not re.fullmatch(REASON_PATTERN, reason):
        raise Refused(422, "a replay needs a reason: one line of text, at most 500 characters")
    run = await asyncio.to_thread(RunStore(ctx.state).get, run_id)
    if run is None:
        raise Refused(404, f"no run {run_id!r} (GET /api/v1/runs lists them)")
    if ctx.replay is None:
        raise Refused(409, f"this process (lgw {ctx.process}) runs no drop-folder pipeline and cannot replay: ask "
                           f"the `lgw run` process that watches pipeline {run.pipeline} (POST /api/v1/runs/{run_id}"
                           f"/replay on its ops address), or run `lgw batch replay {run_id}` beside it")
    try:
        answer = await ctx.replay(None, run_id, actor, reason)
    except LookupError as exc:
        raise Refused(404, str(exc).strip("'\"")) from None
    except ConfigError as exc:
        raise Refused(409, str(exc)) from None
    return ReplayStarted(pipeline=str(answer.get("pipeline", run.pipeline)),
                         replay_of=str(answer.get("replay_of", run_id)), status=str(answer.get("status", "started")),
                         detail={k: v for k, v in answer.items() if k not in ("pipeline", "replay_of", "status")})


# --------------------------------------------------------------------------- rejects
def reject_sources(cfg: GatewayConfig, pipeline: str | None) -> list[RejectSource]:
    from gateway.config import DropFolderConfig

    out: list[RejectSource] = []
    for name, pipe in cfg.pipelines.items():
        if pipeline is not None and name != pipeline:
            continue
        to = pipe.rejects_to
        kind = str(to.type)
        if kind == "file" and isinstance(pipe.source, DropFolderConfig):
            out.append(RejectSource(pipeline=name, kind=kind, readable=True,
                                    note=f"one JSON Lines file per run in {cfg.resolve(to.folder)} "  # type: ignore[union-attr]
                                         "(a failed run's in the failed folder)"))
            continue
        where = {"kafka": f"Kafka topic {getattr(to, 'topic', '?')}",
                 "amqp": f"AMQP exchange {getattr(to, 'exchange', '?') or '(default)'}",
                 "odbc": f"ODBC table {getattr(to, 'table', '?')}"}.get(kind, kind)
        out.append(RejectSource(pipeline=name, kind=kind, readable=False,
                                note=f"rejects go to {where}: the console does not read them; use that "
                                     "system's own tools"))
    return out


def rejects_file(cfg: GatewayConfig, run: Run) -> Path | None:
    """Where a finished run's rejects file is, when its pipeline writes them to files."""
    from gateway.config import DropFolderConfig

    pipe = cfg.pipelines.get(run.pipeline)
    if pipe is None or not isinstance(pipe.source, DropFolderConfig) or pipe.rejects_to.type != "file":
        return None
    if run.status == DONE:
        return cfg.resolve(pipe.rejects_to.folder) / f"{run.output_stem}.rejects.jsonl"
    if run.status == FAILED and run.final_path and run.final_path.startswith("failed/"):
        settled = run.final_path.removeprefix("failed/")
        return pipe.source.folders(cfg.base_dir)["failed"] / f"{settled}.rejects.jsonl"
    return None


def _pii_names(cfg: GatewayConfig, pipeline: str, cache: dict[str, set[str]]) -> set[str]:
    """The pipeline's pii fields (contract rules and the pipeline's overrides), by column
    name; withheld again here whatever the rejects file says."""
    if pipeline not in cache:
        names: set[str] = set()
        pipe = cfg.pipelines.get(pipeline)
        if pipe is not None:
            try:
                from gateway.contract_scoring import load_scoring_contract

                contract = load_scoring_contract(cfg.resolve(pipe.contract))
                names = {node.key for node, rules in contract.rules.values() if rules.pii}
            except Exception as exc:  # the contract moved away since the run: rely on the file's own marks
                log.warning("console: contract of pipeline %s: %s", pipeline, exc)
            names |= {k.replace("-", "_") for k in (pipe.pii or {})}
        cache[pipeline] = {n.upper() for n in names}
    return cache[pipeline]


def _column(field: str) -> str:
    return field.rsplit(".", 1)[-1].replace("-", "_").upper()


def _item(run: Run, line: dict[str, Any], pii: set[str]) -> RejectItem:
    def num(key: str) -> int | None:
        v = line.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    field = line.get("field") if isinstance(line.get("field"), str) else None
    reason = str(line.get("reason", ""))[:2000]
    raw = line.get("raw") if isinstance(line.get("raw"), str) else None
    withheld = line.get("raw_withheld") if isinstance(line.get("raw_withheld"), str) else None
    if field is not None and _column(field) in pii:
        if raw is not None:
            raw, withheld = None, "pii"
        if not reason.endswith(PII_WITHHELD):
            reason = f"{reason_class(reason)} {PII_WITHHELD}"
    return RejectItem(run_id=run.run_id, pipeline=run.pipeline, record=num("record"),
                      record_offset=num("record_offset"), field=field, field_offset=num("field_offset"),
                      offset=num("offset"), length=num("length"), raw=raw, raw_withheld=withheld,
                      raw_truncated=line.get("raw_truncated") is True, raw_length=num("raw_length"), reason=reason,
                      reason_class=reason_class(reason))


def _lines(path: Path, truncated: list[str]) -> Any:
    """The JSON objects of a rejects file, read without following a link, up to its cap."""
    try:
        fh = open_existing(path)
    except (UnsafePath, FileNotFoundError):
        return
    except OSError as exc:
        log.warning("console: rejects file %s: %s", path, exc.strerror or exc)
        return
    with fh:
        read = 0
        while True:
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            read += len(line)
            if read > MAX_REJECTS_BYTES:
                truncated.append(path.name)
                return
            if len(line) > MAX_LINE_BYTES:
                fh.readline()  # the rest of an overlong line; skipped
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def _field_matches(field: str | None, wanted: str) -> bool:
    if field is None:
        return False
    w = wanted.replace("-", "_").upper()
    f = field.replace("-", "_").upper()
    return f == w or f.endswith("." + w)


def list_rejects(cfg: GatewayConfig, state: StateStore, *, pipeline: str | None = None, run: str | None = None,
                 reason: str | None = None, field: str | None = None, limit: int = 100,
                 offset: int = 0) -> RejectsPage:
    limit = max(1, min(limit, MAX_LIMIT))
    runs = _runs(state, pipeline, None, MAX_RUNS_SCANNED, run_id=run, finished=True)
    items: list[RejectItem] = []
    truncated: list[str] = []
    pii: dict[str, set[str]] = {}
    matched = 0
    more = False
    for r in runs:
        path = rejects_file(cfg, r)
        if path is None:
            continue
        for line in _lines(path, truncated):
            if field is not None and not _field_matches(line.get("field"), field):
                continue
            if reason is not None and reason_class(str(line.get("reason", ""))) != reason:
                continue
            matched += 1
            if matched <= offset:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(_item(r, line, _pii_names(cfg, r.pipeline, pii)))
        if more:
            break
    return RejectsPage(items=items, offset=offset, limit=limit, more=more, runs_scanned=len(runs),
                       sources=reject_sources(cfg, pipeline), truncated=truncated)


# --------------------------------------------------------------------------- drift and quality
def _stream_figures(pipeline: str) -> tuple[dict[str, float], float | None]:
    from gateway.metrics import DRIFT_PSI, QUALITY_REJECT_RATIO

    psi: dict[str, float] = {}
    ratio: float | None = None
    for family in DRIFT_PSI.collect():
        for s in family.samples:
            if s.labels.get("pipeline") == pipeline and s.name == "lgw_drift_psi":
                psi[s.labels.get("column", "?")] = float(s.value)
    for family in QUALITY_REJECT_RATIO.collect():
        for s in family.samples:
            if s.labels.get("pipeline") == pipeline and s.name == "lgw_quality_reject_ratio":
                ratio = float(s.value)
    return psi, ratio


def drift_of(cfg: GatewayConfig, state: StateStore, pipeline: str, live: bool = False) -> DriftView:
    """The latest finished run's drift and quality (a batch pipeline), or the last window's
    figures this process has (a streaming one, `live`: this process runs it)."""
    pipe = cfg.pipelines[pipeline]
    if pipe.realtime:
        psi, ratio = _stream_figures(pipeline) if live else ({}, None)
        if not psi and ratio is None:
            why = ("no figures yet: no window has closed since this process started" if live else
                   "no figures yet: this process does not run this stream (its `lgw serve` replicas do: see their "
                   "/metrics, lgw_drift_psi and lgw_quality_reject_ratio)")
            if pipe.drift is None:
                why = "no figures: the pipeline has no `drift:` section, so its windows are not measured"
            return DriftView(pipeline=pipeline, kind="stream", source="none", note=why)
        return DriftView(pipeline=pipeline, kind="stream", source="this process's last window", psi=psi,
                         reject_ratio=ratio)
    for run in _runs(state, pipeline, None, 20, finished=True):
        try:
            manifest = read_manifest(cfg, run)
        except ConfigError:
            continue
        quality = manifest.get("quality") if isinstance(manifest.get("quality"), dict) else None
        drift = manifest.get("drift") if isinstance(manifest.get("drift"), dict) else None
        note = None if drift is not None else "drift not measured: the pipeline has no drift reference profile"
        ratio = quality.get("reject_rate") if quality is not None else None
        return DriftView(pipeline=pipeline, kind="batch", source=f"run {run.run_id}", run_id=run.run_id,
                         finished_at=run.finished_at, quality=quality, drift=drift, note=note,
                         reject_ratio=float(ratio) if isinstance(ratio, int | float) else None)
    return DriftView(pipeline=pipeline, kind="batch", source="none", note="no figures yet: no finished run")


__all__ = [
    "MAX_LIMIT", "REASON_PATTERN", "RUN_ID_PATTERN", "STATUSES", "DriftView", "ReasonClass", "Refused",
    "RejectItem", "RejectSource", "RejectsPage", "ReplayStarted", "RunDetail", "RunSummary", "drift_of",
    "list_rejects", "list_runs", "read_manifest", "reject_sources", "rejects_file", "replay",
    "report_html", "run_detail",
]
