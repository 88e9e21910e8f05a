"""Failures and spot capacity: devices, nodes and network links (``links``) that fail and are repaired, a failure
trace replayed from a file, spot pools that take nodes back after a notice, times to failure and repair from
exponential, Weibull or lognormal distributions (``LifeDistribution``), and checkpointing that bounds the work a
failure costs a training job (``FailureModel``, ``CheckpointPolicy``, ``failures``: the subsystem a ``Simulation``
plugs in)."""

from sim.failures.checkpoint import CheckpointPolicy, expected_run_time, young_daly_interval
from sim.failures.distributions import LifeDistribution
from sim.failures.model import FailureModel, SpotPool
from sim.failures.subsystem import FailureSubsystem, failures
from sim.failures.trace import FailureRecord, load_failure_trace

__all__ = ["CheckpointPolicy", "FailureModel", "FailureRecord", "FailureSubsystem", "LifeDistribution", "SpotPool",
           "expected_run_time", "failures", "load_failure_trace", "young_daly_interval"]
