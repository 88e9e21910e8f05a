"""Shortest remaining time first, preemptive."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.schedulers._index import Indexes, RunningIndex
from policies.schedulers._passes import preemptive_pass
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobView


@dataclass
class ShortestRemainingTimeFirst(Scheduler):
    """Run the jobs with the least oracle work left; a waiting job preempts running jobs with strictly
    more work left when that frees room for it. Preempted jobs pay the checkpoint/restore cost."""

    name = "srtf"
    preemptive = True
    # the waiting jobs by key (a waiting job's work left does not change) and the running jobs, across passes
    _indexes: Indexes | None = field(default=None, init=False, repr=False, compare=False)

    def priority(self, job: JobView, now: float) -> tuple[float, float, int]:
        """(oracle work left, arrival, id)."""
        return job.remaining_work(now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        # preempt only for strictly less work left (the key's first element, its level): the tie-breaks
        # (arrival, id) order the queue, not preemptions
        now, indexes = view.now, self._indexes
        if indexes is None or indexes.is_new_run(view):
            indexes = self._indexes = Indexes(RunningIndex(self.priority))
        indexes.begin(view, lambda job: self.priority(job, now))
        return preemptive_pass(view, indexes.queue, indexes.running)

    def preempts_nothing(self, now: float) -> bool:
        """No running job has a lower priority level than a waiting job (``Indexes.preempts_nothing``)."""
        return self._indexes is not None and self._indexes.preempts_nothing(now)
