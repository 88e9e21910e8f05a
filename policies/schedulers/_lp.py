"""Linear programs the round-based policies share (scipy's HiGHS). An allocation ``X`` (jobs x pools) gives each job
the fraction of time it runs on each pool; every program keeps the limits Gavel's policies keep: ``X >= 0``,
``sum_p X[j][p] <= 1`` for every job and ``sum_j gangs[j] X[j][p] <= devices[p]`` for every pool, and ``X[j][p] = 0``
where ``speeds[j][p] = 0`` (the job may not run there)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from sim.errors import PolicyError


def _limits(gangs: np.ndarray, speeds: np.ndarray, devices: np.ndarray, first_row: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The variables (job, pool) where the job may run, and the rows of the two limits from ``first_row`` on:
    (vj, vp, rows, cols, values, bounds)."""
    jobs = speeds.shape[0]
    vj, vp = np.nonzero(speeds > 0)
    k = np.arange(vj.size)
    rows = np.concatenate([first_row + vj, first_row + jobs + vp])
    cols = np.concatenate([k, k])
    values = np.concatenate([np.ones(vj.size), gangs[vj]])
    bounds = np.concatenate([np.ones(jobs), devices])
    return vj, vp, rows, cols, values, bounds


def feasible_allocation(need: np.ndarray, gangs: np.ndarray, speeds: np.ndarray,
                        devices: np.ndarray) -> np.ndarray | None:
    """An allocation giving every job ``j`` at least ``need[j]`` throughput (``sum_p speeds[j][p] X[j][p]``) within
    the limits, or None if there is none."""
    jobs, pools = speeds.shape
    vj, vp, rows, cols, values, bounds = _limits(gangs, speeds, devices, jobs)
    k = np.arange(vj.size)
    matrix = coo_matrix((np.concatenate([-speeds[vj, vp], values]), (np.concatenate([vj, rows]),
                                                                      np.concatenate([k, cols]))),
                        shape=(2 * jobs + pools, vj.size)).tocsr()
    result = linprog(np.zeros(vj.size), A_ub=matrix, b_ub=np.concatenate([-need, bounds]), bounds=(0.0, 1.0),
                     method="highs")
    if result.status != 0:
        return None
    x = np.zeros((jobs, pools))
    x[vj, vp] = np.clip(result.x, 0.0, 1.0)
    return x


def max_sum_allocation(gangs: np.ndarray, speeds: np.ndarray, devices: np.ndarray) -> np.ndarray:
    """The allocation maximizing the total throughput ``sum_j sum_p speeds[j][p] X[j][p]`` within the limits."""
    jobs, pools = speeds.shape
    vj, vp, rows, cols, values, bounds = _limits(gangs, speeds, devices, 0)
    matrix = coo_matrix((values, (rows, cols)), shape=(jobs + pools, vj.size)).tocsr()
    result = linprog(-speeds[vj, vp], A_ub=matrix, b_ub=bounds, bounds=(0.0, 1.0), method="highs")
    if result.status != 0:
        raise PolicyError(f"max-sum-throughput: the linear program was not solved ({result.message})")
    x = np.zeros((jobs, pools))
    x[vj, vp] = np.clip(result.x, 0.0, 1.0)
    return x


def fastest_finish_allocation(gangs: np.ndarray, speeds: np.ndarray, devices: np.ndarray,
                              remaining: np.ndarray) -> np.ndarray:
    """The allocation with which every job has done its ``remaining`` work soonest at the latest: maximize ``t``
    (one over that time) with ``sum_p speeds[j][p] X[j][p] >= remaining[j] t`` for every job, within the limits.
    One linear program: the bisection on the time Gavel runs finds the same optimum."""
    jobs, pools = speeds.shape
    vj, vp, rows, cols, values, bounds = _limits(gangs, speeds, devices, jobs)
    n = vj.size
    k = np.arange(n)
    rows = np.concatenate([vj, np.arange(jobs), rows])
    cols = np.concatenate([k, np.full(jobs, n), cols])
    values = np.concatenate([-speeds[vj, vp], remaining, values])
    matrix = coo_matrix((values, (rows, cols)), shape=(2 * jobs + pools, n + 1)).tocsr()
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    result = linprog(cost, A_ub=matrix, b_ub=np.concatenate([np.zeros(jobs), bounds]),
                     bounds=[(0.0, 1.0)] * n + [(0.0, None)], method="highs")
    if result.status != 0:
        raise PolicyError(f"min-total-duration: the linear program was not solved ({result.message})")
    x = np.zeros((jobs, pools))
    x[vj, vp] = np.clip(result.x[:n], 0.0, 1.0)
    return x


def bisect(low: float, high: float, feasible: object, fallback: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
    """The allocation of the smallest target in ``[low, high]`` that ``feasible(target)`` (an allocation or None)
    meets, to a relative gap of ``tolerance``; ``fallback`` meets ``high``."""
    allocation = fallback
    while high - low > tolerance * high:
        middle = (low + high) / 2
        x = feasible(middle)  # type: ignore[operator]
        if x is None:
            low = middle
        else:
            high, allocation = middle, x
    return allocation
