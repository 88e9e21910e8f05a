"""The two passes schedulers share: start jobs in an order, or do so preempting lower-priority ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from sim.platform.free_devices import FreeDevices
from sim.training.contracts import Assignment, ClusterView, Decision, PlacementTrial
from sim.training.jobs import JobView


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


class _Victim(NamedTuple):
    """A running job that may be preempted, with where its devices are (computed once per pass)."""

    key: Any
    job: JobView
    pool: int
    per_node: tuple[tuple[int, int], ...]  # (node, devices of the job on it)


def preemptive_pass(view: ClusterView, key: Callable[[JobView], Any],
                    level: Callable[[Any], Any] = lambda k: k) -> Decision:
    """Start queued jobs in ascending ``key`` order, preempting running jobs whose ``level(key)`` is
    strictly larger when that makes room (see ``_victims_for``); ``level`` (monotone in the key)
    defaults to the key itself (LAS passes the queue index, so jobs of one queue never preempt each
    other). Running jobs' keys are computed only if some job does not fit on free devices."""
    keyed = sorted(((key(job), job) for job in view.queued), key=lambda kj: kj[0])
    victims: list[_Victim] | None = None
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
                victims = _victims(view, key)
            eligible = 0  # victims are sorted lowest priority first, so the eligible ones are a prefix
            while eligible < len(victims) and level(victims[eligible].key) > level(k):
                eligible += 1
            if not eligible:
                if trial.free.total == 0:
                    break  # no free devices and no lower-priority victim for this or any later job
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
    """Running jobs, lowest priority (largest key) first."""
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
    """Some of the ``eligible`` running jobs (lowest priority first) whose preemption makes room for
    ``job``, or ``[]``.

    A gang that fits in one node: the node of an allowed pool where preempting the fewest devices
    (lowest priority first) frees enough, ties by the lowest node id. A larger gang: lowest-priority
    jobs of one allowed pool until the pool has enough free devices.
    """
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
