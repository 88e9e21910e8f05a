"""Loader for the Philly job trace (Microsoft, Sep-Dec 2017, as filtered for the Pollux artifact)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from workloads._names import unknown_name
from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces._rows import ErrorPolicy, RowProblems, columns, read_rows, resolve
from workloads.traces.window import WindowSpec, parse_window

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
PHILLY_FILE = "philly_jobs.csv.gz"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1)
#: Largest relative gap allowed between ``gpu_time`` and ``duration * num_gpus``.
GPU_TIME_TOLERANCE = 1e-6


def load_philly_jobs(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                     window: WindowSpec | None = None, virtual_clusters: Iterable[str] | str | None = None
                     ) -> JobTrace:
    """Load ``philly_jobs.csv`` (columns ``timestamp,duration,num_gpus,gpu_time,cluster``; ``.gz`` is fine).

    ``path=None`` reads the copy bundled with the package. Jobs are sorted by submit time (ties keep
    file order) and numbered 0..n-1 in that order; ``arrival`` is seconds since the first kept submit,
    whose datetime is the trace's ``origin``. ``tenant`` is the virtual cluster and ``name`` is
    ``philly-{line}`` (1-based line of the file).

    The trace does not say which GPU model a job ran on, so jobs have ``reference_device=None``: the
    recorded ``duration`` is taken as the job's run time on any pool.

    A malformed row (bad timestamp, duration not a positive number, ``num_gpus`` not a positive integer,
    ``gpu_time`` not ``duration * num_gpus``, empty cluster, wrong column count) raises
    ``TraceFormatError`` naming the file, line and field; with ``errors="skip"`` it is left out and listed
    in ``JobTrace.skipped``. ``window`` keeps submits in ``[start, end)``: ``(start, end)``,
    ``{"start": "2017-10-01", "days": 7}`` or ``{"start": ..., "end": ...}``. ``virtual_clusters`` keeps
    only the named virtual clusters.
    """
    bounds = None if window is None else parse_window(window)
    file = resolve(path, PHILLY_FILE)
    problems = RowProblems(file, errors)
    rows, line_list = read_rows(file, PHILLY_COLUMNS, problems)
    lines = np.asarray(line_list, dtype=np.int64)
    raw = columns(rows, len(PHILLY_COLUMNS))
    del rows  # 82k small lists: freeing them early keeps the garbage collector's passes short
    stamps = pd.to_datetime(pd.Series([text.strip() for text in raw[0]], dtype=object), format=_TIME_FORMAT,
                            errors="coerce")
    seconds = stamps.to_numpy().astype("datetime64[s]").astype(np.int64)
    duration, gpus, gpu_time = (_floats(raw[i]) for i in (1, 2, 3))
    cluster = np.array([text.strip() for text in raw[4]], dtype=object)

    with np.errstate(invalid="ignore"):
        bad_time = stamps.isna().to_numpy()
        bad_duration = ~(np.isfinite(duration) & (duration > 0))
        bad_gpus = ~(np.isfinite(gpus) & (gpus > 0) & (gpus == np.floor(gpus)))
        expected = duration * gpus
        bad_gpu_time = ~np.isfinite(gpu_time) | (
            np.abs(gpu_time - expected) > GPU_TIME_TOLERANCE * np.maximum(np.abs(gpu_time), np.abs(expected)))
        bad_gpu_time &= ~bad_duration & ~bad_gpus
        bad_cluster = cluster == ""
    masks = (bad_time, bad_duration, bad_gpus, bad_gpu_time, bad_cluster)
    bad = np.logical_or.reduce(masks)
    for i in np.flatnonzero(bad).tolist():
        name = next(n for n, mask in zip(PHILLY_COLUMNS, masks, strict=True) if mask[i])
        reason = _reason(name, raw[PHILLY_COLUMNS.index(name)][i], duration[i] * gpus[i])
        problems.add(int(lines[i]), name, reason)
    skipped = problems.finish()

    keep = ~bad
    if virtual_clusters is not None:
        names = [virtual_clusters] if isinstance(virtual_clusters, str) else list(virtual_clusters)
        valid = set(cluster[keep].tolist())
        for name in names:
            if name not in valid:
                raise unknown_name("virtual cluster", name, valid, where="virtual_clusters", context=f" in {file.name}")
        keep &= np.isin(cluster, names)
    span = _span(seconds[keep])
    if bounds is not None:
        start, end = bounds
        keep &= (seconds >= _to_seconds(start)) & (seconds < _to_seconds(end))
        if not keep.any():
            raise WorkloadError(f"{file}: window [{start}, {end}) holds no jobs; the trace's submits span {span}")
    if not keep.any():
        filters = "" if virtual_clusters is None else f", only virtual clusters {sorted(names)}"
        raise WorkloadError(f"{file}: no jobs to load ({len(skipped)} malformed rows skipped{filters})")

    order = np.flatnonzero(keep)
    order = order[np.argsort(seconds[order], kind="stable")]
    t0 = int(seconds[order[0]])
    arrivals = (seconds[order] - t0).astype(float).tolist()
    jobs = tuple(
        TrainingJob(job_id=i, arrival=arrival, gpus=n, duration=d, tenant=c, name=f"philly-{line}")
        for i, (arrival, n, d, c, line) in enumerate(zip(
            arrivals, gpus[order].astype(np.int64).tolist(), duration[order].tolist(), cluster[order].tolist(),
            lines[order].tolist(), strict=True))
    )
    return JobTrace(jobs=jobs, source=str(file), origin=_EPOCH + timedelta(seconds=t0), skipped=skipped)


def _floats(texts: list[str]) -> np.ndarray:
    """Numbers from strings; anything unparseable becomes NaN (caught by the row checks)."""
    try:
        return np.array(texts, dtype=float)
    except ValueError:
        return pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype=float)


def _reason(field: str, raw: object, expected_gpu_time: float) -> str:
    if field == "timestamp":
        return f"expected a time like '2017-10-09 07:01:55', got {raw!r}"
    if field == "duration":
        return f"expected a positive number of seconds, got {raw!r}"
    if field == "num_gpus":
        return f"expected a positive integer, got {raw!r}"
    if field == "gpu_time":
        return f"expected duration * num_gpus = {expected_gpu_time!r} (within {GPU_TIME_TOLERANCE:g}), got {raw!r}"
    return f"expected a virtual cluster name, got {raw!r}"


def _to_seconds(moment: datetime) -> float:
    return (moment - _EPOCH).total_seconds()


def _span(seconds: np.ndarray) -> str:
    if seconds.size == 0:
        return "nothing"
    first, last = (_EPOCH + timedelta(seconds=int(s)) for s in (seconds.min(), seconds.max()))
    return f"{first} to {last}"
