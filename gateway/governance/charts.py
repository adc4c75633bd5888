"""Inline SVG charts for the run report, drawn in Python: no chart library, no script.

The report must open offline and under a Content-Security-Policy that forbids scripts,
so every chart is plain SVG markup. Each chart carries what a test (or a reader of the
source) needs to tell an empty chart from a drawn one: `data-chart` names it,
`data-points` counts its data points, and every bar is a `<rect data-value="...">`
holding the number it draws. Every label is escaped: the values come from a manifest
that may have been written by anyone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# One palette for the whole report (colour-blind safe pairs: blue/orange, grey).
RUN, REFERENCE, BREACH, OK, MUTED = "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9e9e9e"
BREAKER_COLOURS = {"closed": OK, "half_open": "#ffbf00", "open": BREACH}

_LABEL_CHARS = 28  # longer labels are cut (the full text stays in the bar's <title>)


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value, and whether it is over its threshold."""

    label: str
    value: float
    breach: bool = False


def _n(value: float) -> str:
    """A number for an SVG attribute: finite, short, never in exponent notation."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def _value(value: float) -> str:
    """A bar's `data-value`: the number as given (repr keeps it exact), finite only."""
    return repr(float(value)) if math.isfinite(value) else "0"


def _cut(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _open(name: str, points: int, width: float, height: float, title: str) -> str:
    return (f'<svg class="chart" data-chart="{escape(name)}" data-points="{points}" role="img" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" '
            f'width="{_n(width)}" height="{_n(height)}" aria-label="{escape(title)}"><title>{escape(title)}</title>')


def horizontal_bars(name: str, bars: Sequence[Bar], *, title: str, threshold: float | None = None,
                    fmt: str = "{:.3f}", colour: str = RUN) -> str:
    """One horizontal bar per label (PSI per feature, rejects per reason): a threshold
    line where one applies, bars over it in the breach colour."""
    row, left, plot, right = 22, 190, 360, 70
    top = 8
    height = top + row * len(bars) + 24
    top_value = max([b.value for b in bars if math.isfinite(b.value)] + [threshold or 0.0, 1e-12])
    scale = plot / top_value
    parts = [_open(name, len(bars), left + plot + right, height, title)]
    for i, bar in enumerate(bars):
        y = top + i * row
        value = bar.value if math.isfinite(bar.value) and bar.value > 0 else 0.0
        fill = BREACH if bar.breach else colour
        label = escape(_cut(bar.label))
        shown = escape(fmt.format(bar.value) if math.isfinite(bar.value) else "-")
        flag = ' data-breach="true"' if bar.breach else ""
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" class="label">{label}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{_n(max(value * scale, 1.0))}" height="{row - 6}" fill="{fill}" '
            f'data-value="{_value(bar.value)}" data-label="{escape(bar.label)}"{flag}>'
            f'<title>{escape(bar.label)}: {shown}</title></rect>'
            f'<text x="{_n(left + max(value * scale, 1.0) + 4)}" y="{y + 15}" class="value">{shown}</text>')
    if threshold is not None and math.isfinite(threshold) and threshold > 0:
        x = left + threshold * scale
        parts.append(f'<line class="threshold" x1="{_n(x)}" x2="{_n(x)}" y1="{top - 4}" '
                     f'y2="{top + row * len(bars) + 2}" stroke="{BREACH}" stroke-dasharray="4 3" '
                     f'data-value="{_value(threshold)}"/>'
                     f'<text x="{_n(x)}" y="{height - 6}" text-anchor="middle" class="value">'
                     f'threshold {escape(fmt.format(threshold))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def paired_histogram(name: str, labels: Sequence[str], run: Sequence[float], reference: Sequence[float] | None,
                     *, title: str) -> str:
    """Two bars per bin, run beside reference, as shares (0..1) of their records."""
    bins = len(labels)
    pair = 2 if reference is not None else 1
    slot, bar, left, top, plot_h = 52, 16, 44, 10, 160
    width = left + slot * bins + 20
    height = top + plot_h + 52
    highest = max([v for v in (*run, *(reference or ())) if math.isfinite(v)] + [1e-12])
    scale = plot_h / highest
    parts = [_open(name, bins, width, height, title)]
    base = top + plot_h
    parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{base}" y2="{base}" stroke="{MUTED}"/>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="value">{highest:.0%}</text>')
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - pair * bar) / 2
        series = [("run", RUN, run[i])] + ([("reference", REFERENCE, reference[i])] if reference is not None else [])
        for j, (who, fill, value) in enumerate(series):
            v = value if math.isfinite(value) and value > 0 else 0.0
            h = v * scale
            parts.append(f'<rect x="{_n(x + j * bar)}" y="{_n(base - h)}" width="{bar - 1}" height="{_n(h)}" '
                         f'fill="{fill}" data-series="{who}" data-value="{_value(value)}">'
                         f'<title>{escape(label)} {who}: {value:.1%}</title></rect>')
        parts.append(f'<text x="{_n(left + i * slot + slot / 2)}" y="{base + 14}" text-anchor="middle" '
                     f'class="tick">{escape(_cut(label, 8))}</text>')
    legend_y = base + 36
    parts.append(f'<rect x="{left}" y="{legend_y - 9}" width="10" height="10" fill="{RUN}"/>'
                 f'<text x="{left + 14}" y="{legend_y}" class="value">this run</text>')
    if reference is not None:
        parts.append(f'<rect x="{left + 90}" y="{legend_y - 9}" width="10" height="10" fill="{REFERENCE}"/>'
                     f'<text x="{left + 104}" y="{legend_y}" class="value">reference</text>')
    parts.append("</svg>")
    return "".join(parts)


