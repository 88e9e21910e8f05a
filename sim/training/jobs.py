"""The engine's mutable record of one training job, and the read-only view policies get of it."""

from __future__ import annotations

import enum
import math

from sim.training.packing import PACKED_SHARE
from workloads.jobs import TrainingJob


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"
    UNSCHEDULABLE = "unschedulable"


class JobRecord:
    """Runtime state of a job. Work is in reference-seconds; a running job does ``rate`` of it per second
    once its restore overhead (``progress_start``) has passed (fluid progress).

    A job with phases (``TrainingJob.phases``) is in phase ``phase``, which ends when ``remaining`` falls to
    ``phase_end`` (the work of the later phases; 0 in the last phase and for a job without phases); ``speeds`` are the
    current phase's, ``phase_speeds`` every phase's.

    A job packed with another on the same devices (``sim.training.packing``) has that job's record as ``partner``,
    runs at ``packing`` times its alone rate, and has been packed since ``packed_since``; ``packed_seconds`` adds up
    its finished packed stretches. The half of the devices' time a packed stretch does not charge it is taken off
    ``device_seconds`` and ``attained`` when the stretch ends."""

    __slots__ = (
        "allowed_pools",
        "attained",
        "borrowing_starts",
        "device_seconds",
        "devices",
        "efficiency",
        "finish",
        "first_start",
        "gang_speedup",
        "last_run",
        "network_level",
        "network_seconds",
        "overhead_total",
        "packed_seconds",
        "packed_since",
        "packing",
        "partner",
        "pending_overhead",
        "phase",
        "phase_end",
        "phase_ends",
        "phase_speeds",
        "pool",
        "preemptions",
        "progress_start",
        "queued_since",
        "rate",
        "reason",
        "reclaims",
        "remaining",
        "run_start",
        "slowdown",
        "slowdown_seconds",
        "slowdown_since",
        "spec",
        "speeds",
        "status",
        "version",
        "view",
        "waited",
    )

    def __init__(self, spec: TrainingJob, allowed_pools: tuple[int, ...], speeds: dict[int, float],
                 phase_speeds: tuple[dict[int, float], ...] | None = None) -> None:
        self.spec = spec
        self.allowed_pools = allowed_pools
        self.phase = 0
        self.phase_speeds = phase_speeds
        if phase_speeds is None:  # given for a job with phases (TrainingJob.phases), one per phase
            self.speeds = speeds
            self.phase_ends: tuple[float, ...] = (0.0,)
        else:
            self.speeds = phase_speeds[0]
            later = [p.duration for p in spec.phases]  # type: ignore[union-attr]
            self.phase_ends = tuple(math.fsum(later[i + 1:]) for i in range(len(later)))
        self.phase_end = self.phase_ends[0]
        self.status = JobStatus.QUEUED
        self.remaining = float(spec.duration)
        self.rate = 0.0
        self.gang_speedup = 1.0  # an elastic job's speed on its current gang over its speed on ``spec.gpus``
        self.efficiency = 1.0  # share of running time spent progressing: interval / (interval + cost) with checkpoints
        self.devices: tuple[int, ...] = ()
        self.pool = -1
        self.run_start = math.nan
        self.progress_start = math.nan
        self.pending_overhead = 0.0
        self.attained = 0.0
        self.first_start = math.nan
        self.finish = math.nan
        self.preemptions = 0
        self.reclaims = 0  # preemptions that were another tenant taking back its quota
        self.borrowing_starts = 0  # starts that left its tenant above its nominal quota in the pool
        self.overhead_total = 0.0
        self.device_seconds = 0.0
        self.queued_since = spec.arrival
        self.waited = 0.0  # seconds waiting in the queue, over every wait that ended (first one and after preemptions)
        self.last_run = 0.0
        self.version = 0
        self.reason = ""
        # network model: placement level of the last start; time-weighted communication slowdown
        self.network_level = ""
        self.slowdown = 1.0
        self.slowdown_since = math.nan
        self.packing = 1.0  # its speed packed with ``partner`` over its speed alone (1 when alone)
        self.partner: JobRecord | None = None
        self.packed_since = math.nan
        self.packed_seconds = 0.0
        self.slowdown_seconds = 0.0  # integral of the slowdown over running time
        self.network_seconds = 0.0  # running time the integral covers
        self.view = JobView(self)

    def ideal_seconds(self) -> float:
        """Run time alone on the fastest pool it may use, with no preemption (NaN if it may use none); a phased job
        takes each phase on its fastest pool."""
        if not self.speeds:
            return math.nan
        if self.phase_speeds is None:
            return self.spec.duration / max(self.speeds.values())
        return math.fsum(p.duration / max(s.values()) for p, s in zip(self.spec.phases, self.phase_speeds, strict=True))  # type: ignore[arg-type]

    def remaining_at(self, now: float) -> float:
        if self.status is not JobStatus.RUNNING or now <= self.progress_start:
            return self.remaining
        return max(0.0, self.remaining - (now - self.progress_start) * self.rate)

    def attained_at(self, now: float) -> float:
        if self.status is not JobStatus.RUNNING:
            return self.attained
        fraction = self.spec.gpu_fraction
        if fraction != 1.0:
            return self.attained + (now - self.run_start) * fraction
        if self.partner is not None:  # packed now: this stretch charges half its devices' time
            return self.attained + ((now - self.run_start) - PACKED_SHARE * (now - self.packed_since)) * len(
                self.devices)
        return self.attained + (now - self.run_start) * len(self.devices)


