"""Shortest job first, non-preemptive, on oracle run times."""

from __future__ import annotations

from dataclasses import dataclass

from policies.schedulers._passes import start_in_order
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobView


@dataclass
class ShortestJobFirst(Scheduler):
    """Start waiting jobs shortest (oracle run time on the reference device) first; ties by arrival.
    Running jobs are never preempted. ``blocking: false`` (default) skips a job that does not fit
    now; ``true`` makes it hold back longer ones."""

    name = "sjf"
    blocking: bool = False

    def priority(self, job: JobView, now: float) -> tuple[float, float, int]:
        """(oracle duration, arrival, id)."""
        return job.spec.duration, job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        order = sorted(view.queued, key=lambda j: self.priority(j, view.now))
        return Decision(start=tuple(start_in_order(view, order, blocking=self.blocking)))
