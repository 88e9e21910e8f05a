"""Request traces: the Azure LLM inference trace (2023) and a generic CSV loader with a column mapping."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from workloads._names import check_keys, unknown_name
from workloads.errors import TraceFormatError, WorkloadError
from workloads.requests import RequestTrace
from workloads.traces._rows import ErrorPolicy, RowProblems, columns, open_text, read_rows, resolve
from workloads.traces.window import WindowSpec, parse_window

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
AZURE_CONV_FILE = "AzureLLMInferenceTrace_conv.csv.gz"
#: TIMESTAMP format; ``%f`` takes the file's 7 fractional digits (pandas keeps them, to the nanosecond).
_AZURE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_EPOCH = datetime(1970, 1, 1)
#: Roles a ``load_request_csv`` column mapping may name (``service`` is optional).
REQUEST_COLUMNS = ("arrival", "prompt_tokens", "output_tokens", "service")
TimeUnit = Literal["s", "ms", "us", "datetime"]
_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}  # units per second
_LARGEST_COUNT = 2.0**53  # token counts above this are not exact in float64


def load_azure_llm(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                   window: WindowSpec | None = None) -> RequestTrace:
    """Load an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``; ``.gz`` is fine).

    ``path=None`` reads the bundled ``AzureLLMInferenceTrace_conv.csv`` (one hour of an Azure LLM
    conversation service, 2023-11-16; Splitwise, ISCA'24). ``ContextTokens`` is the prompt length and
    ``GeneratedTokens`` the output length. Requests are sorted by time (ties keep file order) and
    ``arrival`` is seconds since the first kept request, whose wall-clock time is ``origin``.

    A malformed row (bad TIMESTAMP, token count not a positive integer, wrong column count) raises
    ``TraceFormatError`` naming the file, line and field; with ``errors="skip"`` it is left out and
    listed in ``RequestTrace.skipped``. ``window`` keeps requests in ``[start, end)``: seconds since the
    first request as ``(start, end)`` or ``{start, end}``, or wall-clock times as for the Philly loader
    (``("2023-11-16 18:30", "2023-11-16 18:40")``, ``{start, end}`` or ``{start, days}``).
    """
    file = resolve(path, AZURE_CONV_FILE)
    problems = RowProblems(file, errors)
    rows, lines = read_rows(file, AZURE_COLUMNS, problems)
    raw = columns(rows, len(AZURE_COLUMNS))
    del rows
    names = dict(zip(("arrival", "prompt_tokens", "output_tokens"), AZURE_COLUMNS, strict=True))
    return _build(file, problems, np.asarray(lines, dtype=np.int64), names, raw[0], raw[1], raw[2], None,
                  "datetime", window, time_format=_AZURE_TIME)


def load_request_csv(path: str | os.PathLike[str], *, columns: Mapping[str, str], time_unit: TimeUnit = "s",
                     errors: ErrorPolicy = "raise", window: WindowSpec | None = None) -> RequestTrace:
    """Load requests from any CSV with a header, given which column holds what.

    ``columns`` maps ``arrival``, ``prompt_tokens``, ``output_tokens`` and optionally ``service`` to
    header names, e.g. ``{"arrival": "ts", "prompt_tokens": "input_len", "output_tokens": "output_len"}``;
    other columns are ignored. ``time_unit`` says how to read the arrival column: numbers in ``s``,
    ``ms`` or ``us``, or ``datetime`` (ISO 8601; times with a UTC offset are converted to UTC). Arrivals
    are re-based to the first kept request (``arrival`` 0; ``origin`` is its wall-clock time for
    ``datetime``). A mapped column missing from the header raises ``TraceFormatError`` on line 1 naming
    it; bad rows, ``errors`` and ``window`` behave as in ``load_azure_llm`` (wall-clock windows need
    ``time_unit="datetime"``).
    """
    if time_unit not in (*_UNITS, "datetime"):
        raise unknown_name("time_unit", time_unit, [*_UNITS, "datetime"], where="time_unit")
    mapping = _mapping(columns)
    if path is None:
        raise WorkloadError("path: load_request_csv needs a file (bundled request traces: see REQUEST_TRACES)")
    file = resolve(path, "")
    problems = RowProblems(file, errors)
    header = _header(file)
    for role, name in mapping.items():
        hits = header.count(name)
        if hits != 1:
            what = "is not in the header" if hits == 0 else f"appears {hits} times in the header"
            close = unknown_name("column", name, header).args[0].partition("; ")[2]
            raise TraceFormatError(str(file), 1, name, f"column {name!r} (columns.{role}) {what}; {close}")
    rows, lines = read_rows(file, header, problems)
    table = {role: [row[header.index(name)] for row in rows] for role, name in mapping.items()}
    del rows
    return _build(file, problems, np.asarray(lines, dtype=np.int64), mapping, table["arrival"],
                  table["prompt_tokens"], table["output_tokens"], table.get("service"), time_unit, window)


def _mapping(columns: object) -> dict[str, str]:
    if not isinstance(columns, Mapping):
        raise WorkloadError(f"columns: expected a mapping of {', '.join(REQUEST_COLUMNS)} to CSV column names, "
                            f"got {columns!r}")
    check_keys(columns, REQUEST_COLUMNS, where="columns")
    for role in REQUEST_COLUMNS[:3]:
        if role not in columns:
            raise WorkloadError(f"columns: missing key {role!r} (keys: {', '.join(REQUEST_COLUMNS)}; service optional)")
    mapping: dict[str, str] = {}
    for role, name in columns.items():
        if not isinstance(name, str) or not name.strip():
            raise WorkloadError(f"columns.{role}: must be a column name, got {name!r}")
        mapping[role] = name.strip()
    return mapping


def _header(file: Path) -> list[str]:
    with open_text(file) as stream:
        first = next(csv.reader(stream), None)
    if not first:
        raise TraceFormatError(str(file), 1, "header", "expected a header row of column names, got an empty line")
    return [name.strip() for name in first]


def _build(file: Path, problems: RowProblems, lines: np.ndarray, names: Mapping[str, str], times: list[str],
           prompt: list[str], output: list[str], service: list[str] | None, time_unit: str,
           window: WindowSpec | None, time_format: str | None = None) -> RequestTrace:
    """Validate the columns, report bad rows, filter by ``window``, sort and re-base the arrivals."""
    if time_unit == "datetime":
        stamps = _datetimes(times, time_format)
        bad_time = np.isnat(stamps)
        clock = stamps.astype(np.int64)  # nanoseconds since 1970; NaT rows are masked below
        per_second = 1e9
    else:
        values = _floats(times)
        bad_time = ~np.isfinite(values)
        clock, per_second = values, _UNITS[time_unit]
    prompt_tokens, bad_prompt = _counts(prompt)
    output_tokens, bad_output = _counts(output)
    labels = np.array([text.strip() for text in service], dtype=object) if service is not None else None
    checks: list[tuple[str, np.ndarray, Callable[[str], str]]] = [
        ("arrival", bad_time, lambda raw: _time_reason(raw, time_unit, time_format)),
        ("prompt_tokens", bad_prompt, lambda raw: f"expected a positive integer number of tokens, got {raw!r}"),
        ("output_tokens", bad_output, lambda raw: f"expected a positive integer number of tokens, got {raw!r}"),
    ]
    if labels is not None:
        checks.append(("service", labels == "", lambda raw: f"expected a service name, got {raw!r}"))
    texts = {"arrival": times, "prompt_tokens": prompt, "output_tokens": output, "service": service}
    bad = np.logical_or.reduce([mask for _, mask, _ in checks])
    for i in np.flatnonzero(bad).tolist():
        role, _, reason = next(check for check in checks if check[1][i])
        problems.add(int(lines[i]), names[role], reason(texts[role][i]))  # type: ignore[index]
    skipped = problems.finish()
    keep = ~bad
    if not keep.any():
        raise WorkloadError(f"{file}: no requests to load ({len(skipped)} malformed rows skipped)")

    first = clock[keep].min()
    if window is not None:
        lo, hi = _window(window, time_unit)
        if isinstance(lo, datetime):
            lo_clock, hi_clock = (_to_ns(moment) for moment in (lo, hi))  # type: ignore[arg-type]
            keep &= (clock >= lo_clock) & (clock < hi_clock)
        else:
            offset = (clock - first) / per_second
            keep &= offset >= lo
            if hi is not None:
                keep &= offset < hi
        if not keep.any():
            raise WorkloadError(f"{file}: window [{lo}, {hi}) holds no requests; the trace spans "
                                f"{_describe(first, clock[~bad].max(), time_unit, per_second)}")
    order = np.flatnonzero(keep)
    order = order[np.argsort(clock[order], kind="stable")]
    t0 = clock[order[0]]
    arrival = (clock[order] - t0) / per_second
    origin = _EPOCH + timedelta(microseconds=int(t0) // 1000) if time_unit == "datetime" else None
    return RequestTrace(arrival=arrival.astype(np.float64), prompt_tokens=prompt_tokens[order],
                        output_tokens=output_tokens[order], source=str(file), origin=origin, skipped=skipped,
                        service=None if labels is None else labels[order])


def _datetimes(texts: list[str], time_format: str | None) -> np.ndarray:
    """``datetime64[ns]`` values (naive; UTC for texts with an offset), NaT where a text does not parse."""
    series = pd.Series([text.strip() for text in texts], dtype=object)
    if time_format is not None:
        parsed = pd.to_datetime(series, format=time_format, errors="coerce")
    else:
        parsed = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[ns]")


def _floats(texts: list[str]) -> np.ndarray:
    """Numbers from strings; anything unparseable becomes NaN."""
    try:
        return np.array(texts, dtype=float)
    except ValueError:
        return pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype=float)


def _counts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token counts as int64 and the mask of texts that are not positive integers."""
    values = _floats(texts)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & (values > 0) & (values == np.floor(values)) & (values < _LARGEST_COUNT))
    return np.where(bad, 1, values).astype(np.int64), bad


