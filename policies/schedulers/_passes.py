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


def preemptive_pass(view: ClusterView, key: Callable[[JobView], Any]) -> Decision:
    """Start queued jobs in ascending ``key`` order, preempting running jobs with a strictly larger key
    (lowest priority first) when that makes room. Victims whose devices the placement did not use
    keep running. Running jobs' keys are computed only if some job does not fit on free devices."""
    keyed = sorted(((key(job), job) for job in view.queued), key=lambda kj: kj[0])
    victims: list[tuple[Any, JobView]] | None = None
    cluster = view.cluster
    trial = view.trial()
    starts: list[Assignment] = []
    preempt: list[int] = []
    for k, job in keyed:
        devices = trial.place(job) if could_fit(job, trial.free) else None
        if devices is None:
            if victims is None:
                victims = sorted(((key(j), j) for j in view.running), key=lambda kj: kj[0], reverse=True)
            if not victims or not victims[0][0] > k:
                if trial.free.total == 0:
                    break  # no free devices and no lower-priority victim for this or any later job
                continue
            released = []
            for victim_key, victim in victims:
                if not victim_key > k:
                    break
                if cluster.pool_of_device(victim.devices[0]) not in job.allowed_pools:
                    continue
                trial.release(victim)
                released.append((victim_key, victim))
                if could_fit(job, trial.free):
                    devices = trial.place(job)
                    if devices is not None:
                        break
            used = set(devices or ())
            for entry in released:
                victim = entry[1]
                if devices is not None and not used.isdisjoint(victim.devices):
                    preempt.append(victim.job_id)
                    victims.remove(entry)
                else:
                    trial.reclaim(victim)
            if devices is None:
                continue
        starts.append(Assignment(job.job_id, devices))
    return Decision(start=tuple(starts), preempt=tuple(preempt))
