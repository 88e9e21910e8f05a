"""Round-based (time-sliced) scheduling as Gavel does it (Narayanan et al., "Heterogeneity-Aware Cluster Scheduling
Policies for Deep Learning Workloads", OSDI 2020, section 5; its simulator, ``scheduler/scheduler.py``).

Time is cut into rounds (``round_s``, 6 minutes as in Gavel and Shockwave). An allocation policy gives each job the
fraction of time it should run on each device pool (``RoundScheduler.allocate``: Gavel's ``X[job][worker type]``).
At every round boundary each job's priority on each pool is its allocation over the fraction of the time since the
last reset it actually ran there (a job that has not run there yet comes first, in allocation order). Jobs are taken
in priority order, pool by pool (Gavel's per-worker-type queues, concatenated in the round's pool order, below) or
all pools at once (``global_queue``), each at most once, while the pool has devices for its gang; as in Gavel
(``_schedule_jobs_on_workers_helper`` takes every active job, priority 0 for no allocation), the jobs with no share
of a pool (a zero allocation, or arrived since the last reset) come last, so devices the allocation leaves idle go
to them (``fill_idle=False`` leaves those devices idle instead). A job kept on its pool keeps its devices (its lease
is extended: no checkpoint, no restore); one that is not chosen again is preempted at the round boundary and pays
the simulation's checkpoint and restore cost when it runs again (``PreemptionCost``), as does one moved to another
pool (preempted and started on the new pool in the same decision). Devices that a job finishing mid-round frees stay
idle until the next round, and a job arriving mid-round waits for it, as in Gavel. Every boundary while some job is
active (waiting or running) is a round, as in Gavel's simulator, so a running job may be moved to the pool its
allocation prefers, or time-sliced out, even when no job waits (``reshapes_running``: the engine asks at every pass;
mid-round the answer is only the next boundary's timer).

The round's pool order (``pool_order``): ``"fixed"`` takes the pools in the cluster's order every round;
``"shuffled"`` draws a uniformly random order at every round decided, from the scheduler's random stream
(``ClusterView.rng``: the run's ``scheduling`` stream, so it depends only on the simulation's seed). Gavel does the
latter for every policy whose name has neither ``Perf`` nor ``Packing`` in it (``_schedule_jobs_on_workers``,
``scheduler/scheduler.py`` lines 871-881 at commit c4fa400: ``worker_types = ["v100", "p100", "k80"]``, the types
the cluster lacks removed, then ``self._worker_type_shuffler.shuffle(worker_types)`` unless the policy is a
``_Perf`` or ``_Packing`` one; the shuffler is a ``random.Random`` seeded with the run's seed + 5, lines 325-326):
its plain ``max_min_fairness``, ``finish_time_fairness`` and ``min_total_duration``, and ``fifo``. The order
decides which pool's queue is served first, so which pool a job with a share of several (or of none, filling idle
devices) runs on. ``None`` (the default) follows Gavel's rule for the policy (``gavel_pool_order``): shuffled for
the plain forms of max-min fairness, finish-time fairness and minimum total duration, fixed otherwise. The draws
are not Gavel's (another generator), only their distribution.

The allocation is recomputed, and the time each job ran since the last reset forgotten, when the set of jobs has
changed and at least ``min_reset_s`` have passed since the last reset (Gavel's
``minimum_time_between_allocation_resets``, 1,920 s by default); a job that arrived since has no allocation, so it
runs only on devices the allocated jobs leave idle until the next reset. Gavel's simulator does not run it at all
until then (``new_jobs_wait=True`` does the same): its per-type queues pick the job, and count its devices as taken,
but workers are assigned only to jobs in the allocation (``_schedule_jobs_on_workers``, ``elif job_id not in
self._allocation: continue``, lines 937-938 at c4fa400), so it waits, devices idle, up to ``min_reset_s`` after the
last reset; gpusim's default runs it on the idle devices. Where this differs from Gavel: time is
counted per job and pool in seconds (Gavel divides by the total time of the pool's workers, which orders jobs of one
pool the same way); jobs are placed on devices by the simulation's placer, and a job that the placer cannot fit
(fragmentation) is skipped for the round (Gavel's workers have no topology); ties between equal priorities go to the
larger allocation, then the lower job id, then (``global_queue``, one job on two pools) the pool later in the
round's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import PolicyError
from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobView

Allocation = dict[int, dict[int, float]]
"""Per job id, the fraction of time it should run on each pool (by pool index); fractions of one job add up to 1
at most."""

BOUNDARY_SLACK = 1e-6
"""Seconds after a round boundary still counted as the boundary (timers land on it up to float rounding)."""

NEVER_RAN = 1e9
"""Priority factor of a job that has not run on a pool since the last reset (Gavel's ``allocation * 1e9``)."""

POOL_ORDERS = ("fixed", "shuffled")
"""The values of ``RoundScheduler.pool_order`` (module docstring)."""


def job_speeds(jobs: list[JobView], view: ClusterView, heterogeneity_aware: bool) -> np.ndarray:
    """Jobs x pools: each job's speed on each pool it may use (``JobView.speed_on``; 1 everywhere it may run when not
    ``heterogeneity_aware``), 0 where it may not."""
    speeds = np.zeros((len(jobs), len(view.cluster.pools)))
    for j, job in enumerate(jobs):
        for p in job.allowed_pools:
            speeds[j, p] = job.speed_on(p) if heterogeneity_aware else 1.0
    return speeds


class _OnPool(JobView):
    """A job seen by the placer as allowed on one pool only (the pool the round gave it)."""

    __slots__ = ("_pool",)

    def __init__(self, job: JobView, pool: int) -> None:
        super().__init__(job._r)
        self._pool = (pool,)

    @property
    def allowed_pools(self) -> tuple[int, ...]:
        return self._pool


@dataclass
class RoundScheduler(Scheduler):
    """Base of the round-based policies (module docstring): subclasses give ``allocate``. ``round_s``: the round
    length; ``min_reset_s``: the least time between allocation recomputations; ``global_queue``: one queue over all
    pools; ``fill_idle``: jobs with no share of a pool may run on its idle devices; ``new_jobs_wait``: a job that
    arrived since the last recomputation does not run until the next, as in Gavel's simulator; ``pool_order``:
    ``"fixed"`` or ``"shuffled"``."""

    preemptive = True
    reshapes_running = True
    round_s: float = 360.0
    min_reset_s: float = 1920.0
    global_queue: bool = False
    fill_idle: bool = True
    new_jobs_wait: bool = False
    pool_order: str | None = None
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.round_s, (int, float)) and math.isfinite(self.round_s) and self.round_s > 0):
            raise ValueError(f"round_s must be a positive number of seconds, got {self.round_s!r}")
        if not (isinstance(self.min_reset_s, (int, float)) and math.isfinite(self.min_reset_s)
                and self.min_reset_s >= 0):
            raise ValueError(f"min_reset_s must be a number of seconds >= 0, got {self.min_reset_s!r}")
        if self.pool_order is None:
            self.pool_order = self.gavel_pool_order()
        if self.pool_order not in POOL_ORDERS:
            raise ValueError(f"pool_order must be one of {', '.join(POOL_ORDERS)}, got {self.pool_order!r}")

    def gavel_pool_order(self) -> str:
        """The pool order Gavel uses for this policy (module docstring): ``"fixed"`` unless a subclass says
        otherwise."""
        return "fixed"

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        """The fraction of time each job should run on each pool."""
        raise NotImplementedError

    # the round mechanism
    def _run_state(self, view: ClusterView) -> dict[str, Any]:
        if self._state.get("run_id") != view.run_id:  # a new run: forget the last one
            self._state = {"run_id": view.run_id, "next_round": None, "last_round": None, "last_reset": None,
                           "allocation": {}, "ran": {}, "since_reset": 0.0, "jobs": frozenset(), "rounds": 0,
                           "resets": 0, "extended": 0, "lost": 0, "granted": 0}
        return self._state

    def schedule(self, view: ClusterView) -> Decision:
        state = self._run_state(view)
        now = view.now
        if state["next_round"] is not None:
            # the boundary due now or last passed (under quotas the engine asks only while the tenant has a job waiting)
            boundary = state["next_round"] + math.floor((now - state["next_round"]) / self.round_s) * self.round_s
            if now < state["next_round"] or now > boundary + BOUNDARY_SLACK:
                state["next_round"] = max(state["next_round"], boundary + self.round_s)
                return Decision(wake_at=state["next_round"])  # mid-round: the round's leases stand
        running = {job.job_id: job for job in view.running}
        waiting = {job.job_id: job for job in view.queued}
        if state["last_round"] is not None:  # the jobs running now ran through the round that ends
            elapsed = now - state["last_round"]
            state["since_reset"] += elapsed
            for job in running.values():
                pool = view.cluster.pool_of_device(job.devices[0])
                ran = state["ran"].setdefault(job.job_id, {})
                ran[pool] = ran.get(pool, 0.0) + elapsed
        jobs = {**running, **waiting}
        ids = frozenset(jobs)
        if ids != state["jobs"] and (state["last_reset"] is None or now - state["last_reset"] >= self.min_reset_s):
            ordered = [jobs[job_id] for job_id in sorted(jobs)]
            state["allocation"] = self.allocate(ordered, view) if ordered else {}
            state["ran"], state["since_reset"], state["last_reset"] = {}, 0.0, now
            state["jobs"] = ids
            state["resets"] += 1
        state["rounds"] += 1
        state["last_round"] = now
        state["next_round"] = now + self.round_s
        chosen = self._choose(jobs, view, state)
        decision = self._lease(chosen, running, view, state["next_round"])
        state["extended"] += len(running) - len(decision.preempt)
        state["lost"] += len(decision.preempt)
        state["granted"] += len(decision.start)
        return decision

    def report(self) -> dict[str, float]:
        """``rounds`` decided (every boundary while some job is active), allocation ``resets``,
        ``lease_extensions`` (a running job kept its devices for the next round), ``leases_lost`` (a running job
        preempted at a round boundary, or moved: each pays the checkpoint and restore cost) and ``leases_granted``
        (jobs started on new devices, moves included)."""
        state = self._state
        if not state:
            return {}
        return {"rounds": state["rounds"], "resets": state["resets"], "lease_extensions": state["extended"],
                "leases_lost": state["lost"], "leases_granted": state["granted"]}

    def _choose(self, jobs: dict[int, JobView], view: ClusterView, state: dict[str, Any]) -> list[tuple[int, int]]:
        """(job id, pool) for this round, in priority order (module docstring)."""
        allocation: Allocation = state["allocation"]
        ran: dict[int, dict[int, float]] = state["ran"]
        since = state["since_reset"]
        pools = self._pool_order(view)
        rank = [0] * len(pools)  # each pool's place in this round's order
        for place, pool in enumerate(pools):
            rank[pool] = place
        queues: list[list[tuple[float, float, int, int]]] = [[] for _ in pools]
        for job_id, job in jobs.items():
            shares = allocation.get(job_id, {})
            for pool in job.allowed_pools:  # a job with no share here (or none yet) comes last, at priority 0
                share = shares.get(pool, 0.0)
                if share <= 0 and not self.fill_idle:
                    continue
                fraction = ran.get(job_id, {}).get(pool, 0.0) / since if since > 0 else 0.0
                priority = 0.0 if share <= 0 else share / fraction if fraction > 0 else share * NEVER_RAN
                queues[pool].append((priority, share, -job_id, rank[pool]))
        if self.global_queue:
            order = sorted((entry for queue in queues for entry in queue), reverse=True)
        else:
            order = [entry for pool in pools for entry in sorted(queues[pool], reverse=True)]
        left = list(view.cluster.pool_devices)
        taken: set[int] = set()
        chosen = []
        for _, _, negative_id, place in order:
            job_id, pool = -negative_id, pools[place]
            gpus = jobs[job_id].gpus
            if job_id in taken or gpus > left[pool]:
                continue
            taken.add(job_id)
            left[pool] -= gpus
            if self.new_jobs_wait and job_id not in allocation:
                continue  # Gavel: picked, its devices counted, but given no workers (module docstring)
            chosen.append((job_id, pool))
        return chosen

    def _pool_order(self, view: ClusterView) -> list[int]:
        """The pools in this round's order: the cluster's, or shuffled from ``view.rng`` (``pool_order``)."""
        pools = list(range(len(view.cluster.pools)))
        if self.pool_order == "shuffled":
            if view.rng is None:
                raise PolicyError(f"{self.name}: pool_order 'shuffled' needs the view's random stream (view.rng is "
                                  "None: a view built outside a simulation)")
            view.rng.shuffle(pools)
        return pools

    def _lease(self, chosen: list[tuple[int, int]], running: dict[int, JobView], view: ClusterView,
               wake_at: float) -> Decision:
        """Keep the chosen running jobs on their devices (on the pool chosen), place the other chosen jobs, preempt
        the running jobs not kept."""
        trial = view.trial()
        for job in running.values():
            trial.release(job)
        pool_of = view.cluster.pool_of_device
        kept = set()
        for job_id, pool in chosen:
            job = running.get(job_id)
            if job is not None and pool_of(job.devices[0]) == pool:
                trial.reclaim(job)
                kept.add(job_id)
        starts = []
        jobs = {job.job_id: job for job in view.queued} | running
        for job_id, pool in chosen:
            if job_id in kept:
                continue
            devices = trial.place(_OnPool(jobs[job_id], pool))
            if devices is not None:
                starts.append(Assignment(job_id, devices))
        preempt = tuple(job_id for job_id in running if job_id not in kept)
        return Decision(start=tuple(starts), preempt=preempt, wake_at=wake_at)
