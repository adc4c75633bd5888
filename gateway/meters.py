"""Where the drivers' figures meet the Prometheus registry (gateway.metrics).

A batch run records its totals once, when it ends (`batch_run_ended`): the same figures
its manifest carries, so the series `lgw batch run` pushes and the manifest never
disagree, and a run resumed in a new process counts its records once. A real-time
pipeline counts its records when a micro-batch is acknowledged (`StreamMeters`). Both
modes record model calls, the breaker's transitions, the kill switch and pauses
(`PipelineMeters`, `watch_breaker`); `track_lag` measures a Kafka consumer's lag.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gateway import metrics

if TYPE_CHECKING:
    from gateway.resilience.breaker import BreakerState, CircuitBreaker

log = logging.getLogger("lgw.metrics")

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


# ---------------------------------------------------------------------------- live hooks
# `lgw serve` and `lgw run` update these while they run. The hot path increments children
# cached per pipeline (a `labels()` lookup costs a lock and a dict probe), once a batch.

def watch_breaker(pipeline: str, model: str, breaker: CircuitBreaker) -> None:
    """The breaker's state gauge and transition counter, updated by its own listener on
    each transition (never polled)."""
    gauge = metrics.BREAKER_STATE.labels(pipeline, model)
    gauge.set(metrics.BREAKER_STATE_VALUES[breaker.state.value])
    transitions = {s: metrics.BREAKER_TRANSITIONS.labels(pipeline, model, s) for s in metrics.BREAKER_STATE_VALUES}

    def changed(_: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        gauge.set(metrics.BREAKER_STATE_VALUES[new.value])
        transitions[new.value].inc()

    breaker.add_listener(changed)


class PipelineMeters:
    """What a pipeline records in either mode: model calls, kill switch, pause."""

    def __init__(self, pipeline: str, model: str | None) -> None:
        self.pipeline = pipeline
        self._mode: str | None = None
        self._paused: bool | None = None
        self._modes = {m: metrics.KILL_SWITCH.labels(pipeline, m) for m in metrics.KILL_SWITCH_MODES}
        self._paused_gauge = metrics.PAUSED.labels(pipeline)
        self._latency = metrics.MODEL_REQUEST_SECONDS.labels(pipeline, model) if model else None
        self._outcomes = ({o: metrics.MODEL_REQUESTS.labels(pipeline, model, o) for o in MODEL_OUTCOMES}
                          if model else {})

    def model_call(self, outcome: str, seconds: float | None) -> None:
        """`outcome`: ok, error or rejected (the open breaker let nothing through: no duration)."""
        self._outcomes[outcome].inc()
        if seconds is not None and self._latency is not None:
            self._latency.observe(seconds)

    def kill_switch(self, mode: str) -> None:
        if mode == self._mode:
            return
        self._mode = mode
        for m, child in self._modes.items():
            child.set(1 if m == mode else 0)

    def paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self._paused_gauge.set(1 if paused else 0)


MODEL_OUTCOMES = ("ok", "error", "rejected")


class StreamMeters:
    """A real-time pipeline's records, counted when their batch is acknowledged: its
    results and dead letters are durable then, and a redelivered batch counts once."""

    def __init__(self, pipeline: str, source: str, rejects_sink: str) -> None:
        self.pipeline = pipeline
        self._in = metrics.RECORDS_IN.labels(pipeline, source)
        self._dlq = metrics.DEAD_LETTERS_PUBLISHED.labels(pipeline, rejects_sink)
        self._out: dict[str, Any] = {}
        self._rejected: dict[str, Any] = {}
        self._shadow = (metrics.SHADOW_COMPARED.labels(pipeline), metrics.SHADOW_AGREED.labels(pipeline))
        self._shadow_seen = (0, 0)

    def acked(self, records_in: int, scored_by: Mapping[str, int], reject_classes: Iterable[str],
              dead_letters: int) -> None:
        self._in.inc(records_in)
        for who, n in scored_by.items():
            child = self._out.get(who)
            if child is None:  # scored_by is model or fallback: two children at most
                child = self._out[who] = metrics.RECORDS_OUT.labels(self.pipeline, who)
            child.inc(n)
        for reason in reject_classes:
            child = self._rejected.get(reason)
            if child is None:
                child = self._rejected[reason] = metrics.RECORDS_REJECTED.labels(self.pipeline, reason)
            child.inc()
        if dead_letters:
            self._dlq.inc(dead_letters)

    def shadow(self, compared: int, agreed: int) -> None:
        """The pipeline's running shadow totals: what grew since the last call is counted."""
        seen_c, seen_a = self._shadow_seen
        if compared > seen_c:
            self._shadow[0].inc(compared - seen_c)
            self._shadow[1].inc(agreed - seen_a)
            self._shadow_seen = (compared, agreed)


def dead_letter_class(reason: str, kind: str) -> str:
    """A dead letter's reason class: a crash is the pipeline's error; a decode or
    validation reject is classed by its text (a framing error is reported as decode)."""
    return metrics.reason_class(reason, "pipeline_error" if kind == "crash" else None)


# ---------------------------------------------------------------------------- consumer lag
LAG_INTERVAL_S = 2.0


async def track_lag(pipeline: str, topics: Iterable[str], consumer: Callable[[], Any],
                    interval_s: float = LAG_INTERVAL_S) -> None:
    """Every `interval_s` until cancelled: log end offset minus position, summed per topic
    over the partitions assigned to the consumer (aiokafka's `highwater`, known after a
    fetch from the partition, and `position`)."""
    gauges = {t: metrics.CONSUMER_LAG.labels(pipeline, t) for t in topics}
    while True:
        await asyncio.sleep(interval_s)
        c = consumer()
        if c is None:
            continue
        try:
            lag = await consumer_lag(c)
        except Exception as exc:  # a rebalance or a lost connection: the next round measures again
            log.debug("%s: consumer lag not measured (%s)", pipeline, type(exc).__name__)
            continue
        for topic, gauge in gauges.items():
            if topic in lag:
                gauge.set(lag[topic])


async def consumer_lag(consumer: Any) -> dict[str, int]:
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = await consumer.position(tp)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
    return lag


def drift_window(pipeline: str, sections: Mapping[str, Any]) -> None:
    """A batch run's or streaming window's drift and quality figures (its manifest sections,
    gateway.governance.run): PSI per model feature and output, breaches by kind, reject ratio."""
    quality = sections.get("quality")
    if quality is not None:
        metrics.QUALITY_REJECT_RATIO.labels(pipeline).set(quality["reject_rate"])
    drift = sections.get("drift")
    if drift is None:
        return
    for kind, prefix in (("psi", "feature."), ("score_psi", "score.")):
        for column, value in drift[kind].items():
            metrics.DRIFT_PSI.labels(pipeline, prefix + column).set(value)
    for breach in drift.get("breaches", []):
        kind = breach["signal"].split(":", 1)[0]
        if kind in metrics.DRIFT_SIGNALS:
            metrics.DRIFT_BREACHES.labels(pipeline, kind).inc()
