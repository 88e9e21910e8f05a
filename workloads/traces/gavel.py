"""Loader for Gavel's job traces (Narayanan et al., OSDI 2020; stanford-futuredata/gavel) with their throughputs.

A Gavel trace is tab-separated text, one job per line, in one of two layouts:

- the per-virtual-cluster Philly traces (``scheduler/traces/msr/seed=0``, bundled): 7 fields, ``job_type, command,
  num_steps_arg, needs_data_dir, total_steps, arrival_time_s, scale_factor``;
- Gavel's current ``parse_trace`` layout (``scripts/utils/generate_trace.py``): 10 fields, ``job_type, command,
  working_directory, num_steps_arg, needs_data_dir, total_steps, scale_factor, priority_weight, SLO, arrival_time``.

``scale_factor`` is the gang size. A job's work is ``total_steps`` steps; its speed on each device type comes from
Gavel's throughputs file (``simulation_throughputs.json``: ``{device type: {"(job_type, scale_factor)": {"null":
steps per second alone, ...co-located pairs...}}}``). The job's ``duration`` is its steps at the reference device's
throughput (``reference``, V100 by default) and ``throughputs`` holds steps per second per device type, so a pool
of another type runs it at the ratio the file measured. A device type with zero throughput for the job (it does not
fit in that GPU's memory) is left out of the job's ``allowed_devices``.

The file measures gang sizes 1, 2, 4 and 8 only, and three job types (A3C, CycleGAN, Recommendation) at gang size 1
only; 1,548 of the bundled traces' 15,264 jobs ask for a gang size the file does not measure for their type.
``unmeasured="extrapolate"`` (default) gives such a job the throughput of the largest measured gang of its type
below its size times the ratio of the sizes (perfect data-parallel scaling from there: optimistic, and stated);
``"error"`` refuses them, naming the job type, gang size and file.

The same file also measures jobs packed in pairs on the same devices (Gavel's space sharing): under a job type's
key, ``"(other_type, other_scale)": [this job's steps/s, the other job's steps/s]`` while the two run together.
``load_gavel_colocations`` reads these figures: per device type, ``{((type_a, gang_a), (type_b, gang_b)): (steps/s
of a, steps/s of b)}``, with the alone throughputs beside them; ``colocation_slowdown`` gives each job's share of
its alone throughput. In the bundled file each device type has 1,759 ordered pairs (921 unordered ones, counting the
83 pairs of a job type with itself), only of jobs of the same gang size, and the file is symmetric: the entry of (a,
b) is the entry of (b, a) reversed. A pair recorded as ``[0, 0]`` (1,170 on the K80, 1,103 on the P100, 1,123 on the
V100) was not packed (the two do not fit together, or were not measured together); Gavel's simulator gives the same
``[0, 0]`` to pairs it never packs (jobs of different gang sizes), so packing such a pair gains nothing. The jobs
loaded here carry their type in ``TrainingJob.job_type`` (and in ``name``); the ``gandiva`` scheduler packs pairs at
these co-located speeds (``sim.training.packing``), and never packs a ``[0, 0]`` or unmeasured pair.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from workloads.errors import SkippedRowsWarning, TraceFormatError, WorkloadError
from workloads.jobs import JobTrace, SkippedRow, TrainingJob
from workloads.traces._rows import ErrorPolicy, check_limit, describe_skipped
from workloads.traces.bundled import bundled_path

GAVEL_TRACES_FILE = "gavel_msr_seed0.tar.gz"
GAVEL_THROUGHPUTS_FILE = "gavel_simulation_throughputs.json.gz"
GAVEL_DEVICES = {"k80": "k80", "p100": "p100", "v100": "v100"}
"""Gavel's worker types and the gpusim device names they load as (``sim.platform.hardware`` resolves ``p100`` and
``v100`` to the SXM2 parts)."""

MSR_FIELDS = ("job_type", "command", "num_steps_arg", "needs_data_dir", "total_steps", "arrival_time_s",
              "scale_factor")
CURRENT_FIELDS = ("job_type", "command", "working_directory", "num_steps_arg", "needs_data_dir", "total_steps",
                  "scale_factor", "priority_weight", "SLO", "arrival_time")
_KEY = re.compile(r"^\('(.*)', (\d+)\)$")

JobKey = tuple[str, int]
"""A job type and a gang size (Gavel's ``(job_type, scale_factor)``)."""

Throughputs = dict[str, dict[JobKey, float]]
"""Per Gavel device type, steps per second of a job type at a gang size, running alone."""

ColocationPairs = dict[str, dict[tuple[JobKey, JobKey], tuple[float, float]]]
"""Per Gavel device type, the steps per second of jobs ``a`` and ``b`` packed on the same devices."""


def _read_throughputs_file(path: str | os.PathLike[str] | None) -> tuple[Path, dict[str, dict[str, object]]]:
    """The file's path and its device tables (Gavel's three device types only)."""
    file = Path(path) if path is not None else bundled_path(GAVEL_THROUGHPUTS_FILE)
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkloadError(f"{file}: not a readable Gavel throughputs file ({exc})") from exc
    if not isinstance(raw, dict):
        raise WorkloadError(f"{file}: expected an object of device types, got {type(raw).__name__}")
    tables = {}
    for device, table in raw.items():
        if device not in GAVEL_DEVICES:
            continue  # Gavel's "*_unconsolidated" variants
        if not isinstance(table, dict):
            raise WorkloadError(f"{file}: {device}: expected an object of job keys, got {type(table).__name__}")
        tables[device] = table
    missing = [device for device in GAVEL_DEVICES if device not in tables]
    if missing:
        raise WorkloadError(f"{file}: no throughputs for device type(s) {', '.join(missing)}")
    return file, tables


def _rate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _alone(file: Path, device: str, key: str, values: object) -> tuple[JobKey, float]:
    """The ``(job type, gang)`` of ``key`` and its throughput alone (under ``"null"``)."""
    match = _KEY.match(key)
    value = values.get("null") if isinstance(values, dict) else None
    if match is None or not _rate(value):
        raise WorkloadError(f"{file}: {device}: {key!r} is not a (job type, scale factor) key with a "
                            f"throughput >= 0 under 'null'")
    return (match.group(1), int(match.group(2))), float(value)  # type: ignore[arg-type]


def load_gavel_throughputs(path: str | os.PathLike[str] | None = None) -> Throughputs:
    """Gavel's ``simulation_throughputs.json`` (plain or gzip): per device type, steps per second alone of each
    ``(job_type, scale_factor)``. ``path=None`` reads the bundled copy."""
    file, tables = _read_throughputs_file(path)
    return {device: dict(_alone(file, device, key, values) for key, values in table.items())
            for device, table in tables.items()}


@dataclass(frozen=True, eq=False)
class Colocations(Mapping[str, Mapping[tuple[JobKey, JobKey], tuple[float, float]]]):
    """Gavel's co-location measurements (module docstring): ``colocations[device][(a, b)]`` is ``(steps/s of a,
    steps/s of b)`` while ``a`` and ``b`` (each a ``(job type, gang)``) share the same devices; ``alone`` holds each
    job's steps/s running alone and ``source`` names the file."""

    pairs: ColocationPairs
    alone: Throughputs
    source: str

    def __getitem__(self, device: str) -> Mapping[tuple[JobKey, JobKey], tuple[float, float]]:
        return self.pairs[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def load_gavel_colocations(path: str | os.PathLike[str] | None = None) -> Colocations:
    """The co-located throughputs of Gavel's throughputs file (plain or gzip; ``None``: the bundled copy): per device
    type, ``{((type_a, gang_a), (type_b, gang_b)): (steps/s of a, steps/s of b)}`` as the file records them under
    ``a``'s key (both orders are kept, as the file has them). A malformed key or entry raises ``WorkloadError`` naming
    the file, the device type and the key."""
    file, tables = _read_throughputs_file(path)
    pairs: ColocationPairs = {}
    alone: Throughputs = {}
    for device, table in tables.items():
        rows: dict[tuple[JobKey, JobKey], tuple[float, float]] = {}
        alone[device] = {}
        for key, values in table.items():
            job, rate = _alone(file, device, key, values)
            alone[device][job] = rate
            for other, measured in values.items():  # type: ignore[union-attr]
                if other == "null":
                    continue
                match = _KEY.match(other)
                if match is None:
                    raise WorkloadError(f"{file}: {device}: {key!r}: {other!r} is not a (job type, scale factor) key")
                if (not isinstance(measured, list) or len(measured) != 2
                        or not all(_rate(value) for value in measured)):
                    raise WorkloadError(f"{file}: {device}: {key!r} with {other!r}: expected [this job's, the other "
                                        f"job's] throughputs >= 0, got {measured!r}")
                rows[(job, (match.group(1), int(match.group(2))))] = (float(measured[0]), float(measured[1]))
        pairs[device] = rows
    return Colocations(pairs=pairs, alone=alone, source=str(path) if path is not None else GAVEL_THROUGHPUTS_FILE)


def colocation_slowdown(table: Colocations, device: str, a: JobKey, b: JobKey) -> tuple[float, float]:
    """The fraction of its alone throughput each of jobs ``a`` and ``b`` (``(job type, gang)``) keeps when the two
    are packed on ``device`` (``(0.0, 0.0)`` for a pair the file records as not packed). A device type, pair or job
    the table lacks, or a job that does not run alone on ``device`` (throughput 0), raises ``WorkloadError``."""
    if device not in table:
        raise WorkloadError(f"{table.source}: no co-locations for device type {device!r} (has {', '.join(table)})")
    measured = table[device].get((a, b))
    if measured is None:
        why = " (the file pairs only jobs of the same gang size)" if a[1] != b[1] else ""
        raise WorkloadError(f"{table.source}: {device}: no co-location of {a!r} with {b!r}{why}")
    fractions = []
    for job, rate in zip((a, b), measured, strict=True):
        alone = table.alone[device].get(job, 0.0)
        if alone <= 0:
            raise WorkloadError(f"{table.source}: {device}: {job!r} does not run alone there (throughput 0), so "
                                "it has no fraction of its alone throughput")
        fractions.append(rate / alone)
    return fractions[0], fractions[1]


def _trace_files(path: Path) -> Iterator[tuple[str, str, str]]:
    """(label for errors, virtual cluster, text) of each trace in ``path``: a ``.trace`` file, a folder of them or
    a ``.tar.gz`` of them."""
    if path.is_dir():
        files = sorted(path.glob("*.trace"))
        if not files:
            raise WorkloadError(f"{path}: no .trace files in this folder")
        for file in files:
            yield str(file), file.stem, file.read_text(encoding="utf-8")
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".trace")),
                             key=lambda m: m.name)
            if not members:
                raise WorkloadError(f"{path}: no .trace files in this archive")
            for member in members:
                handle = archive.extractfile(member)
                assert handle is not None
                text = io.TextIOWrapper(handle, encoding="utf-8").read()
                yield f"{path}:{member.name}", Path(member.name).stem, text
    elif path.is_file():
        yield str(path), path.stem, path.read_text(encoding="utf-8")
    else:
        raise WorkloadError(f"{path}: no such Gavel trace file or folder")


