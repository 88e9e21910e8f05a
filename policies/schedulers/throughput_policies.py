"""Gavel's two efficiency objectives in rounds (Narayanan et al., OSDI 2020, section 4.2; its artifact's
``policies/max_sum_throughput.py``, ``ThroughputSumWithPerf``, and ``policies/min_total_duration.py``,
``MinTotalDurationPolicyWithPerf``).

- ``max-sum-throughput``: the allocation maximizing the cluster's total throughput, ``sum_j sum_p T[j][p] X[j][p]``.
  Gavel sums each job type's steps per second; here ``T[j][p]`` is the job's speed on the pool relative to its
  reference device (``JobView.speed_on``), so each job counts its work per second at the same scale: the allocation
  favours each job on the pool where it gains most over its reference, not the job types with many small steps.
- ``min-total-duration``: the allocation with which every job finishes soonest at the latest (the makespan of the
  jobs present, ``max_j R_j / sum_p T[j][p] X[j][p]`` with ``R_j`` the job's work left). Gavel finds it by
  bisection on the target time ``D`` over feasibility problems (every job needs ``R_j / D``); with ``t = 1 / D`` it
  is one linear program (maximize ``t`` with every job's throughput at least ``R_j t``), solved here.

Both are ``RoundScheduler`` policies: the rounds turn the allocation into leases. ``heterogeneity_aware=False``
counts every allowed pool as speed 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.schedulers._lp import fastest_finish_allocation, max_sum_allocation
from policies.schedulers.rounds import Allocation, RoundScheduler, job_speeds
from sim.training.contracts import ClusterView
from sim.training.jobs import JobView


def _as_allocation(jobs: list[JobView], shares: np.ndarray) -> Allocation:
    return {job.job_id: {p: float(x) for p, x in enumerate(shares[j]) if x > 0} for j, job in enumerate(jobs)}


def min_total_duration_allocation(gangs: np.ndarray, speeds: np.ndarray, devices: np.ndarray,
                                  remaining: np.ndarray) -> np.ndarray:
    """The allocation minimizing the time by which every job has done its ``remaining`` work (module docstring)."""
    jobs, pools = speeds.shape
    runnable = speeds.sum(axis=1) > 0
    out = np.zeros((jobs, pools))
    if not runnable.any():
        return out
    gangs, speeds, remaining = gangs[runnable], speeds[runnable], remaining[runnable]
    out[runnable] = fastest_finish_allocation(gangs, speeds, devices, remaining)
    return out


@dataclass
class MaxSumThroughput(RoundScheduler):
    """Gavel's maximum total throughput over rounds (module docstring)."""

    name = "max-sum-throughput"
    heterogeneity_aware: bool = True

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        gangs = np.array([job.gpus for job in jobs], dtype=float)
        shares = max_sum_allocation(gangs, job_speeds(jobs, view, self.heterogeneity_aware),
                                    np.array(view.cluster.pool_devices, dtype=float))
        return _as_allocation(jobs, shares)


@dataclass
class MinTotalDuration(RoundScheduler):
    """Gavel's minimum total duration (the makespan of the jobs present) over rounds (module docstring); the pool
    order is by default shuffled for the plain form, as Gavel (``RoundScheduler``)."""

    name = "min-total-duration"
    heterogeneity_aware: bool = True

    def gavel_pool_order(self) -> str:
        """Gavel shuffles the pool order every round for its plain ``min_total_duration`` (not a ``_Perf`` policy:
        ``RoundScheduler``)."""
        return "fixed" if self.heterogeneity_aware else "shuffled"

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        gangs = np.array([job.gpus for job in jobs], dtype=float)
        remaining = np.array([job.remaining_work(view.now) for job in jobs])
        shares = min_total_duration_allocation(gangs, job_speeds(jobs, view, self.heterogeneity_aware),
                                               np.array(view.cluster.pool_devices, dtype=float), remaining)
        return _as_allocation(jobs, shares)
