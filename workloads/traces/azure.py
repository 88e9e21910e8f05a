"""Request traces: the Azure LLM inference trace (2023) and a generic CSV loader with a column mapping."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from workloads._names import check_keys, unknown_name
from workloads.errors import TraceFormatError, WorkloadError
from workloads.requests import RequestTrace
from workloads.traces._rows import ErrorPolicy, RowProblems, TraceFile, check_limit, labels, parse_times, resolve
from workloads.traces._select import KeptRows, TimeOrder, cut_chunk
from workloads.traces.window import WindowSpec, parse_window

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
AZURE_CONV_FILE = "AzureLLMInferenceTrace_conv.csv.gz"
#: TIMESTAMP format; ``%f`` takes the file's 7 fractional digits (pandas keeps them, to the nanosecond).
_AZURE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_EPOCH = datetime(1970, 1, 1)
#: Roles a ``load_request_csv`` column mapping may name (``service`` is optional, and so are ``prefix_id`` and
#: ``prefix_tokens``, together).
REQUEST_COLUMNS = ("arrival", "prompt_tokens", "output_tokens", "service", "prefix_id", "prefix_tokens")
TimeUnit = Literal["s", "ms", "us", "datetime"]
_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}  # units per second
_LARGEST_COUNT = 2.0**53  # token counts above this are not exact in float64


def load_azure_llm(path: str | os.PathLike[str] | None = None, *, errors: ErrorPolicy = "raise",
                   window: WindowSpec | None = None, limit: int | None = None, time_ordered: bool = False
                   ) -> RequestTrace:
    """Load an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``; ``.gz`` is fine).

    ``path=None`` reads the bundled ``AzureLLMInferenceTrace_conv.csv`` (one hour of an Azure LLM
    conversation service, 2023-11-16; Splitwise, ISCA'24). ``ContextTokens`` is the prompt length and
    ``GeneratedTokens`` the output length. Requests are sorted by time (ties keep file order) and
    ``arrival`` is seconds since the first kept request, whose wall-clock time is ``origin``.

    A malformed row (bad TIMESTAMP, token count not a positive integer, wrong column count, bytes that are
    not UTF-8) raises ``TraceFormatError`` naming the file, line and field; with ``errors="skip"`` it is
    left out, listed in ``RequestTrace.skipped`` and named in a ``SkippedRowsWarning``. ``window`` keeps
    requests in ``[start, end)``: seconds since the first request as ``(start, end)`` or ``{start, end}``,
    or wall-clock times as for the Philly loader (``("2023-11-16 18:30", "2023-11-16 18:40")``,
    ``{start, end}`` or ``{start, days}``). ``limit`` keeps the ``limit`` earliest requests left. The file
    is read in chunks and filtered as it is read; with ``time_ordered=True`` (the rows are in time order, as
    in Azure's files) reading stops once ``limit`` requests are kept or a time passes the window's end, and
    a row out of order raises ``TraceFormatError``.
    """
    file = resolve(path, AZURE_CONV_FILE)
    problems = RowProblems(file, errors)
    bounds = None if window is None else _window(window, "datetime")
    limit = check_limit(limit)
    with TraceFile(file, problems) as reader:
        reader.check_header(AZURE_COLUMNS)
        roles = dict(zip(("arrival", "prompt_tokens", "output_tokens"), AZURE_COLUMNS, strict=True))
        return _read(reader, AZURE_COLUMNS, roles, "datetime", bounds, limit, time_ordered, time_format=_AZURE_TIME)


def load_request_csv(path: str | os.PathLike[str], *, columns: Mapping[str, str], time_unit: TimeUnit = "s",
                     errors: ErrorPolicy = "raise", window: WindowSpec | None = None, limit: int | None = None,
                     time_ordered: bool = False) -> RequestTrace:
    """Load requests from any CSV with a header, given which column holds what.

    ``columns`` maps ``arrival``, ``prompt_tokens``, ``output_tokens`` and optionally ``service`` (and
    ``prefix_id`` with ``prefix_tokens``: the shared prefix a prompt starts with, ``workloads.requests``) to
    header names, e.g. ``{"arrival": "ts", "prompt_tokens": "input_len", "output_tokens": "output_len"}``;
    other columns are ignored. ``time_unit`` says how to read the arrival column: numbers in ``s``,
    ``ms`` or ``us``, or ``datetime`` (ISO 8601; times with a UTC offset are converted to UTC). Arrivals
    are re-based to the first kept request (``arrival`` 0; ``origin`` is its wall-clock time for
    ``datetime``). A mapped column missing from the header raises ``TraceFormatError`` on line 1 naming
    it; bad rows, ``errors``, ``window``, ``limit`` and ``time_ordered`` behave as in ``load_azure_llm``
    (wall-clock windows need ``time_unit="datetime"``).
    """
    if time_unit not in (*_UNITS, "datetime"):
        raise unknown_name("time_unit", time_unit, [*_UNITS, "datetime"], where="time_unit")
    mapping = _mapping(columns)
    if path is None:
        raise WorkloadError("path: load_request_csv needs a file (bundled request traces: see REQUEST_TRACES)")
    file = resolve(path, "")
    problems = RowProblems(file, errors)
    with TraceFile(file, problems) as reader:
        if not reader.header:
            raise TraceFormatError(str(file), 1, "header", "expected a header row of column names, got an empty line")
        header = [name.strip() for name in reader.header]
        for role, name in mapping.items():
            hits = header.count(name)
            if hits != 1:
                what = "is not in the header" if hits == 0 else f"appears {hits} times in the header"
                close = unknown_name("column", name, header).args[0].partition("; ")[2]
                raise TraceFormatError(str(file), 1, name, f"column {name!r} (columns.{role}) {what}; {close}")
        bounds = None if window is None else _window(window, time_unit)
        return _read(reader, header, mapping, time_unit, bounds, check_limit(limit), time_ordered)


def _mapping(columns: object) -> dict[str, str]:
    if not isinstance(columns, Mapping):
        raise WorkloadError(f"columns: expected a mapping of {', '.join(REQUEST_COLUMNS)} to CSV column names, "
                            f"got {columns!r}")
    check_keys(columns, REQUEST_COLUMNS, where="columns")
    for role in REQUEST_COLUMNS[:3]:
        if role not in columns:
            raise WorkloadError(f"columns: missing key {role!r} (keys: {', '.join(REQUEST_COLUMNS)}; service optional)")
    if ("prefix_id" in columns) != ("prefix_tokens" in columns):
        given, missing = ("prefix_id", "prefix_tokens") if "prefix_id" in columns else ("prefix_tokens", "prefix_id")
        raise WorkloadError(f"columns: missing key {missing!r}; {given} and {missing} go together")
    mapping: dict[str, str] = {}
    for role, name in columns.items():
        if not isinstance(name, str) or not name.strip():
            raise WorkloadError(f"columns.{role}: must be a column name, got {name!r}")
        mapping[role] = name.strip()
    return mapping


Bounds = tuple[float, float | None] | tuple[datetime, datetime]


def _read(reader: TraceFile, header: Sequence[str], names: Mapping[str, str], time_unit: str, bounds: Bounds | None,
          limit: int | None, time_ordered: bool, time_format: str | None = None) -> RequestTrace:
    """Read, check and keep the rows chunk by chunk; then sort and re-base the arrivals."""
    file, problems = reader.path, reader.problems
    index = {role: header.index(name) for role, name in names.items()}
    per_second = 1e9 if time_unit == "datetime" else _UNITS[time_unit]
    wall: tuple[int, int] | None = None  # wall-clock window, in the clock's nanoseconds
    relative: tuple[float, float | None] | None = None  # seconds since the first request
    if bounds is not None and isinstance(bounds[0], datetime) and isinstance(bounds[1], datetime):
        wall = (_to_ns(bounds[0]), _to_ns(bounds[1]))
    elif bounds is not None:
        relative = (float(bounds[0]), None if bounds[1] is None else float(bounds[1]))  # type: ignore[arg-type]
    # the first request of a file not in time order is known only at its end; so is which rows are in a relative
    # window (past its end is out in any case), and the limit applies after that (unless the window starts at 0)
    late = relative is not None and not time_ordered
    kept = KeptRows(None if relative is not None and late and relative[0] > 0 else limit)
    order = TimeOrder(str(file), names["arrival"]) if time_ordered else None
    services: dict[str, int] = {}
    first = last = None  # clock of the earliest and latest valid request
    valid_rows = 0
    prefixed = "prefix_id" in index
    for chunk in reader.chunks(header, numeric=[index[r] for r in ("prompt_tokens", "output_tokens")]
                               + ([index["arrival"]] if time_unit != "datetime" else [])
                               + ([index["prefix_id"], index["prefix_tokens"]] if prefixed else []),
                               text=[index[r] for r in ("arrival", "service") if r in index]):
        lines = chunk.lines
        if time_unit == "datetime":
            stamps = _datetimes(chunk.text(index["arrival"]), time_format)
            bad_time = np.isnat(stamps)
            clock = stamps.astype(np.int64)  # nanoseconds since 1970; NaT rows are masked below
        else:
            clock = chunk.floats(index["arrival"])
            bad_time = ~np.isfinite(clock)
        prompt_tokens, bad_prompt = _counts(chunk.floats(index["prompt_tokens"]))
        output_tokens, bad_output = _counts(chunk.floats(index["output_tokens"]))
        checks: list[tuple[str, np.ndarray, Callable[[str], str]]] = [
            ("arrival", bad_time, lambda raw: _time_reason(raw, time_unit, time_format)),
            ("prompt_tokens", bad_prompt, lambda raw: f"expected a positive integer number of tokens, got {raw!r}"),
            ("output_tokens", bad_output, lambda raw: f"expected a positive integer number of tokens, got {raw!r}"),
        ]
        if prefixed:
            prefix_id, prefix_tokens = chunk.floats(index["prefix_id"]), chunk.floats(index["prefix_tokens"])
            with np.errstate(invalid="ignore"):
                whole_id = np.isfinite(prefix_id) & (prefix_id == np.floor(prefix_id)) & (np.abs(prefix_id) < 2.0**62)
                bad_id = ~(whole_id & (prefix_id >= -1))
                bad_tokens = ~(np.isfinite(prefix_tokens) & (prefix_tokens == np.floor(prefix_tokens))
                               & (prefix_tokens >= 0) & (prefix_tokens <= np.where(bad_prompt, 0, prompt_tokens))
                               & ((prefix_id != -1) | (prefix_tokens == 0)))
            prefix_id = np.where(bad_id, -1, prefix_id).astype(np.int64)
            prefix_tokens = np.where(bad_tokens, 0, prefix_tokens).astype(np.int64)
            checks.append(("prefix_id", bad_id, lambda raw: f"expected -1 (none) or a non-negative integer id, "
                                                            f"got {raw!r}"))
            checks.append(("prefix_tokens", bad_tokens & ~bad_id & ~bad_prompt,
                           lambda raw: f"expected a whole number of tokens from 0 to the prompt's (0 without a "
                                       f"prefix id), got {raw!r}"))
        service = None
        if "service" in index:
            codes, names_here = labels(chunk.text(index["service"]))
            service = np.array([services.setdefault(name, len(services)) for name in names_here], dtype=np.int32)[codes]
            checks.append(("service", np.array([name == "" for name in names_here], dtype=bool)[codes],
                           lambda raw: f"expected a service name, got {raw!r}"))
        bad = np.logical_or.reduce([mask for _, mask, _ in checks])
        for i in np.flatnonzero(bad).tolist():
            role, _, reason = next(check for check in checks if check[1][i])
            problems.add(int(lines[i]), names[role], reason(chunk.text(index[role]).iloc[i]))
        valid = ~bad
        if valid.any():
            valid_rows += int(valid.sum())
            # in a time-ordered file the first request is the first valid row (rows past a stop are not read)
            low = clock[np.argmax(valid)] if time_ordered else clock[valid].min()
            first = low if first is None else min(first, low)
            high = clock[valid].max()
            last = high if last is None else max(last, high)
        keep = valid.copy()
        past = None  # valid rows past the window's end
        if relative is not None and first is not None:
            offset = (clock - first) / per_second
            if not late:
                keep &= offset >= relative[0]
            if relative[1] is not None:
                past = valid & (offset >= relative[1])
        elif wall is not None:
            keep &= clock >= wall[0]
            past = valid & (clock >= wall[1])
        if past is not None:
            keep &= ~past
        keep, stop = cut_chunk(order, problems, lines, keep, valid, clock, limit, len(kept), past,
                               chunk, index["arrival"])
        columns = {"prompt": prompt_tokens[keep], "output": output_tokens[keep]}
        if service is not None:
            columns["service"] = service[keep]
        if prefixed:
            columns["prefix_id"], columns["prefix_tokens"] = prefix_id[keep], prefix_tokens[keep]
        kept.add(clock[keep], **columns)
        if stop is not None:
            break
    skipped = problems.finish()
    if valid_rows == 0:
        raise WorkloadError(f"{file}: no requests to load ({len(skipped)} malformed rows skipped)")
    table = kept.finish()
    clock = table["time"]
    if late and relative is not None:
        offset = (clock - first) / per_second
        chosen = offset >= relative[0]
        if relative[1] is not None:
            chosen &= offset < relative[1]
        table = {name: values[chosen][:limit] for name, values in table.items()}
        clock = table["time"]
    if clock.size == 0:
        start, end = (bounds[0], bounds[1]) if bounds is not None else (None, None)
        raise WorkloadError(f"{file}: window [{start}, {end}) holds no requests; the trace spans "
                            f"{_describe(first, last, time_unit, per_second)}")
    t0 = clock[0]
    arrival = (clock - t0) / per_second
    origin = _EPOCH + timedelta(microseconds=int(t0) // 1000) if time_unit == "datetime" else None
    labels_by_id = np.array(list(services), dtype=object)
    return RequestTrace(arrival=arrival.astype(np.float64), prompt_tokens=table["prompt"],
                        output_tokens=table["output"], source=str(file), origin=origin, skipped=skipped,
                        service=labels_by_id[table["service"]] if "service" in index else None,
                        prefix_id=table.get("prefix_id"), prefix_tokens=table.get("prefix_tokens"))


def _datetimes(texts: pd.Series, time_format: str | None) -> np.ndarray:
    """``datetime64[ns]`` values (naive; UTC for texts with an offset), NaT where a text does not parse."""
    def parse(series: pd.Series) -> np.ndarray:
        if time_format is not None:
            parsed = pd.to_datetime(series, format=time_format, errors="coerce")
        else:
            parsed = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
        return np.array(parsed.to_numpy(dtype="datetime64[ns]"))

    return parse_times(texts, parse)


def _counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token counts as int64 and the mask of values that are not positive integers."""
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