def job_type_steps_gang(value: dict[str, str], label: str, line: int) -> tuple[str, float, int]:
    """The ``job_type``, ``total_steps`` and ``scale_factor`` fields of a Gavel-style trace line, checked (a
    ``TraceFormatError`` names the file, line and field)."""
    job_type = value["job_type"].strip()
    if not job_type:
        raise TraceFormatError(label, line, "job_type", "expected a job type, got an empty field")
    steps = _number(value["total_steps"], label, line, "total_steps", integer=True, minimum=1)
    gang = int(_number(value["scale_factor"], label, line, "scale_factor", integer=True, minimum=1))
    return job_type, steps, gang


def _number(text: str, label: str, line: int, field: str, *, integer: bool, minimum: float) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= minimum):
        kind = "an integer" if integer else "a number"
        raise TraceFormatError(label, line, field, f"expected {kind} >= {minimum:g}, got {text!r}")
    return value


def _steps_per_second(throughputs: Throughputs, device: str, job_type: str, gang: int, unmeasured: str,
                      label: str, line: int, table_name: str) -> tuple[float, bool]:
    """(steps per second of the job type at ``gang`` on ``device``, whether it was extrapolated)."""
    table = throughputs[device]
    value = table.get((job_type, gang))
    if value is not None:
        return value, False
    measured = sorted(size for (kind, size) in table if kind == job_type and size < gang)
    if not measured:
        raise TraceFormatError(label, line, "job_type", f"job type {job_type!r} is not in {table_name}")
    if unmeasured == "error":
        raise TraceFormatError(label, line, "scale_factor", f"job type {job_type!r} has no throughput for a gang of "
                               f"{gang} on {device} in {table_name} (measured: {', '.join(map(str, measured))}); "
                               "unmeasured='extrapolate' scales the largest measured gang")
    largest = measured[-1]
    return table[(job_type, largest)] * gang / largest, True


