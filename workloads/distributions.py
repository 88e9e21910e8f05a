"""Sampling distributions for synthetic workloads, built from config mappings.

``make_distribution({"dist": "exponential", "mean": 600}, where="workload.training.interarrival")``
returns a small frozen dataclass with ``sample(rng, n)`` and ``mean``. Every error names the config key
path given as ``where``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from workloads._names import check_keys, unknown_name
from workloads._params import BadParameter, build_from_spec, numbers, positive, real
from workloads.errors import WorkloadError
from workloads.traces import REQUEST_TRACES, TRACES, load_request_trace, load_trace


@runtime_checkable
class Distribution(Protocol):
    """Draws independent values from a random stream."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws as a float64 array of shape ``(n,)``."""
        ...

    @property
    def mean(self) -> float:
        """The expected value."""
        ...


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise WorkloadError(f"sample size must be a non-negative integer, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class Exponential:
    """Exponential with the given ``mean`` (Poisson-process inter-arrivals)."""

    mean: float
    kind: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", positive("mean", self.mean))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws."""
        return rng.exponential(self.mean, _check_n(n))


@dataclass(frozen=True)
class Deterministic:
    """Always ``value``; draws nothing from the stream."""

    value: float
    kind: ClassVar[str] = "deterministic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", real("value", self.value))

    @property
    def mean(self) -> float:
        """The constant value."""
        return self.value

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` copies of ``value``."""
        return np.full(_check_n(n), self.value, dtype=float)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal: ``log X`` is normal with mean ``log(median)`` and standard deviation ``sigma``."""

    median: float
    sigma: float
    kind: ClassVar[str] = "lognormal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "median", positive("median", self.median))
        object.__setattr__(self, "sigma", positive("sigma", self.sigma))

    @classmethod
    def from_mean(cls, mean: float, sigma: float) -> LogNormal:
        """The log-normal with the given mean and log-space standard deviation."""
        mean, sigma = positive("mean", mean), positive("sigma", sigma)
        return cls(median=mean * math.exp(-sigma * sigma / 2), sigma=sigma)

    @property
    def mean(self) -> float:
        """``median * exp(sigma**2 / 2)``."""
        return self.median * math.exp(self.sigma * self.sigma / 2)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws."""
        return rng.lognormal(math.log(self.median), self.sigma, _check_n(n))


@dataclass(frozen=True)
class Uniform:
    """Continuous uniform on ``[low, high)``."""

    low: float
    high: float
    kind: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", real("low", self.low))
        object.__setattr__(self, "high", real("high", self.high))
        if self.high <= self.low:
            raise BadParameter("high", f"must be > low ({self.low!r}), got {self.high!r}")

    @property
    def mean(self) -> float:
        """``(low + high) / 2``."""
        return (self.low + self.high) / 2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws."""
        return rng.uniform(self.low, self.high, _check_n(n))


@dataclass(frozen=True)
class Choice:
    """One of ``values`` with probabilities ``weights`` (normalised; equal when not given)."""

    values: tuple[float, ...]
    weights: tuple[float, ...] | None = None
    kind: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        values = numbers("values", self.values)
        if self.weights is None:
            weights = (1.0,) * len(values)
        else:
            weights = numbers("weights", self.weights)
            if len(weights) != len(values):
                raise BadParameter("weights", f"has {len(weights)} items but values has {len(values)}")
            for i, weight in enumerate(weights):
                if weight < 0:
                    raise BadParameter(f"weights[{i}]", f"must be >= 0, got {weight!r}")
        total = math.fsum(weights)
        if total <= 0:
            raise BadParameter("weights", "must not all be zero")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "weights", tuple(w / total for w in weights))

    @property
    def probabilities(self) -> tuple[float, ...]:
        """The normalised weights."""
        assert self.weights is not None
        return self.weights

    @property
    def mean(self) -> float:
        """Probability-weighted mean of ``values``."""
        return math.fsum(v * p for v, p in zip(self.values, self.probabilities, strict=True))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws."""
        return rng.choice(np.asarray(self.values, dtype=float), size=_check_n(n), p=self.probabilities)


@dataclass(frozen=True)
class Empirical:
    """Resamples ``values`` uniformly with replacement (for example a column of a real trace)."""

    values: tuple[float, ...] = field(repr=False)
    source: str = "values"
    kind: ClassVar[str] = "empirical"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", numbers("values", self.values))

    @cached_property
    def _array(self) -> np.ndarray:
        array = np.asarray(self.values, dtype=float)
        array.flags.writeable = False
        return array

    @property
    def mean(self) -> float:
        """Mean of ``values``."""
        return float(self._array.mean())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws with replacement."""
        return self._array[rng.integers(0, len(self._array), _check_n(n))]


@dataclass(frozen=True)
class Zipf:
    """Bounded Zipf on the integers ``1..max``: ``P(k) = k**-a / H(max, a)``, ``H`` the generalised harmonic number.

    Any ``a > 0`` is valid since the support is finite (numpy's ``zipf`` needs ``a > 1`` and is unbounded).
    Drawn by inverting the tabulated CDF, so ``max`` is at most ``MAX_SUPPORT``. Useful for token lengths:
    many short requests and a long tail up to ``max``.
    """

    a: float
    max: int
    kind: ClassVar[str] = "zipf"
    #: Largest ``max`` accepted (the CDF table takes 8 bytes per value).
    MAX_SUPPORT: ClassVar[int] = 10_000_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", positive("a", self.a))
        top = self.max
        if (isinstance(top, bool) or not isinstance(top, (int, float, np.integer, np.floating))
                or not math.isfinite(top) or top != int(top) or not 1 <= top <= self.MAX_SUPPORT):
            raise BadParameter("max", f"must be an integer in 1..{self.MAX_SUPPORT:,}, got {top!r}")
        object.__setattr__(self, "max", int(top))

    @cached_property
    def pmf(self) -> np.ndarray:
        """``P(k)`` for ``k = 1..max`` (index ``k - 1``), strictly decreasing, summing to 1."""
        weights = np.arange(1, self.max + 1, dtype=float) ** -self.a
        pmf = weights / weights.sum()
        pmf.flags.writeable = False
        return pmf

    @cached_property
    def _cdf(self) -> np.ndarray:
        cdf = np.cumsum(self.pmf)
        cdf[-1] = 1.0
        return cdf

    @property
    def mean(self) -> float:
        """``sum(k * P(k))``."""
        return float(np.dot(np.arange(1, self.max + 1, dtype=float), self.pmf))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws (whole numbers as float64)."""
        u = rng.random(_check_n(n))
        return (np.searchsorted(self._cdf, u, side="right") + 1).astype(float)


def _take(params: Mapping[str, object], kind: str, required: Sequence[str], optional: Sequence[str], where: str
          ) -> dict[str, object]:
    check_keys(params, ["dist", *required, *optional], where=where, context=f" for dist {kind!r}")
    for key in required:
        if key not in params:
            raise WorkloadError(f"{where}: dist {kind!r} needs key {key!r} (keys: {', '.join([*required, *optional])})")
    return {key: params[key] for key in (*required, *optional) if key in params}


def _exponential(spec: Mapping[str, object], where: str) -> Distribution:
    return Exponential(**_take(spec, "exponential", ["mean"], [], where))  # type: ignore[arg-type]


def _deterministic(spec: Mapping[str, object], where: str) -> Distribution:
    return Deterministic(**_take(spec, "deterministic", ["value"], [], where))  # type: ignore[arg-type]


def _uniform(spec: Mapping[str, object], where: str) -> Distribution:
    return Uniform(**_take(spec, "uniform", ["low", "high"], [], where))  # type: ignore[arg-type]


def _choice(spec: Mapping[str, object], where: str) -> Distribution:
    return Choice(**_take(spec, "choice", ["values"], ["weights"], where))  # type: ignore[arg-type]


def _zipf(spec: Mapping[str, object], where: str) -> Distribution:
    return Zipf(**_take(spec, "zipf", ["a", "max"], [], where))  # type: ignore[arg-type]


def _lognormal(spec: Mapping[str, object], where: str) -> Distribution:
    params = _take(spec, "lognormal", ["sigma"], ["median", "mean"], where)
    if ("median" in params) == ("mean" in params):
        raise WorkloadError(f"{where}: dist 'lognormal' needs exactly one of 'median' or 'mean' (with 'sigma')")
    if "mean" in params:
        return LogNormal.from_mean(params["mean"], params["sigma"])  # type: ignore[arg-type]
    return LogNormal(params["median"], params["sigma"])  # type: ignore[arg-type]


#: Columns of a job trace that ``empirical {trace: ..., field: ...}`` can resample.
TRACE_FIELDS = ("duration", "gpus", "interarrival")
#: Columns of a request trace (``REQUEST_TRACES``, e.g. ``azure-conv``) that ``empirical`` can resample.
REQUEST_TRACE_FIELDS = ("prompt", "output", "interarrival")


def _empirical(spec: Mapping[str, object], where: str) -> Distribution:
    check_keys(spec, ["dist", "values", "trace", "field"], where=where, context=" for dist 'empirical'")
    if "values" in spec:
        if "trace" in spec or "field" in spec:
            raise WorkloadError(f"{where}: dist 'empirical' takes either 'values' or 'trace' and 'field', not both")
        return Empirical(spec["values"])  # type: ignore[arg-type]
    if "trace" not in spec or "field" not in spec:
        raise WorkloadError(f"{where}: dist 'empirical' needs 'values', or 'trace' (e.g. philly) and 'field' "
                            f"({', '.join(TRACE_FIELDS)}; for request traces such as azure-conv: "
                            f"{', '.join(REQUEST_TRACE_FIELDS)})")
    trace, column = spec["trace"], spec["field"]
    if not isinstance(trace, str):
        raise WorkloadError(f"{where}.trace: must be a trace name, got {trace!r}")
    if trace not in TRACES and trace not in REQUEST_TRACES:
        raise unknown_name("trace", trace, [*TRACES, *REQUEST_TRACES], where=f"{where}.trace")
    fields = REQUEST_TRACE_FIELDS if trace in REQUEST_TRACES else TRACE_FIELDS
    if column not in fields:
        raise unknown_name("field", column, fields, where=f"{where}.field", context=f" of trace {trace!r}")
    return trace_distribution(trace, str(column))


@lru_cache(maxsize=16)
def trace_distribution(trace: str, column: str) -> Empirical:
    """Resampling distribution of one column of a bundled trace.

    Job traces (``TRACES``): ``duration``, ``gpus`` or ``interarrival``; request traces
    (``REQUEST_TRACES``): ``prompt`` or ``output`` (tokens) or ``interarrival``. Cached: a frozen
    distribution over read-only data is safe to share between runs.
    """
    if trace in REQUEST_TRACES:
        requests = load_request_trace(trace)
        if column == "prompt":
            values = requests.prompt_tokens.astype(float)
        elif column == "output":
            values = requests.output_tokens.astype(float)
        elif column == "interarrival":
            values = requests.interarrivals()
        else:
            raise unknown_name("field", column, REQUEST_TRACE_FIELDS)
        return Empirical(values, source=f"{trace}:{column}")
    jobs = load_trace(trace).jobs
    if column == "duration":
        values = np.fromiter((job.duration for job in jobs), float, len(jobs))
    elif column == "gpus":
        values = np.fromiter((job.gpus for job in jobs), float, len(jobs))
    elif column == "interarrival":
        values = np.diff(np.fromiter((job.arrival for job in jobs), float, len(jobs)))
    else:
        raise unknown_name("field", column, TRACE_FIELDS)
    return Empirical(values, source=f"{trace}:{column}")


_KINDS: dict[str, Callable[[Mapping[str, object], str], Distribution]] = {
    "exponential": _exponential,
    "deterministic": _deterministic,
    "lognormal": _lognormal,
    "uniform": _uniform,
    "choice": _choice,
    "empirical": _empirical,
    "zipf": _zipf,
}

#: Names accepted as ``dist``.
DISTRIBUTIONS = tuple(sorted(_KINDS))


def make_distribution(spec: Mapping[str, object], *, where: str) -> Distribution:
    """Build a distribution from a config mapping such as ``{"dist": "lognormal", "median": 900, "sigma": 1.5}``.

    Kinds: ``exponential {mean}``, ``deterministic {value}``, ``lognormal {median|mean, sigma}``,
    ``uniform {low, high}``, ``choice {values, weights?}``, ``zipf {a, max}`` (bounded, on 1..max),
    ``empirical {values}`` or ``empirical {trace, field}`` (a job trace's ``duration``, ``gpus`` or
    ``interarrival``; a request trace's ``prompt``, ``output`` or ``interarrival``). ``where`` is the
    config key path used in error messages.
    """
    return build_from_spec(spec, "dist", _KINDS, "{dist: exponential, mean: 600}", where=where)
