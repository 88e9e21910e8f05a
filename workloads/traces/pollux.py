"""Loader for the evaluation workloads of Pollux (Qiao et al., OSDI'21; petuum/adaptdl, branch ``osdi21-artifact``,
``simulator/workloads/workload-<n>.csv``): 8 files of 160 jobs each, bundled as ``pollux_workload-<n>.csv``.

A file has the columns ``name,time,application,num_replicas,batch_size``: ``time`` is the submit time in seconds
from the workload's start (the artifact samples 8 busy hours of Philly), ``application`` one of the artifact's six
(``workloads.elastic.POLLUX_APPLICATIONS``), and ``num_replicas`` and ``batch_size`` the gang and batch the
artifact's generator tuned for the job (the configuration its Tiresias and Optimus baselines run).

Each row becomes an elastic ``TrainingJob`` (``workloads.elastic.elastic_job``): ``gpus = num_replicas``, ``min_gpus``
1, ``max_gpus`` Pollux's own limit for the application (64; 1 for ncf), raised to ``num_replicas`` if that is
larger; ``duration`` the application's work to the artifact's end of training (``target_samples``) over the model's
goodput at the recorded gang and batch, on the artifact's GPU (``reference_device="t4"``); ``scaling`` the goodput
at the best batch of every gang from 1 to ``max_gpus``. Jobs are sorted by ``time`` (ties keep file order) and
numbered 0..159; ``name`` is the row's name.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from workloads._names import unknown_name
from workloads.elastic import GPUS_PER_NODE, POLLUX_APPLICATIONS, elastic_job
from workloads.errors import TraceFormatError, WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces._rows import ErrorPolicy, RowProblems, TraceFile, resolve
from workloads.traces.bundled import bundled_path

POLLUX_COLUMNS = ("name", "time", "application", "num_replicas", "batch_size")
#: How many workloads the artifact has (``workload-1.csv`` to ``workload-8.csv``).
POLLUX_WORKLOADS = 8
_DIGITS = 18  # integers with more digits are not read as numbers


def pollux_workload_file(n: int) -> Path:
    """The bundled copy of the artifact's ``workload-<n>.csv`` (``n`` from 1 to 8)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= POLLUX_WORKLOADS:
        raise WorkloadError(f"Pollux workload number must be an integer from 1 to {POLLUX_WORKLOADS}, got {n!r}")
    return bundled_path(f"pollux_workload-{int(n)}.csv")


def load_pollux_workload(n_or_path: int | str | os.PathLike[str], *, errors: ErrorPolicy = "raise",
                         gpus_per_node: int = GPUS_PER_NODE) -> JobTrace:
    """Load Pollux's workload ``n_or_path`` (1..8: the bundled copy; or a path to a file of the same columns) as
    elastic jobs (module docstring). ``gpus_per_node`` sets the nodes a gang spans in the throughput model (the
    artifact's 4). A malformed row (a missing or empty field, a negative time, an unknown application, a gang or
    batch outside the application's limits) raises ``TraceFormatError`` naming the file, line and field or, with
    ``errors="skip"``, is listed in ``JobTrace.skipped`` (and named in a ``SkippedRowsWarning``); a wrong header
    always raises."""
    is_path = isinstance(n_or_path, (str, os.PathLike))
    file = resolve(n_or_path, "") if is_path else pollux_workload_file(n_or_path)  # type: ignore[arg-type]
    problems = RowProblems(file, errors)
    rows: list[tuple[float, int, TrainingJob]] = []
    with TraceFile(file, problems) as reader:
        reader.check_header(POLLUX_COLUMNS)
        for chunk in reader.chunks(POLLUX_COLUMNS, numeric=(1,), text=(0, 2, 3, 4)):
            times = chunk.floats(1).tolist()
            texts = [chunk.text(c).str.strip().tolist() for c in range(len(POLLUX_COLUMNS))]
            for i, line in enumerate(chunk.lines.tolist()):
                fields = [column[i] for column in texts]
                try:
                    rows.append((times[i], line, _job(str(file), line, fields, times[i], gpus_per_node)))
                except TraceFormatError as problem:
                    problems.add(line, problem.field, problem.reason)
    skipped = problems.finish()
    if not rows:
        raise WorkloadError(f"{file}: no jobs left to load ({len(skipped)} malformed rows skipped)")
    rows.sort(key=lambda row: row[:2])
    jobs = tuple(replace(job, job_id=i) for i, (_, _, job) in enumerate(rows))
    return JobTrace(jobs=jobs, source=f"pollux:{file}", skipped=skipped)


def _job(path: str, line: int, fields: list[str], time: float, gpus_per_node: int) -> TrainingJob:
    name, time_text, application, replicas_text, batch_text = fields
    if not name:
        raise TraceFormatError(path, line, "name", "expected a job name, got an empty field")
    if not (np.isfinite(time) and time >= 0):
        raise TraceFormatError(path, line, "time", f"expected a number of seconds >= 0, got {time_text!r}")
    app = POLLUX_APPLICATIONS.get(application)
    if app is None:
        raise TraceFormatError(path, line, "application", str(unknown_name("application", application,
                                                                           POLLUX_APPLICATIONS)))
    replicas = _positive(path, line, "num_replicas", replicas_text)
    batch = _positive(path, line, "batch_size", batch_text)
    if replicas > app.largest_gang:
        raise TraceFormatError(path, line, "num_replicas", f"{application} runs on at most {app.largest_gang} GPUs "
                               f"(its largest batch {app.max_batch} over its smallest local batch "
                               f"{app.min_local_batch}), got {replicas}")
    try:
        return elastic_job(app, job_id=0, arrival=time, gpus=replicas, batch=batch, gpus_per_node=gpus_per_node,
                           name=name)
    except WorkloadError as problem:
        raise TraceFormatError(path, line, "batch_size", str(problem)) from None


def _positive(path: str, line: int, field: str, text: str) -> int:
    if not (text.isdecimal() and len(text) <= _DIGITS and int(text) > 0):
        raise TraceFormatError(path, line, field, f"expected a positive integer, got {text!r}")
    return int(text)

