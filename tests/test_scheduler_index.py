"""The preemptive schedulers' indexes (``policies/schedulers/_index.py``) against the queue-scanning passes they
replaced: the same event log on hand-worked near misses and on many random scenarios.

``ReferenceSrtf`` and ``ReferenceLas`` below are the schedulers as they were before the indexes: every pass sorts
the whole queue, computes every running job's key, and LAS scans the queue for promotions and its next wake-up.
They are slow but plainly right, so the indexed schedulers must decide exactly as they do.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pytest

from policies.placers import Count, WholeNodes
from policies.schedulers import LeastAttainedService, ShortestRemainingTimeFirst
from policies.schedulers._passes import could_fit
from sim.engine import PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.training.contracts import Assignment, ClusterView, Decision, PlacementTrial, Scheduler
from sim.training.jobs import JobStatus, JobView
from workloads.jobs import TrainingJob


# ------------------------------------------------------------------------------------------ the reference
class _Victim(NamedTuple):
    key: Any
    job: JobView
    pool: int
    per_node: tuple[tuple[int, int], ...]


def reference_pass(view: ClusterView, key: Callable[[JobView], Any]) -> Decision:
    """The old ``preemptive_pass``: the whole queue sorted, every running job a victim (level = key[0])."""
    keyed = sorted(((key(job), job) for job in view.queued), key=lambda kj: kj[0])
    victims: list[_Victim] | None = None
    trial = view.trial()
    starts: list[Assignment] = []
    preempt: list[int] = []
    blocked: dict[tuple[int, ...], int] = {}
    for k, job in keyed:
        if job.gpus >= blocked.get(job.allowed_pools, 1 << 30):
            continue
        devices = trial.place(job) if could_fit(job, trial.free) else None
        if devices is None:
            if victims is None:
                victims = _victims(view, key)
            eligible = 0
            while eligible < len(victims) and victims[eligible].key[0] > k[0]:
                eligible += 1
            if not eligible:
                if trial.free.total == 0:
                    break
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            chosen = _victims_for(job, victims[:eligible], trial, view)
            if not chosen:
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            for victim in chosen:
                trial.release(victim.job)
            devices = trial.place(job)
            used = set(devices or ())
            for victim in chosen:
                if devices is not None and not used.isdisjoint(victim.job.devices):
                    preempt.append(victim.job.job_id)
                    victims.remove(victim)
                else:
                    trial.reclaim(victim.job)
            if devices is None:
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            blocked.clear()
        starts.append(Assignment(job.job_id, devices))
    return Decision(start=tuple(starts), preempt=tuple(preempt))


def _victims(view: ClusterView, key: Callable[[JobView], Any]) -> list[_Victim]:
    cluster = view.cluster
    out = []
    for job in view.running:
        per_node: dict[int, int] = {}
        for d in job.devices:
            node = cluster.device_node[d]
            per_node[node] = per_node.get(node, 0) + 1
        out.append(_Victim(key(job), job, cluster.pool_of_device(job.devices[0]), tuple(per_node.items())))
    out.sort(key=lambda v: v.key, reverse=True)
    return out


def _victims_for(job: JobView, eligible: list[_Victim], trial: PlacementTrial, view: ClusterView) -> list[_Victim]:
    cluster = view.cluster
    free = trial.free
    best: tuple[int, int] | None = None
    best_victims: list[_Victim] = []
    for pool in job.allowed_pools:
        in_pool = [v for v in eligible if v.pool == pool]
        if job.gpus <= cluster.pools[pool].devices_per_node:
            by_node: dict[int, list[tuple[_Victim, int]]] = {}
            for victim in in_pool:
                for node, count in victim.per_node:
                    by_node.setdefault(node, []).append((victim, count))
            for node, on_node in by_node.items():
                room, picked, cost = free.count[node], [], 0
                for victim, count in on_node:
                    if room >= job.gpus:
                        break
                    room += count
                    picked.append(victim)
                    cost += victim.job.gpus
                if room >= job.gpus and (best is None or (cost, node) < best):
                    best, best_victims = (cost, node), picked
        else:
            room, picked, cost = free.pool_free[pool], [], 0
            for victim in in_pool:
                if room >= job.gpus:
                    break
                room += victim.job.gpus
                picked.append(victim)
                cost += victim.job.gpus
            if room >= job.gpus and (best is None or (cost, -1) < best):
                best, best_victims = (cost, -1), picked
    return best_victims


@dataclass
class ReferenceSrtf(Scheduler):
    name = "reference-srtf"
    preemptive = True

    def priority(self, job: JobView, now: float) -> tuple[float, float, int]:
        return job.remaining_work(now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        return reference_pass(view, lambda j: self.priority(j, view.now))


@dataclass
class ReferenceLas(Scheduler):
    name = "reference-las"
    preemptive = True
    thresholds: tuple[float, ...] = (3600.0,)
    promote_knob: float = 8.0
    min_wait: float = 0.0
    measure: str = "gpu-time"
    _offset: dict[int, float] = field(default_factory=dict, init=False, repr=False)

    def _due(self, job: JobView) -> float:
        if self.promote_knob <= 0 or job.status is not JobStatus.PREEMPTED:
            return math.inf
        since = job.queued_since
        return since + max(self.min_wait, self.promote_knob * job.attained_service(since) / job.gpus)

    def service(self, job: JobView, now: float) -> float:
        service = job.attained_service(now) - self._offset.get(job.job_id, 0.0)
        return service / job.gpus if self.measure == "time" else service

    def queue_of(self, job: JobView, now: float) -> int:
        return bisect.bisect_right(self.thresholds, self.service(job, now))

    def priority(self, job: JobView, now: float) -> tuple[int, float, int]:
        return self.queue_of(job, now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        now = view.now
        for job in view.queued:
            if self._due(job) <= now:
                self._offset[job.job_id] = job.attained_service(now)
        decision = reference_pass(view, lambda j: self.priority(j, now))
        return Decision(start=decision.start, preempt=decision.preempt, wake_at=self._next_change(view, decision))

    def _next_change(self, view: ClusterView, decision: Decision) -> float | None:
        now = view.now
        if len(decision.start) == len(view.queued) and not decision.preempt:
            return None
        preempted = set(decision.preempt)
        wake = math.inf
        running = [(self.service(j, now), j.gpus) for j in view.running if j.job_id not in preempted]
        started = {a.job_id: len(a.devices) for a in decision.start}
        running += [(self.service(j, now), started[j.job_id]) for j in view.queued if j.job_id in started]
        for attained, gpus in running:
            i = bisect.bisect_right(self.thresholds, attained)
            if i < len(self.thresholds):
                wake = min(wake, now + (self.thresholds[i] - attained) / (1 if self.measure == "time" else gpus))
        for j in view.queued:
            if j.job_id in started:
                continue
            due = self._due(j)
            if due < wake and self.queue_of(j, now) > 0:
                wake = due
        return wake if wake > now and math.isfinite(wake) else None


# ------------------------------------------------------------------------------------------ helpers
def events(scheduler: Scheduler, cluster: Cluster, jobs: list[TrainingJob], **kwargs: Any) -> list[tuple]:
    res = Simulation(cluster, jobs, scheduler=scheduler, record_events=True, **kwargs).run()
    return [(float(t), e, int(j), d) for t, e, j, d in res.events.itertuples(index=False)]


def same_as_reference(indexed: Scheduler, reference: Scheduler, cluster: Cluster, jobs: list[TrainingJob],
                      **kwargs: Any) -> list[tuple]:
    got = events(indexed, cluster, jobs, **kwargs)
    want = events(reference, cluster, jobs, **kwargs)
    assert got == want
    return got


def log(events_: list[tuple], *kinds: str) -> list[tuple[float, str, int]]:
    return [(t, e, j) for t, e, j, _ in events_ if e in kinds]


def random_jobs(rng: np.random.Generator, cluster: Cluster, count: int) -> list[TrainingJob]:
    """Jobs with tied arrivals and durations likely (multiples of 1/4 s), gangs from 1 to the largest pool,
    some restricted to one device type."""
    largest = max(cluster.pool_devices)
    devices = [p.device for p in cluster.pools]
    jobs = []
    for i in range(count):
        arrival = float(rng.integers(0, 4 * count * 20)) / 4
        gpus = int(rng.choice([1, 1, 1, 2, 4, 8, int(rng.integers(1, largest + 1))]))
        duration = float(rng.integers(1, 4 * 2000)) / 4
        allowed = None if rng.random() < 0.8 else (devices[int(rng.integers(len(devices)))],)
        jobs.append(TrainingJob(i, arrival, gpus, duration, allowed_devices=allowed))
    return jobs


def random_cluster(rng: np.random.Generator) -> Cluster:
    types = ["h100", "a100", "v100"]
    pools = [PoolSpec(types[p], nodes=int(rng.integers(1, 6)), devices_per_node=int(rng.choice([1, 2, 4, 8])))
             for p in range(int(rng.integers(1, 4)))]
    return Cluster(pools)


ONE_GPU = Cluster([PoolSpec("h100", 1, 1)])


class Shared(Scheduler):
    """Hands the same scheduler instance to every run (a Simulation copies the instance it is given);
    ``same_run_id`` also hides that the runs differ, as a repeated ``id()`` would."""

    name = "shared"
    preemptive = True

    def __init__(self, inner: Scheduler, same_run_id: bool = False) -> None:
        self.inner = inner
        self.same_run_id = same_run_id

    def __deepcopy__(self, memo: dict) -> Shared:
        return self

    def schedule(self, view: ClusterView) -> Decision:
        if self.same_run_id:
            view.run_id = 0
        return self.inner.schedule(view)

    def priority(self, job: JobView, now: float) -> Any:
        return self.inner.priority(job, now)


# ------------------------------------------------------------------------------------------ hand-worked near misses
def test_srtf_a_preempted_job_reenters_with_the_work_it_has_left():
    # 1 x 1 GPU, checkpoint 5 + restore 5.
    #   t=0   job 0 (100 s) starts.
    #   t=10  job 1 (20 s) arrives: job 0 has 90 s left > 20, so job 1 preempts it and runs 10..30. Job 0
    #         re-enters the queue keyed by its 90 s left, not the 100 it arrived with.
    #   t=20  job 2 (95 s) arrives: more than job 1's 10 s left, it waits -- behind job 0 (90 < 95).
    #   t=30  job 1 ends: job 0 (90) starts before job 2 (95) and pays its 10 s overhead.
    #   t=35  job 3 (5 s) arrives while job 0 restores: job 0 still has its 90 s (no progress while
    #         restoring) and is preempted again; it re-enters with the same key as before. Job 3 runs 35..40.
    #   t=40  job 0 (90) again before job 2 (95): 10 s overhead + 90 s -> ends 140; job 2 runs 140..235.
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 20.0), TrainingJob(2, 20.0, 1, 95.0),
            TrainingJob(3, 35.0, 1, 5.0)]
    got = same_as_reference(ShortestRemainingTimeFirst(), ReferenceSrtf(), ONE_GPU, jobs,
                            preemption=PreemptionCost(5.0, 5.0))
    assert log(got, "start", "preempt", "finish") == [
        (0.0, "start", 0), (10.0, "preempt", 0), (10.0, "start", 1), (30.0, "finish", 1), (30.0, "start", 0),
        (35.0, "preempt", 0), (35.0, "start", 3), (40.0, "finish", 3), (40.0, "start", 0), (140.0, "finish", 0),
        (140.0, "start", 2), (235.0, "finish", 2)]


def test_srtf_a_job_started_preempted_and_requeued_in_consecutive_passes():
    # 1 x 1 GPU, 5 + 5 s overhead. Each pass undoes the last one's start:
    #   t=0 job 0 (100 s) starts; t=1 job 1 (50 s) preempts it (99 left); t=2 job 2 (10 s) preempts job 1
    #   (49 left). The index met job 0 as started (pass 0), running (pass 1: a victim) and waiting again.
    #   t=12 job 2 ends: job 1 (49) before job 0 (99): 10 + 49 -> ends 71; job 0: 10 + 99 -> ends 180.
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 1.0, 1, 50.0), TrainingJob(2, 2.0, 1, 10.0)]
    got = same_as_reference(ShortestRemainingTimeFirst(), ReferenceSrtf(), ONE_GPU, jobs,
                            preemption=PreemptionCost(5.0, 5.0))
    assert log(got, "start", "preempt", "finish") == [
        (0.0, "start", 0), (1.0, "preempt", 0), (1.0, "start", 1), (2.0, "preempt", 1), (2.0, "start", 2),
        (12.0, "finish", 2), (12.0, "start", 1), (71.0, "finish", 1), (71.0, "start", 0), (180.0, "finish", 0)]


def test_las_promotes_at_exactly_its_due_time_ahead_of_a_long_queue():
    # 1 x 1 GPU, threshold 100, promote_knob 2, no overhead.
    #   job 0 (10000 s) runs from 0; at 150, 200 jobs of 60 s arrive in queue 0, and job 1 preempts job 0
    #   (150 device-seconds: queue 1). Job 0 is due for promotion at 150 + 2 x 150 = 450, exactly when job 5
    #   ends (jobs 1..5 run back to back from 150): promoted at 450 (due <= now), it is first in queue 0
    #   (earliest arrival) and starts at 450 ahead of 195 waiting jobs. Its service counts from 150 again, so
    #   it crosses 100 at 550 and job 6 preempts it. Next due: 550 + 2 x 250 = 1050, in the middle of job 14
    #   (1030..1090): promoted then (a pass at 1050), it starts when job 14 ends, at 1090, and so on.
    jobs = [TrainingJob(0, 0.0, 1, 10000.0)] + [TrainingJob(k, 150.0, 1, 60.0) for k in range(1, 201)]
    params = {"thresholds": (100.0,), "promote_knob": 2.0}
    got = same_as_reference(LeastAttainedService(**params), ReferenceLas(**params), ONE_GPU, jobs,
                            preemption=PreemptionCost(0.0, 0.0))
    assert [e for e in log(got, "start", "preempt") if e[2] == 0][:6] == [
        (0.0, "start", 0), (150.0, "preempt", 0), (450.0, "start", 0), (550.0, "preempt", 0), (1090.0, "start", 0),
        (1190.0, "preempt", 0)]
    res = Simulation(ONE_GPU, jobs, scheduler={"name": "las", **params}, preemption=PreemptionCost(0.0, 0.0)).run()
    assert 1050.0 in set(res.timeline["time"])  # the scheduler woke itself for the promotion


@pytest.mark.parametrize("same_run_id", [False, True])
@pytest.mark.parametrize("make", [ShortestRemainingTimeFirst,
                                  lambda: LeastAttainedService(thresholds=(100.0,), promote_knob=2.0)])
def test_a_scheduler_instance_used_for_a_second_run_starts_afresh(make, same_run_id):
    # The same instance decides two runs; the second decides as a fresh instance does, though the first left
    # jobs waiting and running in its indexes (cut by a horizon) and LAS offsets from promotions. With the
    # runs' ids made equal, time going back (the second run starts at 0) tells them apart.
    cluster = Cluster([PoolSpec("h100", 2, 2)])
    first = [TrainingJob(0, 0.0, 2, 5000.0)] + [TrainingJob(k, 100.0 + k, 1, 70.0 * k) for k in range(1, 30)]
    second = [TrainingJob(k, 0.0 + 3 * k, 1 + k % 2, 40.0 + 13 * k) for k in range(25)]
    shared = Shared(make(), same_run_id)
    events(shared, cluster, first, preemption=PreemptionCost(0.0, 0.0), horizon=1500.0)
    assert events(shared, cluster, second) == events(make(), cluster, second)
    # a copy of a used instance (what a Simulation makes of it) starts afresh too
    assert copy.deepcopy(shared.inner)._indexes is None
    assert events(shared.inner, cluster, second) == events(make(), cluster, second)


# ------------------------------------------------------------------------------------------ random scenarios
@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("placer", ["consolidate", "first-fit", "spread", "random"])
def test_srtf_decides_as_the_full_scan_on_random_scenarios(seed, placer):
    rng = np.random.default_rng(seed)
    cluster = random_cluster(rng)
    jobs = random_jobs(rng, cluster, int(rng.integers(5, 60)))
    same_as_reference(ShortestRemainingTimeFirst(), ReferenceSrtf(), cluster, jobs, placer=placer, seed=seed,
                      preemption=PreemptionCost(float(rng.integers(0, 40)), float(rng.integers(0, 40))))


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("placer", ["consolidate", "first-fit", "spread", "random"])
def test_las_decides_as_the_full_scan_on_random_scenarios(seed, placer):
    rng = np.random.default_rng(1000 + seed)
    cluster = random_cluster(rng)
    jobs = random_jobs(rng, cluster, int(rng.integers(5, 60)))
    thresholds = tuple(sorted({float(rng.integers(1, 40)) * 25 for _ in range(int(rng.integers(1, 4)))}))
    params = {"thresholds": thresholds, "promote_knob": float(rng.choice([0.0, 0.5, 1.0, 2.0, 8.0])),
              "min_wait": float(rng.choice([0.0, 0.0, 100.0]))}
    same_as_reference(LeastAttainedService(**params), ReferenceLas(**params), cluster, jobs, placer=placer,
                      seed=seed, preemption=PreemptionCost(float(rng.integers(0, 40)), float(rng.integers(0, 40))))


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("placer", [Count(), WholeNodes(), "consolidate"], ids=["count", "whole-nodes", "consolidate"])
@pytest.mark.parametrize("measure", ["time", "gpu-time"])
def test_las_by_time_and_tiresias_placers_decide_as_the_full_scan(seed, placer, measure):
    # Time-only LAS (thresholds in seconds run) and Tiresias' placers, on the random scenarios above.
    rng = np.random.default_rng(2000 + seed)
    cluster = random_cluster(rng)
    jobs = random_jobs(rng, cluster, int(rng.integers(5, 60)))
    thresholds = tuple(sorted({float(rng.integers(1, 40)) * 25 for _ in range(int(rng.integers(1, 4)))}))
    params = {"thresholds": thresholds, "promote_knob": float(rng.choice([0.0, 0.5, 2.0])), "measure": measure}
    same_as_reference(LeastAttainedService(**params), ReferenceLas(**params), cluster, jobs, placer=placer,
                      seed=seed, preemption=PreemptionCost(float(rng.integers(0, 40)), float(rng.integers(0, 40))))


@pytest.mark.parametrize("seed", range(6))
def test_preemptive_schedulers_decide_as_the_full_scan_under_network_contention(seed):
    # Model jobs whose rates change as contention does: SRTF's work left falls at changing rates.
    from sim.platform.network.model import model_job

    cluster = Cluster([PoolSpec("h100", nodes=4, devices_per_node=8), PoolSpec("a100", nodes=2, devices_per_node=8)])
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(40):
        arrival = float(rng.integers(0, 2000))
        if rng.random() < 0.5:
            gpus = int(rng.choice([2, 4, 8, 16]))
            tensor = min(gpus, 8)
            jobs.append(model_job(cluster, i, arrival, "llama-3.1-8b", gpus, int(rng.integers(5, 60)),
                                  {"tensor": tensor, "pipeline": 1, "micro_batch": 1,
                                   "global_batch": 2 * gpus // tensor}, pool=int(rng.integers(2))))
        else:
            jobs.append(TrainingJob(i, arrival, int(rng.choice([1, 2, 4, 8])), float(rng.integers(10, 3000))))
    same_as_reference(ShortestRemainingTimeFirst(), ReferenceSrtf(), cluster, jobs, network=True, seed=seed)
    params = {"thresholds": (300.0, 3000.0), "promote_knob": 1.0}
    same_as_reference(LeastAttainedService(**params), ReferenceLas(**params), cluster, jobs, network=True, seed=seed)
