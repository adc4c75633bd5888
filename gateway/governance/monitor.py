"""What a run (or a streaming window) looked like against the reference profile: drift,
data quality, segments, and the thresholds that turn them into breaches and actions.

`RunMonitor.observe` takes every batch as it is scored (its input records, the scored
records and the rejects) and adds it to counters that are small, JSON-serialisable and
additive, so a batch run's checkpoint carries them and a resumed run reports the same
figures as one that never stopped. `report()` turns them into the manifest's `quality`
and `drift` sections; `breaches()` compares them with the pipeline's thresholds.

Profile column names say what a column is: `field.NAME` an input field, `feature.NAME`
a model feature, `score.NAME` a model output (gateway.governance.profile_build).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.governance.profile import (
    MAX_CATEGORIES,
    CategoricalProfile,
    NumericProfile,
    Profile,
    numeric_values,
    psi,
)
from gateway.metrics import reason_class
from schemas.arrow_buffers import one_array
from schemas.stream import Reject

OTHER = "\x00other"  # a category the reference never saw (never a real value: NUL)
TIMELINE_MAX = 400  # batches kept for the breaker/scored_by strip; later ones merge in pairs
DriftAction = Literal["none", "force_fallback", "review"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftThresholds(_Strict):
    """A signal past its threshold is a breach (a metric, an alert, maybe an action)."""

    psi: float = Field(default=0.25, gt=0)  # any feature's PSI
    score_psi: float = Field(default=0.25, gt=0)  # any model output's PSI
    reject_rate: float = Field(default=0.05, ge=0, le=1)
    null_rate_increase: float = Field(default=0.05, ge=0, le=1)  # over the reference's, any field
    out_of_range: float = Field(default=0.05, ge=0, le=1)  # share outside the reference's [min, max]
    fallback_share: float = Field(default=0.2, ge=0, le=1)
    decision_rate_shift: float = Field(default=0.1, ge=0, le=1)  # any segment's, absolute
    shadow_agreement: float = Field(default=0.0, ge=0, le=1)  # below it is a breach (0: not judged)
    min_records: int = Field(default=500, ge=1)  # fewer records than this: figures only, no breach


class DriftConfig(_Strict):
    """`drift:` of a pipeline in gateway.yaml."""

    reference: str  # a profile `lgw profile build` wrote (JSON)
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    segments: list[str] = Field(default_factory=list)  # input fields to compare decision rates by
    decision_threshold: float | None = None  # a score at or above it is a positive decision (default: the profile's)
    action: DriftAction = "none"  # on a breach: force fallback (kill switch) or send records to review
    window_records: int = Field(default=10_000, ge=100)  # a streaming pipeline's comparison window

    @model_validator(mode="after")
    def _segments_unique(self) -> DriftConfig:
        if len(set(self.segments)) != len(self.segments):
            raise ValueError("drift.segments: a field is named twice")
        return self


class RunMonitor:
    """Counters of one run or window. `reference` None: data quality only."""

    def __init__(self, reference: Profile | None, *, outputs: Sequence[str], features: Sequence[str],
                 segments: Sequence[str] = (), decision_threshold: float | None = None,
                 pii: Iterable[str] = ()) -> None:
        self.reference = reference
        self.outputs = list(outputs)
        self.features = list(features)
        self.segments = list(segments)
        self.decision_threshold = decision_threshold if decision_threshold is not None else (
            reference.decision_threshold if reference is not None else None)
        self.pii = set(pii)
        self.state: dict[str, Any] = {"records": 0, "rejected": 0, "scored_by": {}, "columns": {}, "fields": {},
                                      "rejects": {}, "segments": {}, "timeline": [], "shadow": [0, 0]}

    # ------------------------------------------------------------------ accumulate
    def observe(self, records_in: int, inputs: pa.Table, scored: pa.Table, features: np.ndarray | None,
                rejects: Sequence[Reject], *, breaker: str | None = None,
                shadow: tuple[int, int] = (0, 0)) -> None:
        """One batch of `records_in` records: `inputs` those that decoded (before scoring;
        pii as read), `scored` what was written (outputs, provenance), `features` the
        model's feature matrix of the scored records (columns as `self.features`),
        `rejects` the batch's."""
        st = self.state
        rejected = len({r.record for r in rejects})
        st["records"] += records_in
        st["rejected"] += rejected
        counts = _value_counts(scored.column("scored_by")) if scored.num_rows and "scored_by" in scored.column_names \
            else {}
        _add(st["scored_by"], counts)
        st["shadow"][0] += shadow[0]
        st["shadow"][1] += shadow[1]
        for r in rejects:
            where = r.field.rsplit(".", 1)[-1] if r.field else "(record)"
            _add(st["rejects"].setdefault(where, {}), {reason_class(r.reason): 1})
        for name in inputs.column_names:
            if name != "source_record":
                self._field(name, inputs.column(name))
        columns: dict[str, Any] = {f"field.{n}": inputs.column(n) for n in inputs.column_names if n not in self.pii}
        if features is not None and len(features):
            for i, name in enumerate(self.features):
                columns[f"feature.{name}"] = pa.array(features[:, i])
        for name in self.outputs:
            if name in scored.column_names:
                columns[f"score.{name}"] = scored.column(name)
        if self.reference is not None:
            for name, column in columns.items():
                ref = self.reference.columns.get(name)
                if ref is not None:
                    self._against(name, ref, column)
        self._segments(inputs, scored)
        self._timeline(scored.num_rows, rejected, counts, breaker)

    def _field(self, name: str, column: pa.ChunkedArray) -> None:
        """Data quality per input field: count, nulls, min and max (numbers; never a pii field's)."""
        f = self.state["fields"].setdefault(name, {"count": 0, "nulls": 0, "min": None, "max": None})
        f["count"] += len(column)
        f["nulls"] += column.null_count
        kind = column.type
        if name in self.pii or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                    or pa.types.is_decimal(kind)) or column.null_count == len(column):
            return
        extremes = pc.min_max(column)  # on the column's own type: no conversion of the values
        lo, hi = float(extremes["min"].as_py()), float(extremes["max"].as_py())
        f["min"] = lo if f["min"] is None else min(f["min"], lo)
        f["max"] = hi if f["max"] is None else max(f["max"], hi)

    def _against(self, name: str, ref: NumericProfile | CategoricalProfile, column: Any) -> None:
        c = self.state["columns"].setdefault(name, {"count": 0, "nulls": 0, "bins": None, "outside": 0})
        c["count"] += len(column)
        c["nulls"] += column.null_count
        if name.startswith("field."):
            return  # an input field: its null rate here, its range and rejects in the scorecard; PSI is the model's
        if isinstance(ref, NumericProfile):
            values = numeric_values(column)
            if values is None or not ref.shares:
                return
            counts = np.bincount(np.searchsorted(np.asarray(ref.edges), values, side="right"),
                                 minlength=len(ref.shares))
            c["bins"] = (np.asarray(c["bins"] or [0] * len(ref.shares)) + counts).tolist()
            if ref.min is not None and ref.max is not None:
                c["outside"] += int(np.count_nonzero((values < ref.min) | (values > ref.max)))
        elif ref.shares is not None:
            seen = _value_counts(pc.drop_null(one_array(column)))
            shares: dict[str, int] = c["bins"] if isinstance(c["bins"], dict) else {}
            for value, n in seen.items():
                key = value if value in ref.shares else OTHER
                shares[key] = shares.get(key, 0) + n
            c["bins"] = shares

    def _segments(self, inputs: pa.Table, scored: pa.Table) -> None:
        if not self.segments or not self.outputs or scored.num_rows == 0:
            return
        output = self.outputs[0]
        if output not in scored.column_names:
            return
        score = np.asarray(pc.fill_null(scored.column(output).cast(pa.float64()), 0.0), dtype=np.float64)
        threshold = self.decision_threshold
        for name in self.segments:
            if name not in scored.column_names or name in self.pii:
                continue
            keys = one_array(pc.cast(scored.column(name), pa.string())).fill_null("(null)")
            encoded = pc.dictionary_encode(keys)
            codes = np.asarray(encoded.indices, dtype=np.int64)
            labels = encoded.dictionary.to_pylist()
            n = np.bincount(codes, minlength=len(labels))
            total = np.bincount(codes, weights=score, minlength=len(labels))
            positive = (np.bincount(codes, weights=(score >= threshold).astype(np.float64), minlength=len(labels))
                        if threshold is not None else np.zeros(len(labels)))
            seg = self.state["segments"].setdefault(name, {})
            for i, label in enumerate(labels):
                key = label if (label in seg or len(seg) < MAX_CATEGORIES) else OTHER
                s = seg.setdefault(key, [0, 0.0, 0.0])
                s[0] += int(n[i])
                s[1] += float(total[i])
                s[2] += float(positive[i])

    def _timeline(self, written: int, rejected: int, counts: Mapping[str, int], breaker: str | None) -> None:
        line = self.state["timeline"]
        line.append({"records": written + rejected, "scored_by": dict(counts), "breaker": breaker or "closed"})
        if len(line) > TIMELINE_MAX:  # keep it bounded: merge neighbours, the worse breaker state wins
            merged = []
            for a, b in zip(line[0::2], line[1::2], strict=False):
                sb = dict(a["scored_by"])
                _add(sb, b["scored_by"])
                worse = max(a["breaker"], b["breaker"], key=lambda s: ("closed", "half_open", "open").index(s)
                            if s in ("closed", "half_open", "open") else 0)
                merged.append({"records": a["records"] + b["records"], "scored_by": sb, "breaker": worse})
            if len(line) % 2:
                merged.append(line[-1])
            self.state["timeline"] = merged

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        return self.state

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.state = dict(state)

    # ------------------------------------------------------------------ read out
    def quality(self, thresholds: DriftThresholds | None = None) -> dict[str, Any]:
        """The data-quality scorecard: per field nulls, rejects by reason, min and max."""
        st = self.state
        records = st["records"]
        fields: dict[str, Any] = {}
        for name, f in sorted(st["fields"].items()):
            fields[name] = {"nulls": f["nulls"], "null_rate": _rate(f["nulls"], f["count"]),
                            "min": f["min"], "max": f["max"], "rejects": dict(st["rejects"].get(name, {}))}
        for name, by_reason in st["rejects"].items():
            if name not in fields:
                fields[name] = {"nulls": None, "null_rate": None, "min": None, "max": None, "rejects": dict(by_reason)}
        return {"records": records, "rejected": st["rejected"], "reject_rate": _rate(st["rejected"], records),
                "fields": fields}

    def drift(self) -> dict[str, Any] | None:
        """PSI per feature and per output, null-rate and range shifts, segments, fallback share."""
        st = self.state
        out: dict[str, Any] = {"psi": {}, "score_psi": {}, "null_rate": {}, "out_of_range": {},
                               "score_histogram": None, "segments": {}, "fallback_share": self.fallback_share(),
                               "shadow_agreement": _rate(st["shadow"][1], st["shadow"][0]) if st["shadow"][0] else None}
        ref = self.reference
        if ref is None:
            return None
        for name, c in sorted(st["columns"].items()):
            profile = ref.columns[name]
            kind, _, short = name.partition(".")
            run_null = _rate(c["nulls"], c["count"])
            out["null_rate"][name] = {"run": run_null, "reference": profile.null_rate}
            if kind == "field":
                continue  # an input field is counted for its null rate only (see _against)
            value = _psi_of(profile, c)
            if value is not None:
                out["psi" if kind == "feature" else "score_psi"][short] = round(value, 6)
            present = c["count"] - c["nulls"]
            if isinstance(profile, NumericProfile) and present:
                out["out_of_range"][name] = _rate(c["outside"], present)
            if kind == "score" and out["score_histogram"] is None and isinstance(profile, NumericProfile) \
                    and c["bins"] and profile.shares:
                total = sum(c["bins"]) or 1
                out["score_histogram"] = {"output": short, "edges": profile.edges, "reference": profile.shares,
                                          "run": [b / total for b in c["bins"]], "min": profile.min, "max": profile.max}
        for seg_name, seg in st["segments"].items():
            reference = (ref.segments or {}).get(seg_name, {})
            out["segments"][seg_name] = {
                value: {"records": s[0], "mean_score": _rate(s[1], s[0]),
                        "decision_rate": _rate(s[2], s[0]) if self.decision_threshold is not None else None,
                        "reference": reference.get(value)}
                for value, s in sorted(seg.items(), key=lambda kv: -kv[1][0])}
        return out

    def fallback_share(self) -> float | None:
        total = sum(self.state["scored_by"].values())
        return _rate(self.state["scored_by"].get("fallback", 0), total) if total else None

    def breaches(self, t: DriftThresholds) -> list[dict[str, Any]]:
        """Every signal past its threshold: {signal, value, threshold}."""
        st = self.state
        if st["records"] < t.min_records:
            return []
        found: list[dict[str, Any]] = []

        def past(signal: str, value: float | None, threshold: float, below: bool = False) -> None:
            if value is not None and (value < threshold if below else value > threshold):
                found.append({"signal": signal, "value": round(float(value), 6), "threshold": threshold})

        quality = self.quality()
        past("reject_rate", quality["reject_rate"], t.reject_rate)
        past("fallback_share", self.fallback_share(), t.fallback_share)
        drift = self.drift()
        if drift is not None:
            for name, value in drift["psi"].items():
                past(f"psi:{name}", value, t.psi)
            for name, value in drift["score_psi"].items():
                past(f"score_psi:{name}", value, t.score_psi)
            for name, rates in drift["null_rate"].items():
                past(f"null_rate:{name}", rates["run"] - rates["reference"], t.null_rate_increase)
            for name, share in drift["out_of_range"].items():
                # the model's inputs only: a date or an id leaves last month's range every night
                if name.startswith("feature."):
                    past(f"out_of_range:{name}", share, t.out_of_range)
            for seg_name, seg in drift["segments"].items():
                for value, s in seg.items():
                    ref_rate = s["reference"]
                    if s["decision_rate"] is not None and ref_rate is not None and s["records"] >= t.min_records:
                        past(f"decision_rate:{seg_name}={value}", abs(s["decision_rate"] - ref_rate),
                             t.decision_rate_shift)
            if t.shadow_agreement and drift["shadow_agreement"] is not None:
                past("shadow_agreement", drift["shadow_agreement"], t.shadow_agreement, below=True)
        return found


