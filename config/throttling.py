"""Request rates of the management API as the settings state them (``"1200/minute"``)."""

from __future__ import annotations

import re

from config.env import ConfigurationError

WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(second|minute|hour|day)s?\s*")


def parse_rate(value: str, *, name: str) -> tuple[int, int] | None:
    """``"N/second|minute|hour|day"`` as (requests, window in seconds); ``0`` or empty: no limit."""
    if value.strip() in ("", "0"):
        return None
    match = _RATE.fullmatch(value.lower())
    if match is None:
        raise ConfigurationError(
            f"{name} must look like 1200/minute (per second, minute, hour or day), or 0 for no "
            f"limit; got {value!r}."
        )
    requests = int(match.group(1))
    return (requests, WINDOW_SECONDS[match.group(2)]) if requests else None
