"""Inline SVG figures for the report page: histograms, line charts, a scatter plot, bars. Plain strings, no
library and no script, so the page draws them offline in any browser (and prints them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

W, H = 560, 240
PAD_L, PAD_R, PAD_T, PAD_B = 52, 14, 40, 36
COLORS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def _frame(title: str, body: list[str], x_label: str, y_label: str, legend: Sequence[tuple[str, str]] = ()) -> str:
    parts = [
        f'<svg class="fig" role="img" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="{PAD_L}" y="15" class="ft">{escape(title)}</text>',
        *body,
        f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 4}" text-anchor="middle" class="fl">{escape(x_label)}</text>',
        f'<text x="12" y="{(PAD_T + H - PAD_B) / 2}" text-anchor="middle" class="fl" '
        f'transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2})">{escape(y_label)}</text>',
    ]
    x = float(PAD_L)  # the legend on its own line under the title, so a long title never runs into it
    for label, color in legend:
        parts.append(f'<rect x="{x:.0f}" y="22" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14:.0f}" y="31" class="fl">{escape(label)}</text>')
        x += 14 + 6.2 * len(label) + 16
    parts.append("</svg>")
    return "".join(parts)


def _axes(
    x0: float, x1: float, y0: float, y1: float, ticks: int = 4
) -> tuple[list[str], Callable[[float], float], Callable[[float], float]]:
    """Axis lines and tick labels; returns (elements, sx, sy) with sx/sy mapping data to pixels."""
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1

    def sx(v: float) -> float:
        return PAD_L + (v - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(v: float) -> float:
        return H - PAD_B - (v - y0) / (y1 - y0) * (H - PAD_T - PAD_B)

    el = [
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" class="ax"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" class="ax"/>',
    ]
    for i in range(ticks + 1):
        yv = y0 + (y1 - y0) * i / ticks
        xv = x0 + (x1 - x0) * i / ticks
        el.append(f'<text x="{PAD_L - 4}" y="{sy(yv) + 3:.1f}" text-anchor="end" class="tk">{_fmt(yv)}</text>')
        el.append(f'<line x1="{PAD_L}" y1="{sy(yv):.1f}" x2="{W - PAD_R}" y2="{sy(yv):.1f}" class="gr"/>')
        el.append(f'<text x="{sx(xv):.1f}" y="{H - PAD_B + 13}" text-anchor="middle" class="tk">{_fmt(xv)}</text>')
    return el, sx, sy


def histogram(title: str, edges: Sequence[float], series: Mapping[str, Sequence[int]], x_label: str) -> str:
    """Overlaid step histograms over shared bin `edges` (one series per name), counts on the y axis."""
    counts = [c for s in series.values() for c in s]
    nonzero = [i for s in series.values() for i, c in enumerate(s) if c]
    lo = edges[max(0, min(nonzero) - 1)] if nonzero else edges[0]
    hi = edges[min(len(edges) - 1, max(nonzero) + 2)] if nonzero else edges[-1]
    body, sx, sy = _axes(lo, hi, 0, max(counts, default=1) or 1)
    legend = []
    for k, (name, values) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        legend.append((name, color))
        pts = [f"{sx(edges[0]):.1f},{sy(0):.1f}"]
        for i, c in enumerate(values):
            if edges[i + 1] < lo or edges[i] > hi:
                continue
            pts.append(f"{sx(edges[i]):.1f},{sy(c):.1f} {sx(edges[i + 1]):.1f},{sy(c):.1f}")
        pts.append(f"{sx(hi):.1f},{sy(0):.1f}")
        body.append(
            f'<polyline points="{" ".join(pts[1:-1])}" fill="none" stroke="{color}" stroke-width="1.6" opacity="0.9"/>'
        )
    return _frame(title, body, x_label, "count", legend)


def line_chart(
    title: str, series: Mapping[str, Sequence[Sequence[float]]], x_label: str, y_label: str, *, y_zero: bool = False
) -> str:
    """Lines through (x, y) points, one per series name."""
    pts_all = [p for s in series.values() for p in s]
    if not pts_all:
        return ""
    xs, ys = [p[0] for p in pts_all], [p[1] for p in pts_all]
    y0 = 0.0 if y_zero else min(ys)
    body, sx, sy = _axes(min(xs), max(xs), y0, max(ys))
    legend = []
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        legend.append((name, color))
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        if len(pts) <= 60:
            body += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{color}"/>' for x, y in pts]
    return _frame(title, body, x_label, y_label, legend if len(series) > 1 else ())


def scatter(title: str, groups: Mapping[str, Sequence[Sequence[float]]]) -> str:
    """Points of each named group (queries, positives, negatives) in one shared 2-D projection."""
    pts_all = [p for g in groups.values() for p in g]
    if not pts_all:
        return ""
    xs, ys = [p[0] for p in pts_all], [p[1] for p in pts_all]
    body, sx, sy = _axes(min(xs), max(xs), min(ys), max(ys))
    legend = []
    for k, (name, pts) in enumerate(groups.items()):
        color = COLORS[k % len(COLORS)]
        legend.append((f"{name} ({len(pts)})", color))
        body += [
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{color}" fill-opacity="0.6"/>' for x, y in pts
        ]
    return _frame(title, body, "PC 1", "PC 2", legend)


def hbars(title: str, items: Sequence[tuple[str, float]], *, as_share: bool = True) -> str:
    """Horizontal bars, one per (label, value); shares are drawn against 1."""
    if not items:
        return ""
    top = 1.0 if as_share else max((v for _, v in items), default=1.0) or 1.0
    row_h = 22
    height = PAD_T + row_h * len(items) + 8
    label_w = 170
    parts = [
        f'<svg class="fig" role="img" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="4" y="15" class="ft">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = PAD_T + i * row_h
        width = max(0.0, value / top) * (W - label_w - 70)
        shown = f"{value * 100:.1f}%" if as_share else _fmt(value)
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" class="fl">{escape(label[:28])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="{row_h - 8}" fill="{COLORS[0]}"/>')
        parts.append(f'<text x="{label_w + width + 4:.1f}" y="{y + 14}" class="tk">{shown}</text>')
    parts.append("</svg>")
    return "".join(parts)


def delta_bars(title: str, deltas: Sequence[float], metric: str) -> str:
    """Per-query differences against the baseline, sorted: red below zero (losses), green above (wins)."""
    if not deltas:
        return ""
    lim = max(abs(d) for d in deltas) or 1.0
    n = len(deltas)
    body, _sx, sy = _axes(0, n, -lim, lim)
    step = (W - PAD_L - PAD_R) / n
    zero = sy(0)
    for i, d in enumerate(deltas):
        if abs(d) <= 1e-12:
            continue
        y = sy(d)
        color = "#16a34a" if d > 0 else "#dc2626"
        top, height = (y, zero - y) if d > 0 else (zero, y - zero)
        body.append(
            f'<rect x="{PAD_L + i * step:.2f}" y="{top:.1f}" width="{max(step, 0.6):.2f}" '
            f'height="{max(height, 0.5):.1f}" fill="{color}"/>'
        )
    body.append(f'<line x1="{PAD_L}" y1="{zero:.1f}" x2="{W - PAD_R}" y2="{zero:.1f}" class="ax"/>')
    return _frame(title, body, f"queries, sorted by the change in {metric}", f"Δ {metric}")


def finite(values: Sequence[float | None]) -> list[float]:
    """The finite numbers of `values`."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]