def verdict(quality: Mapping[str, Any], breaches: Sequence[Mapping[str, Any]], status: str = "done") -> str:
    """One line a person reads first."""
    records, rejected = quality["records"], quality["rejected"]
    head = f"{records - rejected:,} of {records:,} records scored, {rejected:,} rejected ({quality['reject_rate']:.2%})"
    if status != "done":
        return f"FAILED: {head}"
    if breaches:
        worst = ", ".join(f"{b['signal']} {b['value']:g} > {b['threshold']:g}" if not b["signal"].startswith(
            "shadow") else f"{b['signal']} {b['value']:g} < {b['threshold']:g}" for b in breaches[:3])
        more = f" and {len(breaches) - 3} more" if len(breaches) > 3 else ""
        return f"ATTENTION: {head}; past thresholds: {worst}{more}"
    return f"OK: {head}; no threshold crossed"


def _psi_of(profile: NumericProfile | CategoricalProfile, c: Mapping[str, Any]) -> float | None:
    bins = c.get("bins")
    if not bins:
        return None
    if isinstance(profile, NumericProfile):
        total = sum(bins)
        return psi(profile.shares, [b / total for b in bins]) if total else None
    if profile.shares is None:
        return None
    total = sum(bins.values())
    if not total:
        return None
    known = list(profile.shares)
    value = psi([profile.shares[k] for k in known] + [0.0],
                [bins.get(k, 0) / total for k in known] + [bins.get(OTHER, 0) / total])
    return value if math.isfinite(value) else None


def _value_counts(column: Any) -> dict[str, int]:
    if len(column) == 0:
        return {}
    counts = pc.value_counts(column)
    return {str(v): int(n) for v, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                           strict=True) if v is not None}


def _add(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _rate(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


__all__ = ["DriftAction", "DriftConfig", "DriftThresholds", "RunMonitor", "verdict"]
