"""What a subsystem is to the kernel: a kind of work (training jobs, inference services) with its own state,
its own events on the kernel's clock, and its own part of the run's records.

The simulation starts subsystems in the order it added them (so same-time events of a run keep one order) and
stops them at the end time. They meet only through the device ledger (``sim.engine.ledger``) and the hooks a
broker connects (``sim.engine.colocation``): a new kind of work is a new subsystem, not edits across the
engine.
"""

from __future__ import annotations

from typing import Protocol


class Subsystem(Protocol):
    """A kind of work plugged into the kernel."""

    def start(self) -> None:
        """Schedule the first events (arrivals, timers) at time 0."""

    def stop(self, end_time: float) -> None:
        """The run ended at ``end_time`` (its last event, or the horizon): account the work in progress."""

    def may_free_devices(self) -> bool:
        """Whether this subsystem may still give devices back or change the cluster (so another subsystem's
        waiting work is not starved for good)."""
        ...