def load_gavel_jobs(path: str | os.PathLike[str] | None = None, *,
                    throughputs: str | os.PathLike[str] | Throughputs | None = None, reference: str = "v100",
                    unmeasured: Literal["extrapolate", "error"] = "extrapolate", errors: ErrorPolicy = "raise",
                    limit: int | None = None) -> JobTrace:
    """Load Gavel job traces (module docstring): ``path`` a ``.trace`` file, a folder or ``.tar.gz`` of them
    (default: the bundled per-VC Philly traces, 15 files, 15,264 jobs), ``throughputs`` Gavel's throughputs file or
    its parsed form (default: the bundled copy). Each file's name is its jobs' tenant (the virtual cluster); jobs
    of all files are sorted by arrival (ties by file, then line) and numbered 0..n-1; ``name`` is ``VC:line job_type``.
    ``reference``: the Gavel device type whose throughput sets ``duration``. A malformed row, or one whose job type
    or gang size the throughputs do not give, raises ``TraceFormatError`` naming the file, line and field or, with
    ``errors="skip"``, is listed in ``JobTrace.skipped`` (and named in a ``SkippedRowsWarning``). ``limit`` keeps
    the first jobs by arrival."""
    limit = check_limit(limit)
    if errors not in ("raise", "skip"):
        raise WorkloadError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if unmeasured not in ("extrapolate", "error"):
        raise WorkloadError(f"unmeasured must be 'extrapolate' or 'error', got {unmeasured!r}")
    if reference not in GAVEL_DEVICES:
        raise WorkloadError(f"reference must be one of {', '.join(GAVEL_DEVICES)}, got {reference!r}")
    source_file = Path(path) if path is not None else bundled_path(GAVEL_TRACES_FILE)
    if isinstance(throughputs, dict):
        table, table_name = throughputs, "the throughputs given"
    else:
        table = load_gavel_throughputs(throughputs)
        table_name = str(throughputs) if throughputs is not None else GAVEL_THROUGHPUTS_FILE
    rows: list[tuple[float, int, int, TrainingJob, int]] = []
    skipped: list[SkippedRow] = []
    for order, (label, tenant, text) in enumerate(_trace_files(source_file)):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                arrival, job, guessed = _job(line, label, number, tenant, table, table_name, unmeasured, reference)
            except TraceFormatError as problem:
                if errors == "raise":
                    raise
                skipped.append(SkippedRow(problem.path, problem.line, problem.field, problem.reason))
                continue
            rows.append((arrival, order, number, job, guessed))
    rows.sort(key=lambda row: row[:3])
    rows = rows[:limit]
    jobs = tuple(replace(job, job_id=i) for i, (_, _, _, job, _) in enumerate(rows))
    extrapolated = sum(row[4] for row in rows)
    if skipped:
        warnings.warn(describe_skipped(skipped), SkippedRowsWarning, stacklevel=2)
    note = f" ({extrapolated} jobs' throughputs extrapolated from smaller gangs)" if extrapolated else ""
    return JobTrace(jobs=jobs, source=f"gavel:{source_file}{note}", skipped=tuple(skipped))


