"""Loader for Shockwave's job traces (Zheng et al., "Shockwave: Fair and Efficient Cluster Scheduling for Dynamic
Adaptation in Machine Learning", NSDI 2023; uw-mad-dash/shockwave), whose jobs change batch size as they train.

**Format.** Shockwave extends Gavel's trace (``workloads.traces.gavel``) with a batch-size mode and the run time: one
job per line, 12 tab-separated fields, no header (its ``scheduler/utils.py`` ``parse_trace``)::

    job_type, command, working_directory, num_steps_arg, needs_data_dir, total_steps, scale_factor, mode,
    priority_weight, SLO, duration, arrival_time

``job_type`` is a Gavel job type such as ``ResNet-18 (batch size 32)``: the model and its initial batch size.
``total_steps`` is the work at that batch size, ``scale_factor`` the gang size, ``mode`` one of ``static``,
``accordion`` or ``gns``, ``arrival_time`` seconds from the start. ``duration`` is the job's run time as the trace's
generator computed it from *its* throughputs file (Shockwave's published traces were made with its own measurements,
``tacc_throughputs.json`` for the 120-job one, for example); it is checked to be a number but not used: a job's
duration here comes from ``total_steps`` and the throughputs given. With Gavel's file a static job's run time
differs from that field by model (median ratio over the five published traces: ResNet-18 0.58, Transformer 0.70,
ResNet-50 1.23, LM 1.41, Recommendation 8.6); pass Shockwave's own throughputs file (same layout) as ``throughputs``
for its run times. ``command``, ``working_directory``, ``num_steps_arg``, ``needs_data_dir``, ``priority_weight``
and ``SLO`` are not used (nor checked).

**What Shockwave's simulator does.** At the end of every scheduling round it works out how many epochs a dynamic job
has done (steps done over the steps of one pass over the model's dataset at the current batch size) and decides
whether its batch size changes:

- *Accordion* (Agarwal et al., MLSys 2021): the job runs at its initial batch size inside "critical regimes" and at
  the model's largest profiled batch size outside them. The regimes are per-model epoch ranges (for example the first
  10 epochs of a language model, or the first 10 of every 30 epochs of ResNet-50).
- *GNS* (the gradient noise scale of McCandlish et al., 2018): the batch size only grows, doubling at epochs read
  from per-model, per-initial-batch, per-gang tables that Shockwave measured by profiling, up to the model's largest
  profiled batch size.
- Transformer jobs keep their batch size in both modes, and so does a job already at its model's largest batch.

When the batch size changes, Shockwave rescales the job's remaining steps so that the number of epochs it trains for
is preserved, and takes its new speed from the throughputs file's entry of the same model at the new batch size
(``ResNet-18 (batch size 64)`` after ``ResNet-18 (batch size 32)``), same gang, running alone; a batch size the file
does not have is refused and the job keeps its batch size.

**The rules used here.** The job's work is its samples, ``total_steps`` times its initial batch size (as epochs are
preserved in Shockwave; Shockwave rounds an epoch up to whole batches, which this ignores). A batch size ``b`` that
covers a share ``s`` of the work runs ``s * total_steps * initial_batch / b`` steps at the throughputs file's speed
for ``b``. Shockwave's regime and doubling tables come from its own profiling and are not reproduced; instead:

- *Accordion*: the first ``accordion_critical`` of the work (default 0.1) runs at the initial batch size, the rest at
  the largest batch size the throughputs file has for the model at the job's gang size. This simplifies Shockwave's
  per-model critical regimes to one regime at the start: the later regimes (ResNet-50's periodic ones, ResNet-18's
  around epochs 150 and 250) are left out. The default is the median share of its epochs an Accordion job of
  Shockwave's five published traces spends at its initial batch size under Shockwave's own rules (10%).
- *GNS*: the batch size doubles as the job reaches each share of its work in ``gns_doublings`` (default 5%, 10%, 20%
  and 40%) for as long as the throughputs file has the doubled batch size for the model at the job's gang size. This
  simplifies Shockwave's profiled tables to one schedule for every model, batch size and gang (Shockwave's leave some
  jobs unchanged, 8-GPU ones for instance; these double too). The first point, 5%, is the median share at which the
  batch first doubles among the GNS jobs of Shockwave's published traces under its rules; doubling the share for each
  next point is this loader's choice.
- Transformer jobs (``FIXED_BATCH_MODELS``), as in Shockwave, and job types without a batch size (Gavel's ``A3C``,
  ``CycleGAN``) keep their batch size.

Each batch size a job runs at is one ``Phase`` (``workloads.jobs``) with its own throughput per device type; the
job's ``duration`` is the sum of its phases' durations on the reference device (``phases_from_steps``). A static job,
or a dynamic one whose batch size never changes, has no phases and lasts ``total_steps`` over its throughput. A device
type on which some phase has zero throughput in the file (it does not fit in that GPU's memory) is left out of the
job's ``allowed_devices``.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from workloads.errors import SkippedRowsWarning, TraceFormatError, WorkloadError
from workloads.jobs import JobTrace, SkippedRow, TrainingJob, phases_from_steps
from workloads.traces._rows import ErrorPolicy, check_limit, describe_skipped
from workloads.traces.gavel import (
    GAVEL_DEVICES,
    GAVEL_THROUGHPUTS_FILE,
    Throughputs,
    _number,
    job_type_steps_gang,
    load_gavel_throughputs,
)

SHOCKWAVE_FIELDS = ("job_type", "command", "working_directory", "num_steps_arg", "needs_data_dir", "total_steps",
                    "scale_factor", "mode", "priority_weight", "SLO", "duration", "arrival_time")
MODES = ("static", "accordion", "gns")
FIXED_BATCH_MODELS = frozenset({"Transformer"})
"""Models whose batch size Shockwave never changes (Accordion "cannot be applied" to them, its GNS tables skip them)."""
_BATCH = re.compile(r"^(.*) \(batch size (\d+)\)$")


def load_shockwave_jobs(path: str | os.PathLike[str], *,
                        throughputs: str | os.PathLike[str] | Throughputs | None = None, reference: str = "v100",
                        errors: ErrorPolicy = "raise", accordion_critical: float = 0.1,
                        gns_doublings: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
                        limit: int | None = None) -> JobTrace:
    """Load a Shockwave trace file (plain or ``.gz``; module docstring) with ``throughputs`` Gavel's throughputs file
    or its parsed form (default: the bundled copy of Gavel's; Shockwave's own files have the same layout). Jobs are
    sorted by arrival (ties by line) and numbered 0..n-1; ``name`` is ``FILE:line job_type mode``. A job that runs at
    one batch size throughout (static, or a model whose batch size stays) carries its ``job_type``, so that a
    scheduler that packs (``gandiva``) may pack it at the co-located speeds measured for that type; a job whose batch
    size changes carries none (the co-location table is per batch size, and a pair's speeds are not read again when a
    phase changes), so it never runs packed. ``reference``: the
    device type whose throughput sets ``duration``. ``accordion_critical`` and ``gns_doublings`` are the shares of a
    job's work of the module docstring's rules. A malformed row raises ``TraceFormatError`` naming the file, line and
    field (a job type or gang the throughputs lack names the type and the throughputs file) or, with
    ``errors="skip"``, is listed in ``JobTrace.skipped`` and named in a ``SkippedRowsWarning``. ``limit`` keeps the
    first jobs by arrival."""
    limit = check_limit(limit)
    if errors not in ("raise", "skip"):
        raise WorkloadError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if reference not in GAVEL_DEVICES:
        raise WorkloadError(f"reference must be one of {', '.join(GAVEL_DEVICES)}, got {reference!r}")
    if not (isinstance(accordion_critical, (int, float)) and 0 < accordion_critical < 1):
        raise WorkloadError(f"accordion_critical must be a share of the work in (0, 1), got {accordion_critical!r}")
    doublings = tuple(gns_doublings)
    if not all(isinstance(share, (int, float)) and 0 < share < 1 for share in doublings) or any(
            a >= b for a, b in itertools.pairwise(doublings)):
        raise WorkloadError(f"gns_doublings must be increasing shares of the work in (0, 1), got {gns_doublings!r}")
    if isinstance(throughputs, dict):
        table, table_name = throughputs, "the throughputs given"
    else:
        table = load_gavel_throughputs(throughputs)
        table_name = str(throughputs) if throughputs is not None else GAVEL_THROUGHPUTS_FILE
    rules = _Rules(table, table_name, reference, float(accordion_critical), doublings)
    file = Path(path)
    rows: list[tuple[float, int, TrainingJob]] = []
    skipped: list[SkippedRow] = []
    for number, line in _lines(file):
        try:
            arrival, job = rules.job(line, str(file), number, file.stem)
        except TraceFormatError as problem:
            if errors == "raise":
                raise
            skipped.append(SkippedRow(problem.path, problem.line, problem.field, problem.reason))
            continue
        rows.append((arrival, number, job))
    rows.sort(key=lambda row: row[:2])
    jobs = tuple(replace(job, job_id=i) for i, (_, _, job) in enumerate(rows[:limit]))
    if skipped:
        warnings.warn(describe_skipped(skipped), SkippedRowsWarning, stacklevel=2)
    phased = sum(job.phases is not None for job in jobs)
    return JobTrace(jobs=jobs, source=f"shockwave:{file} ({phased} jobs change batch size)", skipped=tuple(skipped))


def _lines(file: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line; bytes that are not UTF-8 name the line."""
    try:
        data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (OSError, EOFError) as exc:
        raise WorkloadError(f"{file}: not a readable Shockwave trace file ({exc})") from exc
    out = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(str(file), number, "line", f"not UTF-8 text ({exc.reason} at byte {exc.start})") \
                from exc
        if text.strip():
            out.append((number, text))
    return out


