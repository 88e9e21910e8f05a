"""The bridge between gpusim's engine and an RL agent: a scheduler whose decisions come from outside.

At each scheduling pass with a queued job it could start, ``AgentScheduler`` records a ``DecisionPoint`` (the
first ``visible`` queued jobs and, for each, the devices the run's placer gives it now, or None), pauses the
kernel and asks for another pass at the same instant; the environment reads the point, and the agent's answer
(``answer``) is what that next pass returns: one start, which the engine validates like any decision, or
nothing (wait for the next event). After a start, the pass after it is the next decision point at that instant.
A pass at which no visible job can start is no decision: the scheduler waits without asking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from sim.training.contracts import NOTHING, Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobView


@dataclass(frozen=True)
class DecisionPoint:
    """What the agent decides on: the time, the first queued jobs (queue order) and the devices each would get
    now (None: it does not fit the free devices), the free devices per pool and the jobs running and queued."""

    now: float
    jobs: tuple[JobView, ...]
    devices: tuple[tuple[int, ...] | None, ...]
    pool_free: tuple[int, ...]
    running: int
    queued: int


@dataclass
class AgentScheduler(Scheduler):
    """A scheduler that defers each decision to an agent (``sim.gym.SchedulingEnv``), never preempting.
    ``visible``: how many queued jobs (from the head of the queue) a decision point shows."""

    name = "gym-agent"
    visible: int = 8
    point: DecisionPoint | None = field(default=None, init=False)
    _answer: Assignment | bool | None = field(default=False, init=False)
    _pause: Callable[[], None] | None = field(default=None, init=False, repr=False)
    _again: Callable[[], None] | None = field(default=None, init=False, repr=False)

    def connect(self, pause: Callable[[], None], again: Callable[[], None]) -> None:
        """Given by the environment: ``pause()`` stops the kernel after this pass, ``again()`` asks for another
        pass at this instant."""
        self._pause, self._again = pause, again

    def answer(self, start: Assignment | None) -> None:
        """The agent's answer to ``point``: start this job on these devices, or None (wait)."""
        if self.point is None:
            raise RuntimeError("no decision is pending")
        self._answer = start

    def schedule(self, view: ClusterView) -> Decision:
        if self._pause is None or self._again is None:
            raise RuntimeError("AgentScheduler runs inside sim.gym.SchedulingEnv, which connects it")
        if self.point is not None:  # the pass after a decision point: carry out the agent's answer
            answer, self._answer, self.point = self._answer, False, None
            if answer is False:
                raise RuntimeError("the kernel resumed before the agent answered")
            if answer is None:
                return NOTHING
            self._again()  # the next decision at this instant, once this start is applied
            return Decision(start=(answer,))  # type: ignore[arg-type]
        jobs = tuple(islice(view.queued_lazily(), self.visible))
        devices = tuple(_placement(view, job) for job in jobs)
        if all(d is None for d in devices):
            return NOTHING  # nothing the agent could start: wait for the next event without asking
        self.point = DecisionPoint(view.now, jobs, devices, tuple(view.free.pool_free), len(view.running),
                                   len(view.queued))
        self._pause()
        self._again()
        return NOTHING


def _placement(view: ClusterView, job: JobView) -> tuple[int, ...] | None:
    """The devices the run's placer gives ``job`` on the free devices now (a trial: nothing is taken)."""
    pool_free = view.free.pool_free
    if not any(pool_free[p] >= job.gpus for p in job.allowed_pools):
        return None
    return view.trial().place(job)