def share_bar(name: str, parts_: Sequence[tuple[str, float, str]], *, title: str) -> str:
    """One stacked bar of counts (scored by the model vs by the fallback rules)."""
    width, height, left, plot = 560, 54, 10, 540
    total = sum(v for _, v, _ in parts_ if math.isfinite(v) and v > 0) or 1.0
    out = [_open(name, len(parts_), width, height, title)]
    x = float(left)
    for label, value, fill in parts_:
        v = value if math.isfinite(value) and value > 0 else 0.0
        w = plot * v / total
        out.append(f'<rect x="{_n(x)}" y="6" width="{_n(w)}" height="22" fill="{fill}" '
                   f'data-label="{escape(label)}" data-value="{_value(value)}">'
                   f'<title>{escape(label)}: {value:,.0f} ({v / total:.1%})</title></rect>')
        x += w
    x = float(left)
    for label, value, fill in parts_:
        v = value if math.isfinite(value) and value > 0 else 0.0
        out.append(f'<rect x="{_n(x)}" y="38" width="10" height="10" fill="{fill}"/>'
                   f'<text x="{_n(x + 14)}" y="47" class="value">{escape(_cut(label))} {v / total:.1%}</text>')
        x += 150
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Cell:
    """One step of the timeline: a batch (or several, on a long run), its breaker state
    and the share of its records the fallback rules scored."""

    label: str
    state: str
    fallback_share: float
    records: int


def timeline(name: str, cells: Sequence[Cell], *, title: str) -> str:
    """The breaker's state per batch as a strip of coloured cells, the fallback share of
    each batch as a bar below it."""
    left, width_plot, strip, bars_h = 70, 560, 18, 30
    step = width_plot / max(len(cells), 1)
    height = 8 + strip + 6 + bars_h + 34
    out = [_open(name, len(cells), left + width_plot + 10, height, title)]
    out.append(f'<text x="{left - 6}" y="{8 + 13}" text-anchor="end" class="label">breaker</text>'
               f'<text x="{left - 6}" y="{8 + strip + 6 + 20}" text-anchor="end" class="label">fallback</text>')
    for i, cell in enumerate(cells):
        x = left + i * step
        fill = BREAKER_COLOURS.get(cell.state, MUTED)
        share = cell.fallback_share if math.isfinite(cell.fallback_share) else 0.0
        h = bars_h * min(max(share, 0.0), 1.0)
        y_bar = 8 + strip + 6 + bars_h - h
        out.append(f'<rect x="{_n(x)}" y="8" width="{_n(max(step - 0.5, 0.5))}" height="{strip}" fill="{fill}" '
                   f'data-state="{escape(cell.state)}" data-value="{cell.records}">'
                   f'<title>{escape(cell.label)}: breaker {escape(cell.state)}, {cell.records:,} records</title></rect>'
                   f'<rect x="{_n(x)}" y="{_n(y_bar)}" width="{_n(max(step - 0.5, 0.5))}" height="{_n(h)}" '
                   f'fill="{REFERENCE}" data-value="{_value(share)}"><title>{escape(cell.label)}: '
                   f'{share:.1%} fallback</title></rect>')
    legend_y = height - 8
    x = left
    for state, fill in BREAKER_COLOURS.items():
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{fill}"/>'
                   f'<text x="{x + 14}" y="{legend_y}" class="value">{state.replace("_", "-")}</text>')
        x += 100
    out.append("</svg>")
    return "".join(out)


__all__ = ["BREACH", "BREAKER_COLOURS", "MUTED", "OK", "REFERENCE", "RUN", "Bar", "Cell", "horizontal_bars",
           "paired_histogram", "share_bar", "timeline"]
