"""The gateway's Prometheus metrics: one registry per process, named by the Prometheus
naming guide (`lgw_` prefix, base units, `_total` counters), labelled by pipeline and
by small closed sets only (a reason class, never a reason text; a model name from the
config, never a record value), so no label can grow without bound.

`lgw serve` and `lgw run` expose the registry on /metrics (gateway.ops_http); `lgw
batch run` pushes it to a Pushgateway when one is configured and writes `snapshot()`
into each run's manifest. The alert rules and the dashboard under deploy/ read these
names: rename one there too (tests/test_deploy_rules.py checks both).
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

REGISTRY = CollectorRegistry(auto_describe=True)

# The reason classes of a rejected record: `reason_class` maps a reason text onto one.
REASON_CLASSES = ("framing", "decode", "validation", "model_rejected", "model_output", "pipeline_error")

# Model calls take from about a millisecond (in process) to the breaker's slow-call
# threshold and the HTTP timeout (seconds).
_MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2, "forced_open": 3, "disabled": 4}
KILL_SWITCH_MODES = ("off", "force_fallback", "pause")

RECORDS_IN = Counter("lgw_records_in", "Records read from a pipeline's source.",
                     ["pipeline", "source"], registry=REGISTRY)
RECORDS_OUT = Counter("lgw_records_out", "Records scored and written, by who scored them (model or fallback).",
                      ["pipeline", "scored_by"], registry=REGISTRY)
RECORDS_REJECTED = Counter("lgw_records_rejected", "Records sent to rejects or the dead-letter channel, by reason "
                           "class.", ["pipeline", "reason"], registry=REGISTRY)
DEAD_LETTERS_PUBLISHED = Counter("lgw_dead_letters_published", "Dead letters published to a DLQ topic, a DLX or "
                                 "a rejects table, once durable.", ["pipeline", "sink"], registry=REGISTRY)
MODEL_REQUEST_SECONDS = Histogram("lgw_model_request_duration_seconds", "Duration of one model call (a batch), "
                                  "retries included.", ["pipeline", "model"], buckets=_MODEL_BUCKETS,
                                  registry=REGISTRY)
MODEL_REQUESTS = Counter("lgw_model_requests", "Model calls by outcome (ok, error, rejected by the open breaker).",
                         ["pipeline", "model", "outcome"], registry=REGISTRY)
BREAKER_STATE = Gauge("lgw_breaker_state", "Circuit breaker state of a pipeline's model: 0 closed, 1 half-open, "
                      "2 open, 3 forced open, 4 disabled.", ["pipeline", "model"], registry=REGISTRY)
BREAKER_TRANSITIONS = Counter("lgw_breaker_transitions", "Circuit breaker state changes, by the state entered.",
                              ["pipeline", "model", "to"], registry=REGISTRY)
KILL_SWITCH = Gauge("lgw_kill_switch_mode", "1 for the kill-switch mode a pipeline is in (off, force_fallback, "
                    "pause), 0 for the others.", ["pipeline", "mode"], registry=REGISTRY)
PAUSED = Gauge("lgw_pipeline_paused", "1 while a pipeline takes no input (policy pause or kill switch).",
               ["pipeline"], registry=REGISTRY)
CONSUMER_LAG = Gauge("lgw_kafka_consumer_lag_records", "Records on a pipeline's input topic not yet consumed "
                     "(log end offset minus position, summed over the assigned partitions).",
                     ["pipeline", "topic"], registry=REGISTRY)
SHADOW_COMPARED = Counter("lgw_shadow_compared", "Records scored by the model and, in shadow, by the rules.",
                          ["pipeline"], registry=REGISTRY)
SHADOW_AGREED = Counter("lgw_shadow_agreed", "Shadow-compared records on which model and rules agreed.",
                        ["pipeline"], registry=REGISTRY)
BATCH_RECORDS_DONE = Gauge("lgw_batch_run_records_processed", "Records of the running batch run processed so far.",
                           ["pipeline"], registry=REGISTRY)
BATCH_PROGRESS = Gauge("lgw_batch_run_progress_ratio", "Share of the running batch run's input processed (0..1).",
                       ["pipeline"], registry=REGISTRY)
BATCH_DURATION = Gauge("lgw_batch_run_duration_seconds", "Wall time of the last finished batch run.",
                       ["pipeline"], registry=REGISTRY)
BATCH_RUNS = Counter("lgw_batch_runs", "Batch runs ended, by status (ok, rejects, failed, interrupted, paused).",
                     ["pipeline", "status"], registry=REGISTRY)
BATCH_LAST_SUCCESS = Gauge("lgw_batch_last_success_timestamp_seconds", "When a batch run last ended ok or with "
                           "rejects (Unix time).", ["pipeline"], registry=REGISTRY)
BATCH_LAST_FAILURE = Gauge("lgw_batch_last_failure_timestamp_seconds", "When a batch run last failed (Unix time).",
                           ["pipeline"], registry=REGISTRY)
FILE_LAST_ARRIVAL = Gauge("lgw_input_last_arrival_timestamp_seconds", "When the last input file of a pipeline "
                          "arrived in its inbox (Unix time).", ["pipeline"], registry=REGISTRY)

# what a drift or quality threshold is about (gateway.governance.monitor: a breach's signal
# is `KIND` or `KIND:column`; the label is the kind, the column stays in the manifest)
DRIFT_SIGNALS = ("psi", "score_psi", "reject_rate", "null_rate", "out_of_range", "fallback_share", "decision_rate",
                 "shadow_agreement")
DRIFT_PSI = Gauge("lgw_drift_psi", "Population Stability Index of a model feature or output against the reference "
                  "profile, in the last batch run or streaming window.", ["pipeline", "column"], registry=REGISTRY)
DRIFT_BREACHES = Counter("lgw_drift_breaches", "Drift and data-quality thresholds crossed by a batch run or a "
                         "streaming window, by signal kind.", ["pipeline", "signal"], registry=REGISTRY)
QUALITY_REJECT_RATIO = Gauge("lgw_quality_reject_ratio", "Share of records rejected in the last batch run or "
                             "streaming window (0..1).", ["pipeline"], registry=REGISTRY)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("framing", re.compile(r"RDW|record length|truncated|bytes at the end|message is \d+ bytes", re.I)),
    ("model_rejected", re.compile(r"^model (rejected|server failed)", re.I)),
    ("model_output", re.compile(r"^model output", re.I)),
    ("pipeline_error", re.compile(r"^(pipeline|scoring) (raised|failed)|poison", re.I)),
    ("decode", re.compile(r"packed|zoned|decimal|digit|sign|encod|invalid (byte|json)|json|not a number|decode",
                          re.I)),
)


def reason_class(reason: str, kind: str | None = None) -> str:
    """The bounded class of a reject reason. `kind`: what the code that rejected knows
    already (a message reject's 'decode' or 'validation')."""
    if kind in REASON_CLASSES:
        return kind
    for name, pattern in _RULES:
        if pattern.search(reason):
            return name
    return "validation"


def snapshot(pipeline: str | None = None) -> dict[str, Any]:
    """The registry's samples as plain JSON (for a manifest): {metric: [{labels, value}]},
    only a pipeline's series when `pipeline` is given, zero-valued samples left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family in REGISTRY.collect():
        rows = [_sample_json(s) for s in family.samples
                if (pipeline is None or s.labels.get("pipeline") == pipeline) and s.value != 0
                and not s.name.endswith("_created")]
        if rows:
            out[family.name] = rows
    return out


def _sample_json(sample: Any) -> dict[str, Any]:
    return {"name": sample.name, "labels": dict(sample.labels), "value": sample.value}


def families() -> list[Metric]:
    return list(REGISTRY.collect())
