"""The error a sweep raises about its results directory, its executor or its scheduler address."""

from __future__ import annotations

from sim.errors import GpusimError


class SweepError(GpusimError):
    """A sweep cannot start or go on: the message names the directory, executor or address, and what to do."""
