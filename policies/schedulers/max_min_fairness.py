"""Max-min fairness in rounds, as Gavel computes it (Narayanan et al., OSDI 2020, section 4.1 "Least Attained
Service" and its artifact's ``policies/max_min_fairness.py``, ``MaxMinFairnessPolicyWithPerf``).

The allocation ``X[j][p]`` (the fraction of time job ``j`` runs on pool ``p``) maximizes the smallest normalized
effective throughput over the jobs:

    maximize  min_j  (1 / w_j) * s_j * sum_p T[j][p] * X[j][p] / T_prop[j]
    subject to  X >= 0,   sum_p X[j][p] <= 1 for every job,   sum_j s_j * X[j][p] <= devices of p for every pool,

where ``s_j`` is the job's gang size (so a 1-device job gets ``s`` times the time of an ``s``-device job: equal
device-time), ``w_j`` its weight (1 here, as Gavel's default), ``T[j][p]`` its speed on pool ``p`` (the job's
throughput there relative to its reference device: the ratio Gavel's throughputs file gives), and ``T_prop[j]`` its
throughput under the proportional share (every pool in proportion to its size: ``sum_p T[j][p] * N_p / N``), which
makes the objective heterogeneity-aware: each job is compared with what an even split of the cluster would give it.
``heterogeneity_aware=False`` is Gavel's plain ``MaxMinFairnessPolicy``: every allowed pool counts as speed 1.

Solved as a linear program with scipy's HiGHS (``scipy.optimize.linprog``): one variable per job and allowed pool,
plus the minimum ``z``. The rounds (``RoundScheduler``) turn the allocation into leases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from policies.schedulers.rounds import Allocation, RoundScheduler, job_speeds
from sim.errors import PolicyError
from sim.training.contracts import ClusterView
from sim.training.jobs import JobView


def max_min_allocation(gangs: list[int], speeds: np.ndarray, devices: list[int],
                       weights: list[float] | None = None) -> np.ndarray:
    """Gavel's max-min fair allocation (module docstring): ``speeds[j][p]`` is job ``j``'s throughput on pool ``p``
    (0: it may not run there), ``gangs[j]`` its gang size, ``devices[p]`` the pool's size. Returns ``X`` (jobs x
    pools)."""
    speeds = np.asarray(speeds, dtype=float)
    jobs, pools = speeds.shape
    if jobs == 0:
        return np.zeros((0, pools))
    capacity = np.asarray(devices, dtype=float)
    proportional = speeds @ (capacity / capacity.sum())
    weight = np.ones(jobs) if weights is None else np.asarray(weights, dtype=float)
    gang = np.asarray(gangs, dtype=float)
    runnable = proportional > 0
    coefficient = np.where(runnable[:, None], speeds * (gang / np.where(runnable, weight * proportional, 1.0))[:, None],
                           0.0)
    vj, vp = np.nonzero((speeds > 0) & runnable[:, None])  # one variable per job and pool it may run on
    n = vj.size
    k = np.arange(n)
    z_row = np.cumsum(runnable) - 1  # z - sum_p c[j][p] x[j][p] <= 0, one row per runnable job
    runs = int(runnable.sum())
    rows = [z_row[vj], np.arange(runs), runs + z_row[vj], 2 * runs + vp]
    cols = [k, np.full(runs, n), k, k]
    values = [-coefficient[vj, vp], np.ones(runs), np.ones(n), gang[vj]]
    # then sum_p x[j][p] <= 1 for every runnable job, and sum_j s_j x[j][p] <= N_p for every pool
    bound = np.concatenate([np.zeros(runs), np.ones(runs), capacity])
    row = 2 * runs + pools
    rows, cols, values = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
    a_ub = coo_matrix((values, (rows, cols)), shape=(row, n + 1)).tocsr()
    cost = np.zeros(n + 1)
    cost[n] = -1.0  # maximize z
    result = linprog(cost, A_ub=a_ub, b_ub=bound, bounds=[(0.0, 1.0)] * n + [(0.0, None)],
                     method="highs")
    if result.status != 0:
        raise PolicyError(f"max-min fairness: the linear program was not solved ({result.message})")
    allocation = np.zeros((jobs, pools))
    allocation[vj, vp] = np.clip(result.x[:n], 0.0, 1.0)
    return allocation


@dataclass
class MaxMinFairness(RoundScheduler):
    """Gavel's max-min fairness over rounds (module docstring); ``heterogeneity_aware``: normalize by each job's
    throughput on each pool (Gavel's ``max_min_fairness_perf``) or count every allowed pool alike (Gavel's
    ``max_min_fairness``). ``round_s``, ``min_reset_s``, ``global_queue``, ``pool_order`` (by default shuffled
    for the plain form, as Gavel): see ``RoundScheduler``."""

    name = "max-min-fairness"
    heterogeneity_aware: bool = True

    def gavel_pool_order(self) -> str:
        """Gavel shuffles the pool order every round for its plain ``max_min_fairness`` (not a ``_Perf`` policy:
        ``RoundScheduler``)."""
        return "fixed" if self.heterogeneity_aware else "shuffled"

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        pools = len(view.cluster.pools)
        speeds = job_speeds(jobs, view, self.heterogeneity_aware)
        shares = max_min_allocation([job.gpus for job in jobs], speeds, list(view.cluster.pool_devices))
        return {job.job_id: {p: float(shares[j, p]) for p in range(pools) if shares[j, p] > 0}
                for j, job in enumerate(jobs)}
