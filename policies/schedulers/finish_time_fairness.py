"""Finish-time fairness in rounds (Themis: Mahajan et al., NSDI 2020), in the form Gavel computes it (Narayanan et
al., OSDI 2020, section 4.1; its artifact's ``policies/finish_time_fairness.py``, ``FinishTimeFairnessPolicyWithPerf``).

A job's finish-time fairness ``rho`` is the time it will have taken on the shared cluster over the time it would take
on its isolated share (``1/n`` of every pool, for ``n`` jobs, in whole gangs):

    rho_j(X) = (t_j + R_j / sum_p T[j][p] X[j][p]) / (I_j + R_j / T_iso[j])

with ``t_j`` the time since the job arrived, ``R_j`` its work left (seconds on its reference device), ``T[j][p]`` its
speed on pool ``p`` (``JobView.speed_on``), ``T_iso[j]`` its throughput on the isolated share and ``I_j`` the
isolated time its work done so far is worth (accumulated allocation by allocation at the isolated throughput of the
time, as Gavel does). The allocation ``X`` minimizes the largest ``rho`` under the usual limits (``sum_p X[j][p] <=
1``, ``sum_j s_j X[j][p] <= N_p``). That program is convex but not linear; it is solved by bisection on ``rho``: for a
target ``r`` every job needs a throughput of at least ``R_j / (r (I_j + R_j / T_iso[j]) - t_j)``, a linear
feasibility problem (scipy's HiGHS), bisected to a relative gap of ``1e-3`` between the isolated allocation's
``rho`` (always feasible) and the smallest ``rho`` any job can reach. ``heterogeneity_aware=False``: every allowed pool
counts as speed 1 (Gavel's plain form uses the V100 throughput for every type; here the job's own reference speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from policies.schedulers._lp import bisect, feasible_allocation
from policies.schedulers.rounds import Allocation, RoundScheduler, job_speeds
from sim.training.contracts import ClusterView
from sim.training.jobs import JobView

TOLERANCE = 1e-3
"""Relative gap between the bisection's bounds on the largest ``rho`` when it stops (0.1%: each step is a linear
program over every job, and an allocation is found at every reset)."""


def isolated_allocation(gangs: np.ndarray, speeds: np.ndarray, devices: np.ndarray) -> np.ndarray:
    """Gavel's isolated share: every job ``N_p / n`` devices of each pool in its gangs (``N_p / (n s_j)`` of the
    time), scaled down where a job's time would add up to more than 1; 0 where it may not run."""
    jobs = len(gangs)
    x = np.where(speeds > 0, devices[None, :] / jobs / gangs[:, None], 0.0)
    return x / np.maximum(x.sum(axis=1), 1.0)[:, None]


def finish_time_fair_allocation(gangs: list[int], speeds: np.ndarray, devices: list[int], elapsed: np.ndarray,
                                remaining: np.ndarray, isolated_done: np.ndarray) -> np.ndarray:
    """The allocation minimizing the largest ``rho`` (module docstring): per job its gang, speed per pool, time since
    arrival, work left and isolated time of the work done so far."""
    speeds = np.asarray(speeds, dtype=float)
    jobs, pools = speeds.shape
    if jobs == 0:
        return np.zeros((0, pools))
    gang = np.asarray(gangs, dtype=float)
    capacity = np.asarray(devices, dtype=float)
    isolated = isolated_allocation(gang, speeds, capacity)
    iso_rate = (speeds * isolated).sum(axis=1)
    runnable = iso_rate > 0
    if not runnable.all():  # a job with no pool gets nothing; the others are allocated among themselves
        out = np.zeros((jobs, pools))
        if runnable.any():
            out[runnable] = finish_time_fair_allocation(
                list(gang[runnable]), speeds[runnable], devices, elapsed[runnable], remaining[runnable],
                isolated_done[runnable])
        return out
    ideal = isolated_done + remaining / iso_rate  # the isolated finish time, from arrival
    best_rate = (speeds * np.minimum(1.0, capacity[None, :] / gang[:, None])).max(axis=1)
    low = float(((elapsed + remaining / best_rate) / ideal).max())  # no allocation does better for every job
    high = float(((elapsed + remaining / iso_rate) / ideal).max())  # the isolated allocation reaches it
    def feasible(target: float) -> np.ndarray | None:
        slack = target * ideal - elapsed
        return feasible_allocation(remaining / slack, gang, speeds, capacity) if (slack > 0).all() else None

    return bisect(low, high, feasible, isolated, TOLERANCE)


@dataclass
class FinishTimeFairness(RoundScheduler):
    """Themis' finish-time fairness over rounds, as Gavel allocates it (module docstring). ``round_s``,
    ``min_reset_s``, ``global_queue``, ``pool_order`` (by default shuffled for the plain form, as Gavel): see
    ``RoundScheduler``."""

    name = "finish-time-fairness"
    heterogeneity_aware: bool = True
    _isolated: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def gavel_pool_order(self) -> str:
        """Gavel shuffles the pool order every round for its plain ``finish_time_fairness`` (not a ``_Perf`` policy:
        ``RoundScheduler``)."""
        return "fixed" if self.heterogeneity_aware else "shuffled"

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        if self._isolated.get("run_id") != view.run_id:
            self._isolated = {"run_id": view.run_id, "done": {}, "last": {}}
        done: dict[int, float] = self._isolated["done"]  # type: ignore[assignment]
        last: dict[int, tuple[float, float]] = self._isolated["last"]  # type: ignore[assignment]
        now = view.now
        pools = len(view.cluster.pools)
        speeds = job_speeds(jobs, view, self.heterogeneity_aware)
        remaining = np.array([job.remaining_work(now) for job in jobs])
        for j, job in enumerate(jobs):  # the work done since the last allocation, at that allocation's isolated rate
            if job.job_id in last:
                work_left, rate = last[job.job_id]
                done[job.job_id] = done.get(job.job_id, 0.0) + (work_left - remaining[j]) / rate
        gangs = np.array([job.gpus for job in jobs], dtype=float)
        capacity = np.array(view.cluster.pool_devices, dtype=float)
        iso_rate = (speeds * isolated_allocation(gangs, speeds, capacity)).sum(axis=1)
        isolated_done = np.array([done.get(job.job_id, 0.0) for job in jobs])
        elapsed = np.array([now - job.arrival for job in jobs])
        shares = finish_time_fair_allocation(list(gangs), speeds, list(capacity), elapsed, remaining, isolated_done)
        last.clear()
        last.update({job.job_id: (remaining[j], iso_rate[j]) for j, job in enumerate(jobs) if iso_rate[j] > 0})
        return {job.job_id: {p: float(shares[j, p]) for p in range(pools) if shares[j, p] > 0}
                for j, job in enumerate(jobs)}
