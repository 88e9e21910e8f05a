"""The two passes schedulers share: start jobs in an order, or do so preempting lower-priority ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sim.allocation import FreeDevices
from sim.contracts import Assignment, ClusterView, Decision, PlacementTrial
from sim.job_state import JobView


def could_fit(job: JobView, free: FreeDevices) -> bool:
    """Enough free devices in some allowed pool (a cheap check before asking the placer)."""
    return any(free.pool_free[p] >= job.gpus for p in job.allowed_pools)


def start_in_order(view: ClusterView, order: Iterable[JobView], *, blocking: bool,
                   trial: PlacementTrial | None = None) -> list[Assignment]:
    """Place jobs in ``order`` on free devices. ``blocking``: stop at the first job that does not fit
    (strict order, head-of-line blocking); otherwise skip it and try the next."""
    starts = []
    for job in order:
        free = trial.free if trial is not None else view.free
        if free.total == 0:
            break
        devices = None
        if could_fit(job, free):
            trial = trial or view.trial()
            devices = trial.place(job)
        if devices is None:
            if blocking:
                break
            continue
        starts.append(Assignment(job.job_id, devices))
    return starts


def preemptive_pass(view: ClusterView, key: Callable[[JobView], Any],
                    level: Callable[[Any], Any] = lambda k: k) -> Decision:
    """Start queued jobs in ascending ``key`` order, preempting running jobs whose ``level(key)`` is
    strictly larger when that makes room (see ``_victims_for``); ``level`` defaults to the key itself
    (LAS passes the queue index, so jobs of one queue never preempt each other). Running jobs' keys
    are computed only if some job does not fit on free devices."""
    keyed = sorted(((key(job), job) for job in view.queued), key=lambda kj: kj[0])
    victims: list[tuple[Any, JobView]] | None = None
    trial = view.trial()
    starts: list[Assignment] = []
    preempt: list[int] = []
    # Smallest gang (per set of allowed pools) that found no room since the last preemption: a later
    # job (never higher priority) at least as large cannot find room either, so it is not tried.
    blocked: dict[tuple[int, ...], int] = {}
    for k, job in keyed:
        if job.gpus >= blocked.get(job.allowed_pools, 1 << 30):
            continue
        devices = trial.place(job) if could_fit(job, trial.free) else None
        if devices is None:
            if victims is None:
                victims = sorted(((key(j), j) for j in view.running), key=lambda kj: kj[0], reverse=True)
            if not victims or not level(victims[0][0]) > level(k):
                if trial.free.total == 0:
                    break  # no free devices and no lower-priority victim for this or any later job
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            chosen = _victims_for(job, [v for kv, v in victims if level(kv) > level(k)], trial, view)
            if not chosen:
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            for victim in chosen:
                trial.release(victim)
            devices = trial.place(job)
            used = set(devices or ())
            for victim in chosen:
                if devices is not None and not used.isdisjoint(victim.devices):
                    preempt.append(victim.job_id)
                    victims = [kv for kv in victims if kv[1] is not victim]
                else:
                    trial.reclaim(victim)
            if devices is None:
                blocked[job.allowed_pools] = min(job.gpus, blocked.get(job.allowed_pools, job.gpus))
                continue
            blocked.clear()
        starts.append(Assignment(job.job_id, devices))
    return Decision(start=tuple(starts), preempt=tuple(preempt))


def _victims_for(job: JobView, eligible: list[JobView], trial: PlacementTrial, view: ClusterView) -> list[JobView]:
    """Some of the ``eligible`` running jobs (lowest priority first) whose preemption makes room for
    ``job``, or ``[]``.

    A gang that fits in one node: the node of an allowed pool where preempting the fewest devices
    (lowest priority first) frees enough, ties by the lowest node id. A larger gang: lowest-priority
    jobs of one allowed pool until the pool has enough free devices.
    """
    cluster = view.cluster
    free = trial.free
    best: tuple[int, int] | None = None
    best_victims: list[JobView] = []
    for pool in job.allowed_pools:
        size = cluster.pools[pool].devices_per_node
        if job.gpus <= size:
            by_node: dict[int, list[JobView]] = {}
            for victim in eligible:
                for node in {cluster.device_node[d] for d in victim.devices}:
                    if cluster.node_pool[node] == pool:
                        by_node.setdefault(node, []).append(victim)
            for node, on_node in by_node.items():
                room, picked, cost = free.count[node], [], 0
                for victim in on_node:
                    if room >= job.gpus:
                        break
                    room += sum(1 for d in victim.devices if cluster.device_node[d] == node)
                    picked.append(victim)
                    cost += victim.gpus
                if room >= job.gpus and (best is None or (cost, node) < best):
                    best, best_victims = (cost, node), picked
        else:
            room, picked, cost = free.pool_free[pool], [], 0
            for victim in eligible:
                if room >= job.gpus:
                    break
                if cluster.pool_of_device(victim.devices[0]) == pool:
                    room += victim.gpus
                    picked.append(victim)
                    cost += victim.gpus
            if room >= job.gpus and (best is None or (cost, -1) < best):
                best, best_victims = (cost, -1), picked
    return best_victims
