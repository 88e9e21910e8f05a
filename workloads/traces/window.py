"""Time windows for trace filtering: ``(start, end)`` or ``{start, end}`` / ``{start, days}``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from workloads._names import check_keys
from workloads.errors import WorkloadError

WindowSpec = tuple[object, object] | Mapping[str, object]


def as_datetime(value: object, *, what: str) -> datetime:
    """A naive ``datetime`` from a ``datetime``, a ``date`` (midnight) or an ISO string such as ``"2017-10-01"``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise WorkloadError(f"{what}: expected a date or time like '2017-10-01' or '2017-10-01 12:00:00', "
                                f"got {value!r}") from None
    else:
        raise WorkloadError(f"{what}: expected a date, datetime or ISO string, got {value!r}")
    if moment.tzinfo is not None:
        raise WorkloadError(f"{what}: trace times are naive local times; give a time without a timezone, got {value!r}")
    return moment


def parse_window(window: WindowSpec, *, what: str = "window") -> tuple[datetime, datetime]:
    """``[start, end)`` from ``(start, end)``, ``{start, end}`` or ``{start, days}``."""
    if isinstance(window, Mapping):
        check_keys(window, ("start", "end", "days"), where=what)
        if "start" not in window or ("end" in window) == ("days" in window):
            raise WorkloadError(f"{what}: give 'start' and exactly one of 'end' or 'days', got {dict(window)!r}")
        start = as_datetime(window["start"], what=f"{what}.start")
        if "end" in window:
            end = as_datetime(window["end"], what=f"{what}.end")
        else:
            days = window["days"]
            if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days <= 0:
                raise WorkloadError(f"{what}.days: must be a positive number, got {days!r}")
            end = start + timedelta(days=days)
    elif isinstance(window, (tuple, list)) and len(window) == 2:
        start = as_datetime(window[0], what=f"{what}[0] (start)")
        end = as_datetime(window[1], what=f"{what}[1] (end)")
    else:
        raise WorkloadError(f"{what}: expected (start, end) or a mapping {{start, end}} / {{start, days}}, "
                            f"got {window!r}")
    if end <= start:
        raise WorkloadError(f"{what}: end {end} must be after start {start}")
    return start, end
