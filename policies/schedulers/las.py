"""Tiresias' discretized two-dimensional least-attained-service (2D-LAS), preemptive."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from policies.schedulers._passes import preemptive_pass
from sim.contracts import ClusterView, Decision, Scheduler
from sim.job_state import JobView


@dataclass
class LeastAttainedService(Scheduler):
    """Jobs sit in priority queues by attained service (device-seconds held so far, Tiresias' "2D"
    measure): queue i holds jobs with service in ``[thresholds[i-1], thresholds[i])``. Lower queues
    run first, FIFO by arrival inside a queue; a waiting job preempts running jobs of strictly
    higher queues. Starvation guard: a job that has waited ``promote_knob`` times its last run
    (and at least ``min_wait`` seconds) goes back to the first queue. ``promote_knob: 0`` turns it
    off. The scheduler wakes itself when a running job crosses a threshold."""

    name = "las"
    preemptive = True
    thresholds: tuple[float, ...] = (3600.0,)
    promote_knob: float = 8.0
    min_wait: float = 0.0

    def __post_init__(self) -> None:
        if any(not math.isfinite(t) or t <= 0 for t in self.thresholds) or list(self.thresholds) != sorted(
                set(self.thresholds)):
            raise ValueError(f"thresholds must be positive, finite and increasing, got {self.thresholds}")
        if self.promote_knob < 0 or self.min_wait < 0:
            raise ValueError("promote_knob and min_wait must be >= 0")

    def queue_of(self, job: JobView, now: float) -> int:
        if self.promote_knob > 0 and job.preemptions and job.status.value == "preempted":
            waited = now - job.queued_since
            if waited >= max(self.min_wait, self.promote_knob * job.last_run):
                return 0
        return bisect.bisect_right(self.thresholds, job.attained_service(now))

    def schedule(self, view: ClusterView) -> Decision:
        now = view.now
        decision = preemptive_pass(view, lambda j: (self.queue_of(j, now), j.arrival, j.job_id))
        return Decision(start=decision.start, preempt=decision.preempt, wake_at=self._next_change(view, decision))

    def _next_change(self, view: ClusterView, decision: Decision) -> float | None:
        """Earliest time a running job crosses into a lower-priority queue, or a waiting job is promoted."""
        now = view.now
        if len(decision.start) == len(view.queued):
            return None  # nobody left waiting: the next arrival or completion brings a pass anyway
        preempted = set(decision.preempt)
        wake = math.inf
        running = [(j.attained_service(now), j.gpus) for j in view.running if j.job_id not in preempted]
        started = {a.job_id: len(a.devices) for a in decision.start}
        running += [(j.attained_service(now), started[j.job_id]) for j in view.queued if j.job_id in started]
        for attained, gpus in running:
            i = bisect.bisect_right(self.thresholds, attained)
            if i < len(self.thresholds):
                wake = min(wake, now + (self.thresholds[i] - attained) / gpus)
        if self.promote_knob > 0:
            for j in view.queued:
                if j.job_id not in started and j.preemptions and self.queue_of(j, now) > 0:
                    wake = min(wake, j.queued_since + max(self.min_wait, self.promote_knob * j.last_run))
        return wake if wake > now and math.isfinite(wake) else None