class JobView:
    """What a policy may read of a job. Live quantities take the current time as an argument."""

    __slots__ = ("_r",)

    def __init__(self, record: JobRecord) -> None:
        self._r = record

    @property
    def spec(self) -> TrainingJob:
        return self._r.spec

    @property
    def job_id(self) -> int:
        return self._r.spec.job_id

    @property
    def gpus(self) -> int:
        return self._r.spec.gpus

    @property
    def arrival(self) -> float:
        return self._r.spec.arrival

    @property
    def gpu_fraction(self) -> float:
        """Share of one device the job asks for (below 1: it shares a device with other fractional jobs)."""
        return self._r.spec.gpu_fraction

    @property
    def status(self) -> JobStatus:
        return self._r.status

    @property
    def devices(self) -> tuple[int, ...]:
        """Devices held while running; empty otherwise."""
        return self._r.devices

    @property
    def allowed_pools(self) -> tuple[int, ...]:
        """Pools whose device type the job may use and that are large enough for its gang."""
        return self._r.allowed_pools

    def with_gang(self, gang: int, pools: tuple[int, ...] | None = None) -> JobView:
        """The job as a placer should see it to run on ``gang`` devices (an elastic job's other gang sizes,
        ``spec.gang_range``), optionally within ``pools`` only."""
        return _GangView(self._r, gang, self._r.allowed_pools if pools is None else pools)

    def speed_on(self, pool: int) -> float:
        """Work per second on ``pool`` relative to the job's reference device (in its current phase)."""
        return self._r.speeds[pool]

    @property
    def phase(self) -> int:
        """The phase the job is in (0 for a job without phases)."""
        return self._r.phase

    @property
    def queued_since(self) -> float:
        """When the job last entered the queue (arrival, or its last preemption)."""
        return self._r.queued_since

    @property
    def last_run(self) -> float:
        """Length in seconds of the job's last run before it was preempted (0 if never preempted)."""
        return self._r.last_run

    @property
    def preemptions(self) -> int:
        return self._r.preemptions

    @property
    def job_type(self) -> str | None:
        """The job's type as the co-location table names it (``TrainingJob.job_type``), or None."""
        return self._r.spec.job_type

    @property
    def partner(self) -> int | None:
        """The id of the job it runs packed with on the same devices, or None (alone, or not running)."""
        partner = self._r.partner
        return None if partner is None else partner.spec.job_id

    def remaining_work(self, now: float) -> float:
        """Work left, in seconds at full speed on the reference device (the oracle run time left)."""
        return self._r.remaining_at(now)

    def attained_service(self, now: float) -> float:
        """Device-seconds the job has held devices so far (Tiresias' two-dimensional attained service; a fractional
        job's time counts at its fraction)."""
        return self._r.attained_at(now)

    def __repr__(self) -> str:
        return f"JobView(job {self.job_id}, {self.gpus} gpus, {self.status.value})"


class _GangView(JobView):
    """A job seen with another gang size, or fewer pools (``JobView.with_gang``)."""

    __slots__ = ("_gang", "_pools")

    def __init__(self, record: JobRecord, gang: int, pools: tuple[int, ...]) -> None:
        super().__init__(record)
        self._gang = gang
        self._pools = pools

    @property
    def gpus(self) -> int:
        return self._gang

    @property
    def allowed_pools(self) -> tuple[int, ...]:
        return self._pools
