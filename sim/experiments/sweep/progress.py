"""A one-line sweep progress bar on stderr: points done of total, failures, elapsed time and ETA.

Shown only on a terminal; redrawn at most twice a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class SweepProgress:
    """``update(done, failed)`` redraws; ``close()`` ends the line."""

    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None,
                 label: str = "points") -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0 and self.stream.isatty()
        self.total = total
        self.label = label
        self.start = time.monotonic()
        self._last = -1.0
        self._drawn = False
        self._state = (0, 0)

    def update(self, done: int, failed: int, *, force: bool = False) -> None:
        self._state = (done, failed)
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self.stream.write("\r" + self.line(done, failed, now - self.start))
        self.stream.flush()
        self._drawn = True

    def line(self, done: int, failed: int, elapsed: float) -> str:
        """``[#####-----] 12/40 points, 1 failed  elapsed 10s  eta 23s``."""
        fraction = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(30 * fraction)
        eta = f"{elapsed * (1 - fraction) / fraction:.0f}s" if fraction > 0 else "?"
        failures = f", {failed} failed" if failed else ""
        return f"[{bar:<30}] {done}/{self.total} {self.label}{failures}  elapsed {elapsed:.0f}s  eta {eta}  "

    def close(self) -> None:
        if self._drawn:
            self.update(*self._state, force=True)
            self.stream.write("\n")
            self.stream.flush()
