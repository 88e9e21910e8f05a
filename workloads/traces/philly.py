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
from workloads.jobs import ColumnJobs, JobTrace, SkippedRow
from workloads.traces._rows import (
    Chunk,
    ErrorPolicy,
    RowProblems,
    TraceFile,
    check_limit,
    labels,
    parse_times,
    resolve,
)
from workloads.traces._select import KeptRows, TimeOrder, cut_chunk
from workloads.traces.bundled import DATA_DIR
from workloads.traces.columnar import read_copy, write_copy
from workloads.traces.window import WindowSpec, parse_window

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
PHILLY_FILE = "philly_jobs.csv.gz"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1)
#: Largest relative gap allowed between ``gpu_time`` and ``duration * num_gpus``.
GPU_TIME_TOLERANCE = 1e-6
#: The columns of the copy ``write_philly_copy`` writes (every row of the file, in file order) and their types.
COPY_COLUMNS = {"line": np.int64, "submit": np.int64, "duration": np.float64, "gpus": np.int64,
                "cluster": np.int32, "clusters": np.str_}


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

    The bundled file is not parsed: its columns are read from the columnar copy beside it
    (``philly_jobs.columns.npz``, made by ``write_philly_copy`` from the same bytes, used only while it matches
    them), and the same options and errors apply to them. ``time_ordered=True`` still reads the file.
    """
    table = read_philly_columns(path, errors=errors, window=window, virtual_clusters=virtual_clusters, limit=limit,
                                time_ordered=time_ordered)
    t0 = int(table.submit[0])
    jobs = ColumnJobs(arrival=(table.submit - t0).astype(float), gpus=table.gpus, duration=table.duration,
                      tenant=table.cluster, tenants=table.clusters, names=table.line, name_format="philly-{}")
    return JobTrace(jobs=jobs, source=str(table.source), origin=_EPOCH + timedelta(seconds=t0),
                    skipped=table.skipped)


def read_philly_columns(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                        window: WindowSpec | None = None, virtual_clusters: Iterable[str] | str | None = None,
                        limit: int | None = None, time_ordered: bool = False) -> PhillyColumns:
    """The jobs ``load_philly_jobs`` keeps (same options and errors), as columns: no Python object per job."""
    bounds = None if window is None else parse_window(window)
    limit = check_limit(limit)
    names = None if virtual_clusters is None else (
        [virtual_clusters] if isinstance(virtual_clusters, str) else list(virtual_clusters))
    file = resolve(path, PHILLY_FILE)
    problems = RowProblems(file, errors)
    clusters: dict[str, int] = {}
    copy = None if time_ordered else _bundled_copy(file)
    if copy is not None:
        clusters.update((name, index) for index, name in enumerate(copy.pop("clusters").tolist()))
        parts = iter([_Part(copy["line"], copy["submit"], copy["duration"], copy["gpus"], copy["cluster"],
                            np.ones(copy["line"].size, dtype=bool), None)])
        return _select(parts, file, problems, clusters, bounds, names, limit, None)
    with TraceFile(file, problems) as reader:
        reader.check_header(PHILLY_COLUMNS)
        order = TimeOrder(str(file), "timestamp") if time_ordered else None
        return _select(_parse(reader, problems, clusters), file, problems, clusters, bounds, names, limit, order)


def write_philly_copy(path: str | os.PathLike[str] | None = None) -> Path:
    """Write the columnar copy of the Philly file at ``path`` (the bundled one by default) beside it: every row,
    in file order, as parsed and checked (``COPY_COLUMNS``), with the SHA-256 of the file. A malformed row is an
    error (a copy holds no skipped rows). Returns the copy's path."""
    file = resolve(path, PHILLY_FILE)
    return write_copy(file, parse_philly_file(file))


def parse_philly_file(path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Every row of the file, parsed and checked, in file order, as ``COPY_COLUMNS``: what its columnar copy
    holds. Reads the file itself (never a copy); ``TraceFormatError`` for the earliest malformed row."""
    file = resolve(path, PHILLY_FILE)
    problems = RowProblems(file, "raise")
    clusters: dict[str, int] = {}
    parts = []
    with TraceFile(file, problems) as reader:
        reader.check_header(PHILLY_COLUMNS)
        for part in _parse(reader, problems, clusters):
            problems.check()
            parts.append(part)
    problems.finish()

    def joined(column: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(part, column)) for part in parts] or [np.empty(0)]).astype(dtype)

    return {"line": joined("line", np.int64), "submit": joined("submit", np.int64),
            "duration": joined("duration", np.float64), "gpus": joined("gpus", np.int64),
            "cluster": joined("cluster", np.int32), "clusters": np.array(list(clusters), dtype=np.str_)}


@dataclass(frozen=True, eq=False)
class _Part:
    """Rows of one chunk as parsed: line, submit seconds, duration, num_gpus, cluster (index in the clusters seen
    so far), whether the row is well-formed, and the chunk itself (for the raw text of a message; ``None`` for
    rows from a copy)."""

    line: np.ndarray
    submit: np.ndarray
    duration: np.ndarray
    gpus: np.ndarray
    cluster: np.ndarray
    valid: np.ndarray
    chunk: Chunk | None


def _parse(reader: TraceFile, problems: RowProblems, clusters: dict[str, int]) -> Iterator[_Part]:
    """The file's rows a chunk at a time, checked: each malformed row goes to ``problems`` (and is not ``valid``);
    ``clusters`` gains each cluster name as it is first seen."""
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
        yield _Part(lines, seconds, duration, gpus, cluster, ~bad, chunk)


def _select(parts: Iterator[_Part], file: Path, problems: RowProblems, clusters: dict[str, int],
            bounds: tuple[datetime, datetime] | None, names: list[str] | None, limit: int | None,
            order: TimeOrder | None) -> PhillyColumns:
    """The rows of ``parts`` that the filters keep, sorted by submit time; the errors of an empty result."""
    wanted = set() if names is None else set(names)
    kept = KeptRows(limit)
    lo, hi = (None, None) if bounds is None else (_to_seconds(bounds[0]), _to_seconds(bounds[1]))
    valid_clusters: set[int] = set()
    first, last = np.iinfo(np.int64).max, np.iinfo(np.int64).min  # submits of the valid rows in the chosen VCs
    read_all = True
    for part in parts:
        lines, seconds, valid = part.line, part.submit, part.valid
        valid_clusters.update(np.unique(part.cluster[valid]).tolist())
        if names is None:
            chosen = valid
        else:
            chosen = valid & np.array([name in wanted for name in clusters], dtype=bool)[part.cluster]
        if chosen.any():
            first, last = min(first, int(seconds[chosen].min())), max(last, int(seconds[chosen].max()))
        keep = chosen if bounds is None else chosen & (seconds >= lo) & (seconds < hi)
        keep, stop = cut_chunk(order, problems, lines, keep, valid, seconds, limit, len(kept),
                               None if hi is None else valid & (seconds >= hi), part.chunk, 0)
        kept.add(seconds[keep], duration=part.duration[keep], gpus=part.gpus[keep].astype(np.int64),
                 cluster=part.cluster[keep], line=lines[keep])
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


def _bundled_copy(file: Path) -> dict[str, np.ndarray] | None:
    """The columns of the copy of ``file`` if it is a bundled file with a copy made from its bytes."""
    if file.resolve().parent != DATA_DIR:
        return None
    return read_copy(file, COPY_COLUMNS)


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
