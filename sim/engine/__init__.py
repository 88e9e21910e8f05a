"""The engine: a small kernel (clock, event order, run loop, event log, policy calls), the device ledger,
the subsystems that plug into it (training in ``sim.training``, serving in ``sim.serving``), the co-location
broker between them, and ``Simulation``, which assembles one run."""

from sim.engine.kernel import EventOrder, Kernel
from sim.engine.simulation import Simulation
from sim.training.subsystem import PreemptionCost

__all__ = ["EventOrder", "Kernel", "PreemptionCost", "Simulation"]
