"""FIFO with EASY backfilling (Lifka 1995): later jobs may jump ahead if they do not delay the head."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobView

ESTIMATES = ("oracle", "user")


@dataclass
class EasyBackfill(Scheduler):
    """Start jobs in arrival order; when the first one does not fit, reserve for it the earliest time
    enough devices of one allowed pool free up (by device counts, from running jobs' estimated ends),
    and start later jobs that fit now and either end before that time or leave enough devices for it.

    ``estimate``: ``oracle`` uses true remaining run times; ``user`` uses each job's
    ``duration_estimate`` (a job without one is assumed never to end before the reservation, so it
    can only use devices the head job does not need).
    """

    name = "easy-backfill"
    estimate: str = "oracle"

    def __post_init__(self) -> None:
        if self.estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {self.estimate!r}")

    def _run_time(self, job: JobView, pool: int, now: float) -> float:
        """Estimated seconds a waiting job would run on ``pool`` once started."""
        if self.estimate == "oracle":
            return job.remaining_work(now) / job.speed_on(pool)
        return math.inf if job.spec.duration_estimate is None else job.spec.duration_estimate / job.speed_on(pool)

    def _end(self, job: JobView, pool: int, now: float) -> float:
        """Estimated end of a running job."""
        if self.estimate == "oracle":
            return now + job.remaining_work(now) / job.speed_on(pool)
        if job.spec.duration_estimate is None:
            return math.inf
        ran = job.attained_service(now) / (job.gpus * job.gpu_fraction)  # seconds run (device-seconds / share)
        return now + max(0.0, job.spec.duration_estimate / job.speed_on(pool) - ran)

    def schedule(self, view: ClusterView) -> Decision:
        now, cluster = view.now, view.cluster
        trial = view.trial()
        queue = list(view.queued)
        starts: list[Assignment] = []
        started_pool: dict[int, int] = {}
        index = 0
        for index, job in enumerate(queue):  # noqa: B007 - index is used after the loop
            devices = trial.place(job)
            if devices is None:
                break
            starts.append(Assignment(job.job_id, devices))
            started_pool[job.job_id] = cluster.pool_of_device(devices[0])
        else:
            return Decision(start=tuple(starts))
        head = queue[index]
        shadow, extra, head_pool = self._reservation(view, head, trial.free.pool_free, starts, started_pool)
        for job in queue[index + 1:]:
            if trial.free.total == 0 and not trial.shared:
                break
            devices = trial.place(job)
            if devices is None:
                continue
            pool = cluster.pool_of_device(devices[0])
            if pool == head_pool and now + self._run_time(job, pool, now) > shadow:
                if job.gpus > extra:
                    trial.unplace(job, devices)
                    continue
                extra -= job.gpus
            starts.append(Assignment(job.job_id, devices))
            started_pool[job.job_id] = pool
        return Decision(start=tuple(starts))

    def _reservation(self, view: ClusterView, head: JobView, pool_free: list[int], starts: list[Assignment],
                     started_pool: dict[int, int]) -> tuple[float, int, int]:
        """(shadow time, devices spare at it, pool) for the earliest pool where the head job fits."""
        now, cluster = view.now, view.cluster
        best = (math.inf, 0, -1)
        just_started = {a.job_id for a in starts}
        queued = {j.job_id: j for j in view.queued}
        for pool in head.allowed_pools:
            ends = [(self._end(j, pool, now), j.gpus) for j in view.running
                    if cluster.pool_of_device(j.devices[0]) == pool]
            ends += [(now + self._run_time(queued[i], pool, now), queued[i].gpus) for i in just_started
                     if started_pool[i] == pool]
            ends.sort()
            available, shadow = pool_free[pool], now
            for end, gpus in ends:
                if available >= head.gpus:
                    break
                available += gpus
                shadow = end
            if available >= head.gpus and shadow < best[0]:
                best = (shadow, available - head.gpus, pool)
        return best
