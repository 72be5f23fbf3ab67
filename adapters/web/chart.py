"""The interval profile as a server-side SVG chart: no script, no chart library, nothing
fetched by the browser; readable without colour (estimated and edited values have
their own marker shapes, listed in the legend, and each marker has a ``<title>``).

A meter-month of 15-minute data (2,976 values) is one polyline and one marker per
reading that is not plain valid, or that has more than one version.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import NamedTuple

from cim_schemas.codes.quality import ReadingQualityType
from mdm.qualities import codes_of

WIDTH = 900
HEIGHT = 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40


class Point(NamedTuple):
    ts: datetime
    value: Decimal
    quality: str
    version: int


@functools.lru_cache(maxsize=1024)
def quality_kind(quality: str) -> str:
    """``valid``, ``estimated`` (category 8), ``edited`` (7) or ``flagged`` (any other
    category but 0); the most telling of several codes."""
    kinds = set()
    for code in filter(None, (c.strip() for c in codes_of(quality).split(","))):
        try:
            q = ReadingQualityType.parse(code)
        except ValueError:
            kinds.add("flagged")
            continue
        if q.is_estimated:
            kinds.add("estimated")
        elif q.category == 7:
            kinds.add("edited")
        elif not q.is_valid:
            kinds.add("flagged")
    for kind in ("estimated", "edited", "flagged"):
        if kind in kinds:
            return kind
    return "valid"


def _marker(kind: str, x: float, y: float, title: str, revised: bool) -> str:
    cls = f"mk {kind}{' revised' if revised else ''}"
    tip = f"<title>{escape(title)}</title>"
    if kind == "estimated":
        return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">{tip}</circle>'
    if kind == "edited":
        return (
            f'<rect class="{cls}" x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6">{tip}</rect>'
        )
    if kind == "flagged":
        return f'<path class="{cls}" d="M{x:.1f},{y - 4:.1f}l4,7h-8z">{tip}</path>'
    return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="none">{tip}</circle>'


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    while magnitude > raw:
        magnitude /= 10
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = (low // step) * step
    ticks = []
    value = first
    while value <= high + step / 2:
        ticks.append(round(value, 10))
        value += step
    return ticks


def profile_svg(points: Sequence[Point], *, title: str, unit: str = "") -> str:
    """An SVG line chart of ``points`` (ordered by time)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" aria-labelledby="chart-title">'
        f'<title id="chart-title">{escape(title)}</title>'
    )
    if not points:
        return (
            head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "no readings in this period</text></svg>"
        )
    values = [float(p.value) for p in points]
    ticks = _nice_ticks(min(0.0, min(values)), max(values))
    low, high = ticks[0], ticks[-1]
    if high <= low:
        high = low + 1.0
    t0 = points[0].ts.timestamp()
    span = max(points[-1].ts.timestamp() - t0, 1.0)

    def x_of(ts: datetime) -> float:
        return LEFT + (ts.timestamp() - t0) / span * plot_w

    def y_of(v: float) -> float:
        return TOP + plot_h - (v - low) / (high - low) * plot_h

    parts = [head, '<g class="axis">']
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    labels = 6
    for n in range(labels + 1):
        ts = t0 + span * n / labels
        x = LEFT + plot_w * n / labels
        when = datetime.fromtimestamp(ts, points[0].ts.tzinfo)
        text = when.strftime("%d %b %H:%M")
        anchor = "start" if n == 0 else "end" if n == labels else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="{anchor}">{text}</text>'
        )
    if unit:
        parts.append(f'<text x="8" y="{TOP + 10}" class="unit">{escape(unit)}</text>')
    parts.append("</g>")
    line = " ".join(f"{x_of(p.ts):.1f},{y_of(v):.1f}" for p, v in zip(points, values, strict=True))
    parts.append(f'<polyline class="series" points="{line}"/>')
    for p, v in zip(points, values, strict=True):
        kind = quality_kind(p.quality)
        if kind == "valid" and p.version <= 1:
            continue
        tip = f"{p.ts.isoformat()} {p.value} {kind}" + (
            f" (version {p.version})" if p.version > 1 else ""
        )
        parts.append(_marker(kind, x_of(p.ts), y_of(v), tip, p.version > 1))
    parts.append("</svg>")
    return "".join(parts)
