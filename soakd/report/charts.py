"""Inline SVG charts, drawn in Python: no library, no CDN, no network.

A report must open years later on a machine without internet, so the HTML
carries its charts as plain SVG. Each chart is a time series plot (lines or
dots, optional log y axis, horizontal bands and lines, vertical markers for
crashes/restarts, shaded gaps) or a timeline of labelled bars (alerts). The x
axis is time since the run started, which is what a soak's reader thinks in.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]

WIDTH = 1100
HEIGHT = 316
_L, _R, _T, _B = 70, 20, 46, 40  # plot margins (title and legend rows on top)


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    color: str
    dash: str = ""
    dots: bool = False  # scatter instead of a line


@dataclass(frozen=True)
class Band:
    y0: float
    y1: float
    color: str
    label: str


@dataclass(frozen=True)
class HLine:
    y: float
    color: str
    label: str


@dataclass(frozen=True)
class Marker:
    x: float
    color: str
    label: str


@dataclass(frozen=True)
class Shade:
    x0: float
    x1: float
    color: str
    label: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    y_label: str
    x0: float  # the run's start (time axis origin)
    x1: float
    series: Sequence[Series]
    bands: Sequence[Band] = ()
    hlines: Sequence[HLine] = ()
    markers: Sequence[Marker] = ()
    shades: Sequence[Shade] = ()
    y_log: bool = False
    y_min: float | None = None


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(out) < 50:
        out.append(round(v, 12))
        v += step
    return out


def _time_ticks(span_s: float) -> tuple[list[float], str, float]:
    """Tick offsets (s), the unit's name and its size in seconds."""
    if span_s >= 2 * 86400:
        unit, size = "d", 86400.0
    elif span_s >= 2 * 3600:
        unit, size = "h", 3600.0
    elif span_s >= 120:
        unit, size = "min", 60.0
    else:
        unit, size = "s", 1.0
    return [t * size for t in nice_ticks(0.0, span_s / size, 8)], unit, size


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


class _Scale:
    def __init__(self, c: Chart, ys: list[float]) -> None:
        self.x0, self.x1 = c.x0, max(c.x1, c.x0 + 1.0)
        self.log = c.y_log
        lo = min(ys) if ys else 0.0
        hi = max(ys) if ys else 1.0
        if c.y_min is not None:
            lo = min(lo, c.y_min)
        if self.log:
            lo = max(min((y for y in ys if y > 0), default=0.001), 1e-3)
            hi = max(hi, lo * 10)
            self.lo, self.hi = math.log10(lo) - 0.05, math.log10(hi) + 0.05
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
            self.lo, self.hi = (lo - pad if lo < 0 or c.y_min is None else lo), hi + pad
            if c.y_min is None and lo >= 0 and self.lo < 0:
                self.lo = 0.0
        self.w = WIDTH - _L - _R
        self.h = HEIGHT - _T - _B

    def x(self, t: float) -> float:
        return _L + (t - self.x0) / (self.x1 - self.x0) * self.w

    def y(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-9))
        return _T + self.h - (v - self.lo) / (self.hi - self.lo) * self.h

    def y_ticks(self) -> list[tuple[float, str]]:
        if self.log:
            first, last = math.floor(self.lo), math.ceil(self.hi)
            steps = (1.0, 2.0, 5.0) if self.hi - self.lo < 4 else (1.0,)
            vals = [m * 10.0**e for e in range(first, last + 1) for m in steps]
            return [(v, _fmt(v)) for v in vals if self.lo <= math.log10(v) <= self.hi]
        return [(v, _fmt(v)) for v in nice_ticks(self.lo, self.hi)]


def _path(points: Sequence[Point], s: _Scale) -> str:
    parts: list[str] = []
    for i, (t, v) in enumerate(points):
        if s.log and v <= 0:
            continue
        parts.append(f"{'M' if not parts or i == 0 else 'L'}{s.x(t):.1f},{s.y(v):.1f}")
    return "".join(parts)


def _axes(c: Chart, s: _Scale) -> list[str]:
    out = [f'<rect class="plot" x="{_L}" y="{_T}" width="{s.w}" height="{s.h}"/>']
    for v, label in s.y_ticks():
        y = s.y(v)
        out.append(f'<line class="grid" x1="{_L}" x2="{_L + s.w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    ticks, unit, size = _time_ticks(s.x1 - s.x0)
    for off in ticks:
        x = s.x(s.x0 + off)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{_T}" y2="{_T + s.h}"/>')
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{_T + s.h + 16}" text-anchor="middle">'
            f"{off / size:g}{unit}</text>"
        )
    out.append(
        f'<text class="axis" x="14" y="{_T + s.h / 2:.0f}" transform="rotate(-90 14 '
        f'{_T + s.h / 2:.0f})" text-anchor="middle">{_esc(c.y_label)}</text>'
    )
    out.append(f'<text class="title" x="{_L}" y="18">{_esc(c.title)}</text>')
    return out


def _legend(items: list[tuple[str, str, str]]) -> list[str]:
    """One row under the title, left to right (a long legend never covers the title)."""
    out: list[str] = []
    x = float(_L)
    for label, color, dash in items:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{x:.0f}" x2="{x + 22:.0f}" y1="32" y2="32" stroke="{color}" '
            f'stroke-width="3"{d}/>'
            f'<text class="legend" x="{x + 26:.0f}" y="36">{_esc(label)}</text>'
        )
        x += 40 + 6.5 * len(label)
    return out


