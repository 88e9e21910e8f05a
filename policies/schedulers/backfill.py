"""FIFO with EASY backfilling (Lifka 1995): later jobs may jump ahead if they do not delay the head."""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.schedulers._passes import could_fit
from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobView

ESTIMATES = ("oracle", "user")


@dataclass
class EasyBackfill(Scheduler):
    """Start jobs in arrival order; when the first one does not fit, reserve for it the earliest time
    enough devices of one allowed pool free up (by device counts, from running jobs' estimated ends; a
    device fractional jobs share frees when the last of them ends), and start later jobs that fit now and
    either end before that time or leave enough devices for it (a fractional job costs it a device only if
    it opens a free one, or joins a shared one the reservation counts on, and runs past that time).

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
        shadow, extra, head_pool, counted = self._reservation(view, head, trial.free.pool_free, queue[:index], starts,
                                                              started_pool)
        for job in queue[index + 1:]:
            if trial.free.total == 0 and not trial.shared:
                break
            if not could_fit(job, trial.free, trial.shared):  # (the placer would find nothing)
                continue
            whole = job.gpu_fraction == 1.0
            free_before = 0 if whole else trial.free.total
            devices = trial.place(job)
            if devices is None:
                continue
            pool = cluster.pool_of_device(devices[0])
            if pool == head_pool:
                late = now + self._run_time(job, pool, now) > shadow
                if whole:
                    if late:
                        if job.gpus > extra:
                            trial.unplace(job, devices)
                            continue
                        extra -= job.gpus
                else:  # a share: it costs the head a device only if it opened one or keeps a counted one busy
                    device = devices[0]
                    opened = trial.free.total < free_before  # it took a whole free device, which the head counted
                    if late and (opened or device in counted):
                        if extra < 1:
                            trial.unplace(job, devices)
                            continue
                        extra -= 1
                        counted.discard(device)
                    elif opened:  # it ends before the shadow: the head still counts on the device being free then
                        counted.add(device)
            starts.append(Assignment(job.job_id, devices))
            started_pool[job.job_id] = pool
        return Decision(start=tuple(starts))

    def _reservation(self, view: ClusterView, head: JobView, pool_free: list[int], started: list[JobView],
                     starts: list[Assignment], started_pool: dict[int, int]) -> tuple[float, int, int, set[int]]:
        """(shadow time, devices spare at it, pool, shared devices counted on) for the earliest pool where the head
        job fits, with ``started`` (placed by ``starts``) running too. A device that fractional jobs share frees when
        the last of them ends; the shared devices whose freeing by the shadow the reservation counts on are returned
        with it."""
        now, cluster = view.now, view.cluster
        best: tuple[float, int, int, set[int]] = (math.inf, 0, -1, set())
        for pool in head.allowed_pools:
            ends: list[tuple[float, int, int]] = []  # (end, devices freed, shared device or -1)
            shared: dict[int, float] = {}  # a shared device: when its last sharer ends
            running = [(j, j.devices, self._end(j, pool, now)) for j in view.running
                       if cluster.pool_of_device(j.devices[0]) == pool]
            running += [(job, tuple(a.devices), now + self._run_time(job, pool, now))
                        for job, a in zip(started, starts, strict=True) if started_pool[job.job_id] == pool]
            for job, devices, end in running:
                if job.gpu_fraction == 1.0:
                    ends.append((end, job.gpus, -1))
                elif end > shared.get(devices[0], -math.inf):
                    shared[devices[0]] = end
            ends += [(end, 1, device) for device, end in shared.items()]
            ends.sort()
            available, shadow = pool_free[pool], now
            counted: set[int] = set()
            for end, gpus, device in ends:
                if available >= head.gpus:
                    break
                available += gpus
                shadow = end
                if device >= 0:
                    counted.add(device)
            if available >= head.gpus and shadow < best[0]:
                best = (shadow, available - head.gpus, pool, counted)
        return best
