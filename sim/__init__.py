"""The world: engine, hardware, clusters, serving, the network, results, config and CLI. Policies plug in by name.

The names a user needs are importable from here (``from sim import Simulation, ServiceSpec, NetworkSpec``);
``Experiment`` and ``Sweep`` (``sim.sweep``) load on first use.
"""

from typing import Any

from sim.accounting import AccountingOptions
from sim.cluster import Cluster, PoolSpec, preset
from sim.config import load_config
from sim.contracts import Assignment, ClusterView, Decision, Placer, Scheduler
from sim.engine import EventOrder, PreemptionCost, Simulation
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError, UnknownNameError
from sim.network.specs import Fabric, NetworkSpec, NodeNetwork, default_network
from sim.results import Results
from sim.scenario import build_simulation, run_config
from sim.serving.replica import BatchingConfig
from sim.serving.service import ContinuousBatching, FixedService, ServiceSpec

__all__ = [
    "AccountingOptions", "Assignment", "BatchingConfig", "Cluster", "ClusterView", "ConfigError",
    "ContinuousBatching", "Decision", "EventOrder", "Experiment", "Fabric", "FixedService", "GpusimError",
    "NetworkSpec", "NodeNetwork", "Placer", "PolicyError", "PoolSpec", "PreemptionCost", "Results", "Scheduler",
    "ServiceSpec", "Simulation", "StarvationError", "Sweep", "UnknownNameError", "build_simulation",
    "default_network", "load_config", "preset", "run_config",
]

_LAZY = {"Experiment": "sim.sweep", "Sweep": "sim.sweep"}


def __getattr__(name: str) -> Any:
    """``Experiment`` and ``Sweep`` without importing the sweep machinery for every run."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