def _time_reason(raw: str, time_unit: str, time_format: str | None) -> str:
    if time_format is not None:
        return f"expected a time like '2023-11-16 18:15:46.6805900', got {raw!r}"
    if time_unit == "datetime":
        return f"expected an ISO 8601 date and time like '2023-11-16 18:15:46.680', got {raw!r}"
    return f"expected a finite number of {'seconds' if time_unit == 's' else time_unit}, got {raw!r}"


def _window(window: WindowSpec, time_unit: str) -> tuple[float, float | None] | tuple[datetime, datetime]:
    """``(start, end)`` seconds since the first request, or wall-clock bounds from ``parse_window``."""
    if isinstance(window, Mapping) and _is_number(window.get("start")):
        check_keys(window, ("start", "end"), where="window")
        pair: object = (window["start"], window.get("end"))
    else:
        pair = window
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and _is_number(pair[0]) and (
            pair[1] is None or _is_number(pair[1])):
        start, end = float(pair[0]), None if pair[1] is None else float(pair[1])
        if end is not None and end <= start:
            raise WorkloadError(f"window: end {end!r} must be after start {start!r} (seconds since the first request)")
        return start, end
    if time_unit != "datetime":
        raise WorkloadError(f"window: with time_unit={time_unit!r}, give (start, end) in seconds since the first "
                            f"request, got {window!r}")
    return parse_window(window)


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


def _to_ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _describe(first: float, last: float, time_unit: str, per_second: float) -> str:
    if time_unit == "datetime":
        start, end = (_EPOCH + timedelta(microseconds=int(value) // 1000) for value in (first, last))
        return f"{start} to {end} ({(last - first) / per_second:g} s)"
    return f"{(last - first) / per_second:g} s"
