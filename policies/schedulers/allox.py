"""AlloX in rounds (Le et al., "AlloX: Compute Allocation in Hybrid Clusters", EuroSys 2020), in the form Gavel
implements it (Narayanan et al., OSDI 2020; its artifact's ``policies/allox.py``, ``AlloXPolicy``).

AlloX minimizes the sum of the waiting jobs' completion times on unrelated machines as a min-cost matching. A
*slot* is a place a job can run on (here: room for one gang on a pool); each slot runs its jobs one after the other.
The job placed ``k``-th from the end of a slot's queue delays the completion of ``k`` jobs (itself and the ``k - 1``
behind it) by its processing time there, so it costs ``k * P[j][p]``, with ``P[j][p]`` its work left over its speed
on the slot's pool (``JobView.remaining_work`` over ``JobView.speed_on``; speed 1 on every allowed pool when not
``heterogeneity_aware``). Jobs are matched to (slot, position) pairs at least total cost
(``scipy.optimize.linear_sum_assignment``); the job first in each slot's queue (the highest position matched there)
starts, with all its time on that pool (allocation 1), and the others get nothing until the next allocation.

As in Gavel:

- A running job keeps its pool (allocation 1) until it finishes: AlloX never preempts. Only the devices running
  jobs leave free are matched.
- ``alpha`` (Gavel's fairness knob, 1 by default) keeps only the ``max(floor(alpha * m), free devices)``
  longest-waiting of the ``m`` waiting jobs (earliest arrival first, then lower job id) as candidates.
- Each slot has as many positions as there are candidates. Gavel also adds each job's time since arrival to all its
  costs, a constant per job that changes no optimal matching; it is left out here.

Where this differs from Gavel:

- Gangs (Gavel's AlloX takes 1-device jobs only). Candidates are matched one gang size at a time, the size of the
  longest-waiting candidate first; for gang size ``g`` a pool has ``floor(free devices / g)`` slots, and the jobs that
  start take their devices before the next size is matched.
- The slots of a pool are alike, so an optimal matching loads them evenly (moving the first job of a slot with two
  more jobs than another to the front of the other lowers the cost); ``ceil(candidates / slots)`` positions per slot
  are enough, which keeps the matrix at about ``candidates x (pools x candidates + slots)``.
- A job matched but not placed (the placer finds no room: fragmentation) waits, and is matched again at the next
  allocation; Gavel's workers have no topology.
- ``min_reset_s`` defaults to 0 instead of ``RoundScheduler``'s 1,920 s. Gavel's rounds fill workers left free with
  jobs that have no allocation; ``RoundScheduler`` runs only jobs with an allocation, and AlloX gives one to no job
  that waits behind another. With 1,920 s, devices that a finishing job frees would stay idle for up to 1,920 s
  (one such run of three jobs under a topology-aware placer never ended); with 0 the matching is redone at the first
  round boundary after any arrival or completion. The matching is cheap (no linear program), so that costs little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from policies.schedulers.rounds import Allocation, RoundScheduler, job_speeds
from sim.errors import PolicyError
from sim.training.contracts import ClusterView
from sim.training.jobs import JobView


def allox_queues(times: np.ndarray, slots: Sequence[int]) -> list[list[list[int]]]:
    """AlloX's min-cost matching (module docstring). ``times[j][p]``: job ``j``'s processing time on pool ``p``
    (``inf`` where it may not run), ``slots[p]``: the pool's slots. Returns, per pool and slot, the indices of the jobs
    matched there in the order they would run (the first runs now); a job with no finite time on a pool with slots is
    in no queue."""
    times = np.asarray(times, dtype=float)
    queues: list[list[list[int]]] = [[[] for _ in range(max(n, 0))] for n in slots]
    usable = [p for p, n in enumerate(slots) if n > 0]
    rows = [j for j in range(times.shape[0]) if usable and np.isfinite(times[j, usable]).any()]
    if not rows:
        return queues
    m = len(rows)
    pool_of, slot_of, position = [], [], []
    for p in usable:
        depth = -(-m // slots[p])  # ceil(m / slots): enough positions (module docstring)
        pool_of.append(np.full(depth * slots[p], p))
        slot_of.append(np.tile(np.arange(slots[p]), depth))
        position.append(np.repeat(np.arange(1, depth + 1), slots[p]))
    pools, slot_index, positions = np.concatenate(pool_of), np.concatenate(slot_of), np.concatenate(position)
    cost = times[np.ix_(rows, pools)] * positions
    try:
        matched_rows, matched_columns = linear_sum_assignment(cost)
    except ValueError as exc:
        raise PolicyError(f"allox: the matching was not solved ({exc})") from exc
    placed = sorted(zip(matched_rows, matched_columns, strict=True), key=lambda rc: -positions[rc[1]])
    for row, column in placed:  # highest position first: that job runs first
        queues[pools[column]][slot_index[column]].append(rows[row])
    return queues


@dataclass
class AlloX(RoundScheduler):
    """AlloX's min-cost matching over rounds, as Gavel implements it (module docstring). ``alpha`` in (0, 1]: the
    fraction of longest-waiting jobs considered (Gavel's fairness knob); ``heterogeneity_aware``: processing times
    from each job's speed on each pool, or the same on every allowed pool. ``min_reset_s`` defaults to 0 (module
    docstring); ``round_s``, ``global_queue``: see ``RoundScheduler``. ``fill_idle`` defaults to False: the matching
    itself gives out every free device at each reset, and a job started on leftovers would be preempted at the next
    round by a matched one (AlloX never preempts)."""

    name = "allox"
    min_reset_s: float = 0.0
    fill_idle: bool = False
    alpha: float = 1.0
    heterogeneity_aware: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and 0 < self.alpha <= 1):
            raise ValueError(f"alpha must be a fraction in (0, 1], got {self.alpha!r}")

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        free = list(view.cluster.pool_devices)
        allocation: Allocation = {}
        waiting = []
        for job in jobs:
            if job.devices:  # running: never preempted, keeps its pool
                pool = view.cluster.pool_of_device(job.devices[0])
                allocation[job.job_id] = {pool: 1.0}
                free[pool] -= job.gpus
            else:
                waiting.append(job)
        waiting.sort(key=lambda job: (job.arrival, job.job_id))
        candidates = waiting[:max(math.floor(self.alpha * len(waiting)), sum(free))]
        if not candidates:
            return allocation
        speeds = job_speeds(candidates, view, self.heterogeneity_aware)
        work = np.array([job.remaining_work(view.now) for job in candidates])
        with np.errstate(divide="ignore"):
            times = np.where(speeds > 0, work[:, None] / np.where(speeds > 0, speeds, 1.0), np.inf)
        groups: dict[int, list[int]] = {}  # by gang size, the size of the longest-waiting candidate first
        for j, job in enumerate(candidates):
            groups.setdefault(job.gpus, []).append(j)
        for gang, members in groups.items():
            slots = [max(f, 0) // gang for f in free]
            if not any(slots):
                continue
            for pool, pool_queues in enumerate(allox_queues(times[members], slots)):
                for queue in pool_queues:
                    if queue:
                        allocation[candidates[members[queue[0]]].job_id] = {pool: 1.0}
                        free[pool] -= gang
        return allocation
