"""Tiresias' discretized least-attained-service: two-dimensional (2D-LAS, GPU-seconds) or by time alone, preemptive."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field

from policies.schedulers._index import CrossingIndex, Indexes, Waiting
from policies.schedulers._passes import preemptive_pass
from sim.training.contracts import ClusterView, Decision, Scheduler
from sim.training.jobs import JobStatus, JobView

# Tiresias' default queue thresholds, in GPU-seconds: SymbioticLab/Tiresias, simulator/jobs.py lines 102-104
# (``num_queue = 3``, ``queue_limit = [3250, 7200, 18000]``; with three queues only the first two limits are used,
# run_sim.py ``dlas_sim_jobs`` lines 1049-1050 demote while ``q_id < num_queue - 1``).
TIRESIAS_THRESHOLDS = (3250.0, 7200.0)
# Tiresias' ``dlas`` and ``dlas-gpu`` schemes run without the starvation rule: run_sim.py line 959
# (``dlas_sim_jobs(gputime=False, solve_starvation=0)``), called as ``dlas_sim_jobs()`` and ``dlas_sim_jobs(True)``
# at lines 2045-2049; the ``dlas-gpu-N`` variants (lines 2077-2092) set the knob to N.
TIRESIAS_PROMOTE_KNOB = 0.0
MEASURES = ("gpu-time", "time")


@dataclass
class LeastAttainedService(Scheduler):
    """Jobs sit in priority queues by attained service: queue i holds jobs with service in
    ``[thresholds[i-1], thresholds[i])``. ``measure: gpu-time`` (default) counts device-seconds held (Tiresias'
    2D-LAS, ``dlas-gpu``); ``measure: time`` counts seconds run whatever the gang size (Tiresias' 1D ``dlas``).
    Lower queues run first, FIFO by arrival inside a queue, and a job that does not fit lets later ones that fit
    start; a waiting job preempts running jobs of strictly higher queues. The defaults are Tiresias' own (queue
    limits 3,250 and 7,200, no starvation guard), so ``las`` with defaults is Tiresias' ``dlas-gpu``.
    Starvation guard (Tiresias' STARVE_LIMIT rule, off by default): a preempted job that has waited
    ``promote_knob`` times the time it has run so far (and at least ``min_wait`` seconds) is promoted
    to the first queue, its attained service counted afresh from then on (so it keeps that queue until it has
    run through the first threshold again). ``promote_knob: 0`` turns the guard off. The scheduler wakes itself
    when a running job crosses a threshold or a waiting job becomes due for promotion."""

    name = "las"
    preemptive = True
    thresholds: tuple[float, ...] = TIRESIAS_THRESHOLDS
    promote_knob: float = TIRESIAS_PROMOTE_KNOB
    min_wait: float = 0.0
    measure: str = "gpu-time"
    _offset: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    # Across passes, for the run in progress: the waiting jobs by key (a waiting job's attained service does not
    # change, so neither does its queue until it is promoted), the running jobs with their next threshold
    # crossing, and two heaps of (promotion due, seq, entry): all preempted waiting jobs (to promote them) and
    # those above the first queue (the next promotion that changes a queue, to wake for it).
    _indexes: Indexes | None = field(default=None, init=False, repr=False, compare=False)
    _promotions: list[tuple[float, int, Waiting]] = field(default_factory=list, init=False, repr=False, compare=False)
    _wakes: list[tuple[float, int, Waiting]] = field(default_factory=list, init=False, repr=False, compare=False)
    _last_wake: float | None = field(default=None, init=False, repr=False, compare=False)  # the last pass's wake_at
    _seq: int = field(default=0, init=False, repr=False, compare=False)  # a plain int: deepcopy of itertools.count
    # (tenants' schedulers are copies) warns on 3.13 and fails on 3.14

    def __post_init__(self) -> None:
        if any(not math.isfinite(t) or t <= 0 for t in self.thresholds) or list(self.thresholds) != sorted(
                set(self.thresholds)):
            raise ValueError(f"thresholds must be positive, finite and increasing, got {self.thresholds}")
        if self.promote_knob < 0 or self.min_wait < 0:
            raise ValueError("promote_knob and min_wait must be >= 0")
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {self.measure!r}")

    def _offset_of(self, job_id: int) -> float:
        return self._offset.get(job_id, 0.0)

    def service(self, job: JobView, now: float) -> float:
        """Attained service that counts for the job's queue (since its last promotion), in device-seconds or,
        with ``measure: time``, seconds run."""
        service = job.attained_service(now) - self._offset.get(job.job_id, 0.0)
        return service / job.gpus if self.measure == "time" else service

    def queue_of(self, job: JobView, now: float) -> int:
        if job.status is not JobStatus.RUNNING:
            now = job.queued_since  # a waiting job's service stands still
        return bisect_right(self.thresholds, self.service(job, now))

    def priority(self, job: JobView, now: float) -> tuple[int, float, int]:
        """(queue, arrival, id): lower queues first, FIFO inside a queue."""
        return self.queue_of(job, now), job.arrival, job.job_id

    def schedule(self, view: ClusterView) -> Decision:
        now, indexes = view.now, self._indexes
        if indexes is None or indexes.is_new_run(view):  # a new run: nothing of the last one counts
            self._offset.clear()
            self._promotions, self._wakes, self._last_wake = [], [], None
            indexes = self._indexes = Indexes(CrossingIndex(self.priority, tuple(self.thresholds), self._offset_of,
                                                                 per_device=self.measure == "time"))
        entered = indexes.begin(view, lambda job: self.priority(job, now))
        if self.promote_knob > 0:
            for entry in entered:
                job = entry.job
                if job.status is JobStatus.PREEMPTED:
                    since = job.queued_since
                    entry.due = since + max(self.min_wait, self.promote_knob * job.attained_service(since) / job.gpus)
                    self._seq += 1
                    seq = self._seq
                    heapq.heappush(self._promotions, (entry.due, seq, entry))
                    if entry.key[0] > 0:
                        heapq.heappush(self._wakes, (entry.due, seq, entry))
        self._promote(now)
        decision = preemptive_pass(view, indexes.queue, indexes.running)
        return Decision(start=decision.start, preempt=decision.preempt, wake_at=self._next_change(view, decision))

    def preempts_nothing(self, now: float) -> bool:
        """No running job is in a higher queue than a waiting job, none crossed a threshold since the last pass
        (``Indexes.preempts_nothing``), and a pass now would ask to wake when the last one did."""
        indexes = self._indexes
        if indexes is None or not indexes.preempts_nothing(now):
            return False
        running = indexes.running
        assert isinstance(running, CrossingIndex)
        # the wake-up a pass now would ask for: its jobs started by the last decision are in its index by then
        wake = running.next_crossing(now, running.pending)
        return self._last_wake == self._wake(wake, now)

    def _promote(self, now: float) -> None:
        """Preempted waiting jobs due for promotion go to the first queue, their service counted from now."""
        assert self._indexes is not None
        queue, promotions = self._indexes.queue, self._promotions
        while promotions and promotions[0][0] <= now:
            entry = heapq.heappop(promotions)[2]
            if not queue.is_live(entry):
                continue
            job = entry.job
            self._offset[job.job_id] = job.attained_service(now)
            if entry.key[0] != 0:
                queue.discard(entry)
                queue.add(job, self.priority(job, now)).due = entry.due

    def _next_change(self, view: ClusterView, decision: Decision) -> float | None:
        """Earliest time a running job crosses into a lower-priority queue, or a waiting job is promoted."""
        now = view.now
        indexes = self._indexes
        assert indexes is not None
        if not len(indexes.queue) and not decision.preempt:
            self._last_wake = None
            return None  # nobody left waiting: the next arrival or completion brings a pass anyway
        running = indexes.running
        wake = running.next_crossing()  # jobs preempted by this decision are out of the index already
        thresholds = self.thresholds
        for job in running.pending:  # started by this decision: their service as they wait now
            attained = self.service(job, now)
            i = bisect_right(thresholds, attained)
            if i < len(thresholds):
                wake = min(wake, now + (thresholds[i] - attained) / (1 if self.measure == "time" else job.gpus))
        self._last_wake = self._wake(wake, now)
        return self._last_wake

    def _wake(self, crossing: float, now: float) -> float | None:
        """The wake-up at ``now`` for the next threshold crossing at ``crossing``: that or the next promotion that
        changes a queue, whichever comes first; None if neither is after now."""
        assert self._indexes is not None
        wakes, queue = self._wakes, self._indexes.queue
        while wakes and not queue.is_live(wakes[0][2]):  # started, or promoted since
            heapq.heappop(wakes)
        if wakes and wakes[0][0] < crossing:
            crossing = wakes[0][0]
        return crossing if crossing > now and math.isfinite(crossing) else None
