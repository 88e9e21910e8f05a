"""The world: engine, hardware, clusters, serving, the network, results, config and CLI. Policies plug in by name.

The names a user needs are importable from here (``from sim import Simulation, ServiceSpec, NetworkSpec``);
``Experiment`` and ``Sweep`` (``sim.experiments.sweep``) load on first use.
"""

from typing import Any

from sim.engine import EventOrder, PreemptionCost, Simulation
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError, UnknownNameError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_simulation, run_config
from sim.failures import CheckpointPolicy, FailureModel, SpotPool, failures
from sim.output.accounting import AccountingOptions
from sim.output.results import Results
from sim.platform.cluster import Cluster, PoolSpec, preset
from sim.platform.network.specs import Fabric, NetworkSpec, NodeNetwork, default_network
from sim.serving.disaggregation import ServicePool
from sim.serving.prefix_cache import PrefixCacheConfig
from sim.serving.replica import BatchingConfig
from sim.serving.service import ContinuousBatching, FixedService, ServiceSpec
from sim.serving.speculative import SpeculativeDecoding
from sim.training.contracts import Assignment, ClusterView, Decision, Placer, Scheduler, TenantOrder, TenantStatus
from sim.training.quotas import Quotas

__all__ = [
    "AccountingOptions", "Assignment", "BatchingConfig", "CheckpointPolicy", "Cluster", "ClusterView", "ConfigError",
    "ContinuousBatching", "Decision", "EventOrder", "Experiment", "Fabric", "FailureModel", "FixedService",
    "GpusimError",
    "NetworkSpec", "NodeNetwork", "Placer", "PolicyError", "PoolSpec", "PreemptionCost", "PrefixCacheConfig", "Quotas",
    "Results", "Scheduler", "ServicePool", "ServiceSpec", "Simulation", "SpeculativeDecoding", "SpotPool",
    "StarvationError", "Sweep", "TenantOrder", "TenantStatus",
    "UnknownNameError", "build_simulation",
    "default_network", "failures", "load_config", "preset", "run_config",
]

_LAZY = {"Experiment": "sim.experiments.sweep", "Sweep": "sim.experiments.sweep"}


def __getattr__(name: str) -> Any:
    """``Experiment`` and ``Sweep`` without importing the sweep machinery for every run."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
