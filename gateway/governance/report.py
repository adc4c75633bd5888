"""One run's report as a single self-contained HTML page (`lgw report RUN`).

The page is what an operator or a model-risk reviewer opens the morning after a nightly
run: the counts and the verdict, the score distribution against the reference, PSI per
feature, rejects, who scored (model or fallback) and the breaker over the run, the review
queue, the worst fields, a few masked examples and the PII policy that was applied.

It is one file that works offline and can be mailed or archived: no script, no font, no
image from anywhere; the charts are inline SVG drawn in Python (gateway.governance.charts).
A Content-Security-Policy meta tag forbids every fetch and every script, so even a value
that slipped through unescaped could not run or call out. Every value is escaped anyway:
a manifest is data written by a run over hostile input, and may have been edited since.

Every section copes with its data being absent (manifests written before the drift and
quality figures existed, a failed run): it says "not measured in this run" instead.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from gateway.governance.charts import (
    BREACH,
    REFERENCE,
    RUN,
    Bar,
    Cell,
    horizontal_bars,
    paired_histogram,
    share_bar,
    timeline,
)

NOT_MEASURED = "not measured in this run"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

MAX_BARS = 40  # features or reasons in one chart; the rest are counted, not drawn
MAX_CELLS = 240  # timeline cells; a longer run groups consecutive batches
MAX_ROWS = 12  # rows of the quality and rejects-by-field tables
MAX_EXAMPLES = 10
MAX_COLUMNS = 16
MAX_TEXT = 200  # characters of one value shown; the rest is cut
_BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:20px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 18px;margin:14px 0}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:4px 0 10px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dt{color:#666}dd{margin:0}
.counts{display:flex;gap:28px;margin:12px 0}.count b{display:block;font-size:24px}
.verdict{font-weight:600;padding:6px 10px;border-radius:4px;background:#eef6ee}
.verdict[data-ok=false]{background:#fdecea}.verdict[data-ok=unknown]{background:#f0f0f0}
.status{padding:1px 8px;border-radius:9px;background:#eee}.status.done{background:#dff0d8}
.status.failed{background:#f8d7da}.absent{color:#777;font-style:italic}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border-bottom:1px solid #e5e5e5;
padding:3px 10px;text-align:left;vertical-align:top}td.n,th.n{text-align:right}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
svg.chart{display:block;margin:6px 0;max-width:100%;height:auto}svg text{font-size:11px;fill:#333}
svg text.tick{font-size:10px}.note{color:#666;font-size:12px}.breach{color:#b00020;font-weight:600}
"""


# --------------------------------------------------------------------------- reading hostile data
def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _num(value: Any) -> float | None:
    """A finite number, or None (a string, a bool, NaN, an infinity are not figures)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer past 1e308
        return None
    return number if math.isfinite(number) else None


def _figures(mapping: dict[str, Any]) -> dict[str, float]:
    """The entries of `mapping` that are finite numbers (keys as text)."""
    out = {}
    for key, value in mapping.items():
        number = _num(value)
        if number is not None:
            out[str(key)] = number
    return out


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _t(value: Any, limit: int = MAX_TEXT) -> str:
    """Any value as escaped text, cut to `limit` characters (None as a dash)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text, quote=True)


