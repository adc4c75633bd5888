"""Manifests for the run-report tests: a complete synthetic one, and the drift, quality
and example sections of the manifest contract computed from a real run's outputs (for
manifests written before the pipeline records them itself)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.json as pj

from gateway.governance.profile import build_profile, compare, psi

PSI_THRESHOLD = 0.01  # low on purpose: runs of one generator hardly drift, and a breach must show
SCORE_EDGES = [round(x, 1) for x in np.linspace(0.0, 1.0, 11)]


def full_manifest() -> dict[str, Any]:
    """Every section of the manifest contract, with small made-up figures."""
    return {
        "manifest_version": 1, "run_id": "card_txn.0123456789abcdef", "pipeline": "card_txn", "status": "done",
        "input": {"name": "CARDTXN.DAT", "sha256": "ab" * 32, "bytes": 120_240},
        "contract": {"name": "card_txn", "version": 1}, "model": {"name": "fraud", "version": "1"},
        "counts": {"records_in": 1000, "records_out": 990, "rejected": 10},
        "scored_by": {"model": 900, "fallback": 90},
        "timings": {"started_at": "2026-12-04T01:00:00+00:00", "finished_at": "2026-12-04T01:00:02+00:00",
                    "elapsed_s": 2.5},
        "quality": {"verdict": "2 signals over their thresholds", "ok": False, "reject_rate": 0.01,
                    "fields": {"TXN_AMOUNT": {"nulls": 0, "null_rate": 0.0, "min": -12.5, "max": 9000.0,
                                              "rejects": {"validation": 3}},
                               "COUNTRY": {"nulls": 40, "null_rate": 0.04, "min": None, "max": None,
                                           "rejects": {"validation": 5, "decode": 2}}}},
        "drift": {"reference": {"path": "ref/card_txn.profile.json", "sha256": "cd" * 32, "records": 50_000},
                  "thresholds": {"psi": 0.2},
                  "psi": {"TXN_AMOUNT": 0.31, "MCC": 0.05, "COUNTRY": 0.12, "CHANNEL": 0.01},
                  "score_psi": 0.08,
                  "score_histogram": {"edges": SCORE_EDGES, "reference": [0.5, 0.2, 0.1, 0.05, 0.05, 0.03, 0.03,
                                                                          0.02, 0.01, 0.01],
                                      "run": [0.45, 0.2, 0.12, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.01]},
                  "null_rate": {"COUNTRY": {"run": 0.04, "reference": 0.001}},
                  "out_of_range": {"TXN_AMOUNT": 0.02},
                  "segments": {"CHANNEL": {"E": {"records": 400, "decision_rate": 0.03, "reference": 0.02}}},
                  "fallback_share": 90 / 990, "shadow_agreement": 0.97,
                  "breaches": [{"signal": "psi.TXN_AMOUNT", "value": 0.31, "threshold": 0.2, "action": "review"}]},
        "rejected_by": {"validation": 8, "decode": 2},
        "timeline": [{"batch": i, "records": 200, "breaker": "open" if i == 2 else "closed",
                      "scored_by": {"model": 200 - 40 * (i == 2), "fallback": 40 * (i == 2)}} for i in range(1, 6)],
        "review": {"queued": 12, "pending": 30},
        "examples": {"rejects": [{"record": 98, "field": "COUNTRY", "reason": "does not match the pattern",
                                  "raw": "A4A2"}],
                     "records": [{"TXN_ID": "TX0000000001", "TXN_PAN": "492181******4173", "fraud_score": 0.01}]},
        "pii": {"TXN_PAN": "mask"},
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mask_pan(value: str) -> str:
    """PCI DSS display masking: the first six and last four digits at most."""
    return value[:6] + "*" * max(len(value) - 10, 0) + value[-4:] if len(value) > 10 else "*" * len(value)


def _shares(scores: np.ndarray) -> list[float]:
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=SCORE_EDGES)
    return (counts / max(1, len(scores))).tolist()


def _reason_class(reject: dict[str, Any]) -> str:
    reason = str(reject.get("reason", ""))
    return "validation" if ("pattern" in reason or "must be" in reason or "required" in reason) else "decode"


def augment(manifest: dict[str, Any], *, scored: Path, rejects: Path, reference_scored: Path,
            pii: dict[str, str], batch_size: int) -> dict[str, Any]:
    """The real run's manifest with the sections the pipeline is about to record,
    computed from its own outputs against a reference run's (drift by
    gateway.governance.profile; PII masked the way the pipeline masks it)."""
    run_rows, ref_rows = read_jsonl(scored), read_jsonl(reference_scored)
    features = ["TXN_AMOUNT", "MCC", "COUNTRY", "CHANNEL", "CASHBACK_AMOUNT", "BALANCE", "CURRENCY", "TXN_TIME"]
    run_table = pj.read_json(scored).select([*features, "TXN_PAN"])
    ref_table = pj.read_json(reference_scored).select([*features, "TXN_PAN"])
    profile = build_profile(ref_table, pii=list(pii))
    drift = compare(profile, run_table)
    run_scores = np.array([r["fraud_score"] for r in run_rows], dtype=float)
    ref_scores = np.array([r["fraud_score"] for r in ref_rows], dtype=float)
    run_hist, ref_hist = _shares(run_scores), _shares(ref_scores)
    psis = {k: d.psi for k, d in drift.items() if d.psi is not None}
    breaches = [{"signal": f"psi.{k}", "value": v, "threshold": PSI_THRESHOLD, "action": None}
                for k, v in psis.items() if v > PSI_THRESHOLD]
    reject_rows = read_jsonl(rejects)
    by_field: dict[str, Counter[str]] = defaultdict(Counter)
    for r in reject_rows:
        by_field[str(r.get("field") or "record").split(".")[-1]][_reason_class(r)] += 1
    fields: dict[str, Any] = {}
    for name in run_table.column_names:
        column = run_table.column(name)
        values = [v for v in column.to_pylist() if v is not None]
        numeric = name not in pii and values and all(isinstance(v, int | float) for v in values)
        fields[name] = {"nulls": column.null_count, "null_rate": column.null_count / max(1, len(column)),
                        "min": min(values) if numeric else None, "max": max(values) if numeric else None,
                        "rejects": dict(by_field.get(name, {}))}
    for name, counted in by_field.items():
        fields.setdefault(name, {"nulls": 0, "null_rate": 0.0, "min": None, "max": None, "rejects": dict(counted)})
    counts = manifest["counts"]
    rejected_by = Counter(_reason_class(r) for r in reject_rows)
    timeline = []
    for i, start in enumerate(range(0, len(run_rows), batch_size), 1):
        chunk = run_rows[start: start + batch_size]
        by = Counter(r["scored_by"] for r in chunk)
        timeline.append({"batch": i, "records": len(chunk), "scored_by": {"model": by["model"],
                                                                          "fallback": by["fallback"]},
                         "breaker": "closed" if by["fallback"] == 0 else "open"})
    masked = [{k: (mask_pan(str(v)) if k in pii else v) for k, v in r.items()
               if k in ("TXN_ID", "TXN_PAN", "TXN_AMOUNT", "COUNTRY", "fraud_score", "scored_by")}
              for r in run_rows[:5]]
    manifest.update({
        "quality": {"verdict": f"{len(breaches)} drift signals over their thresholds" if breaches else "ok",
                    "ok": not breaches, "reject_rate": counts["rejected"] / max(1, counts["records_in"]),
                    "fields": fields},
        "drift": {"reference": {"path": str(reference_scored), "sha256": "0" * 64, "records": len(ref_rows)},
                  "thresholds": {"psi": PSI_THRESHOLD},
                  "psi": psis, "score_psi": psi(ref_hist, run_hist),
                  "score_histogram": {"edges": SCORE_EDGES, "reference": ref_hist, "run": run_hist},
                  "null_rate": {k: {"run": d.null_rate, "reference": d.reference_null_rate} for k, d in drift.items()},
                  "out_of_range": {k: d.out_of_range for k, d in drift.items()},
                  "fallback_share": manifest["scored_by"].get("fallback", 0) / max(1, counts["records_out"]),
                  "shadow_agreement": None, "breaches": breaches},
        "rejected_by": dict(rejected_by),
        "timeline": timeline,
        "review": {"queued": 0, "pending": 0},
        "examples": {"rejects": [{"record": r["record"], "field": r.get("field"), "reason": r["reason"],
                                  "raw": None if str(r.get("field", "")).endswith(tuple(pii)) else r.get("raw")}
                                 for r in reject_rows[:5]],
                     "records": masked},
        "pii": pii,
    })
    return manifest


__all__ = ["PSI_THRESHOLD", "augment", "full_manifest", "mask_pan", "read_jsonl"]
