"""Means and Student-t confidence intervals across replications, without scipy.

``t_quantile`` inverts the t distribution's tail, ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``, by
bisection; the regularized incomplete beta function ``I_x(a, b)`` is the continued fraction of Numerical
Recipes (section 6.4), evaluated with the modified Lentz method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import pandas as pd


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x!r}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a - 1.0 + m2) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def t_sf(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    return 1.0 - t_sf(t, df) if t >= 0 else t_sf(-t, df)


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (``t_quantile(0.975, 15)`` is
    2.131...); bisection on the upper tail to about 1e-12 relative."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p!r}")
    if not df > 0:
        raise ValueError(f"t_quantile needs df > 0, got {df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df > 1e7:
        return NormalDist().inv_cdf(p)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def half_width(std: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the two-sided Student-t confidence interval of a mean: ``t(1 - alpha/2, n - 1) s / sqrt(n)``;
    NaN for fewer than two values."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half_width, n)`` of the finite-or-NaN ``values`` (NaNs are left out)."""
    array = np.asarray(list(values), dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    return float(array.mean()), half_width(std, n, confidence), n


def ci_column(confidence: float) -> str:
    """Name of the half-width column: ``ci95`` for 95 %."""
    return f"ci{100 * confidence:g}".replace(".", "_")


def aggregate(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
              confidence: float = 0.95) -> pd.DataFrame:
    """One row per group of ``by`` and metric: ``n`` (replications with a value), ``mean``, ``std`` and the
    half-width of the confidence interval (``ci95``); groups in order of first appearance, each with its
    metrics in the order given."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    column = ci_column(confidence)
    if not metrics or table.empty:
        return pd.DataFrame(columns=[*by, "metric", "n", "mean", "std", column])
    keys = list(by) or ["_all"]
    data = table[list(by)].copy() if by else pd.DataFrame({"_all": np.zeros(len(table), dtype=int)},
                                                           index=table.index)
    long = pd.concat([data.assign(metric=m, value=table[m].astype(float)) for m in metrics], ignore_index=True)
    grouped = long.groupby([*keys, "metric"], sort=False, dropna=False)["value"]
    out = grouped.agg(n="count", mean="mean", std="std").reset_index()
    out["n"] = out["n"].astype(np.int64)
    out[column] = [half_width(s, n, confidence) for s, n in zip(out["std"], out["n"], strict=True)]
    rank = {metric: i for i, metric in enumerate(metrics)}  # group by group (grid order), metrics in order given
    order = pd.DataFrame({"group": out.groupby(keys, sort=False, dropna=False).ngroup(),
                          "metric": out["metric"].map(rank)})
    out = out.loc[order.sort_values(["group", "metric"], kind="stable").index].reset_index(drop=True)
    return out.drop(columns=["_all"]) if not by else out
