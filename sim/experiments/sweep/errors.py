"""The errors a sweep raises: about its results directory, its executor or its scheduler address, and about
points whose workers died."""

from __future__ import annotations

from typing import Any

from sim.errors import GpusimError


class SweepError(GpusimError):
    """A sweep cannot start or go on: the message names the directory, executor or address, and what to do."""


class PointsDiedError(SweepError):
    """``Experiment.run`` ended with points whose worker died on every attempt: the message says how many and
    the first one's cause; ``sweep`` holds every finished point (``sweep.errors()`` lists the dead ones)."""

    def __init__(self, message: str, sweep: Any, died: int) -> None:  # sweep: a sim.experiments.sweep.Sweep
        super().__init__(message)
        self.sweep = sweep
        self.died = died
