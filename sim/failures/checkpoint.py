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
