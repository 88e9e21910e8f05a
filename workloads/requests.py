"""Inference requests: one request and a columnar trace of many (the generator: ``workloads.synthetic``).

A ``RequestTrace`` keeps its requests as numpy columns (arrival, prompt and output tokens, optional
service, optional shared prefix), so a million requests cost a few tens of megabytes and no Python objects
until one is asked for: ``trace[i]`` and iteration build ``InferenceRequest`` values on the fly.

A request's *prefix* (``prefix_id``, ``prefix_tokens``) says that the first ``prefix_tokens`` tokens of its
prompt are the first tokens of a token sequence named ``prefix_id`` that other requests share: a multi-turn
session's history, a shared system prompt (generators: ``workloads.shared_prefixes``). A replica with prefix
caching keeps such sequences in its KV cache and skips the cached part of the prefill. ``prefix_id`` -1 (with
``prefix_tokens`` 0) is no prefix; a request may carry an id with 0 prefix tokens (it starts the sequence).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import overload

import numpy as np

from workloads.errors import WorkloadError
from workloads.jobs import SkippedRow

#: Service name of requests that do not say which service they belong to.
DEFAULT_SERVICE = "default"
#: ``prefix_id`` of a request without a shared prefix.
NO_PREFIX = -1


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One inference request: ``prompt_tokens`` to prefill and ``output_tokens`` to decode, for ``service``; its
    prompt starts with the first ``prefix_tokens`` tokens of the shared sequence ``prefix_id`` (-1: none)."""

    request_id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    service: str = DEFAULT_SERVICE
    prefix_id: int = NO_PREFIX
    prefix_tokens: int = 0

    def __post_init__(self) -> None:
        label = f"request {self.request_id}"
        if isinstance(self.request_id, bool) or not isinstance(self.request_id, int) or self.request_id < 0:
            raise WorkloadError(f"request_id must be a non-negative integer, got {self.request_id!r}")
        if (isinstance(self.arrival, bool) or not isinstance(self.arrival, (int, float))
                or not math.isfinite(self.arrival) or self.arrival < 0):
            raise WorkloadError(f"{label}: arrival must be a finite number >= 0, got {self.arrival!r}")
        for name in ("prompt_tokens", "output_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise WorkloadError(f"{label}: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.service, str) or not self.service:
            raise WorkloadError(f"{label}: service must be a non-empty string, got {self.service!r}")
        for name in ("prefix_id", "prefix_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkloadError(f"{label}: {name} must be an integer, got {value!r}")
        _check_prefix(np.array([self.prefix_id]), np.array([self.prefix_tokens]), np.array([self.prompt_tokens]),
                      first=self.request_id)

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + output_tokens``."""
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True, eq=False)
class RequestTrace:
    """Requests sorted by arrival, stored as read-only numpy columns; request ``i`` has id ``i``.

    ``arrival`` is float64 seconds (non-decreasing, finite, >= 0), ``prompt_tokens`` and
    ``output_tokens`` are positive int64, ``service`` is ``None`` (every request is ``"default"``) or an
    object array of non-empty strings. ``prefix_id`` and ``prefix_tokens`` (both or neither; ``None``: no request
    has a prefix) are int64: an id >= 0 or -1 (none), and 0 <= prefix tokens <= prompt tokens (0 when the id is
    -1). ``source`` says where the requests came from, ``origin`` is the
    wall-clock time of arrival 0 when known, ``skipped`` lists trace rows left out under ``errors="skip"``.
    Columns are validated (vectorised) and copied read-only on construction.
    """

    arrival: np.ndarray = field(repr=False)
    prompt_tokens: np.ndarray = field(repr=False)
    output_tokens: np.ndarray = field(repr=False)
    source: str = "synthetic"
    origin: datetime | None = None
    skipped: tuple[SkippedRow, ...] = field(default=(), repr=False)
    service: np.ndarray | None = field(default=None, repr=False)
    prefix_id: np.ndarray | None = field(default=None, repr=False)
    prefix_tokens: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        arrival = _column("arrival", self.arrival, np.float64)
        n = arrival.size
        if n and not np.isfinite(arrival).all():
            raise WorkloadError(f"arrival: request {_first(~np.isfinite(arrival))} has a non-finite arrival")
        if n and arrival[0] < 0:
            raise WorkloadError(f"arrival: must be >= 0, got {float(arrival[0])!r} for request 0")
        if n > 1:
            back = np.flatnonzero(np.diff(arrival) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise WorkloadError(f"arrival: must be sorted; request {i} arrives at {float(arrival[i])!r}, "
                                    f"before request {i - 1} at {float(arrival[i - 1])!r}")
        object.__setattr__(self, "arrival", arrival)
        for name in ("prompt_tokens", "output_tokens"):
            object.__setattr__(self, name, _tokens(name, getattr(self, name), n))
        if self.service is not None:
            service = np.array(self.service, dtype=object, copy=True).ravel()
            if service.size != n:
                raise WorkloadError(f"service: has {service.size} items but arrival has {n}")
            for name in set(service.tolist()):
                if not isinstance(name, str) or not name:
                    raise WorkloadError(f"service: names must be non-empty strings, got {name!r}")
            service.flags.writeable = False
            object.__setattr__(self, "service", service)
        if (self.prefix_id is None) != (self.prefix_tokens is None):
            given, missing = ("prefix_id", "prefix_tokens") if self.prefix_tokens is None else ("prefix_tokens",
                                                                                               "prefix_id")
            raise WorkloadError(f"{missing}: missing; {given} and {missing} go together (or neither)")
        if self.prefix_id is not None:
            ids = _integers("prefix_id", self.prefix_id, n)
            tokens = _integers("prefix_tokens", self.prefix_tokens, n)
            _check_prefix(ids, tokens, self.prompt_tokens)
            object.__setattr__(self, "prefix_id", ids)
            object.__setattr__(self, "prefix_tokens", tokens)
        object.__setattr__(self, "skipped", tuple(self.skipped))

    @classmethod
    def from_requests(cls, requests: Iterable[InferenceRequest], *, source: str = "requests",
                      origin: datetime | None = None) -> RequestTrace:
        """A trace of ``requests`` (sorted by arrival, stable; ids are renumbered 0..n-1 in that order)."""
        items = sorted(requests, key=lambda r: r.arrival)
        services = [r.service for r in items]
        prefixed = any(r.prefix_id != NO_PREFIX for r in items)
        return cls(arrival=np.array([r.arrival for r in items], dtype=np.float64),
                   prompt_tokens=np.array([r.prompt_tokens for r in items], dtype=np.int64),
                   output_tokens=np.array([r.output_tokens for r in items], dtype=np.int64),
                   source=source, origin=origin,
                   service=None if all(s == DEFAULT_SERVICE for s in services) else np.array(services, dtype=object),
                   prefix_id=np.array([r.prefix_id for r in items], dtype=np.int64) if prefixed else None,
                   prefix_tokens=np.array([r.prefix_tokens for r in items], dtype=np.int64) if prefixed else None)

    def __len__(self) -> int:
        return int(self.arrival.size)

    @overload
    def __getitem__(self, index: int) -> InferenceRequest: ...

    @overload
    def __getitem__(self, index: slice) -> RequestTrace: ...

    def __getitem__(self, index: int | slice) -> InferenceRequest | RequestTrace:
        """Request ``index`` (ids count from 0 in arrival order), or a sub-trace for a slice (renumbered)."""
        if isinstance(index, slice):
            return self._take(index)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"request index must be an integer or a slice, got {index!r}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"request index {index} out of range for a trace of {n} requests")
        prefix = (NO_PREFIX, 0) if self.prefix_id is None else (int(self.prefix_id[i]), int(self.prefix_tokens[i]))
        return InferenceRequest(i, float(self.arrival[i]), int(self.prompt_tokens[i]), int(self.output_tokens[i]),
                                DEFAULT_SERVICE if self.service is None else self.service[i], *prefix)

    def __iter__(self) -> Iterator[InferenceRequest]:
        """Requests in arrival order, built in batches (no list of all requests is kept)."""
        batch = 65_536
        for lo in range(0, len(self), batch):
            hi = min(lo + batch, len(self))
            services = ([DEFAULT_SERVICE] * (hi - lo) if self.service is None else self.service[lo:hi].tolist())
            ids, shared = (([NO_PREFIX] * (hi - lo), [0] * (hi - lo)) if self.prefix_id is None or
                           self.prefix_tokens is None else
                           (self.prefix_id[lo:hi].tolist(), self.prefix_tokens[lo:hi].tolist()))
            for i, (t, p, o, s, k, m) in enumerate(zip(
                    self.arrival[lo:hi].tolist(), self.prompt_tokens[lo:hi].tolist(),
                    self.output_tokens[lo:hi].tolist(), services, ids, shared, strict=True), lo):
                yield InferenceRequest(i, t, p, o, s, k, m)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestTrace):
            return NotImplemented
        return (np.array_equal(self.arrival, other.arrival) and np.array_equal(self.prompt_tokens, other.prompt_tokens)
                and np.array_equal(self.output_tokens, other.output_tokens)
                and np.array_equal(self.services_column(), other.services_column())
                and all(np.array_equal(mine, theirs)
                        for mine, theirs in zip(self.prefix_columns(), other.prefix_columns(), strict=True))
                and (self.source, self.origin, self.skipped) == (other.source, other.origin, other.skipped))

    __hash__ = None  # type: ignore[assignment]

    def services_column(self) -> np.ndarray:
        """The service of every request as an object array (``"default"`` when the trace has none)."""
        if self.service is None:
            return np.full(len(self), DEFAULT_SERVICE, dtype=object)
        return self.service

    def prefix_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """``(prefix_id, prefix_tokens)`` of every request (-1 and 0 when the trace has no prefixes)."""
        if self.prefix_id is None or self.prefix_tokens is None:
            return np.full(len(self), NO_PREFIX, dtype=np.int64), np.zeros(len(self), dtype=np.int64)
        return self.prefix_id, self.prefix_tokens

    @property
    def has_prefixes(self) -> bool:
        """Whether some request carries a prefix id."""
        return self.prefix_id is not None and bool((self.prefix_id != NO_PREFIX).any())

    @property
    def services(self) -> tuple[str, ...]:
        """The distinct service names, sorted."""
        return (DEFAULT_SERVICE,) if self.service is None else tuple(sorted(set(self.service.tolist())))

    @property
    def span(self) -> float:
        """Seconds from the first to the last arrival (0 for fewer than two requests)."""
        return float(self.arrival[-1] - self.arrival[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        """Requests per second: ``len / span`` (NaN when the span is 0)."""
        return len(self) / self.span if self.span > 0 else math.nan

    def interarrivals(self) -> np.ndarray:
        """Gaps between consecutive arrivals (``len - 1`` values)."""
        return np.diff(self.arrival)

    def replay(self, scale: float = 1.0, window: tuple[float, float | None] | None = None) -> RequestTrace:
        """The requests arriving in ``window = (start, end)`` seconds of this trace, at ``scale`` times the rate.

        Kept requests are those with ``start <= arrival < end`` (``end=None``: to the end); their times
        become ``(arrival - start) / scale``, so ``scale=2`` doubles the rate and halves every gap. Lengths
        and services stay with their requests.
        """
        lo, hi, times = replay_times(self.arrival, scale, window)
        return RequestTrace(arrival=times, prompt_tokens=self.prompt_tokens[lo:hi],
                            output_tokens=self.output_tokens[lo:hi], source=self.source, origin=None,
                            skipped=self.skipped, service=None if self.service is None else self.service[lo:hi],
                            **self._prefixes(slice(lo, hi)))

    def _take(self, index: slice) -> RequestTrace:
        return RequestTrace(arrival=self.arrival[index], prompt_tokens=self.prompt_tokens[index],
                            output_tokens=self.output_tokens[index], source=self.source, origin=self.origin,
                            skipped=self.skipped, service=None if self.service is None else self.service[index],
                            **self._prefixes(index))

    def _prefixes(self, index: slice) -> dict[str, np.ndarray | None]:
        if self.prefix_id is None or self.prefix_tokens is None:
            return {}
        return {"prefix_id": self.prefix_id[index], "prefix_tokens": self.prefix_tokens[index]}


def replay_times(times: np.ndarray, scale: float = 1.0, window: Sequence[float | None] | None = None
                 ) -> tuple[int, int, np.ndarray]:
    """``(lo, hi, replayed)``: sorted ``times[lo:hi]`` are those in ``[start, end)``, replayed ``(t - start) / scale``.

    Without a window every time is kept and only divided by ``scale``.
    """
    if (isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating))
            or not math.isfinite(scale) or scale <= 0):
        raise WorkloadError(f"scale: must be a positive finite number (rate x scale), got {scale!r}")
    times = np.asarray(times, dtype=np.float64)
    if window is None:
        return 0, times.size, times / float(scale)
    if isinstance(window, (str, bytes)) or not isinstance(window, (Sequence, np.ndarray)) or len(window) != 2:
        raise WorkloadError(f"window: expected (start, end) in seconds, got {window!r}")
    start, end = window
    for key, value in (("start", start), ("end", end)):
        if value is None and key == "end":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(
                value):
            raise WorkloadError(f"window.{key}: must be a finite number of seconds, got {value!r}")
    if end is not None and end <= start:
        raise WorkloadError(f"window.end: must be after start ({start!r}), got {end!r}")
    lo = int(np.searchsorted(times, start, side="left"))
    hi = times.size if end is None else int(np.searchsorted(times, end, side="left"))
    return lo, hi, (times[lo:hi] - float(start)) / float(scale)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _column(name: str, values: object, dtype: type) -> np.ndarray:
    try:
        array = np.array(values, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{name}: expected an array of numbers ({exc})") from None
    if array.ndim != 1:
        raise WorkloadError(f"{name}: expected a one-dimensional array, got shape {array.shape}")
    array.flags.writeable = False
    return array


def _integers(name: str, values: object, n: int) -> np.ndarray:
    """An int64 column of ``n`` whole numbers (any sign; the caller checks the range)."""
    raw = np.asarray(values)
    if raw.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(raw) & (raw == np.floor(raw))
        if not whole.all():
            i = _first(~whole.ravel())
            raise WorkloadError(f"{name}: must be whole numbers, got {float(raw.ravel()[i])!r} for request {i}")
    elif raw.dtype.kind not in "iu" and raw.size:
        raise WorkloadError(f"{name}: expected integers, got an array of {raw.dtype}")
    array = _column(name, raw, np.int64)
    if array.size != n:
        raise WorkloadError(f"{name}: has {array.size} items but arrival has {n}")
    return array


def _check_prefix(ids: np.ndarray, tokens: np.ndarray, prompts: np.ndarray, first: int = 0) -> None:
    """Prefix ids are -1 or >= 0; prefix tokens are in [0, prompt tokens], and 0 without an id. ``first``: the
    id of the first request (for the message)."""
    checks = ((ids < NO_PREFIX, "prefix_id", "must be -1 (none) or a non-negative id, got {id}"),
              (tokens < 0, "prefix_tokens", "must be >= 0, got {tokens}"),
              (tokens > prompts, "prefix_tokens", "{tokens} is longer than the prompt ({prompt} tokens)"),
              ((ids == NO_PREFIX) & (tokens > 0), "prefix_tokens", "{tokens} without a prefix_id (-1)"))
    for bad, name, message in checks:
        if bad.any():
            i = _first(bad)
            text = message.format(id=int(ids[i]), tokens=int(tokens[i]), prompt=int(prompts[i]))
            raise WorkloadError(f"{name}: request {first + i}: {text}")


def _tokens(name: str, values: object, n: int) -> np.ndarray:
    """An int64 column of ``n`` positive token counts."""
    array = _integers(name, values, n)
    if n and (array <= 0).any():
        i = _first(array <= 0)
        raise WorkloadError(f"{name}: must be positive integers, got {int(array[i])} for request {i}")
    return array
