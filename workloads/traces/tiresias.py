"""Loader for the Tiresias (NSDI'19) example job trace ``60_job.csv``."""

from __future__ import annotations

import os

import numpy as np

from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces._rows import ErrorPolicy, RowProblems, TraceFile, check_limit, labels, resolve
from workloads.traces._select import KeptRows, TimeOrder, cut_chunk

TIRESIAS_COLUMNS = ("job_id", "num_gpu", "submit_time", "iterations", "model_name", "duration", "interval")
TIRESIAS_FILE = "tiresias_60_job.csv"
_DIGITS = 18  # GPU counts with more digits are not read as numbers


def load_tiresias_jobs(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                       limit: int | None = None, time_ordered: bool = False) -> JobTrace:
    """Load a Tiresias job trace (``job_id,num_gpu,submit_time,iterations,model_name,duration,interval``).

    ``path=None`` reads the bundled 60-job example. ``submit_time`` (seconds from the trace start) is
    kept as the arrival; ``duration`` (seconds) is the job's work, with ``reference_device=None`` since the
    trace does not name the GPU. Jobs are sorted by arrival (ties keep file order) and renumbered 0..n-1;
    ``name`` is the model name. ``iterations`` and ``interval`` are not used. Malformed rows raise
    ``TraceFormatError`` or, with ``errors="skip"``, are listed in ``JobTrace.skipped`` (and named in a
    ``SkippedRowsWarning``). ``limit`` and ``time_ordered`` behave as in ``load_philly_jobs``.
    """
    file = resolve(path, TIRESIAS_FILE)
    problems = RowProblems(file, errors)
    limit = check_limit(limit)
    kept = KeptRows(limit)
    order = TimeOrder(str(file), "submit_time") if time_ordered else None
    models: dict[str, int] = {}
    with TraceFile(file, problems) as reader:
        reader.check_header(TIRESIAS_COLUMNS)
        for chunk in reader.chunks(TIRESIAS_COLUMNS, numeric=(2, 5), text=(1, 4)):
            lines = chunk.lines
            texts = chunk.text(1).str.strip().tolist()
            gpus = np.array([int(text) if text.isdecimal() and len(text) <= _DIGITS else 0 for text in texts],
                            dtype=np.int64)
            submit, duration = chunk.floats(2), chunk.floats(5)
            codes, names_here = labels(chunk.text(4))
            model = np.array([models.setdefault(name, len(models)) for name in names_here], dtype=np.int32)[codes]
            with np.errstate(invalid="ignore"):
                checks = [  # in this order: a row is reported for the first field that fails
                    (1, gpus <= 0, "expected a positive integer, got {raw!r}"),
                    (2, ~(np.isfinite(submit) & (submit >= 0)), "expected a number of seconds >= 0, got {raw!r}"),
                    (4, np.array([name == "" for name in names_here], dtype=bool)[codes],
                     "expected a model name, got an empty field"),
                    (5, ~(np.isfinite(duration) & (duration > 0)),
                     "expected a positive number of seconds, got {raw!r}"),
                ]
            bad = np.logical_or.reduce([mask for _, mask, _ in checks])
            for i in np.flatnonzero(bad).tolist():
                column, _, reason = next(check for check in checks if check[1][i])
                problems.add(int(lines[i]), TIRESIAS_COLUMNS[column], reason.format(raw=chunk.text(column).iloc[i]))
            keep = ~bad
            keep, stop = cut_chunk(order, problems, lines, keep, keep, submit, limit, len(kept), None,
                                   chunk, 2)
            kept.add(submit[keep], gpus=gpus[keep], duration=duration[keep], model=model[keep], line=lines[keep])
            if stop is not None:
                break
    skipped = problems.finish()
    columns = kept.finish()
    if len(columns["time"]) == 0:
        raise WorkloadError(f"{file}: no jobs left to load ({len(skipped)} malformed rows skipped)")
    names = np.array(list(models), dtype=object)[columns["model"]].tolist()
    jobs = tuple(TrainingJob(job_id=i, arrival=submit, gpus=gpus, duration=duration, name=name)
                 for i, (submit, gpus, duration, name) in enumerate(zip(
                     columns["time"].tolist(), columns["gpus"].tolist(), columns["duration"].tolist(), names,
                     strict=True)))
    return JobTrace(jobs=jobs, source=str(file), skipped=skipped)
