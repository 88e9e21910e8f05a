"""Arrival processes for inference traffic: Poisson, Gamma renewal, MMPP, time-varying rates and trace replay.

Every process is a frozen dataclass with ``times(rng, *, count=None, horizon=None)``, which returns sorted
absolute arrival times (float64 seconds from 0) drawn with vectorised numpy, and ``rate``, the long-run
mean arrival rate. Renewal processes also have ``cv``, the coefficient of variation of the inter-arrival
times. ``make_arrivals`` builds one from a config mapping such as ``{process: gamma, rate: 5, cv: 3}``.

``count`` asks for the first ``count`` arrivals, ``horizon`` for every arrival in ``[0, horizon)``; with
both, the arrivals in ``[0, horizon)`` but at most ``count`` of them. Processes start at time 0 without an
arrival there (the first arrival comes after one inter-arrival, as in ``generate_training_jobs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from workloads._names import check_keys
from workloads._params import BadParameter, build_from_spec, numbers, positive, real
from workloads.errors import WorkloadError
from workloads.requests import replay_times

#: Most random draws made at once while generating (bounds the memory of one step, not the result).
MAX_CHUNK = 1 << 22


def _rates(values: object) -> tuple[float, ...]:
    """Per-state or per-interval rates: numbers >= 0, at least one of them > 0."""
    rates = numbers("rates", values)
    for i, rate in enumerate(rates):
        if rate < 0:
            raise BadParameter(f"rates[{i}]", f"must be >= 0, got {rate!r}")
    if not any(rate > 0 for rate in rates):
        raise BadParameter("rates", "at least one rate must be > 0")
    return rates


@runtime_checkable
class ArrivalProcess(Protocol):
    """Generates sorted arrival times from a random stream."""

    def times(self, rng: np.random.Generator, *, count: int | None = None, horizon: float | None = None
              ) -> np.ndarray:
        """Sorted arrival times in seconds from 0: the first ``count`` and/or those before ``horizon``."""
        ...

    @property
    def rate(self) -> float:
        """Long-run mean arrivals per second."""
        ...


def _check_bounds(count: object, horizon: object) -> tuple[int | None, float | None]:
    if count is None and horizon is None:
        raise WorkloadError("arrival times: give count, horizon or both")
    if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0):
        raise WorkloadError(f"count: must be a non-negative integer, got {count!r}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, (int, float, np.number))
                                or not math.isfinite(horizon) or horizon < 0):
        raise WorkloadError(f"horizon: must be a finite number of seconds >= 0, got {horizon!r}")
    return (None if count is None else int(count)), (None if horizon is None else float(horizon))


def _collect(next_chunk: Callable[[int], tuple[np.ndarray, float]], rate: float, count: int | None,
             horizon: float | None) -> np.ndarray:
    """Concatenate chunks of arrivals until ``count`` are drawn or the chunks cover ``horizon``.

    ``next_chunk(size)`` returns the next arrivals (sorted, after the previous chunk's) expected to number
    about ``size``, and the time up to which the process has been generated.
    """
    parts: list[np.ndarray] = []
    drawn, covered = 0, 0.0
    if count == 0 or horizon == 0:
        return np.empty(0, dtype=np.float64)
    while True:
        need = math.inf if count is None else count - drawn
        if horizon is not None:
            expected = rate * (horizon - covered)
            need = min(need, expected + 6 * math.sqrt(expected) + 64)
        size = int(min(max(need, 16), MAX_CHUNK))
        times, covered = next_chunk(size)
        parts.append(times)
        drawn += times.size
        if (count is not None and drawn >= count) or (horizon is not None and covered >= horizon):
            break
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if horizon is not None:
        out = out[: int(np.searchsorted(out, horizon, side="left"))]
    if count is not None:
        out = out[:count]
    return out


class _Renewal:
    """Arrival times as cumulative sums of independent inter-arrival gaps."""

    rate: float

    def _gaps(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raise NotImplementedError

    def times(self, rng: np.random.Generator, *, count: int | None = None, horizon: float | None = None
              ) -> np.ndarray:
        """Sorted arrival times: cumulative sums of the inter-arrival gaps."""
        count, horizon = _check_bounds(count, horizon)
        if horizon is None and count is not None:
            return np.cumsum(self._gaps(rng, count))
        last = [0.0]

        def chunk(size: int) -> tuple[np.ndarray, float]:
            times = np.cumsum(self._gaps(rng, size))
            times += last[0]
            last[0] = float(times[-1])
            return times, last[0]

        return _collect(chunk, self.rate, count, horizon)


@dataclass(frozen=True)
class Poisson(_Renewal):
    """Poisson arrivals: exponential inter-arrivals with mean ``1 / rate`` (CV 1)."""

    rate: float
    kind: ClassVar[str] = "poisson"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", positive("rate", self.rate))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the inter-arrival times: 1."""
        return 1.0

    def _gaps(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(1.0 / self.rate, size)


@dataclass(frozen=True)
class GammaRenewal(_Renewal):
    """Gamma inter-arrivals with mean ``1 / rate`` and coefficient of variation ``cv``.

    Shape ``1 / cv**2`` and scale ``cv**2 / rate`` (AlpaServe, DistServe, Vidur; vLLM's ``burstiness`` is
    the shape). ``cv = 1`` is a Poisson process, ``cv > 1`` is burstier, ``cv < 1`` more regular.
    """

    rate: float
    cv: float
    kind: ClassVar[str] = "gamma"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", positive("rate", self.rate))
        object.__setattr__(self, "cv", positive("cv", self.cv))

    @property
    def shape(self) -> float:
        """Gamma shape ``1 / cv**2``."""
        return 1.0 / (self.cv * self.cv)

    @property
    def scale(self) -> float:
        """Gamma scale ``cv**2 / rate``."""
        return self.cv * self.cv / self.rate

    def _gaps(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.gamma(self.shape, self.scale, size)


@dataclass(frozen=True)
class MMPP:
    """Markov-modulated Poisson process: Poisson arrivals at ``rates[i]`` while a hidden state ``i`` lasts.

    The process stays in state ``i`` for an exponential time with mean ``mean_sojourns[i]`` seconds, then
    moves on: by default to the next state in order (``0 -> 1 -> ... -> 0``; with two states this is
    AlpaServe's on/off MMPP), or, when ``transitions`` is given, to state ``j`` with probability
    ``transitions[i][j]`` (rows sum to 1, zero diagonal: the jump chain of the continuous-time chain).
    ``initial_state`` is the state at time 0, or ``None`` to draw it from the stationary distribution
    (then the process is stationary from the start). Long-run rate:
    ``sum(pi_i * s_i * r_i) / sum(pi_i * s_i)`` with ``pi`` the jump chain's stationary distribution,
    which for the cyclic order is ``sum(r_i * s_i) / sum(s_i)``. Inter-arrival times have CV > 1 when
    the rates differ.
    """

    rates: tuple[float, ...]
    mean_sojourns: tuple[float, ...]
    initial_state: int | None = 0
    transitions: tuple[tuple[float, ...], ...] | None = None
    kind: ClassVar[str] = "mmpp"

    def __post_init__(self) -> None:
        rates = _rates(self.rates)
        sojourns = numbers("mean_sojourns", self.mean_sojourns)
        if len(sojourns) != len(rates):
            raise BadParameter("mean_sojourns", f"has {len(sojourns)} items but rates has {len(rates)}")
        for i, sojourn in enumerate(sojourns):
            if sojourn <= 0:
                raise BadParameter(f"mean_sojourns[{i}]", f"must be > 0, got {sojourn!r}")
        state = self.initial_state
        if state is not None and (isinstance(state, bool) or not isinstance(state, (int, np.integer))
                                  or not 0 <= state < len(rates)):
            raise BadParameter("initial_state", f"must be a state index 0..{len(rates) - 1} or None "
                                                 f"(stationary), got {state!r}")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "mean_sojourns", sojourns)
        object.__setattr__(self, "initial_state", None if state is None else int(state))
        if self.transitions is not None:
            object.__setattr__(self, "transitions", _transition_matrix(self.transitions, len(rates)))

    @cached_property
    def _jump(self) -> np.ndarray:
        k = len(self.rates)
        if self.transitions is None:
            return np.roll(np.eye(k), 1, axis=1)
        return np.array(self.transitions, dtype=float)

    @cached_property
    def time_fractions(self) -> tuple[float, ...]:
        """Long-run fraction of time spent in each state."""
        pi = _stationary(self._jump)
        weights = pi * np.array(self.mean_sojourns)
        return tuple((weights / weights.sum()).tolist())

    @property
    def rate(self) -> float:
        """Long-run mean rate: the time-weighted mean of the state rates."""
        return math.fsum(f * r for f, r in zip(self.time_fractions, self.rates, strict=True))

    def times(self, rng: np.random.Generator, *, count: int | None = None, horizon: float | None = None
              ) -> np.ndarray:
        """Sorted arrival times: each sojourn's Poisson count, placed uniformly within the sojourn."""
        count, horizon = _check_bounds(count, horizon)
        k = len(self.rates)
        rates, sojourns = np.array(self.rates), np.array(self.mean_sojourns)
        cumulative = np.cumsum(self._jump, axis=1)
        state = (int(rng.choice(k, p=np.array(self.time_fractions))) if self.initial_state is None
                 else self.initial_state)
        position = [state, 0.0]  # next sojourn's state and start time
        per_sojourn = self.rate * math.fsum(f * s for f, s in zip(_stationary(self._jump), sojourns, strict=True))

        def chunk(size: int) -> tuple[np.ndarray, float]:
            steps = int(min(max(size / per_sojourn * 1.1 + 8, 16), MAX_CHUNK))
            states = self._states(rng, position[0], steps, cumulative)
            durations = rng.exponential(sojourns[states])
            ends = np.cumsum(durations)
            ends += position[1]
            starts = ends - durations
            counts = rng.poisson(rates[states] * durations)
            total = int(counts.sum())
            times = np.repeat(starts, counts) + rng.random(total) * np.repeat(durations, counts)
            times.sort()
            position[0] = self._states(rng, int(states[-1]), 2, cumulative)[1] if k > 1 else 0
            position[1] = float(ends[-1])
            return times, position[1]

        return _collect(chunk, self.rate, count, horizon)

    def _states(self, rng: np.random.Generator, first: int, steps: int, cumulative: np.ndarray) -> np.ndarray:
        """``steps`` successive states of the jump chain starting at ``first``."""
        k = len(self.rates)
        if self.transitions is None:
            return (first + np.arange(steps)) % k
        draws = rng.random(steps - 1)
        states = np.empty(steps, dtype=np.int64)
        states[0] = current = first
        rows = cumulative.tolist()
        for i, u in enumerate(draws.tolist(), 1):
            row = rows[current]
            current = next((j for j in range(k) if u < row[j]), k - 1)
            states[i] = current
        return states


def _transition_matrix(matrix: object, k: int) -> tuple[tuple[float, ...], ...]:
    if isinstance(matrix, (str, bytes)) or not isinstance(matrix, (Sequence, np.ndarray)) or len(matrix) != k:
        raise BadParameter("transitions", f"must be a {k} x {k} matrix (one row per state), got {matrix!r}")
    rows = tuple(numbers(f"transitions[{i}]", row) for i, row in enumerate(matrix))
    for i, row in enumerate(rows):
        if len(row) != k:
            raise BadParameter(f"transitions[{i}]", f"has {len(row)} items, expected {k}")
        if any(p < 0 for p in row) or not math.isclose(math.fsum(row), 1.0, abs_tol=1e-9):
            raise BadParameter(f"transitions[{i}]", f"must be probabilities summing to 1, got {list(row)!r}")
        if row[i] != 0:
            raise BadParameter(f"transitions[{i}][{i}]", "must be 0 (a jump leaves the state; set mean_sojourns)")
    if k > 1 and not _irreducible(np.array(rows)):
        raise BadParameter("transitions", "every state must be reachable from every other (irreducible chain)")
    return rows


def _irreducible(matrix: np.ndarray) -> bool:
    reach = (matrix > 0).astype(np.int64) + np.eye(len(matrix), dtype=np.int64)
    for _ in range(len(matrix)):
        reach = np.minimum(reach @ reach, 1)
    return bool(reach.all())


def _stationary(jump: np.ndarray) -> np.ndarray:
    """Stationary distribution ``pi`` of the jump chain (``pi P = pi``, ``sum(pi) = 1``)."""
    k = len(jump)
    system = np.vstack([jump.T - np.eye(k), np.ones(k)])
    rhs = np.zeros(k + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(system, rhs, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


class _Thinned:
    """Non-homogeneous Poisson process by thinning (Lewis-Shedler): candidates at ``peak``, kept w.p. rate/peak.

    Subclasses provide ``rate`` (mean), ``peak`` (an upper bound of the rate) and ``intensity(t)``.
    """

    def intensity(self, t: np.ndarray) -> np.ndarray:
        """Arrival rate at times ``t``."""
        raise NotImplementedError

    def times(self, rng: np.random.Generator, *, count: int | None = None, horizon: float | None = None
              ) -> np.ndarray:
        """Sorted arrival times: Poisson candidates at the peak rate, each kept with probability rate(t)/peak."""
        count, horizon = _check_bounds(count, horizon)
        peak: float = self.peak  # type: ignore[attr-defined]
        rate: float = self.rate  # type: ignore[attr-defined]
        keep_fraction = rate / peak
        last = [0.0]

        def chunk(size: int) -> tuple[np.ndarray, float]:
            candidates = np.cumsum(rng.exponential(1.0 / peak, int(min(size / keep_fraction + 16, MAX_CHUNK))))
            candidates += last[0]
            last[0] = float(candidates[-1])
            kept = rng.random(candidates.size) * peak < self.intensity(candidates)
            return candidates[kept], last[0]

        return _collect(chunk, rate, count, horizon)


@dataclass(frozen=True)
class Diurnal(_Thinned):
    """Poisson arrivals whose rate follows a daily sinusoid, generated by thinning.

    ``rate(t) = rate * (1 + amplitude * cos(2 pi (t - peak_time) / period))``: mean ``rate`` over a
    period, highest (``rate * (1 + amplitude)``) at ``peak_time`` and lowest (``rate * (1 - amplitude)``)
    half a period later, so the peak/trough ratio is ``(1 + amplitude) / (1 - amplitude)``;
    ``0 <= amplitude <= 1``.
    """

    rate: float
    amplitude: float
    period: float = 86_400.0
    peak_time: float = 0.0
    kind: ClassVar[str] = "diurnal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", positive("rate", self.rate))
        amplitude = real("amplitude", self.amplitude)
        if not 0 <= amplitude <= 1:
            raise BadParameter("amplitude", f"must be in [0, 1] (rate * (1 +- amplitude) >= 0), got {amplitude!r}")
        object.__setattr__(self, "amplitude", amplitude)
        object.__setattr__(self, "period", positive("period", self.period))
        object.__setattr__(self, "peak_time", real("peak_time", self.peak_time))

    @property
    def peak(self) -> float:
        """Highest rate, ``rate * (1 + amplitude)``."""
        return self.rate * (1 + self.amplitude)

    @property
    def trough(self) -> float:
        """Lowest rate, ``rate * (1 - amplitude)``."""
        return self.rate * (1 - self.amplitude)

    def intensity(self, t: np.ndarray) -> np.ndarray:
        """Arrival rate at times ``t``."""
        t = np.asarray(t, dtype=float)
        return self.rate * (1 + self.amplitude * np.cos(2 * np.pi * (t - self.peak_time) / self.period))


@dataclass(frozen=True)
class PiecewiseRate(_Thinned):
    """Poisson arrivals at ``rates[i]`` during ``[i * interval, (i + 1) * interval)``, repeating every
    ``len(rates) * interval`` seconds (for example 24 hourly rates), generated by thinning."""

    rates: tuple[float, ...]
    interval: float = 3_600.0
    kind: ClassVar[str] = "piecewise"

    def __post_init__(self) -> None:
        rates = _rates(self.rates)
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "interval", positive("interval", self.interval))

    @property
    def period(self) -> float:
        """Length of one cycle of the rate curve."""
        return len(self.rates) * self.interval

    @property
    def peak(self) -> float:
        """Highest rate."""
        return max(self.rates)

    @property
    def rate(self) -> float:
        """Mean rate over a period."""
        return math.fsum(self.rates) / len(self.rates)

    def intensity(self, t: np.ndarray) -> np.ndarray:
        """Arrival rate at times ``t``."""
        index = np.floor_divide(np.asarray(t, dtype=float), self.interval).astype(np.int64) % len(self.rates)
        return np.asarray(self.rates)[index]


@dataclass(frozen=True, eq=False)
class TraceReplay:
    """Replays ``recorded`` arrival times (seconds), ``scale`` times faster, optionally only a ``window``.

    With ``window = (start, end)`` only times in ``[start, end)`` are kept (``end=None``: to the end of the
    trace) and replayed from ``start``: each kept time ``t`` becomes ``(t - start) / scale``, so
    ``scale=2`` doubles the rate (rate x k) and halves every gap. Without a window, times are only divided
    by ``scale``. Replay is deterministic (``rng`` is ignored); asking for more arrivals than the replay
    holds is an error. ``RequestTrace.replay`` does the same while keeping each request's lengths.
    """

    recorded: np.ndarray = field(repr=False)
    scale: float = 1.0
    window: tuple[float, float | None] | None = None
    source: str = "trace"
    kind: ClassVar[str] = "trace"

    def __post_init__(self) -> None:
        recorded = np.sort(np.array(self.recorded, dtype=np.float64).ravel())
        if recorded.size and not np.isfinite(recorded).all():
            raise BadParameter("times", "must be finite")
        if recorded.size and recorded[0] < 0:
            raise BadParameter("times", f"must be >= 0, got {float(recorded[0])!r}")
        recorded.flags.writeable = False
        object.__setattr__(self, "recorded", recorded)
        if self.window is not None and isinstance(self.window, (Sequence, np.ndarray)) and len(self.window) == 2:
            object.__setattr__(self, "window", tuple(self.window))
        try:
            _, _, replayed = replay_times(recorded, self.scale, self.window)
        except WorkloadError as exc:
            key, _, detail = str(exc).partition(": ")
            raise BadParameter(key, detail) from None
        if replayed.size == 0:
            raise BadParameter("window", f"holds no arrivals of {self.source} (times span {_span(recorded)})")
        replayed.flags.writeable = False
        object.__setattr__(self, "scale", float(self.scale))
        self.__dict__["replayed"] = replayed

    @cached_property
    def replayed(self) -> np.ndarray:
        """The replayed arrival times (read-only)."""
        return replay_times(self.recorded, self.scale, self.window)[2]  # pragma: no cover (set on construction)

    @property
    def rate(self) -> float:
        """Replayed arrivals per second: count / (window length / scale), or count / span without an end."""
        if self.window is not None and self.window[1] is not None:
            return self.replayed.size * self.scale / (self.window[1] - self.window[0])
        span = float(self.replayed[-1] - self.replayed[0])
        return self.replayed.size / span if span > 0 else math.nan

    @property
    def cv(self) -> float:
        """Coefficient of variation of the replayed inter-arrival times."""
        gaps = np.diff(self.replayed)
        return float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else math.nan

    def times(self, rng: np.random.Generator | None = None, *, count: int | None = None,
              horizon: float | None = None) -> np.ndarray:
        """The replayed times before ``horizon`` and/or the first ``count`` of them (a read-only view)."""
        count, horizon = _check_bounds(count, horizon)
        out = self.replayed
        if horizon is not None:
            out = out[: int(np.searchsorted(out, horizon, side="left"))]
        if count is not None:
            if count > out.size:
                bound = "" if horizon is None else f" before the horizon {horizon:g} s"
                raise WorkloadError(f"count: the replay of {self.source} holds {out.size} arrivals{bound}, "
                                    f"{count} asked for")
            out = out[:count]
        return out


def _span(times: np.ndarray) -> str:
    return "nothing" if times.size == 0 else f"{times[0]:g} to {times[-1]:g} s"


def _take(spec: Mapping[str, object], kind: str, required: Sequence[str], optional: Sequence[str], where: str
          ) -> dict[str, Any]:
    check_keys(spec, ["process", *required, *optional], where=where, context=f" for process {kind!r}")
    for key in required:
        if key not in spec:
            raise WorkloadError(f"{where}: process {kind!r} needs key {key!r} "
                                f"(keys: {', '.join([*required, *optional])})")
    return {key: spec[key] for key in (*required, *optional) if key in spec}


def _trace(spec: Mapping[str, object], where: str) -> ArrivalProcess:
    from workloads.traces import REQUEST_TRACES, request_trace_loader

    params = _take(spec, "trace", ["trace"], ["scale", "window"], where)
    name = params["trace"]
    if not isinstance(name, str) or name not in REQUEST_TRACES:
        request_trace_loader(name, where=f"{where}.trace")  # raises, listing the valid names
    window = params.get("window")
    if isinstance(window, Mapping):
        check_keys(window, ("start", "end"), where=f"{where}.window")
        window = (window.get("start", 0.0), window.get("end"))
    trace = request_trace_loader(name)()
    return TraceReplay(trace.arrival, scale=params.get("scale", 1.0), window=window, source=name)


_KINDS: dict[str, Callable[[Mapping[str, object], str], ArrivalProcess]] = {
    "poisson": lambda spec, where: Poisson(**_take(spec, "poisson", ["rate"], [], where)),
    "gamma": lambda spec, where: GammaRenewal(**_take(spec, "gamma", ["rate", "cv"], [], where)),
    "mmpp": lambda spec, where: MMPP(**_take(spec, "mmpp", ["rates", "mean_sojourns"],
                                             ["initial_state", "transitions"], where)),
    "diurnal": lambda spec, where: Diurnal(**_take(spec, "diurnal", ["rate", "amplitude"], ["period", "peak_time"],
                                                   where)),
    "piecewise": lambda spec, where: PiecewiseRate(**_take(spec, "piecewise", ["rates"], ["interval"], where)),
    "trace": _trace,
}

#: Names accepted as ``process``.
PROCESSES = tuple(sorted(_KINDS))


def make_arrivals(spec: Mapping[str, object], *, where: str) -> ArrivalProcess:
    """Build an arrival process from a config mapping; ``where`` is the key path used in error messages.

    Processes: ``poisson {rate}``, ``gamma {rate, cv}``, ``mmpp {rates, mean_sojourns, initial_state?,
    transitions?}``, ``diurnal {rate, amplitude, period?, peak_time?}``, ``piecewise {rates, interval?}``
    and ``trace {trace, scale?, window?}`` (a bundled request trace such as ``azure-conv``; ``window`` is
    ``[start, end]`` or ``{start, end}`` in seconds of the trace).
    """
    return build_from_spec(spec, "process", _KINDS, "{process: poisson, rate: 5}", where=where)
