"""Distributions of times to failure and to repair, each scaled to a given mean: ``exponential`` (memoryless, the
default), ``weibull`` (shape ``k``: ``k < 1`` infant mortality, a hazard that falls with age; ``k > 1`` wear-out;
scale ``mean / Gamma(1 + 1/k)``) and ``lognormal`` (``sigma`` of the log; ``mu = ln(mean) - sigma^2 / 2``).

In config: ``exponential``, ``{kind: weibull, shape: 0.7}``, ``{kind: lognormal, sigma: 1.0}``, or per device type
``{h100: {kind: weibull, shape: 0.7}}`` (a type not named: exponential)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ConfigError

KINDS: dict[str, str | None] = {"exponential": None, "weibull": "shape", "lognormal": "sigma"}
"""The distributions, with the parameter each takes (besides its mean, which the MTBF or MTTR sets)."""
LIMITS: dict[str, tuple[float, float]] = {"shape": (0.1, 100.0), "sigma": (0.0, 5.0)}
"""The parameters' accepted ranges: a Weibull of shape 0.1 already has a squared coefficient of variation of 1.8e5,
a lognormal of sigma 5 one of 7e10."""


@dataclass(frozen=True)
class LifeDistribution:
    """A distribution of a duration, scaled by its mean when sampled: ``kind`` one of ``KINDS``; ``shape``, the
    Weibull's ``k > 0``; ``sigma``, the lognormal's ``sigma >= 0`` (0: every draw is the mean)."""

    kind: str = "exponential"
    shape: float | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        check(self, "distribution")

    @property
    def memoryless(self) -> bool:
        """Whether it is the exponential: the time left never depends on the time already survived."""
        return self.kind == "exponential"

    def sample(self, rng: np.random.Generator, mean: float, size: int | None = None) -> Any:
        """Draws (one float, or an array of ``size``) of a duration whose mean is ``mean``."""
        if self.kind == "weibull":
            k = float(self.shape)  # type: ignore[arg-type]
            return mean / math.gamma(1.0 + 1.0 / k) * rng.weibull(k, size)
        if self.kind == "lognormal":
            sigma = float(self.sigma)  # type: ignore[arg-type]
            return rng.lognormal(math.log(mean) - sigma * sigma / 2.0, sigma, size)
        return rng.exponential(mean, size)

    def sample_residual(self, rng: np.random.Generator, mean: float, size: int | None = None) -> Any:
        """Draws of the time left to a unit caught at a random moment of a long run of renewals (the equilibrium,
        or forward-recurrence, distribution, density ``S(x) / mean``): a length-biased lifetime times a uniform.
        Started this way every unit's failures have the long-run rate ``1 / mean`` from the first instant."""
        if self.kind == "weibull":  # length-biased Weibull: scale * G^(1/k), G ~ Gamma(1 + 1/k)
            k = float(self.shape)  # type: ignore[arg-type]
            scale = mean / math.gamma(1.0 + 1.0 / k)
            return scale * rng.gamma(1.0 + 1.0 / k, 1.0, size) ** (1.0 / k) * rng.random(size)
        if self.kind == "lognormal":  # length-biased lognormal: mu + sigma^2
            sigma = float(self.sigma)  # type: ignore[arg-type]
            return rng.lognormal(math.log(mean) + sigma * sigma / 2.0, sigma, size) * rng.random(size)
        return rng.exponential(mean, size)

    def describe(self) -> str | dict[str, Any]:
        """The config form: ``exponential``, or ``{kind: ..., shape|sigma: ...}``."""
        if self.memoryless:
            return self.kind
        parameter = KINDS[self.kind]
        return {"kind": self.kind, parameter: getattr(self, parameter)}  # type: ignore[dict-item]


def check(dist: LifeDistribution, where: str) -> None:
    """One-line errors naming ``where`` for an unknown kind or a bad or missing parameter."""
    if not isinstance(dist.kind, str) or dist.kind not in KINDS:
        raise ConfigError(f"{where}.kind: unknown distribution {dist.kind!r}; known: {', '.join(KINDS)}")
    wanted = KINDS[dist.kind]
    for name in ("shape", "sigma"):
        value = getattr(dist, name)
        if name != wanted and value is not None:
            raise ConfigError(f"{where}.{name}: a {dist.kind} distribution takes "
                              f"{'no parameter' if wanted is None else wanted}")
    if wanted is None:
        return
    value = getattr(dist, wanted)
    if not (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and (value >= 0 if wanted == "sigma" else value > 0)):
        raise ConfigError(f"{where}.{wanted} must be a finite number {'>= 0' if wanted == 'sigma' else '> 0'} for a "
                          f"{dist.kind} distribution, got {value!r}")
    low, high = LIMITS[wanted]
    if not low <= value <= high:  # beyond them the mean hinges on astronomically rare draws (and Gamma overflows)
        raise ConfigError(f"{where}.{wanted} {value!r} is outside [{low}, {high}]: beyond, a {dist.kind} time's "
                          "variance is so large that no run would see its mean")


EXPONENTIAL = LifeDistribution()


def parse(value: object, where: str) -> LifeDistribution:
    """A distribution from config: a kind's name or a mapping ``{kind, shape|sigma}``; errors name ``where``."""
    if isinstance(value, LifeDistribution):
        check(value, where)
        return value
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ConfigError(f"{where} must be a distribution, e.g. exponential or {{kind: weibull, shape: 0.7}}, got "
                          f"{value!r}")
    unknown = sorted(set(value) - {"kind", "shape", "sigma"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: kind, shape, sigma")
    dist = object.__new__(LifeDistribution)  # checked below, naming ``where``
    for name in ("kind", "shape", "sigma"):
        object.__setattr__(dist, name, value.get(name))
    check(dist, where)
    return dist


def is_single(value: object) -> bool:
    """Whether a config value is one distribution (rather than a mapping of device types to distributions)."""
    return isinstance(value, (str, LifeDistribution)) or (isinstance(value, Mapping) and "kind" in value)
