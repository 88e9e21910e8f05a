"""Shortest remaining time first, preemptive."""

from __future__ import annotations

from dataclasses import dataclass

from policies.schedulers._passes import preemptive_pass
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobView


@dataclass
class ShortestRemainingTimeFirst(Scheduler):
    """Run the jobs with the least oracle work left; a waiting job preempts running jobs with strictly
    more work left when that frees room for it. Preempted jobs pay the checkpoint/restore cost."""

    name = "srtf"
    preemptive = True

    def priority(self, job: JobView, now: float) -> tuple[float, float, int]:
        """(oracle work left, arrival, id)."""
        return job.remaining_work(now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        now = view.now
        # preempt only for strictly less work left: the tie-breaks (arrival, id) order the queue, not preemptions
        return preemptive_pass(view, lambda j: self.priority(j, now), level=lambda k: k[0])
