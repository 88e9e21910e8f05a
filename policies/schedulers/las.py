"""Tiresias' discretized two-dimensional least-attained-service (2D-LAS), preemptive."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from policies.schedulers._passes import preemptive_pass
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobStatus, JobView


@dataclass
class LeastAttainedService(Scheduler):
    """Jobs sit in priority queues by attained service (device-seconds held so far, Tiresias' "2D"
    measure): queue i holds jobs with service in ``[thresholds[i-1], thresholds[i])``. Lower queues
    run first, FIFO by arrival inside a queue; a waiting job preempts running jobs of strictly
    higher queues. Starvation guard (Tiresias' STARVE_LIMIT rule): a preempted job that has waited
    ``promote_knob`` times the time it has run so far (and at least ``min_wait`` seconds) is promoted
    to the first queue, its attained service
    counted afresh from then on (so it keeps that queue until it has run through the first
    threshold again). ``promote_knob: 0`` turns the guard off. The scheduler wakes itself when a
    running job crosses a threshold or a waiting job becomes due for promotion."""

    name = "las"
    preemptive = True
    thresholds: tuple[float, ...] = (3600.0,)
    promote_knob: float = 8.0
    min_wait: float = 0.0
    _offset: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    # A waiting job's attained service does not change until it runs again: its queue and promotion time are
    # cached per job, keyed by when it entered the queue and its promotion offset (the queue can be long).
    _waiting: dict[int, tuple[float, float, int, float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if any(not math.isfinite(t) or t <= 0 for t in self.thresholds) or list(self.thresholds) != sorted(
                set(self.thresholds)):
            raise ValueError(f"thresholds must be positive, finite and increasing, got {self.thresholds}")
        if self.promote_knob < 0 or self.min_wait < 0:
            raise ValueError("promote_knob and min_wait must be >= 0")

    def _promotion_due(self, job: JobView) -> float:
        """When a preempted job becomes due for promotion (infinity if never)."""
        if self.promote_knob <= 0 or job.status is not JobStatus.PREEMPTED:
            return math.inf
        return self._waiting_entry(job)[3]

    def _waiting_entry(self, job: JobView) -> tuple[float, float, int, float]:
        """(queued_since, offset, queue, promotion due) of a job that is not running, cached."""
        job_id, since = job.job_id, job.queued_since
        offset = self._offset.get(job_id, 0.0)
        entry = self._waiting.get(job_id)
        if entry is None or entry[0] != since or entry[1] != offset:
            attained = job.attained_service(since)
            due = math.inf
            if self.promote_knob > 0 and job.status is JobStatus.PREEMPTED:
                due = since + max(self.min_wait, self.promote_knob * attained / job.gpus)
            entry = (since, offset, bisect.bisect_right(self.thresholds, attained - offset), due)
            self._waiting[job_id] = entry
        return entry

    def service(self, job: JobView, now: float) -> float:
        """Attained service that counts for the job's queue (since its last promotion)."""
        return job.attained_service(now) - self._offset.get(job.job_id, 0.0)

    def queue_of(self, job: JobView, now: float) -> int:
        if job.status is not JobStatus.RUNNING:
            return self._waiting_entry(job)[2]
        return bisect.bisect_right(self.thresholds, self.service(job, now))

    def priority(self, job: JobView, now: float) -> tuple[int, float, int]:
        """(queue, arrival, id): lower queues first, FIFO inside a queue."""
        return self.queue_of(job, now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        now = view.now
        queued = view.queued
        for job in queued:
            if self._promotion_due(job) <= now:
                self._offset[job.job_id] = job.attained_service(now)
        if len(self._waiting) > 2 * len(queued) + 1024:  # forget jobs that left the queue
            waiting = {j.job_id for j in queued}
            self._waiting = {k: v for k, v in self._waiting.items() if k in waiting}
        decision = preemptive_pass(view, lambda j: self.priority(j, now), level=lambda k: k[0])
        return Decision(start=decision.start, preempt=decision.preempt, wake_at=self._next_change(view, decision))

    def _next_change(self, view: ClusterView, decision: Decision) -> float | None:
        """Earliest time a running job crosses into a lower-priority queue, or a waiting job is promoted."""
        now = view.now
        if len(decision.start) == len(view.queued) and not decision.preempt:
            return None  # nobody left waiting: the next arrival or completion brings a pass anyway
        preempted = set(decision.preempt)
        wake = math.inf
        running = [(self.service(j, now), j.gpus) for j in view.running if j.job_id not in preempted]
        started = {a.job_id: len(a.devices) for a in decision.start}
        running += [(self.service(j, now), started[j.job_id]) for j in view.queued if j.job_id in started]
        for attained, gpus in running:
            i = bisect.bisect_right(self.thresholds, attained)
            if i < len(self.thresholds):
                wake = min(wake, now + (self.thresholds[i] - attained) / gpus)
        for j in view.queued:
            if j.job_id in started:
                continue
            due = self._promotion_due(j)  # cheap, and infinite for jobs never preempted: test it first
            if due < wake and self.queue_of(j, now) > 0:
                wake = due
        return wake if wake > now and math.isfinite(wake) else None