def _job(line: str, label: str, number: int, tenant: str, table: Throughputs, table_name: str, unmeasured: str,
         reference: str) -> tuple[float, TrainingJob, int]:
    """(arrival, job, 1 if its throughput at the reference was extrapolated) of one trace line."""
    fields = line.split("\t")
    if len(fields) == len(MSR_FIELDS):
        names = MSR_FIELDS
    elif len(fields) == len(CURRENT_FIELDS):
        names = CURRENT_FIELDS
    else:
        raise TraceFormatError(label, number, "line", f"expected {len(MSR_FIELDS)} or {len(CURRENT_FIELDS)} "
                               f"tab-separated fields, got {len(fields)}")
    value = dict(zip(names, fields, strict=True))
    job_type, steps, gang = job_type_steps_gang(value, label, number)
    arrival_field = "arrival_time_s" if names is MSR_FIELDS else "arrival_time"
    arrival = _number(value[arrival_field], label, number, arrival_field, integer=False, minimum=0)
    speeds: dict[str, float] = {}
    extrapolated = 0
    for device, name in GAVEL_DEVICES.items():
        rate, guessed = _steps_per_second(table, device, job_type, gang, unmeasured, label, number, table_name)
        extrapolated += guessed and device == reference
        if rate > 0:
            speeds[name] = rate
    if not speeds:
        raise TraceFormatError(label, number, "job_type", f"job type {job_type!r} at a gang of {gang} has "
                               f"zero throughput on every device type in {table_name}")
    reference_name = GAVEL_DEVICES[reference] if GAVEL_DEVICES[reference] in speeds else max(
        speeds, key=speeds.__getitem__)
    job = TrainingJob(job_id=0, arrival=arrival, gpus=gang, duration=steps / speeds[reference_name],
                      reference_device=reference_name, allowed_devices=tuple(speeds), throughputs=speeds,
                      tenant=tenant, name=f"{tenant}:{number} {job_type}", job_type=job_type)
    return arrival, job, extrapolated


