"""Where the drivers' figures meet the Prometheus registry (gateway.metrics).

A batch run records its totals once, when it ends (`batch_run_ended`): the same figures
its manifest carries, so the series `lgw batch run` pushes and the manifest never
disagree, and a run resumed in a new process counts its records once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from gateway import metrics

FAILED_STATUSES = frozenset({"failed"})
SUCCESS_STATUSES = frozenset({"ok", "rejects"})


def batch_run_ended(pipeline: str, *, source: str, status: str, records_in: int, scored_by: Mapping[str, int],
                    rejected_by: Mapping[str, int], elapsed_s: float, shadow: tuple[int, int] = (0, 0)) -> None:
    """A batch run's totals. `status`: its lgw_batch_runs_total label (ok, rejects, failed,
    interrupted); `shadow`: (compared, agreed)."""
    metrics.RECORDS_IN.labels(pipeline, source).inc(records_in)
    for who, n in scored_by.items():
        metrics.RECORDS_OUT.labels(pipeline, who).inc(n)
    for reason, n in rejected_by.items():
        metrics.RECORDS_REJECTED.labels(pipeline, reason).inc(n)
    compared, agreed = shadow
    if compared:
        metrics.SHADOW_COMPARED.labels(pipeline).inc(compared)
        metrics.SHADOW_AGREED.labels(pipeline).inc(agreed)
    metrics.BATCH_RUNS.labels(pipeline, status).inc()
    metrics.BATCH_DURATION.labels(pipeline).set(elapsed_s)
    if status in SUCCESS_STATUSES:
        metrics.BATCH_LAST_SUCCESS.labels(pipeline).set(time.time())
    elif status in FAILED_STATUSES:
        metrics.BATCH_LAST_FAILURE.labels(pipeline).set(time.time())
    metrics.BATCH_PROGRESS.labels(pipeline).set(1.0 if status in SUCCESS_STATUSES else 0.0)


def batch_progress(pipeline: str, done: int, ratio: float | None) -> None:
    """The running batch run's progress: records processed, and the share of its input read
    when the input's size is known."""
    metrics.BATCH_RECORDS_DONE.labels(pipeline).set(done)
    if ratio is not None:
        metrics.BATCH_PROGRESS.labels(pipeline).set(min(1.0, ratio))