class _Rules:
    """Turns trace lines into jobs with the throughputs and batch-size rules of one load."""

    def __init__(self, table: Throughputs, table_name: str, reference: str, accordion_critical: float,
                 doublings: tuple[float, ...]) -> None:
        self.table = table
        self.table_name = table_name
        self.reference = reference
        self.accordion_critical = accordion_critical
        self.doublings = doublings
        self.batches: dict[tuple[str, int], set[int]] = {}  # (model, gang) -> batch sizes the file has
        for rows in table.values():
            for job_type, gang in rows:
                match = _BATCH.match(job_type)
                if match:
                    self.batches.setdefault((match.group(1), gang), set()).add(int(match.group(2)))

    def job(self, line: str, label: str, number: int, stem: str) -> tuple[float, TrainingJob]:
        fields = line.split("\t")
        if len(fields) != len(SHOCKWAVE_FIELDS):
            raise TraceFormatError(label, number, "line", f"expected {len(SHOCKWAVE_FIELDS)} tab-separated fields "
                                   f"({', '.join(SHOCKWAVE_FIELDS)}), got {len(fields)}")
        value = dict(zip(SHOCKWAVE_FIELDS, fields, strict=True))
        job_type, steps, gang = job_type_steps_gang(value, label, number)
        mode = value["mode"].strip()
        if mode not in MODES:
            raise TraceFormatError(label, number, "mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
        _number(value["duration"], label, number, "duration", integer=False, minimum=0)
        arrival = _number(value["arrival_time"], label, number, "arrival_time", integer=False, minimum=0)
        self._check_measured(job_type, gang, label, number)

        schedule = self.schedule(job_type, gang, mode)
        speeds = [self._speeds(kind, gang) for kind, _, _ in schedule]
        allowed = [name for name in GAVEL_DEVICES.values() if all(name in phase for phase in speeds)]
        if not allowed:
            raise TraceFormatError(label, number, "job_type", f"job type {job_type!r} at a gang of {gang} ({mode}) "
                                   f"has no device type with a throughput at every batch size it runs at in "
                                   f"{self.table_name}")
        wanted = GAVEL_DEVICES[self.reference]
        reference = wanted if wanted in allowed else max(allowed, key=speeds[0].__getitem__)
        kept = [{device: phase[device] for device in allowed} for phase in speeds]
        first = schedule[0][1]
        if len(schedule) == 1:
            phases, duration = None, steps / kept[0][reference]
        else:
            phases = phases_from_steps([(share * steps * first / batch, rates)
                                        for (_, batch, share), rates in zip(schedule, kept, strict=True)], reference)
            duration = math.fsum(phase.duration for phase in phases)
        job = TrainingJob(job_id=0, arrival=arrival, gpus=gang, duration=duration, reference_device=reference,
                          allowed_devices=tuple(allowed), throughputs=kept[0], phases=phases,
                          name=f"{stem}:{number} {job_type} {mode}", job_type=job_type if phases is None else None)
        return arrival, job

    def schedule(self, job_type: str, gang: int, mode: str) -> list[tuple[str, int, float]]:
        """(job type, batch size, share of the work) of each batch size the job runs at, in order (batch size 1 for a
        job type without one)."""
        match = _BATCH.match(job_type)
        if match is None:
            return [(job_type, 1, 1.0)]
        model, batch = match.group(1), int(match.group(2))
        sizes = self.batches.get((model, gang), set())
        if mode == "static" or model in FIXED_BATCH_MODELS:
            plan = [(batch, 1.0)]
        elif mode == "accordion":
            largest = max(sizes, default=batch)
            plan = [(batch, 1.0)] if largest <= batch else [(batch, self.accordion_critical),
                                                             (largest, 1.0 - self.accordion_critical)]
        else:  # gns
            plan, start, current = [], 0.0, batch
            for share in self.doublings:
                if current * 2 not in sizes:
                    break
                plan.append((current, share - start))
                start, current = share, current * 2
            plan.append((current, 1.0 - start))
        return [(f"{model} (batch size {size})", size, share) for size, share in plan]

    def _speeds(self, job_type: str, gang: int) -> dict[str, float]:
        """Steps per second of ``job_type`` at ``gang`` alone on each device type where it is positive."""
        rates = {device: self.table.get(device, {}).get((job_type, gang), 0.0) for device in GAVEL_DEVICES}
        return {GAVEL_DEVICES[device]: rate for device, rate in rates.items() if rate > 0}

    def _check_measured(self, job_type: str, gang: int, label: str, number: int) -> None:
        if any((job_type, gang) in rows for rows in self.table.values()):
            return
        gangs = sorted({size for rows in self.table.values() for kind, size in rows if kind == job_type})
        if not gangs:
            raise TraceFormatError(label, number, "job_type", f"job type {job_type!r} is not in {self.table_name}")
        raise TraceFormatError(label, number, "scale_factor", f"job type {job_type!r} has no throughput for a gang "
                               f"of {gang} in {self.table_name} (measured: {', '.join(map(str, gangs))})")
