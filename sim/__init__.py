"""The world: engine, hardware, clusters, results, config and CLI. Policies plug in by name."""

from sim.cluster import Cluster, PoolSpec, preset
from sim.contracts import Assignment, ClusterView, Decision, Placer, Scheduler
from sim.engine import EventOrder, PreemptionCost, Simulation
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError, UnknownNameError
from sim.results import Results

__all__ = [
    "Assignment", "Cluster", "ClusterView", "ConfigError", "Decision", "EventOrder", "GpusimError", "Placer",
    "PolicyError", "PoolSpec", "PreemptionCost", "Results", "Scheduler", "Simulation", "StarvationError",
    "UnknownNameError", "preset",
]
