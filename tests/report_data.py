"""Manifests for the run-report tests: a complete synthetic one (the browser test renders
a real run's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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
                  "score_psi": {"fraud_score": 0.08},
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