GAVEL_JOB_TABLE: tuple[tuple[str, bool], ...] = (
    *((f"ResNet-18 (batch size {b})", True) for b in (16, 32, 64, 128, 256)),
    *((f"ResNet-50 (batch size {b})", True) for b in (16, 32, 64, 128)),
    *((f"Transformer (batch size {b})", True) for b in (16, 32, 64, 128, 256)),
    *((f"LM (batch size {b})", True) for b in (5, 10, 20, 40, 80)),
    *((f"Recommendation (batch size {b})", False) for b in (512, 1024, 2048, 4096, 8192)),
    ("A3C", False),
    ("CycleGAN", False),
)
"""Gavel's job templates (``scheduler/job_table.py``, in its order): model and whether it may run on several
GPUs."""


def generate_gavel_jobs(count: int, mean_interarrival_s: float, seed: int = 0, *, min_duration_h: float = 1.0,
                        max_duration_h: float = 4.0, num_durations: int = 4, multi_gpu: bool = True,
                        throughputs: str | os.PathLike[str] | Throughputs | None = None) -> JobTrace:
    """Gavel's synthetic trace generator (``scripts/utils/generate_trace.py`` with ``utils.generate_job``),
    reimplemented with the same random streams (Python's ``random.Random`` seeded ``seed`` for the job template,
    ``seed + 1`` for inter-arrivals, ``seed + 2`` for durations, ``seed + 3`` for gang sizes) and the same draws, so
    that a seed gives Gavel's jobs: a template uniformly from ``GAVEL_JOB_TABLE``; a gang of 1 (70%), 2 (10%) or 4
    (20%) for a template that may run on several GPUs when ``multi_gpu``, else 1; a run time on a V100 of one of
    ``num_durations`` hours evenly spaced from ``min_duration_h`` to ``max_duration_h``; ``total_steps`` that run time
    times the V100 throughput, truncated to an integer as Gavel's trace file writes it; the first job at t=0, then
    exponential inter-arrivals of mean ``mean_interarrival_s`` (Gavel's ``lam``; 0: every job at t=0), arrival
    times truncated to whole seconds as in Gavel's file. The jobs are built as ``load_gavel_jobs`` builds a trace's
    (tenant ``gavel``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise WorkloadError(f"count must be a number of jobs >= 0, got {count!r}")
    if not (isinstance(mean_interarrival_s, (int, float)) and math.isfinite(mean_interarrival_s)
            and mean_interarrival_s >= 0):
        raise WorkloadError(f"mean_interarrival_s must be a number of seconds >= 0, got {mean_interarrival_s!r}")
    if not 0 < min_duration_h <= max_duration_h or num_durations < 1:
        raise WorkloadError("durations: need 0 < min_duration_h <= max_duration_h and num_durations >= 1, got "
                            f"{min_duration_h!r}, {max_duration_h!r}, {num_durations!r}")
    table = throughputs if isinstance(throughputs, dict) else load_gavel_throughputs(throughputs)
    templates, arrivals = random.Random(seed), random.Random(seed + 1)
    lengths, sizes = random.Random(seed + 2), random.Random(seed + 3)
    durations = [min_duration_h + (max_duration_h - min_duration_h) * i / (num_durations - 1)
                 for i in range(num_durations)] if num_durations > 1 else [min_duration_h]
    lines = []
    arrival = None
    for _ in range(count):
        model, distributed = templates.choice(GAVEL_JOB_TABLE)
        gang = 1
        if multi_gpu and distributed:
            draw = sizes.uniform(0, 1)
            gang = 2 if 0.7 <= draw <= 0.8 else 4 if draw >= 0.8 else 1
        run_time = 3600 * lengths.choice(durations)
        steps = int(run_time * table["v100"][(model, gang)])
        arrival = 0.0 if arrival is None else arrival + (
            -math.log(1.0 - arrivals.random()) * mean_interarrival_s if mean_interarrival_s > 0 else 0.0)
        lines.append(f"{model}\tcommand\tdirectory\t-n\t0\t{steps}\t{gang}\t1\t-1\t{int(arrival)}")
    rows = [_job(line, "generated", number, "gavel", table, "the throughputs given", "error", "v100")
            for number, line in enumerate(lines, start=1)]
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
    jobs = tuple(replace(rows[i][1], job_id=n) for n, i in enumerate(order))
    return JobTrace(jobs=jobs, source=f"gavel-generated(count={count}, mean_interarrival_s={mean_interarrival_s}, "
                                      f"seed={seed})")
