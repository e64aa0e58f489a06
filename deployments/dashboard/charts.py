"""Server-side SVG line charts for the dashboard: pure Python, no ORM, no JavaScript.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies);
every chart carries a ``<title>`` and a ``<desc>`` summarising its data as its text alternative,
axis labels, and a legend, and series are told apart by dash pattern as well as colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

# Okabe & Ito (2008), without black and yellow (too little contrast on white for thin lines).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2")

WIDTH = 640
HEIGHT = 260
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 36
MARGIN_BOTTOM = 48


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float | None]]


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round tick values from 0 up to at least ``maximum``."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < maximum - 1e-12:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _default_format(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _summary(series: Sequence[Series], value_format: Callable[[float], str], unit: str) -> str:
    parts = []
    for one in series:
        values = [v for _, v in one.points if v is not None]
        if not values:
            parts.append(f"{one.label}: no data.")
            continue
        parts.append(
            f"{one.label}: latest {value_format(values[-1])}{unit}, "
            f"min {value_format(min(values))}{unit}, max {value_format(max(values))}{unit}."
        )
    return " ".join(parts)


def line_chart(
    *,
    title: str,
    series: Sequence[Series],
    y_label: str,
    x_label: str = "time (UTC)",
    unit: str = "",
    value_format: Callable[[float], str] = _default_format,
    chart_id: str = "chart",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An accessible SVG line chart of time series (values may be None for gaps)."""
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    times = sorted({t for one in series for t, _ in one.points})
    values = [v for one in series for _, v in one.points if v is not None]
    ticks = nice_ticks(max(values, default=0.0))
    y_max = ticks[-1] or 1.0
    t0 = times[0].timestamp() if times else 0.0
    span = (times[-1].timestamp() - t0) if len(times) > 1 else 1.0

    def x_of(moment: datetime) -> float:
        return MARGIN_LEFT + (moment.timestamp() - t0) / span * plot_w

    def y_of(value: float) -> float:
        return MARGIN_TOP + plot_h - value / y_max * plot_h

    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" class="chart" id={quoteattr(chart_id)} '
        f'data-testid={quoteattr(chart_id)} aria-labelledby="{title_id} {desc_id}">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<desc id="{desc_id}">{escape(_summary(series, value_format, unit))}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN_LEFT}" y="20" font-size="14" font-weight="600" fill="#1f2933">'
        f"{escape(title)}</text>",
    ]
    for tick in ticks:
        y = y_of(tick)
        out.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{width - MARGIN_RIGHT}" y2="{y:.1f}" '
            f'stroke="#e4e7eb" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#52606d">{escape(value_format(tick))}</text>'
        )
    base_y = MARGIN_TOP + plot_h
    out.append(
        f'<line x1="{MARGIN_LEFT}" y1="{base_y}" x2="{width - MARGIN_RIGHT}" y2="{base_y}" '
        f'stroke="#52606d" stroke-width="1"/>'
    )
    if times:
        labels = 6
        step = max(1, math.ceil(len(times) / labels))
        for moment in times[::step]:
            x = x_of(moment)
            out.append(
                f'<line x1="{x:.1f}" y1="{base_y}" x2="{x:.1f}" y2="{base_y + 4}" '
                f'stroke="#52606d"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{base_y + 16}" font-size="11" text-anchor="middle" '
                f'fill="#52606d">{moment:%H:%M}</text>'
            )
    out.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{height - 6}" font-size="12" '
        f'text-anchor="middle" fill="#1f2933">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{MARGIN_TOP + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'fill="#1f2933" transform="rotate(-90 14 {MARGIN_TOP + plot_h / 2:.1f})">'
        f"{escape(y_label)}</text>"
    )
    legend_x = width - MARGIN_RIGHT
    for number, one in reversed(list(enumerate(series))):
        colour = OKABE_ITO[number % len(OKABE_ITO)]
        dash = DASHES[number % len(DASHES)]
        label_width = 7 * len(one.label) + 28
        legend_x -= label_width
        out.append(
            f'<line x1="{legend_x:.0f}" y1="16" x2="{legend_x + 20:.0f}" y2="16" '
            f'stroke="{colour}" stroke-width="3"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/>"
        )
        out.append(
            f'<text x="{legend_x + 24:.0f}" y="20" font-size="11" fill="#1f2933">'
            f"{escape(one.label)}</text>"
        )
    for number, one in enumerate(series):
        colour = OKABE_ITO[number % len(OKABE_ITO)]
        dash = DASHES[number % len(DASHES)]
        runs: list[list[str]] = [[]]
        for moment, value in one.points:
            if value is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{x_of(moment):.1f},{y_of(value):.1f}")
        for run in runs:
            if not run:
                continue
            if len(run) == 1:
                x, y = run[0].split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
                continue
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'stroke-linejoin="round" points="{" ".join(run)}"'
                + (f' stroke-dasharray="{dash}"' if dash else "")
                + f"><title>{escape(one.label)}</title></polyline>"
            )
    if not values:
        out.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{MARGIN_TOP + plot_h / 2:.1f}" '
            f'font-size="13" text-anchor="middle" fill="#7b8794">No data in this window</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _money_format(value: float) -> str:
    return f"${value:,.2f}"


def trend_charts(trends: dict) -> list[dict]:
    """The dashboard's trend charts from ``deployments.selectors.fleet.fleet_trends`` output."""
    hours = trends["hours"]
    charts = [
        {
            "id": "chart-invocations",
            "svg": line_chart(
                title=f"Invocations per minute, last {hours} h",
                series=[
                    Series("invocations / min", trends["invocations_per_minute"]),
                    Series("cold starts", trends["cold_starts"]),
                ],
                y_label="requests per minute",
                chart_id="chart-invocations",
            ),
        }
    ]
    if "memory_utilization_pct" in trends:
        charts.append(
            {
                "id": "chart-utilization",
                "svg": line_chart(
                    title=f"Host memory utilization, last {hours} h",
                    series=[Series("used / budget", trends["memory_utilization_pct"])],
                    y_label="% of memory budget",
                    unit=" %",
                    chart_id="chart-utilization",
                ),
            }
        )
        charts.append(
            {
                "id": "chart-cost",
                "svg": line_chart(
                    title=f"Fleet cost per hour, last {hours} h",
                    series=[Series("USD per hour", trends["usd_per_hour"])],
                    y_label="USD per hour",
                    value_format=_money_format,
                    chart_id="chart-cost",
                ),
            }
        )
    return charts


__all__ = ["OKABE_ITO", "Series", "line_chart", "nice_ticks", "trend_charts"]
