"""Loader for the Philly job trace (Microsoft, Sep-Dec 2017, as filtered for the Pollux artifact)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from workloads._names import unknown_name
from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, SkippedRow, TrainingJob
from workloads.traces._rows import ErrorPolicy, RowProblems, TraceFile, check_limit, labels, parse_times, resolve
from workloads.traces._select import KeptRows, TimeOrder, cut_chunk
from workloads.traces.window import WindowSpec, parse_window

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
PHILLY_FILE = "philly_jobs.csv.gz"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1)
#: Largest relative gap allowed between ``gpu_time`` and ``duration * num_gpus``.
GPU_TIME_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class PhillyColumns:
    """The jobs ``load_philly_jobs`` keeps, as numpy columns sorted by submit time (ties keep file order).

    ``submit`` is seconds since 1970 of the naive local submit time, ``cluster`` indexes ``clusters`` (the
    virtual clusters' names), ``line`` is each job's 1-based line in ``source``.
    """

    submit: np.ndarray
    duration: np.ndarray
    gpus: np.ndarray
    cluster: np.ndarray
    clusters: tuple[str, ...]
    line: np.ndarray
    source: Path
    skipped: tuple[SkippedRow, ...]

    def __len__(self) -> int:
        return int(self.submit.size)


def load_philly_jobs(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                     window: WindowSpec | None = None, virtual_clusters: Iterable[str] | str | None = None,
                     limit: int | None = None, time_ordered: bool = False) -> JobTrace:
    """Load ``philly_jobs.csv`` (columns ``timestamp,duration,num_gpus,gpu_time,cluster``; ``.gz`` is fine).

    ``path=None`` reads the copy bundled with the package. Jobs are sorted by submit time (ties keep
    file order) and numbered 0..n-1 in that order; ``arrival`` is seconds since the first kept submit,
    whose datetime is the trace's ``origin``. ``tenant`` is the virtual cluster and ``name`` is
    ``philly-{line}`` (1-based line of the file).

    The trace does not say which GPU model a job ran on, so jobs have ``reference_device=None``: the
    recorded ``duration`` is taken as the job's run time on any pool.

    A malformed row (bad timestamp, duration not a positive number, ``num_gpus`` not a positive integer,
    ``gpu_time`` not ``duration * num_gpus``, empty cluster, wrong column count, bytes that are not UTF-8)
    raises ``TraceFormatError`` naming the file, line and field; with ``errors="skip"`` it is left out,
    listed in ``JobTrace.skipped`` and named in a ``SkippedRowsWarning``. ``window`` keeps submits in
    ``[start, end)``: ``(start, end)``, ``{"start": "2017-10-01", "days": 7}`` or ``{"start": ..., "end": ...}``.
    ``virtual_clusters`` keeps only the named virtual clusters. ``limit`` keeps the ``limit`` earliest of the
    jobs left (the first jobs of the trace, as ``trace.jobs[:limit]`` would). The file is read in chunks and
    filtered as it is read, so memory follows the jobs kept; every row is still read and checked, unless
    ``time_ordered=True`` says the rows are in submit order: then reading stops once ``limit`` jobs are kept
    or a submit passes the window's end (later rows are not read), and a row out of order raises
    ``TraceFormatError``.
    """
    table = read_philly_columns(path, errors=errors, window=window, virtual_clusters=virtual_clusters, limit=limit,
                                time_ordered=time_ordered)
    t0 = int(table.submit[0])
    return JobTrace(jobs=tuple(_jobs(table, t0)), source=str(table.source), origin=_EPOCH + timedelta(seconds=t0),
                    skipped=table.skipped)


def read_philly_columns(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                        window: WindowSpec | None = None, virtual_clusters: Iterable[str] | str | None = None,
                        limit: int | None = None, time_ordered: bool = False) -> PhillyColumns:
    """The jobs ``load_philly_jobs`` keeps (same options and errors), as columns: no Python object per job."""
    bounds = None if window is None else parse_window(window)
    limit = check_limit(limit)
    names = None if virtual_clusters is None else (
        [virtual_clusters] if isinstance(virtual_clusters, str) else list(virtual_clusters))
    wanted = set() if names is None else set(names)
    file = resolve(path, PHILLY_FILE)
    problems = RowProblems(file, errors)
    kept = KeptRows(limit)
    order = TimeOrder(str(file), "timestamp") if time_ordered else None
    lo, hi = (None, None) if bounds is None else (_to_seconds(bounds[0]), _to_seconds(bounds[1]))
    clusters: dict[str, int] = {}
    valid_clusters: set[int] = set()
    first, last = np.iinfo(np.int64).max, np.iinfo(np.int64).min  # submits of the valid rows in the chosen VCs
    read_all = True
    with TraceFile(file, problems) as reader:
        reader.check_header(PHILLY_COLUMNS)
        for chunk in reader.chunks(PHILLY_COLUMNS, numeric=(1, 2, 3), text=(0, 4)):
            lines = chunk.lines
            stamps = parse_times(chunk.text(0), _parse_time)
            seconds = stamps.astype(np.int64)  # NaT rows are masked below
            duration, gpus, gpu_time = chunk.floats(1), chunk.floats(2), chunk.floats(3)
            codes, names_here = labels(chunk.text(4))
            cluster = np.array([clusters.setdefault(name, len(clusters)) for name in names_here], dtype=np.int32)[codes]
            with np.errstate(invalid="ignore"):
                bad_time = np.isnat(stamps)
                bad_duration = ~(np.isfinite(duration) & (duration > 0))
                bad_gpus = ~(np.isfinite(gpus) & (gpus > 0) & (gpus == np.floor(gpus)))
                expected = duration * gpus
                bad_gpu_time = ~np.isfinite(gpu_time) | (
                    np.abs(gpu_time - expected) > GPU_TIME_TOLERANCE * np.maximum(np.abs(gpu_time), np.abs(expected)))
                bad_gpu_time &= ~bad_duration & ~bad_gpus
                bad_cluster = np.array([name == "" for name in names_here], dtype=bool)[codes]
            masks = (bad_time, bad_duration, bad_gpus, bad_gpu_time, bad_cluster)
            bad = np.logical_or.reduce(masks)
            for i in np.flatnonzero(bad).tolist():
                column = next(c for c, mask in enumerate(masks) if mask[i])
                problems.add(int(lines[i]), PHILLY_COLUMNS[column],
                             _reason(PHILLY_COLUMNS[column], chunk.text(column).iloc[i], float(expected[i])))
            valid = ~bad
            valid_clusters.update(np.unique(cluster[valid]).tolist())
            chosen = valid if names is None else valid & np.array([n in wanted for n in names_here], dtype=bool)[codes]
            if chosen.any():
                first, last = min(first, int(seconds[chosen].min())), max(last, int(seconds[chosen].max()))
            keep = chosen if bounds is None else chosen & (seconds >= lo) & (seconds < hi)
            keep, stop = cut_chunk(order, problems, lines, keep, valid, seconds, limit, len(kept),
                                   None if hi is None else valid & (seconds >= hi), chunk, 0)
            kept.add(seconds[keep], duration=duration[keep], gpus=gpus[keep].astype(np.int64), cluster=cluster[keep],
                     line=lines[keep])
            if stop is not None:
                read_all = False
                break
    skipped = problems.finish()
    if names is not None and read_all:
        valid_names = {name for name, index in clusters.items() if index in valid_clusters}
        for name in names:
            if name not in valid_names:
                raise unknown_name("virtual cluster", name, valid_names, where="virtual_clusters",
                                   context=f" in {file.name}")
    columns = kept.finish()
    if len(columns["time"]) == 0:
        if bounds is not None:
            start, end = bounds
            span = "nothing" if first > last else f"{_from_seconds(first)} to {_from_seconds(last)}"
            raise WorkloadError(f"{file}: window [{start}, {end}) holds no jobs; the trace's submits span {span}")
        filters = "" if names is None else f", only virtual clusters {sorted(names)}"
        raise WorkloadError(f"{file}: no jobs to load ({len(skipped)} malformed rows skipped{filters})")
    return PhillyColumns(submit=columns["time"], duration=columns["duration"], gpus=columns["gpus"],
                         cluster=columns["cluster"], clusters=tuple(clusters), line=columns["line"], source=file,
                         skipped=skipped)


def _jobs(table: PhillyColumns, t0: int, batch: int = 65_536) -> Iterator[TrainingJob]:
    """The jobs of ``table``, numbered in order, built a batch at a time (no list per column of the whole trace)."""
    tenants = np.array(table.clusters, dtype=object)
    for lo in range(0, len(table), batch):
        part = slice(lo, lo + batch)
        arrivals = (table.submit[part] - t0).astype(float).tolist()
        rows = zip(arrivals, table.gpus[part].tolist(), table.duration[part].tolist(),
                   tenants[table.cluster[part]].tolist(), table.line[part].tolist(), strict=True)
        for i, (arrival, n, d, c, line) in enumerate(rows, lo):
            yield TrainingJob(job_id=i, arrival=arrival, gpus=n, duration=d, tenant=c, name=f"philly-{line}")


def _parse_time(texts: pd.Series) -> np.ndarray:
    return np.array(pd.to_datetime(texts, format=_TIME_FORMAT, errors="coerce").to_numpy(dtype="datetime64[s]"))


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


def _from_seconds(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)
