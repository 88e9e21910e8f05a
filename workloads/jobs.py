"""Training-job descriptions: what arrives at the cluster, independent of any simulation."""

from __future__ import annotations

import gc
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np

from workloads.errors import WorkloadError


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of a training job's run at one speed (a batch-size change, for example, starts a new one).

    ``duration`` is the phase's share of the job's work: seconds at full speed on the job's reference device.
    ``throughputs`` optionally gives the job's speed per device type during the phase, relative to each other as
    ``TrainingJob.throughputs`` (steps per second, say); without it the phase runs at the job's own relative speeds.
    ``phases_from_steps`` builds phases from steps and throughputs.
    """

    duration: float
    throughputs: Mapping[str, float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _finite(self.duration) or self.duration <= 0:
            raise WorkloadError(f"phase duration must be a positive finite number of seconds, got {self.duration!r}")
        if self.throughputs is not None:
            if not self.throughputs:
                raise WorkloadError("phase throughputs are empty; use None for the job's own speeds")
            _check_throughputs("phase", self.throughputs)


def phases_from_steps(steps_and_throughputs: Sequence[tuple[float, Mapping[str, float]]],
                      reference_device: str) -> tuple[Phase, ...]:
    """Phases of ``steps`` steps each at ``throughputs`` (steps per second per device type): a phase lasts its steps
    over its throughput on ``reference_device``. The job's ``duration`` is the sum of the phases' durations."""
    phases = []
    for i, (steps, throughputs) in enumerate(steps_and_throughputs):
        if not _finite(steps) or steps <= 0:
            raise WorkloadError(f"phase {i}: steps must be positive, got {steps!r}")
        if reference_device not in throughputs:
            raise WorkloadError(f"phase {i}: no throughput on the reference device {reference_device!r} "
                                f"(has {sorted(throughputs)})")
        phases.append(Phase(duration=steps / throughputs[reference_device], throughputs=dict(throughputs)))
    return tuple(phases)


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One gang-scheduled training job.

    ``duration`` is the run time in seconds at full speed on ``reference_device`` (or, when that is
    ``None``, on any device type: trace jobs whose hardware is unknown keep their recorded run time on
    every pool). ``throughputs`` optionally gives relative speed per device type; otherwise the
    simulator scales speed by peak FLOP/s.

    For the network model: ``comm_fraction`` is the share of a step spent in exposed communication on the
    reference placement (the gang packed into the fewest nodes of one leaf); ``None`` takes the run's
    default. A job that names a ``model`` (catalog name) with a ``parallelism`` mapping (``tensor``,
    ``pipeline``, ``micro_batch``, ``global_batch``, ``sequence``, ``virtual_stages``, ``sequence_parallel``,
    ``tensor_across_nodes``, ``recomputation``, ``dp_overlap``) instead gets its step time from the model on
    each placement; its ``duration`` is still the run time on the reference placement
    (``sim.platform.network.model.model_job`` computes it from a number of iterations). ``precision`` is the format
    the job trains in (bf16 when ``None``): speed across device types scales by their peaks in it, and a
    model job's step time uses it.

    An elastic job (``max_gpus`` given) may run on any gang from ``min_gpus`` (default 1) to ``max_gpus``;
    ``gpus`` is the gang it asks for and the one ``duration`` refers to. ``scaling`` maps gang sizes to the job's
    throughput on them (any unit: only ratios count), linearly interpolated between the sizes given and covering
    ``min_gpus`` to ``max_gpus``; without it a gang of ``g`` runs ``g / gpus`` times as fast (perfect scaling).
    ``gang_speedup(g)`` is the ratio. ``workloads.elastic`` derives such curves as Pollux models them. An elastic
    job may use the pools that its requested gang fits, on any gang of its range there.

    ``gpu_fraction`` (in (0, 1], default 1) is the share of one device a one-device job asks for: such a job runs on
    a device shared with other fractional jobs (their fractions adding up to at most 1), and its ``duration`` is
    its run time at that guaranteed share (``sim.training.subsystem`` states the speed model). A fraction below
    1 needs ``gpus == 1`` and no elastic range.

    ``job_type`` names the kind of job as a co-location table measures it (a Gavel job type such as ``ResNet-18
    (batch size 32)``): a packing scheduler (``gandiva``) may run two jobs of the same gang on the same devices at
    the co-located speeds the table gives for their two types. ``None`` (default): the job never runs packed.
    """

    job_id: int
    arrival: float
    gpus: int
    duration: float
    reference_device: str | None = None
    allowed_devices: tuple[str, ...] | None = None
    throughputs: Mapping[str, float] | None = field(default=None, compare=False)
    tenant: str = "default"
    priority: int = 0
    duration_estimate: float | None = None
    name: str = ""
    comm_fraction: float | None = None
    model: str | Mapping[str, Any] | None = field(default=None, compare=False)
    parallelism: Mapping[str, Any] | None = field(default=None, compare=False)
    precision: str | None = None
    phases: tuple[Phase, ...] | None = field(default=None, compare=False)
    checkpoint_s: float | None = None
    restore_s: float | None = None
    min_gpus: int | None = None
    max_gpus: int | None = None
    scaling: Mapping[int, float] | None = field(default=None, compare=False)
    gpu_fraction: float = 1.0
    job_type: str | None = None

    def __post_init__(self) -> None:
        label = f"job {self.job_id}" + (f" ({self.name})" if self.name else "")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus <= 0:
            raise WorkloadError(f"{label}: gpus must be a positive integer, got {self.gpus!r}")
        if not _finite(self.duration) or self.duration <= 0:
            raise WorkloadError(f"{label}: duration must be a positive finite number of seconds, got {self.duration!r}")
        if not _finite(self.arrival) or self.arrival < 0:
            raise WorkloadError(f"{label}: arrival must be a finite number >= 0, got {self.arrival!r}")
        if self.duration_estimate is not None and (not _finite(self.duration_estimate) or self.duration_estimate <= 0):
            raise WorkloadError(
                f"{label}: duration_estimate must be positive and finite, got {self.duration_estimate!r}")
        if self.allowed_devices is not None and len(self.allowed_devices) == 0:
            raise WorkloadError(f"{label}: allowed_devices is empty; use None to allow any device type")
        if self.comm_fraction is not None and not (_finite(self.comm_fraction) and 0 <= self.comm_fraction < 1):
            raise WorkloadError(f"{label}: comm_fraction must be in [0, 1), got {self.comm_fraction!r}")
        if self.precision is not None and self.precision not in ("fp32", "fp16", "bf16", "fp8", "int8"):
            raise WorkloadError(f"{label}: precision must be one of fp32, fp16, bf16, fp8, int8, "
                                f"got {self.precision!r}")
        if self.parallelism is not None and self.model is None:
            raise WorkloadError(f"{label}: parallelism is given without a model")
        if self.throughputs is not None:
            _check_throughputs(f"{label}:", self.throughputs)
        for key in ("checkpoint_s", "restore_s"):
            value = getattr(self, key)
            if value is not None and (not _finite(value) or value < 0):
                raise WorkloadError(f"{label}: {key} must be a finite number of seconds >= 0, got {value!r}")
        if self.phases is not None:
            self._check_phases(label)
        if self.min_gpus is not None or self.max_gpus is not None or self.scaling is not None:
            self._check_elastic(label)
        if type(self.gpu_fraction) is not float or self.gpu_fraction != 1.0:
            self._check_fraction(label)
        if self.job_type is not None and (not isinstance(self.job_type, str) or not self.job_type.strip()):
            raise WorkloadError(f"{label}: job_type must be a non-empty string (or None), got {self.job_type!r}")

    def _check_fraction(self, label: str) -> None:
        fraction = self.gpu_fraction
        if not _finite(fraction) or not 0 < fraction <= 1:  # (a bool is not a number here)
            raise WorkloadError(f"{label}: gpu_fraction must be a number in (0, 1], got {fraction!r}")
        if fraction < 1 and (self.gpus != 1 or self.max_gpus is not None):
            raise WorkloadError(f"{label}: gpu_fraction {fraction!r} below 1 needs gpus 1 and no elastic range, got "
                                f"gpus {self.gpus}" + (f", max_gpus {self.max_gpus}" if self.max_gpus is not None
                                                       else ""))

    @property
    def elastic(self) -> bool:
        """Whether the job may run on a gang other than ``gpus`` (``max_gpus`` given)."""
        return self.max_gpus is not None

    @property
    def gang_range(self) -> tuple[int, int]:
        """The smallest and largest gang the job may run on (``gpus`` twice for a rigid job)."""
        if self.max_gpus is None:
            return self.gpus, self.gpus
        return (1 if self.min_gpus is None else self.min_gpus), self.max_gpus

    def gang_speedup(self, gang: int) -> float:
        """The job's throughput on a gang of ``gang`` devices over its throughput on ``gpus`` (``scaling``)."""
        if gang == self.gpus:
            return 1.0
        if self.scaling is None:
            return gang / self.gpus
        return _interpolate(self.scaling, gang) / _interpolate(self.scaling, self.gpus)

    def _check_elastic(self, label: str) -> None:
        def whole(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        if self.max_gpus is None:
            raise WorkloadError(f"{label}: min_gpus or scaling is given without max_gpus; an elastic job needs both "
                                "bounds of its gang (min_gpus defaults to 1)")
        low, high = self.gang_range
        if not whole(low) or not whole(high):
            raise WorkloadError(f"{label}: min_gpus and max_gpus must be positive integers, got {low!r} and {high!r}")
        if low > high:
            raise WorkloadError(f"{label}: min_gpus {low} is larger than max_gpus {high}")
        if not low <= self.gpus <= high:
            raise WorkloadError(f"{label}: gpus {self.gpus} is outside its elastic range {low}..{high}")
        if self.model is not None or self.phases is not None:
            raise WorkloadError(f"{label}: an elastic job cannot also have a model's step time or phases")
        if self.scaling is not None:
            if not self.scaling or not all(whole(g) for g in self.scaling):
                raise WorkloadError(f"{label}: scaling must map positive integer gang sizes to throughputs, "
                                    f"got {dict(self.scaling)!r}")
            for gang, value in self.scaling.items():
                if not _finite(value) or value <= 0:
                    raise WorkloadError(f"{label}: scaling on a gang of {gang} must be a positive throughput, "
                                        f"got {value!r}")
            if min(self.scaling) > low or max(self.scaling) < high:
                raise WorkloadError(f"{label}: scaling covers gangs {min(self.scaling)}..{max(self.scaling)}, not its "
                                    f"elastic range {low}..{high}")

    def _check_phases(self, label: str) -> None:
        phases = self.phases
        if not isinstance(phases, tuple) or not phases or not all(isinstance(p, Phase) for p in phases):
            raise WorkloadError(f"{label}: phases must be a non-empty tuple of Phase, got {phases!r}")
        total = math.fsum(p.duration for p in phases)
        if not math.isclose(total, self.duration, rel_tol=1e-9):
            raise WorkloadError(f"{label}: its phases last {total!r} s in all, its duration is {self.duration!r} s: "
                                f"a phase schedule must add up to the job's duration")
        if self.model is not None:
            raise WorkloadError(f"{label}: phases and a model's step time cannot be combined")

    @classmethod
    def from_iterations(cls, job_id: int, arrival: float, gpus: int, iterations: int, step_time: float,
                        **kwargs: object) -> TrainingJob:
        """A job whose work is ``iterations`` steps of ``step_time`` seconds on the reference device."""
        if iterations <= 0 or not _finite(step_time) or step_time <= 0:
            raise WorkloadError(f"job {job_id}: iterations and step_time must be positive")
        return cls(job_id=job_id, arrival=arrival, gpus=gpus, duration=iterations * step_time, **kwargs)  # type: ignore[arg-type]

    @property
    def gpu_seconds(self) -> float:
        """Work in device-seconds on the reference device."""
        return self.duration * self.gpus


@dataclass(frozen=True)
class SkippedRow:
    """A trace row left out under ``errors="skip"``, kept so the run can report it."""

    path: str
    line: int
    field: str
    reason: str


@dataclass(frozen=True)
class JobTrace:
    """A list of training jobs sorted by arrival (ids 0..n-1 in that order) and where it came from. ``jobs`` is a
    tuple, or for a large trace read from a file a ``ColumnJobs`` (the same jobs, kept as columns)."""

    jobs: Sequence[TrainingJob]
    source: str
    origin: datetime | None = None
    skipped: tuple[SkippedRow, ...] = ()

    def __len__(self) -> int:
        return len(self.jobs)


def _check_throughputs(label: str, throughputs: Mapping[str, float]) -> None:
    for device, value in throughputs.items():
        if not _finite(value) or value <= 0:
            raise WorkloadError(f"{label} throughput on {device!r} must be positive, got {value!r}")


def _interpolate(curve: Mapping[int, float], x: int) -> float:
    """``curve`` at ``x``, linear between its nearest keys on either side."""
    value = curve.get(x)
    if value is not None:
        return value
    below = max(k for k in curve if k < x)
    above = min(k for k in curve if k > x)
    return curve[below] + (curve[above] - curve[below]) * (x - below) / (above - below)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: The columns ``jobs_from_columns`` takes; every other field keeps its default.
COLUMN_FIELDS = ("arrival", "gpus", "duration", "tenant", "name")
_SETTERS = {f.name: getattr(TrainingJob, f.name).__set__ for f in fields(TrainingJob)}  # slot writers: no checks
_DEFAULTS = {f.name: f.default for f in fields(TrainingJob) if f.name not in ("job_id", *COLUMN_FIELDS)}


def jobs_from_columns(first_id: int, arrival: np.ndarray, gpus: np.ndarray, duration: np.ndarray,
                      tenant: Sequence[str], name: Sequence[str]) -> list[TrainingJob]:
    """One ``TrainingJob`` per row, numbered from ``first_id``, every other field at its default: the jobs
    ``TrainingJob(job_id=first_id + i, arrival=arrival[i], ...)`` gives for each row, built several times faster.

    The checks of ``TrainingJob`` that these fields need run on the whole columns (numpy arrays of float
    ``arrival`` and ``duration`` and integer ``gpus``), not job by job. If a row would fail one, or a column is
    not of those types, the jobs are built by ``TrainingJob`` itself, which raises its error for the first bad row.
    """
    n = len(arrival)
    if not len(gpus) == len(duration) == len(tenant) == len(name) == n:
        raise WorkloadError(f"jobs_from_columns: columns of different lengths "
                            f"{[len(c) for c in (arrival, gpus, duration, tenant, name)]}")
    columns = {"arrival": arrival.tolist(), "gpus": gpus.tolist(), "duration": duration.tolist(),
               "tenant": tenant, "name": name}
    with np.errstate(invalid="ignore"):
        checked = (
            arrival.dtype.kind == "f" and duration.dtype.kind == "f" and gpus.dtype.kind in "iu"
            and bool(np.all(np.isfinite(arrival) & (arrival >= 0)))
            and bool(np.all(np.isfinite(duration) & (duration > 0))) and bool(np.all(gpus > 0))
            and all(value is not MISSING for value in _DEFAULTS.values()))  # a field with a default_factory
    if not checked:
        return [TrainingJob(job_id=first_id + i, arrival=a, gpus=g, duration=d, tenant=t, name=m)
                for i, (a, g, d, t, m) in enumerate(zip(*columns.values(), strict=True))]
    jobs = list(map(object.__new__, repeat(TrainingJob, n)))
    values: dict[str, Any] = {"job_id": range(first_id, first_id + n), **columns}
    for field_name, write in _SETTERS.items():
        column = values.get(field_name)
        deque(map(write, jobs, repeat(_DEFAULTS[field_name]) if column is None else column), maxlen=0)
    return jobs


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside (as it was after): building many objects that hold no cycles, the
    collector would walk them again and again for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ColumnJobs(Sequence[TrainingJob]):
    """Jobs kept as numpy columns and built as ``TrainingJob`` objects when read (by index, slice or iteration):
    a trace of millions of jobs costs its columns, about 40 bytes a job, not a Python object per job (about
    400). Job ``i`` has id ``first_id + i``, tenant ``tenants[tenant[i]]`` and name ``name_format.format(
    names[i])``; every other field keeps its default. Equal to any sequence of the same jobs, a tuple included.
    """

    __slots__ = ("arrival", "duration", "first_id", "gpus", "name_format", "names", "tenant", "tenants")

    def __init__(self, *, arrival: np.ndarray, gpus: np.ndarray, duration: np.ndarray, tenant: np.ndarray,
                 tenants: Sequence[str], names: np.ndarray, name_format: str = "{}", first_id: int = 0) -> None:
        n = len(arrival)
        if not len(gpus) == len(duration) == len(tenant) == len(names) == n:
            raise WorkloadError(f"ColumnJobs: columns of different lengths "
                                f"{[len(c) for c in (arrival, gpus, duration, tenant, names)]}")
        self.arrival = np.asarray(arrival, dtype=float)
        self.gpus = np.asarray(gpus)
        self.duration = np.asarray(duration, dtype=float)
        self.tenant = np.asarray(tenant)
        self.tenants = tuple(tenants)
        self.names = np.asarray(names)
        self.name_format = name_format
        self.first_id = int(first_id)

    def __len__(self) -> int:
        return int(self.arrival.size)

    def _build(self, part: slice, batch: int = 65_536) -> Iterator[TrainingJob]:
        tenants = np.array(self.tenants, dtype=object)
        start, stop, _ = part.indices(len(self))
        for lo in range(start, stop, batch):
            chunk = slice(lo, min(lo + batch, stop))
            names = [self.name_format.format(v) for v in self.names[chunk].tolist()]
            yield from jobs_from_columns(self.first_id + lo, self.arrival[chunk], self.gpus[chunk],
                                         self.duration[chunk], tenants[self.tenant[chunk]].tolist(), names)

    def __iter__(self) -> Iterator[TrainingJob]:
        return self._build(slice(None))

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return tuple(self)[index]
            return ColumnJobs(arrival=self.arrival[start:stop], gpus=self.gpus[start:stop],
                              duration=self.duration[start:stop], tenant=self.tenant[start:stop],
                              tenants=self.tenants, names=self.names[start:stop], name_format=self.name_format,
                              first_id=self.first_id + start)
        i = range(len(self))[index]  # IndexError past either end, negative indexes from the end
        return next(self._build(slice(i, i + 1)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ColumnJobs({len(self):,} jobs, ids {self.first_id}..{self.first_id + len(self) - 1})"
