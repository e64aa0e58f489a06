"""Formatting filters for the dashboard's figures (money, percentages, memory)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.734 → "73.4 %"; None → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def usd(value: float | None) -> str:
    """1234.5 → "$1,234.50"; None → "—"."""
    if value is None or value == "":
        return "—"
    return f"${float(value):,.2f}"


@register.filter
def mb(value: float | None) -> str:
    """Memory in MB, or GB above 10 GB; None → "—"."""
    if value is None or value == "":
        return "—"
    value = float(value)
    if value >= 10240:
        return f"{value / 1024:,.1f} GB"
    return f"{value:,.0f} MB"


@register.filter
def ms(value: float | None) -> str:
    """Milliseconds; None → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value):,.0f} ms"


@register.filter
def tokens_per_s(value: float | None) -> str:
    """Generation speed: 45.61 → "45.6 tokens/s"; None → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value):,.1f} tokens/s"
