"""The two passes schedulers share: start jobs in an order, or do so preempting lower-priority ones."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from policies.schedulers._index import JobClass, QueueIndex, RunningIndex, Waiting
from sim.platform.free_devices import FreeDevices
from sim.platform.shared_devices import SharedDevices
from sim.training.contracts import Assignment, ClusterView, Decision, PlacementTrial
from sim.training.jobs import JobView


def could_fit(job: JobView, free: FreeDevices, shared: SharedDevices | None = None) -> bool:
    """Enough free devices in some allowed pool, or for a fractional job room on a device of ``shared`` (a cheap
    check before asking the placer)."""
    gpus, pool_free = job.gpus, free.pool_free
    for p in job.allowed_pools:  # a loop, not any() over a generator: asked per job tried per pass
        if pool_free[p] >= gpus:
            return True
    fraction = job.spec.gpu_fraction
    return fraction != 1.0 and bool(shared) and shared.fits(fraction, job.allowed_pools)  # type: ignore[union-attr]


def start_in_order(view: ClusterView, order: Iterable[JobView], *, blocking: bool,
                   trial: PlacementTrial | None = None) -> list[Assignment]:
    """Place jobs in ``order`` on free devices. ``blocking``: stop at the first job that does not fit
    (strict order, head-of-line blocking); otherwise skip it and try the next."""
    starts = []
    for job in order:
        free, shared = (trial.free, trial.shared) if trial is not None else (view.free, view.shared)
        if free.total == 0 and not shared:
            break
        devices = None
        if could_fit(job, free, shared):
            trial = trial or view.trial()
            devices = trial.place(job)
        if devices is None:
            if blocking:
                break
            continue
        starts.append(Assignment(job.job_id, devices))
    return starts


def preemptive_pass(view: ClusterView, queue: QueueIndex, running: RunningIndex) -> Decision:
    """Start waiting jobs in ascending key order, preempting running jobs of a strictly higher level (the key's
    first element) when that makes room (see ``RunningIndex.victims_for``).

    The same decisions as trying every waiting job in key order, in fewer steps: the index hands out jobs
    class by class (allowed pools, gang size) merged by key, and a class is set aside while its gang size is
    blocked. A job that finds no room blocks the gangs at least as large in its pools (a later job, never of
    higher priority, cannot find room either) until a preemption changes the cluster; a job with no room and
    no lower-priority victim while no device is free ends the pass. Preempting a fractional job frees its share,
    not its device: when the victims chosen leave no room, the other jobs on their shared devices are preempted
    too if every one of them is of a higher level (``RunningIndex.sharers_of``). ``queue`` loses the jobs started,
    and ``running`` is told of the starts and preemptions."""
    trial = view.trial()
    starts: list[Assignment] = []
    preempt: list[int] = []
    blocked: dict[tuple[int, ...], int] = {}
    merge: list[tuple[tuple[Any, Waiting], JobClass]] = []
    for cls in queue.classes.values():
        if cls.chunks:
            cls.ci = cls.j = 0
            merge.append((cls.chunks[0][0], cls))
    heapq.heapify(merge)
    parked: list[JobClass] = []
    current = queue.current
    while merge:
        item, cls = merge[0]
        if cls.gpus >= blocked.get(cls.pools, 1 << 30):
            heapq.heappop(merge)
            parked.append(cls)
            continue
        key, entry = item
        job = entry.job
        if not queue.is_live(entry):  # cannot happen while the engine keeps the contract: drop it
            if current.get(job.job_id) is entry:
                del current[job.job_id]
            _next(merge, cls)
            continue
        free = trial.free
        devices = trial.place(job) if could_fit(job, free, trial.shared) else None
        if devices is None:
            level = key[0]
            if not running.any_above(level):
                if free.total == 0 and not trial.shared:
                    break  # no free devices and no lower-priority victim for this or any later job
                blocked[cls.pools] = cls.gpus
                continue
            chosen = running.victims_for(entry, level, trial) or _quota_victims(job, level, trial, running)
            if not chosen:
                blocked[cls.pools] = cls.gpus
                continue
            for victim in chosen:
                trial.release(victim.job)
            devices = trial.place(job)
            if devices is None:  # a share freed is not a device freed: the other jobs on its device go too, if all
                sharers = running.sharers_of(chosen, level)  # of them are above the level
                if sharers:
                    for victim in sharers:
                        trial.release(victim.job)
                    chosen = chosen + sharers
                    devices = trial.place(job)
            used = set(devices or ())
            for victim in chosen:  # preempted if the job took its devices, or took the quota room it left
                if devices is not None and (not used.isdisjoint(victim.job.devices)
                                            or not trial.reclaimable(victim.job)):
                    preempt.append(victim.job_id)
                    running.preempted(victim)
                else:
                    trial.reclaim(victim.job)
            if devices is None:
                blocked[cls.pools] = cls.gpus
                continue
            if blocked:
                blocked.clear()
                for other in parked:
                    after = other.seek(key)
                    if after is not None:
                        heapq.heappush(merge, (after, other))
                parked = []
        starts.append(Assignment(job.job_id, devices))
        del current[job.job_id]
        running.pending.append(job)
        _next(merge, cls)
    return Decision(start=tuple(starts), preempt=tuple(preempt))


def _quota_victims(job: JobView, level: Any, trial: PlacementTrial, running: RunningIndex) -> list[Any]:
    """Under tenant quotas, when the devices have room but the tenant's quota does not: the tenant's running jobs
    above ``level`` whose preemption frees enough of its quota in one allowed pool, lowest priority first, in the
    pool where that preempts the fewest devices (first pool on ties)."""
    best: list[Any] = []
    for pool, short in trial.quota_short(job).items():
        picked = running.lowest_in_pool(pool, level, short)
        if picked and (not best or sum(e.gpus for e in picked) < sum(e.gpus for e in best)):
            best = picked
    return best


def _next(merge: list[tuple[tuple[Any, Waiting], JobClass]], cls: JobClass) -> None:
    """Delete the item of the class at the top of ``merge`` (its job started, or is stale) and move the class
    on to its next item."""
    cls.delete(cls.ci, cls.j)
    after = cls.current()
    if after is None:
        heapq.heappop(merge)
    else:
        heapq.heapreplace(merge, (after, cls))
