"""Checkpointing of training jobs: how often a job saves its state, what a save costs, and how much work a failure
costs it. A job checkpoints every ``interval`` seconds of progress, each save stopping it for ``cost`` seconds, so it
progresses at ``interval / (interval + cost)`` of its speed; a failure loses the work since the last save.

The Young/Daly interval ``sqrt(2 * cost * MTBF)`` (Young 1974, "A first order approximation to the optimum
checkpoint interval", CACM 17(9); Daly 2006, FGCS 22(3)) minimises the expected time lost to saves plus rework
when failures are exponential with mean ``MTBF`` (here the job's: a device's MTBF over the job's gang size)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from sim.errors import ConfigError

YOUNG_DALY = "young-daly"


def young_daly_interval(cost: float, mtbf: float) -> float:
    """Young's optimal checkpoint interval (seconds): ``sqrt(2 * cost * mtbf)``, both in seconds."""
    return math.sqrt(2.0 * cost * mtbf)


def _interval(value: object, where: str) -> float | str | None:
    if value is None or value == YOUNG_DALY:
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise ConfigError(f"{where} must be a positive number of seconds, 'young-daly' or null (never), got "
                          f"{value!r}")
    return float(value)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When training jobs save their state: every ``interval`` seconds of progress (a number), at the Young/Daly
    interval for the job's gang and device type (``"young-daly"``), or never (None: a failure loses all the work
    since the job last started from scratch). ``cost``: seconds each save stops the job (a job's own
    ``TrainingJob.checkpoint_s`` replaces it). ``per_job``: intervals of particular jobs, by job id."""

    interval: float | str | None = None
    cost: float = 0.0
    per_job: Mapping[int, float | str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", _interval(self.interval, "checkpoint.interval"))
        if isinstance(self.cost, bool) or not isinstance(self.cost, (int, float)) or not (
                math.isfinite(self.cost) and self.cost >= 0):
            raise ConfigError(f"checkpoint.cost must be a finite number of seconds >= 0, got {self.cost!r}")
        for job_id, value in self.per_job.items():
            _interval(value, f"checkpoint.per_job[{job_id!r}]")

    def for_job(self, job_id: int, gpus: int, checkpoint_s: float | None, mtbf_device: float) -> tuple[float, float]:
        """The job's (interval, cost) in seconds on devices whose MTBF is ``mtbf_device`` seconds: interval
        ``inf`` means it never saves (a cost of zero then)."""
        cost = self.cost if checkpoint_s is None else float(checkpoint_s)
        interval = _interval(self.per_job.get(job_id, self.interval), "checkpoint.interval")
        if interval is None:
            return math.inf, 0.0
        if interval == YOUNG_DALY:
            if cost == 0.0:
                return 0.0, 0.0  # a free save: save continuously, lose nothing
            return young_daly_interval(cost, mtbf_device / max(gpus, 1)), cost
        return float(interval), cost  # type: ignore[arg-type]


def efficiency(interval: float, cost: float) -> float:
    """Share of running time a job progresses: ``interval / (interval + cost)`` (1 without saves)."""
    if math.isinf(interval) or cost == 0.0:
        return 1.0
    return interval / (interval + cost)


def last_save(progress_start: float, now: float, interval: float, cost: float) -> float:
    """When the job's last save completed, saving every ``interval`` seconds from ``progress_start`` (each save
    taking ``cost``): ``progress_start`` if none has yet."""
    if math.isinf(interval) or now <= progress_start:
        return progress_start
    period = interval + cost
    if period <= 0.0:
        return now
    return progress_start + math.floor((now - progress_start) / period) * period


def expected_run_time(work: float, interval: float, cost: float, mtbf: float, restart: float) -> float:
    """Expected device-holding time (seconds) of a job of ``work`` seconds at full speed that saves every
    ``interval`` seconds of progress at ``cost`` seconds a save, on a gang whose failures are exponential with mean
    ``mtbf`` seconds (failures during saves and restarts included), restarting in ``restart`` seconds from its last
    save: each period of ``interval + cost`` seconds (the last one shorter) takes ``mtbf * e^(restart/mtbf) *
    (e^(period/mtbf) - 1)`` on average (Daly 2006, "A higher order estimate of the optimum checkpoint interval for
    restart dumps", FGCS 22(3), eq. 3). ``interval=inf``: no saves, the job restarts from scratch. The goodput is
    ``work / expected_run_time(...)``: what notebook-style sweeps of the interval plot against the simulated one."""
    if not (work >= 0 and interval > 0 and cost >= 0 and mtbf > 0 and restart >= 0):
        raise ConfigError("expected_run_time needs work >= 0, interval > 0, cost >= 0, mtbf > 0, restart >= 0")

    def period(seconds: float) -> float:
        return mtbf * math.exp(restart / mtbf) * math.expm1(seconds / mtbf)

    if math.isinf(interval):
        return period(work)
    speed = efficiency(interval, cost)
    full, rest = divmod(work, interval)
    return full * period(interval + cost) + (period(rest / speed) if rest > 0 else 0.0)