def _share(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"{number:.1%}"


def _count(value: Any) -> str:
    number = _int(value)
    return "-" if number is None else f"{number:,}"


def _figure(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"{number:.3f}"


# --------------------------------------------------------------------------- page structure
def _section(key: str, title: str, body: str | None) -> str:
    measured = body is not None
    inner = body if body is not None else f'<p class="absent">{NOT_MEASURED}</p>'
    return (f'<section id="{key}" data-section="{key}" data-measured="{str(measured).lower()}">'
            f"<h2>{escape(title)}</h2>{inner}</section>")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | frozenset[int] = frozenset()) -> str:
    """A table from cells that are escaped already."""
    head = "".join(f'<th{" class=n" if i in numeric else ""}>{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(manifest: dict[str, Any], *, reference: dict[str, Any] | None = None) -> str:
    """The run report of `manifest` (gateway.batch.manifest's shape; every section
    optional) as one HTML document. `reference` is the reference profile the run was
    compared with (gateway.governance.profile.Profile as JSON), when the caller has it:
    it fills in reference null rates the manifest does not carry."""
    m = manifest if isinstance(manifest, dict) else {}
    drift = _dict(m.get("drift")) or {}
    quality = _dict(m.get("quality")) or {}
    ref = reference if isinstance(reference, dict) else None
    title = f"lgw run report: {m.get('pipeline', '?')} {m.get('run_id', '?')}"
    sections = [
        _header(m, quality, drift, ref),
        _section("scores", "Score distribution against the reference", _scores(drift)),
        _section("psi", "Drift: PSI per feature", _psi(drift)),
        _section("rejects", "Reject reasons", _rejects(m, quality)),
        _section("scoring", "Scored by: model or fallback", _scoring(m, drift)),
        _section("breaker", "Breaker state over the run", _breaker(m)),
        _section("review", "Review queue", _review(m)),
        _section("quality", "Top quality problems", _quality(m, quality, drift, ref)),
        _section("examples", "Masked examples", _examples(m)),
        _section("pii", "PII policy applied", _pii(m)),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="referrer" content="no-referrer">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_t(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{''.join(sections)}"
            '<p class="note">Written by lgw report from the run\'s manifest. Values are shown as the manifest '
            "holds them: PII was masked by the pipeline before it was written.</p></main></body></html>\n")


# --------------------------------------------------------------------------- sections
def _header(m: dict[str, Any], quality: dict[str, Any], drift: dict[str, Any], ref: dict[str, Any] | None) -> str:
    inp = _dict(m.get("input")) or {}
    contract = _dict(m.get("contract")) or {}
    model = _dict(m.get("model"))
    timings = _dict(m.get("timings")) or {}
    status = m.get("status")
    status_class = escape(status) if status in ("done", "failed") else "other"
    rows = [
        ("run", f"<code>{_t(m.get('run_id'))}</code>"),
        ("status", f'<span class="status {status_class}" data-status="{_t(status)}">{_t(status)}</span>'),
        ("input", f"{_t(inp.get('name'))} ({_count(inp.get('bytes'))} bytes)"),
        ("input sha256", f"<code>{_t(inp.get('sha256'))}</code>"),
        ("contract", f"{_t(contract.get('name'))} v{_t(contract.get('version'))}" if contract else "-"),
        ("model", f"{_t(model.get('name'))} {_t(model.get('version'))}" if model else "none (rules only)"),
    ]
    if "policy" in m:
        rows.append(("policy", _t(m.get("policy"))))
    if timings:
        rows.append(("time", f"{_t(timings.get('started_at'))} to {_t(timings.get('finished_at'))} "
                             f"({_figure(timings.get('elapsed_s'))} s)"))
    if m.get("reason"):
        rows.append(("why it failed", _t(m.get("reason"), 1000)))
    for warning in (_list(m.get("warnings")) or [])[:MAX_EXAMPLES]:
        rows.append(("warning", _t(warning, 1000)))
    reference = _dict(drift.get("reference"))
    if reference:
        rows.append(("reference", f"{_t(reference.get('path'))} ({_count(reference.get('records'))} records, "
                                  f"sha256 <code>{_t(reference.get('sha256'))}</code>)"))
    elif ref is not None:
        rows.append(("reference", f"profile of {_count(ref.get('records'))} records"))
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    counts = _dict(m.get("counts"))
    if counts:
        numbers = "".join(f'<div class="count" data-count="{key}"><b>{_count(counts.get(key))}</b>{label}</div>'
                          for key, label in (("records_in", "records in"), ("records_out", "records out"),
                                             ("rejected", "rejected")))
        counts_html = f'<div class="counts">{numbers}</div>'
    else:
        counts_html = f'<p class="counts absent">counts: {NOT_MEASURED}</p>'
    verdict = quality.get("verdict")
    ok = quality.get("ok")
    ok_attr = "true" if ok is True else "false" if ok is False else "unknown"
    line = _t(verdict, 1000) if verdict is not None else NOT_MEASURED
    verdict_html = f'<p class="verdict" data-ok="{ok_attr}">Verdict: {line}</p>'
    return (f'<section id="summary" data-section="summary" data-measured="true">'
            f"<h1>Run report: {_t(m.get('pipeline'))}</h1>{verdict_html}{counts_html}<dl>{facts}</dl>"
            f"{_breaches(drift)}</section>")


def _breaches(drift: dict[str, Any]) -> str:
    breaches = _list(drift.get("breaches"))
    if not breaches:
        return ""
    rows = []
    for b in breaches[:MAX_ROWS]:
        item = _dict(b) or {}
        rows.append([f'<span class="breach">{_t(item.get("signal"))}</span>', _figure(item.get("value")),
                     _figure(item.get("threshold")), _t(item.get("action"))])
    return "<h2>Thresholds breached</h2>" + _table(["signal", "value", "threshold", "action"], rows, {1, 2})


def _bin_labels(edges: list[Any], bins: int) -> list[str]:
    """Labels for `bins` bins from their edges: all boundaries (bins + 1) or the interior
    cut points (bins - 1, as reference profiles store them)."""
    e = [_num(x) for x in edges]
    if all(x is not None for x in e):
        cuts = [f"{x:.3g}" for x in e if x is not None]
        if len(cuts) == bins + 1:
            return [f"{cuts[i]}–{cuts[i + 1]}" for i in range(bins)]
        if len(cuts) == bins - 1 and bins > 1:
            return [f"<{cuts[0]}"] + [f"{cuts[i]}–{cuts[i + 1]}" for i in range(bins - 2)] + [f"≥{cuts[-1]}"]
    return [f"bin {i + 1}" for i in range(bins)]


def _shares(values: Any) -> list[float] | None:
    items = _list(values)
    if not items:
        return None
    numbers = [_num(v) for v in items]
    return None if any(n is None for n in numbers) else [float(n or 0.0) for n in numbers]


def _scores(drift: dict[str, Any]) -> str | None:
    hist = _dict(drift.get("score_histogram")) or {}
    run = _shares(hist.get("run"))
    parts = []
    if run is not None:
        run = run[:MAX_CELLS]
        ref = _shares(hist.get("reference"))
        ref = ref if ref is not None and len(ref) >= len(run) else None
        labels = _bin_labels(_list(hist.get("edges")) or [], len(run))
        parts.append(paired_histogram("scores", labels, run, ref[: len(run)] if ref else None,
                                      title="Score distribution: share of records per bin, run and reference"))
        if ref is None:
            parts.append(f'<p class="note">reference distribution: {NOT_MEASURED}</p>')
    found = drift.get("score_psi")
    # one figure per model output ({output: psi}); a bare number from an older manifest
    by_output = found if isinstance(found, dict) else {"": found}
    for output, value in list(by_output.items())[:MAX_CELLS]:
        score_psi = _num(value)
        if score_psi is not None:
            name = f" {_t(output)}" if output else ""
            parts.append(f"<p>PSI of the score{name} against the reference: <b>{score_psi:.3f}</b></p>")
    segments = _segments(drift)
    if segments:
        parts.append(segments)
    return "".join(parts) or None


def _segments(drift: dict[str, Any]) -> str:
    segments = _dict(drift.get("segments"))
    if not segments:
        return ""
    rows = []
    for field, values in list(segments.items())[:MAX_ROWS]:
        for value, figures in list((_dict(values) or {}).items())[:MAX_ROWS]:
            f = _dict(figures) or {}
            rows.append([_t(field), _t(value), _count(f.get("records")), _share(f.get("decision_rate")),
                         _share(f.get("reference"))])
    return "<h2>Decision rate by segment</h2>" + _table(
        ["segment", "value", "records", "decision rate", "reference"], rows, {2, 3, 4})


def _psi(drift: dict[str, Any]) -> str | None:
    psi = _dict(drift.get("psi"))
    if not psi:
        return None
    thresholds = _dict(drift.get("thresholds")) or {}
    limit = _num(thresholds.get("psi"))
    figures = list(_figures(psi).items())
    unmeasured = len(psi) - len(figures)
    figures.sort(key=lambda kv: kv[1], reverse=True)
    bars = [Bar(k, v, breach=limit is not None and v > limit) for k, v in figures[:MAX_BARS]]
    if not bars:
        return None
    parts = [horizontal_bars("psi", bars, title="PSI per feature against the reference", threshold=limit)]
    breached = [b.label for b in bars if b.breach]
    if breached:
        parts.append(f'<p class="breach">Over the PSI threshold ({limit:.3f}): '
                     f"{escape(', '.join(breached))}</p>")
    if len(figures) > MAX_BARS:
        parts.append(f'<p class="note">{len(figures) - MAX_BARS} more features with lower PSI not drawn</p>')
    if unmeasured:
        parts.append(f'<p class="note">{unmeasured} features without a PSI (not profiled or no values)</p>')
    return "".join(parts)


def _rejected_by(m: dict[str, Any]) -> dict[str, float] | None:
    """Rejects per reason class: the manifest's `rejected_by`, else (older manifests) its
    lgw_records_rejected_total series."""
    given = _dict(m.get("rejected_by"))
    if given is not None:
        return _figures(given)
    series = _list((_dict(m.get("metrics")) or {}).get("lgw_records_rejected_total"))
    if series is None:
        return None
    out: dict[str, float] = {}
    for item in series:
        s = _dict(item) or {}
        reason, value = (_dict(s.get("labels")) or {}).get("reason"), _num(s.get("value"))
        if reason is not None and value is not None:
            out[str(reason)] = out.get(str(reason), 0.0) + value
    return out


def _rejects(m: dict[str, Any], quality: dict[str, Any]) -> str | None:
    by_reason = _rejected_by(m)
    fields = _dict(quality.get("fields")) or {}
    by_field = []
    for field, figures in fields.items():
        rejects = _dict((_dict(figures) or {}).get("rejects")) or {}
        counted = {str(k): n for k, v in rejects.items() if (n := _int(v))}
        if counted:
            by_field.append((str(field), sum(counted.values()), counted))
    if by_reason is None and not by_field:
        return None
    parts = []
    if by_reason:
        bars = sorted((Bar(k, v) for k, v in by_reason.items()), key=lambda b: b.value, reverse=True)
        parts.append(horizontal_bars("rejects", bars[:MAX_BARS], title="Rejected records per reason class",
                                     fmt="{:,.0f}", colour=BREACH))
    elif by_reason is not None:
        parts.append("<p>No record was rejected.</p>")
    if by_field:
        by_field.sort(key=lambda row: row[1], reverse=True)
        rows = [[_t(f), f"{total:,}", _t(", ".join(f"{k}: {n:,}" for k, n in sorted(c.items())))]
                for f, total, c in by_field[:MAX_ROWS]]
        parts.append("<h2>Rejects by field</h2>" + _table(["field", "rejects", "by reason class"], rows, {1}))
    else:
        parts.append(f'<p class="note">rejects by field: {NOT_MEASURED}</p>')
    return "".join(parts)


def _scoring(m: dict[str, Any], drift: dict[str, Any]) -> str | None:
    scored_by = _dict(m.get("scored_by"))
    if scored_by is None:
        return None
    counts = _figures(scored_by)
    model, fallback = counts.pop("model", 0.0), counts.pop("fallback", 0.0)
    parts_ = [("model", model, RUN), ("fallback", fallback, REFERENCE)]
    parts_ += [(k, v, "#9467bd") for k, v in sorted(counts.items())[:4]]  # any other scorer, as given
    total = sum(v for _, v, _ in parts_)
    if total <= 0:
        return "<p>No record was scored.</p>"
    out = [share_bar("scored_by", parts_, title="Records scored by the model and by the fallback rules")]
    facts = [f"model {model:,.0f}", f"fallback {fallback:,.0f}"]
    share = _num(drift.get("fallback_share"))
    facts.append(f"fallback share {share if share is not None else fallback / total:.1%}")
    agreement = _num(drift.get("shadow_agreement"))
    agreement = agreement if agreement is not None else _num(m.get("shadow_agreement"))
    if agreement is not None:
        facts.append(f"shadow agreement (rules vs model) {agreement:.1%}")
    out.append(f"<p>{escape('; '.join(facts))}</p>")
    return "".join(out)


def _cells(entries: list[Any]) -> list[Cell]:
    """The timeline's cells: one per batch, or, past MAX_CELLS batches, one per group of
    consecutive batches showing the worst breaker state of the group."""
    batches = [e for e in (_dict(x) for x in entries) if e is not None]
    group = max(1, math.ceil(len(batches) / MAX_CELLS))
    cells = []
    for start in range(0, len(batches), group):
        chunk = batches[start: start + group]
        states = [str(b.get("breaker")) for b in chunk]
        state = max(states, key=lambda s: _BREAKER_RANK.get(s, -1))
        records = sum(_int(b.get("records")) or 0 for b in chunk)
        scored = [_dict(b.get("scored_by")) or {} for b in chunk]
        fallback = sum(_num(s.get("fallback")) or 0.0 for s in scored)
        total = fallback + sum(_num(s.get("model")) or 0.0 for s in scored)
        first, last = chunk[0].get("batch"), chunk[-1].get("batch")
        label = f"batch {first}" if len(chunk) == 1 else f"batches {first}–{last}"
        cells.append(Cell(label[:MAX_TEXT], state[:40], fallback / total if total else 0.0, records))
    return cells


def _breaker(m: dict[str, Any]) -> str | None:
    entries = _list(m.get("timeline"))
    if not entries:
        return None
    cells = _cells(entries)
    if not cells:
        return None
    parts = [timeline("breaker", cells, title="Breaker state and fallback share per batch")]
    opened = sum(1 for c in cells if c.state == "open")
    parts.append(f"<p>{len(entries):,} batches; breaker open in {opened:,} of the {len(cells):,} cells shown.</p>")
    return "".join(parts)


def _review(m: dict[str, Any]) -> str | None:
    review = _dict(m.get("review"))
    if review is None:
        return None
    return (f'<div class="counts"><div class="count" data-count="review_queued"><b>{_count(review.get("queued"))}'
            f'</b>queued for review by this run</div><div class="count" data-count="review_pending">'
            f'<b>{_count(review.get("pending"))}</b>pending in the queue</div></div>')


def _quality(m: dict[str, Any], quality: dict[str, Any], drift: dict[str, Any],
             ref: dict[str, Any] | None) -> str | None:
    fields = _dict(quality.get("fields"))
    out_of_range = _dict(drift.get("out_of_range")) or {}
    null_drift = _dict(drift.get("null_rate")) or {}
    ref_columns = _dict((ref or {}).get("columns")) or {}
    if not fields and not out_of_range and not null_drift:
        return None
    records = _num((_dict(m.get("counts")) or {}).get("records_in")) or 0.0
    names = list(dict.fromkeys([*(fields or {}), *out_of_range, *null_drift]))
    rows = []
    for name in names:
        f = _dict((fields or {}).get(name)) or {}
        drifted = _dict(null_drift.get(name)) or {}
        null_rate = _num(f.get("null_rate"))
        null_rate = null_rate if null_rate is not None else _num(drifted.get("run"))
        ref_null = _num(drifted.get("reference"))
        if ref_null is None:
            ref_null = _num((_dict(ref_columns.get(name)) or {}).get("null_rate"))
        rejects = sum(n for v in (_dict(f.get("rejects")) or {}).values() if (n := _int(v)) is not None)
        reject_rate = rejects / records if records else None
        oor = _num(out_of_range.get(name))
        score = max(null_rate or 0.0, reject_rate or 0.0, oor or 0.0)
        rows.append((score, [_t(name), _share(null_rate), _share(ref_null), f"{rejects:,}", _share(reject_rate),
                             _share(oor), _t(f.get("min"), 40), _t(f.get("max"), 40)]))
    rows.sort(key=lambda r: r[0], reverse=True)
    parts = []
    overall = _num(quality.get("reject_rate"))
    if overall is not None:
        parts.append(f"<p>Reject rate of the run: <b>{overall:.2%}</b></p>")
    parts.append(_table(["field", "null rate", "reference null rate", "rejects", "reject rate", "out of range",
                         "min", "max"], [r[1] for r in rows[:MAX_ROWS]], {1, 2, 3, 4, 5}))
    if len(rows) > MAX_ROWS:
        parts.append(f'<p class="note">{len(rows) - MAX_ROWS} more fields with fewer problems not shown</p>')
    return "".join(parts)


def _examples(m: dict[str, Any]) -> str | None:
    examples = _dict(m.get("examples"))
    if examples is None:
        return None
    parts = []
    rejects = [r for r in (_dict(x) for x in _list(examples.get("rejects")) or []) if r is not None]
    if rejects:
        rows = [[_t(r.get("record")), _t(r.get("field")), _t(r.get("reason")), f'<code>{_t(r.get("raw"))}</code>']
                for r in rejects[:MAX_EXAMPLES]]
        parts.append("<h2>Rejected records</h2>" + _table(["record", "field", "reason", "raw (masked)"], rows, {0}))
    records = [r for r in (_dict(x) for x in _list(examples.get("records")) or []) if r is not None]
    if records:
        columns = list(dict.fromkeys(k for r in records[:MAX_EXAMPLES] for k in r))[:MAX_COLUMNS]
        rows = [[_t(r.get(c), 60) for c in columns] for r in records[:MAX_EXAMPLES]]
        parts.append("<h2>Records</h2>" + _table([str(c)[:60] for c in columns], rows))
    return "".join(parts) or "<p>No example was kept.</p>"


def _pii(m: dict[str, Any]) -> str | None:
    pii = _dict(m.get("pii"))
    if pii is None:
        return None
    if not pii:
        return "<p>No field of the contract is marked pii.</p>"
    rows = [[_t(k), f'<span data-policy="{_t(v, 20)}">{_t(v, 20)}</span>'] for k, v in list(pii.items())[:100]]
    return _table(["field", "policy"], rows) + (
        '<p class="note">clear: written as read; mask: all but a few characters hidden; hash: replaced by a '
        "keyed hash; drop: not written at all</p>")


__all__ = ["CSP", "NOT_MEASURED", "render_report"]