def render(c: Chart) -> str:
    """One chart as an ``<svg>`` element."""
    ys = [v for ser in c.series for _, v in ser.points]
    ys += [b.y0 for b in c.bands] + [b.y1 for b in c.bands] + [h.y for h in c.hlines]
    s = _Scale(c, ys)
    out = [
        f'<svg class="chart" id="{_esc(c.id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-x0="{s.x0}" data-x1="{s.x1}" data-left="{_L}" data-width="{s.w}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_esc(c.title)}">'
    ]
    out += _axes(c, s)
    for sh in c.shades:
        x0, x1 = s.x(max(sh.x0, s.x0)), s.x(min(sh.x1, s.x1))
        out.append(
            f'<rect class="shade" x="{x0:.1f}" y="{_T}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{s.h}" fill="{sh.color}"><title>{_esc(sh.label)}</title></rect>'
        )
    for b in c.bands:
        y0, y1 = s.y(b.y1), s.y(b.y0)
        out.append(
            f'<rect class="band" x="{_L}" y="{y0:.1f}" width="{s.w}" '
            f'height="{max(y1 - y0, 1):.1f}" '
            f'fill="{b.color}"><title>{_esc(b.label)}</title></rect>'
        )
    for h in c.hlines:
        y = s.y(h.y)
        out.append(
            f'<line class="hline" x1="{_L}" x2="{_L + s.w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{h.color}" stroke-dasharray="6 4"><title>{_esc(h.label)}</title></line>'
        )
    legend: list[tuple[str, str, str]] = []
    for ser in c.series:
        legend.append((ser.label, ser.color, ser.dash))
        if ser.dots:
            dots = "".join(
                f'<circle cx="{s.x(t):.1f}" cy="{s.y(v):.1f}" r="2"/>' for t, v in ser.points
            )
            out.append(
                f'<g class="data dots" fill="{ser.color}" data-label="{_esc(ser.label)}">{dots}</g>'
            )
        elif ser.points:
            d = f' stroke-dasharray="{ser.dash}"' if ser.dash else ""
            out.append(
                f'<path class="data" d="{_path(ser.points, s)}" stroke="{ser.color}" fill="none" '
                f'stroke-width="1.5"{d} data-label="{_esc(ser.label)}"/>'
            )
    for mk in c.markers:
        x = s.x(mk.x)
        out.append(
            f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{_T}" y2="{_T + s.h}" '
            f'stroke="{mk.color}" stroke-width="2"><title>{_esc(mk.label)}</title></line>'
        )
    if not ys:
        out.append(
            f'<text class="empty" x="{_L + s.w / 2:.0f}" y="{_T + s.h / 2:.0f}" '
            'text-anchor="middle">no data</text>'
        )
    out += _legend(legend)
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Bar:
    row: str
    x0: float
    x1: float
    color: str
    label: str


def render_timeline(
    id_: str, title: str, *, x0: float, x1: float, rows: Sequence[str], bars: Sequence[Bar]
) -> str:
    """Labelled horizontal bars per row (alerts, crashes, gaps) on the run's time axis."""
    row_h = 22
    top = 30  # no legend row in a timeline
    height = top + _B + max(1, len(rows)) * row_h
    left = 230
    w = WIDTH - left - _R
    span = max(x1 - x0, 1.0)

    def x(t: float) -> float:
        return left + (min(max(t, x0), x1) - x0) / span * w

    out = [
        f'<svg class="chart timeline" id="{_esc(id_)}" viewBox="0 0 {WIDTH} {height}" '
        f'data-x0="{x0}" data-x1="{x1}" data-left="{left}" data-width="{w}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_esc(title)}">',
        f'<text class="title" x="{_L}" y="18">{_esc(title)}</text>',
        f'<rect class="plot" x="{left}" y="{top}" width="{w}" height="{len(rows) * row_h}"/>',
    ]
    index = {r: i for i, r in enumerate(rows)}
    for r, i in index.items():
        y = top + i * row_h + 15
        out.append(
            f'<text class="tick" x="{left - 6}" y="{y}" text-anchor="end">{_esc(r[:34])}</text>'
        )
    for b in bars:
        row = index.get(b.row)
        if row is None:
            continue
        i = row
        bx0, bx1 = x(b.x0), x(b.x1)
        out.append(
            f'<rect class="data bar" x="{bx0:.1f}" y="{top + i * row_h + 4}" '
            f'width="{max(bx1 - bx0, 2.0):.1f}" height="{row_h - 8}" fill="{b.color}">'
            f"<title>{_esc(b.label)}</title></rect>"
        )
    ticks, unit, size = _time_ticks(span)
    base = top + len(rows) * row_h
    for off in ticks:
        out.append(
            f'<text class="tick" x="{x(x0 + off):.1f}" y="{base + 16}" text-anchor="middle">'
            f"{off / size:g}{unit}</text>"
        )
    if not bars:
        out.append(
            f'<text class="empty" x="{left + w / 2:.0f}" y="{top + 15}" text-anchor="middle">'
            "none during the run</text>"
        )
    out.append("</svg>")
    return "\n".join(out)
