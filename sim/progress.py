"""A minimal progress bar on stderr, shown only on a terminal and only for runs longer than a moment."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done)`` redraws at most twice a second, starting after ``delay`` seconds."""

    def __init__(self, total: int, *, enabled: bool = True, label: str = "jobs", delay: float = 2.0,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0 and self.stream.isatty()
        self.total = total
        self.label = label
        self.start = time.monotonic()
        self.delay = delay
        self._last = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay or now - self._last < 0.5:
            return
        self._last = now
        self._draw(done, now)

    def _draw(self, done: int, now: float) -> None:
        fraction = min(1.0, done / self.total)
        elapsed = now - self.start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        bar = "#" * int(30 * fraction)
        self.stream.write(f"\r[{bar:<30}] {done}/{self.total} {self.label}  {elapsed:5.1f}s  eta {eta:5.1f}s")
        self.stream.flush()
        self._drawn = True

    def close(self, done: int) -> None:
        if self._drawn:
            self._draw(done, time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
