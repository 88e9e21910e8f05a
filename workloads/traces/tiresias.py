"""Loader for the Tiresias (NSDI'19) example job trace ``60_job.csv``."""

from __future__ import annotations

import math
import os

from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces._rows import ErrorPolicy, RowProblems, read_rows, resolve

TIRESIAS_COLUMNS = ("job_id", "num_gpu", "submit_time", "iterations", "model_name", "duration", "interval")
TIRESIAS_FILE = "tiresias_60_job.csv"


def load_tiresias_jobs(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise") -> JobTrace:
    """Load a Tiresias job trace (``job_id,num_gpu,submit_time,iterations,model_name,duration,interval``).

    ``path=None`` reads the bundled 60-job example. ``submit_time`` (seconds from the trace start) is
    kept as the arrival; ``duration`` (seconds) is the job's work, with ``reference_device=None`` since the
    trace does not name the GPU. Jobs are sorted by arrival (ties keep file order) and renumbered 0..n-1;
    ``name`` is the model name. ``iterations`` and ``interval`` are not used. Malformed rows raise
    ``TraceFormatError`` or, with ``errors="skip"``, are listed in ``JobTrace.skipped``.
    """
    file = resolve(path, TIRESIAS_FILE)
    problems = RowProblems(file, errors)
    rows, lines = read_rows(file, TIRESIAS_COLUMNS, problems)
    kept: list[tuple[float, int, float, str, int]] = []
    for line, row in zip(lines, rows, strict=True):
        fields = dict(zip(TIRESIAS_COLUMNS, (value.strip() for value in row), strict=True))
        gpus = fields["num_gpu"]
        submit = _number(fields["submit_time"])
        duration = _number(fields["duration"])
        if not gpus.isdecimal() or int(gpus) <= 0:
            problems.add(line, "num_gpu", f"expected a positive integer, got {row[1]!r}")
        elif submit is None or submit < 0:
            problems.add(line, "submit_time", f"expected a number of seconds >= 0, got {row[2]!r}")
        elif not fields["model_name"]:
            problems.add(line, "model_name", "expected a model name, got an empty field")
        elif duration is None or duration <= 0:
            problems.add(line, "duration", f"expected a positive number of seconds, got {row[5]!r}")
        else:
            kept.append((submit, int(gpus), duration, fields["model_name"], line))
    skipped = problems.finish()
    if not kept:
        raise WorkloadError(f"{file}: no jobs left to load ({len(skipped)} malformed rows skipped)")
    kept.sort(key=lambda job: job[0])
    jobs = tuple(TrainingJob(job_id=i, arrival=submit, gpus=gpus, duration=duration, name=name)
                 for i, (submit, gpus, duration, name, _line) in enumerate(kept))
    return JobTrace(jobs=jobs, source=str(file), skipped=skipped)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
