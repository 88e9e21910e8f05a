"""Goodput-maximizing elastic scheduling in the spirit of Pollux (Qiao et al., "Pollux: Co-adaptive Cluster
Scheduling for Goodput-Optimized Deep Learning", OSDI 2021, section 4.2, PolluxSched).

Every ``interval_s`` (60 s, as Pollux re-optimizes) the policy chooses a gang size and a pool for every job, running
or waiting, to maximize Pollux's fitness over the jobs' speedups:

    FITNESS_p(A) = (1/J * sum_j SPEEDUP_j(A_j) ** p) ** (1/p)

where ``SPEEDUP_j(g, pool)`` is the job's throughput on ``g`` devices of ``pool`` over its throughput on its
smallest gang on its fastest pool (``JobView.speed_on`` times ``TrainingJob.gang_speedup``; for a job made by
``workloads.elastic`` the curve is Pollux's goodput at the best batch size for each gang). ``p = -1`` (Pollux's
default) weighs the slow jobs most, ``p = 1`` is total speedup. A job whose allocation changes is preempted and
restarted on its new gang, paying the simulation's checkpoint and restore cost (``PreemptionCost``); like Pollux,
the policy discounts a change: a running job's speedup on any allocation but its current one is multiplied by
``(T - (R + 1) * restart_s) / T`` (at least 0), with ``T`` the time since it first started here and ``R`` the
re-allocations it has had (Pollux's re-allocation factor, which makes young and often-moved jobs costly to move).

Where this differs from Pollux: Pollux searches allocations with a genetic algorithm over nodes; this policy is
greedy over device counts per pool (first every job in arrival order gets its smallest gang on its fastest pool
with room, as long as devices last; then the devices left go, a block at a time, to the job and gang with the
largest fitness gain per device), and the placer chooses the devices. Pollux also re-tunes each job's batch size
as training goes on (its statistical efficiency changes); here a job's curve is fixed when the job is made.
Rigid jobs (no ``max_gpus``) are scheduled at their own gang only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobView

BOUNDARY_SLACK = 1e-6
"""Seconds after an interval boundary still counted as the boundary (timers land on it up to float rounding)."""


@dataclass
class Pollux(Scheduler):
    """Elastic, goodput-maximizing scheduling (module docstring). ``interval_s``: seconds between re-optimizations;
    ``p``: the fitness exponent (-1 favours the slowest jobs, 1 maximizes total speedup, 0 the geometric mean);
    ``restart_s``: the seconds a re-allocation is charged in the policy's own discount (the simulation charges
    its ``PreemptionCost``)."""

    name = "pollux"
    preemptive = True
    reshapes_running = True
    interval_s: float = 60.0
    p: float = -1.0
    restart_s: float = 30.0
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("interval_s", "restart_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0) or (
                    name == "interval_s" and value == 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'interval_s' else 'non-negative'} "
                                 f"number of seconds, got {value!r}")
        if not (isinstance(self.p, (int, float)) and math.isfinite(self.p)):
            raise ValueError(f"p must be a finite number, got {self.p!r}")

    def _run_state(self, view: ClusterView) -> dict[str, Any]:
        if self._state.get("run_id") != view.run_id:
            self._state = {"run_id": view.run_id, "next": None, "started": {}, "moves": {}, "curves": {}, "rounds": 0,
                           "reallocations": 0, "grown": 0, "shrunk": 0}
        return self._state

    def report(self) -> dict[str, float]:
        """``rounds`` optimized, ``reallocations`` (running jobs moved to another gang or pool; each pays the
        checkpoint and restore cost), of which ``grown`` and ``shrunk`` changed its gang up or down."""
        state = self._state
        if not state:
            return {}
        return {key: state[key] for key in ("rounds", "reallocations", "grown", "shrunk")}

    def schedule(self, view: ClusterView) -> Decision:
        state = self._run_state(view)
        now = view.now
        due = state["next"]
        if due is not None and now < due - BOUNDARY_SLACK:
            return Decision(wake_at=due)  # mid-interval: allocations stand
        state["next"] = now + self.interval_s
        state["rounds"] += 1
        running = list(view.running)
        jobs = sorted((*running, *view.queued), key=lambda j: (j.arrival, j.job_id))
        pool_of = view.cluster.pool_of_device
        current = {j.job_id: (pool_of(j.devices[0]), len(j.devices)) for j in running}
        for job_id in current:
            state["started"].setdefault(job_id, now)
        target = self._allocate(jobs, current, view, state)
        return self._carry_out(target, jobs, current, view, state)

    # the allocation
    def _speedup(self, job: JobView, pool: int, state: dict[str, Any]) -> np.ndarray:
        """The job's speedup on gangs 0..its largest on ``pool`` (0 below its smallest gang)."""
        curve = state["curves"].get(job.job_id)
        if curve is None:  # its gang curve, worked out once
            low, high = job.spec.gang_range
            curve = np.zeros(high + 1)
            curve[low:] = [job.spec.gang_speedup(g) for g in range(low, high + 1)]
            curve /= curve[low]
            state["curves"][job.job_id] = curve
        return curve * (job.speed_on(pool) / max(job.speed_on(p) for p in job.allowed_pools))

    def _utility(self, speedup: np.ndarray) -> np.ndarray:
        """Each job's term of the fitness, increasing in its speedup (maximizing the sum maximizes FITNESS_p)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.p == 0:
                return np.log(speedup)
            return np.sign(self.p) * speedup ** self.p

    def _allocate(self, jobs: list[JobView], current: dict[int, tuple[int, int]], view: ClusterView,
                  state: dict[str, Any]) -> dict[int, tuple[int, int]]:
        """Per job id, the (pool, gang) it should run on; jobs left out wait."""
        left = list(view.cluster.pool_devices)
        now = view.now
        target: dict[int, tuple[int, int]] = {}
        curves: dict[int, dict[int, np.ndarray]] = {}
        for job in jobs:  # admission: the smallest gang, in arrival order, on the fastest pool with room
            low = job.spec.gang_range[0]
            here = current.get(job.job_id)
            pools = [here[0]] if here is not None else sorted(
                (p for p in job.allowed_pools if left[p] >= low), key=lambda p: (-job.speed_on(p), p))
            if not pools or left[pools[0]] < low:
                continue
            pool = pools[0]
            left[pool] -= low
            target[job.job_id] = (pool, low)
            curve = self._speedup(job, pool, state)
            if here is not None:  # a change of gang pays the re-allocation discount
                age = now - state["started"][job.job_id]
                moves = state["moves"].get(job.job_id, 0)
                factor = max(0.0, (age - (moves + 1) * self.restart_s) / age) if age > 0 else 0.0
                kept = curve[here[1]]
                curve = curve * factor
                curve[here[1]] = kept
            utility = np.full(curve.size, np.nan)  # no gang below its smallest
            utility[low:] = self._utility(curve[low:])  # -inf where the discount leaves nothing (p <= 0)
            curves[job.job_id] = utility
        while True:  # growth: the block of devices with the largest gain per device
            best, pick = 0.0, None
            for job_id, (pool, gang) in target.items():
                if left[pool] == 0:
                    continue
                utility = curves[job_id]
                top = min(len(utility) - 1, gang + left[pool])
                if top <= gang:
                    continue
                with np.errstate(invalid="ignore"):
                    gains = (utility[gang + 1:top + 1] - utility[gang]) / np.arange(1, top - gang + 1)
                if np.all(np.isnan(gains)):
                    continue
                k = int(np.nanargmax(gains))
                if gains[k] > best + 1e-12:
                    best, pick = float(gains[k]), (job_id, pool, gang + k + 1)
            if pick is None:
                break
            job_id, pool, gang = pick
            left[pool] -= gang - target[job_id][1]
            target[job_id] = (pool, gang)
        return target

    # the decision
    def _carry_out(self, target: dict[int, tuple[int, int]], jobs: list[JobView],
                   current: dict[int, tuple[int, int]], view: ClusterView, state: dict[str, Any]) -> Decision:
        """Keep running jobs whose allocation stands, preempt the others, place the jobs whose allocation is new
        (largest gangs first); a gang the placer cannot fit is tried smaller, down to the job's smallest."""
        trial = view.trial()
        by_id = {job.job_id: job for job in jobs}
        kept = {job_id for job_id, here in current.items() if target.get(job_id) == here}
        for job_id in current:
            if job_id not in kept:
                trial.release(by_id[job_id])
        starts = []
        moved = set()
        changed = sorted((job_id for job_id in target if job_id not in kept),
                         key=lambda job_id: (job_id not in current, -target[job_id][1], by_id[job_id].arrival, job_id))
        for job_id in changed:  # running jobs that change first, then new ones; larger gangs first
            pool, gang = target[job_id]
            job = by_id[job_id]
            for size in range(gang, job.spec.gang_range[0] - 1, -1):
                if (pool, size) == current.get(job_id) and all(map(trial.free.is_free, job.devices)):
                    trial.reclaim(job)  # its new gang did not fit: it keeps its devices rather than move
                    kept.add(job_id)
                    break
                devices = trial.place(job.with_gang(size, (pool,)))
                if devices is not None:
                    starts.append(Assignment(job_id, devices))
                    state["started"].setdefault(job_id, view.now)
                    if job_id in current:
                        moved.add(job_id)
                        state["grown" if size > current[job_id][1] else "shrunk"] += size != current[job_id][1]
                    break
            else:
                if job_id in current and all(map(trial.free.is_free, job.devices)):
                    trial.reclaim(job)  # no room for its new allocation: it keeps its devices
                    kept.add(job_id)
        preempt = tuple(job_id for job_id in current if job_id not in kept)
        for job_id in moved:
            state["moves"][job_id] = state["moves"].get(job_id, 0) + 1
        state["reallocations"] += len(moved)
        return Decision(start=tuple(starts), preempt=preempt, wake_at=state["next"])

