"""First in, first out."""

from __future__ import annotations

from dataclasses import dataclass

from policies.schedulers._passes import start_in_order
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobView


@dataclass
class Fifo(Scheduler):
    """Start jobs in arrival order. ``blocking`` (default): a job that does not fit holds back every
    later one (strict FIFO); ``blocking: false`` lets later jobs that fit go first."""

    name = "fifo"
    blocking: bool = True

    def priority(self, job: JobView, now: float) -> tuple[float, int]:
        """(arrival, id)."""
        return job.arrival, job.job_id

    def waits_for_first(self) -> bool:
        """Strict FIFO (``blocking``) starts nothing while its first waiting job cannot start."""
        return self.blocking

    def schedule(self, view: ClusterView) -> Decision:
        return Decision(start=tuple(start_in_order(view, view.queued_lazily(), blocking=self.blocking)))
