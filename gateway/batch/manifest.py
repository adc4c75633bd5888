"""What a run records: its pipeline figures as checkpoints store them, and its manifest."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.batch.runtime import BatchRuntime
from gateway.pipeline import PipelineStats
from gateway.runs import DONE, FAILED, Run

MANIFEST_VERSION = 1


def stats_json(stats: PipelineStats) -> dict[str, Any]:
    return {"batches": stats.batches, "records_in": stats.records_in, "records_out": stats.records_out,
            "rejected": stats.rejected, "scored_by": dict(stats.scored_by),
            "shadow_compared": stats.shadow_compared, "shadow_agreed": stats.shadow_agreed,
            "model_seconds": stats.model_seconds}


def stats_from(data: dict[str, Any]) -> PipelineStats:
    return PipelineStats(batches=data["batches"], records_in=data["records_in"], records_out=data["records_out"],
                         rejected=data["rejected"], scored_by=Counter(data["scored_by"]),
                         shadow_compared=data["shadow_compared"], shadow_agreed=data["shadow_agreed"],
                         model_seconds=data.get("model_seconds", 0.0))


def jsonable(value: Any) -> Any:
    """As the checkpoint stores it (Decimal -> text), so fresh and resumed runs agree."""
    return json.loads(json.dumps(value, default=str))


def build_manifest(run: Run, rt: BatchRuntime, state: dict[str, Any], moved_to: str) -> dict[str, Any]:
    """What a finished run leaves beside its outputs (or, failed, in failed/ as its report)."""
    pipeline = rt.pipeline
    stats = stats_from(state["stats"])
    counts = state["counts"]
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run.run_id,
        "pipeline": rt.name,
        "status": state["status"],
    }
    if state["reason"]:
        manifest["reason"] = state["reason"]
    if state.get("warnings"):
        manifest["warnings"] = state["warnings"]  # e.g. the file held no records
    manifest.update({
        "replay_of": run.replay_of,
        "input": {"name": run.input_name, "sha256": run.input_sha256, "bytes": run.input_bytes,
                  "moved_to": moved_to},
        "contract": {"name": rt.contract.name, "version": rt.contract.version},
        "model": {"name": pipeline.model_name, "version": pipeline.model_version} if pipeline.model else None,
        "policy": str(pipeline.policy),
        "counts": counts,
        "scored_by": dict(sorted(stats.scored_by.items())),
    })
    if stats.shadow_compared:
        manifest["shadow_agreement"] = round(stats.shadow_agreed / stats.shadow_compared, 6)
    manifest["control"] = state["control"]
    manifest["outputs"] = state["outputs"]
    manifest.update(state.get("sections") or {})  # pii, quality, drift, timeline, examples (gateway.governance)
    elapsed = float(state["elapsed_s"])
    manifest["metrics"] = run_metrics(rt.name, state["status"], counts, state.get("rejected_by", {}), stats)
    manifest["timings"] = {
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(counts["records_in"] / elapsed) if elapsed > 0 else None,
        "model_s": round(stats.model_seconds, 3),
        "attempts": run.attempts,
    }
    return manifest


def run_metrics(pipeline: str, status: str, counts: dict[str, int], rejected_by: dict[str, int],
                stats: PipelineStats) -> dict[str, list[dict[str, Any]]]:
    """The run's own figures under the names and labels of its Prometheus series
    (gateway.metrics; what `lgw batch run` pushes), for a reader without Prometheus:
    {metric: [{labels, value}]}. This run's, where the pushed series add up a process.
    Its durations are in `timings` (elapsed_s, model_s): these figures are the same
    whether the run went in one go or resumed."""
    def series(value: float, **labels: str) -> dict[str, Any]:
        return {"labels": {"pipeline": pipeline, **labels}, "value": value}

    out: dict[str, list[dict[str, Any]]] = {
        "lgw_records_in_total": [series(counts["records_in"], source="dropfolder")],
        "lgw_records_out_total": [series(n, scored_by=k) for k, n in sorted(stats.scored_by.items())],
        "lgw_records_rejected_total": [series(n, reason=k) for k, n in sorted(rejected_by.items())],
        "lgw_batch_runs_total": [series(1, status=run_status(status, counts["rejected"]))],
    }
    if stats.shadow_compared:
        out["lgw_shadow_compared_total"] = [series(stats.shadow_compared)]
        out["lgw_shadow_agreed_total"] = [series(stats.shadow_agreed)]
    return {k: v for k, v in out.items() if v}


def run_status(status: str, rejected: int) -> str:
    """A run's `status` label on lgw_batch_runs_total: ok, rejects, failed (or as given)."""
    if status == DONE:
        return "rejects" if rejected else "ok"
    return "failed" if status == FAILED else status


def summarize(manifest: dict[str, Any], rt: BatchRuntime, manifest_path: Path) -> dict[str, Any]:
    """The run's result as the CLI and the run store show it."""
    scored = (manifest["outputs"] or {}).get("scored")
    summary = {"run": manifest["run_id"], "input": manifest["input"]["name"], "status": manifest["status"],
               **manifest["counts"], "scored_by": manifest["scored_by"]}
    if manifest.get("reason"):
        summary["reason"] = manifest["reason"]
    if manifest["control"] is not None:
        summary["control"] = {"ok": manifest["control"]["ok"], "problems": manifest["control"]["problems"]}
    summary["output"] = rt.output_location(scored) if scored else None
    summary["manifest"] = str(manifest_path) if manifest["status"] == DONE else None
    summary["seconds"] = manifest["timings"]["elapsed_s"]
    return summary
