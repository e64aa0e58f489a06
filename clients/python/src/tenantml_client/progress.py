"""A one-line progress display for the wait helpers: a bar redrawn in place on a terminal, a
plain line for each change elsewhere (a log file, CI), so a long wait is never silent."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
# Off a terminal, a line is written when the status changes or the percentage passes the next
# step of this size: a 30-minute training job logs about ten lines, not a hundred.
PLAIN_STEP_PCT = 10


class ProgressDisplay:
    """Shows ``label``, a status and an optional percentage on ``stream`` (stderr by default)."""

    def __init__(self, label: str, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.started = time.monotonic()
        self._last: tuple[str, int | None] | None = None
        self._width = 0

    def update(self, status: str, pct: int | None = None) -> None:
        """Show the current status (and percentage, where the work has one)."""
        if self.interactive:
            self._redraw(status, pct)
        else:
            self._append(status, pct)

    def close(self) -> None:
        """End the display's line on a terminal; nothing to do elsewhere."""
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def _redraw(self, status: str, pct: int | None) -> None:
        elapsed = int(time.monotonic() - self.started)
        if pct is None:
            line = f"{self.label}: {status} ({elapsed} s)"
        else:
            filled = BAR_WIDTH * max(0, min(pct, 100)) // 100
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = f"{self.label} [{bar}] {pct:3d}% {status} ({elapsed} s)"
        padding = " " * max(0, self._width - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._width = len(line)

    def _append(self, status: str, pct: int | None) -> None:
        step = None if pct is None else pct // PLAIN_STEP_PCT
        if self._last is not None and self._last == (status, step):
            return
        self._last = (status, step)
        shown = status if pct is None else f"{status} {pct}%"
        self.stream.write(f"{self.label}: {shown}\n")
        self.stream.flush()
