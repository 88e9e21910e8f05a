"""Confidence intervals of a sweep: Student-t quantiles without scipy, the estimator on many synthetic
replications, and the half-width of a real sweep shrinking like 1/sqrt(seeds) where the variance is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Z

from sim.experiments.sweep import Experiment, t_quantile
from sim.experiments.sweep.stats import aggregate, betainc, mean_ci, t_cdf

# Two-sided Student-t quantiles from published tables (NIST/SEMATECH e-Handbook, 1.3.6.7.2), 7 digits.
T_TABLE = [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 9, 2.262157),
    (0.975, 15, 2.131450), (0.975, 30, 2.042272), (0.975, 100, 1.983972), (0.95, 10, 1.812461),
    (0.995, 10, 3.169273), (0.9995, 1, 636.619249), (0.90, 3, 1.637744),
]


@pytest.mark.parametrize(("p", "df", "expected"), T_TABLE)
def test_t_quantile_matches_published_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_t_quantile_tends_to_the_normal_and_rejects_bad_input() -> None:
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.5, 7) == 0.0
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, -1)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def test_incomplete_beta_closed_forms() -> None:
    for x in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
        assert betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
        assert betainc(1, 3.5, x) == pytest.approx(1 - (1 - x) ** 3.5, abs=1e-13)
        assert betainc(2.5, 1, x) == pytest.approx(x ** 2.5, abs=1e-13)
    for a in (0.5, 3, 40):
        assert betainc(a, a, 0.5) == pytest.approx(0.5, abs=1e-13)


def test_mean_ci_of_a_known_sample() -> None:
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 4.0, math.nan])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182446 * 1.2909944 / 2, rel=1e-6)  # t(0.975, 3) s / sqrt(4)
    assert math.isnan(mean_ci([5.0])[1])


def _c4(n: int) -> float:
    """E[s] / sigma for n normal values."""
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


@pytest.mark.parametrize("n", [3, 5, 20])
def test_interval_covers_95_percent_of_synthetic_replications(n: int) -> None:
    """4000 synthetic sweeps of n normal replications through ``aggregate``: the interval covers the true
    mean in a Binomial(4000, 0.95) number of them (z instead of t would cover 88 % at n = 5, 77 % at n = 3),
    and the mean half-width is t(n-1) sigma c4(n) / sqrt(n)."""
    groups, mu, sigma = 4000, 3.0, 2.0
    rng = np.random.default_rng(2024 + n)
    table = pd.DataFrame({"group": np.repeat(np.arange(groups), n), "x": rng.normal(mu, sigma, groups * n)})
    out = aggregate(table, ["group"], ["x"])
    assert len(out) == groups and (out["n"] == n).all()
    covered = ((out["mean"] - mu).abs() <= out["ci95"]).sum()
    assert abs(covered - 0.95 * groups) <= Z * math.sqrt(groups * 0.95 * 0.05), covered / groups
    expected = t_quantile(0.975, n - 1) * sigma * _c4(n) / math.sqrt(n)
    spread = out["ci95"].std() / math.sqrt(groups)
    assert abs(out["ci95"].mean() - expected) <= Z * spread, (out["ci95"].mean(), expected)


def _gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (fine for the x used here)."""
    if x <= 0:
        return 0.0
    term = total = 1.0 / a
    k = 0
    while term > total * 1e-17:
        k += 1
        term *= x / (a + k)
        total += term
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _chi2_quantile(p: float, df: int) -> float:
    lo, hi = 0.0, 10.0 * df + 100
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gamma_p(df / 2, mid / 2) < p else (lo, mid)
    return (lo + hi) / 2


def test_chi2_quantile_helper() -> None:
    assert _chi2_quantile(0.975, 9) == pytest.approx(19.0228, abs=1e-3)
    assert _chi2_quantile(0.025, 39) == pytest.approx(23.6543, abs=1e-3)


UNCONGESTED = {
    "seed": 11,
    "cluster": {"preset": "dgx-h100", "nodes": 2},
    "workload": {"training": {"jobs": 100, "interarrival": {"dist": "exponential", "mean": 3600},
                              "duration": {"dist": "exponential", "mean": 600},
                              "gpus": {"dist": "choice", "values": [1]}}},
    "sim": {"progress": False},
}


def test_half_width_shrinks_like_one_over_sqrt_seeds(tmp_path: Path) -> None:
    """One-GPU jobs arriving an hour apart on 16 GPUs never queue, so each job's JCT is its exponential
    duration and ``jobs.jct.mean`` of a replication is the mean of 100 exponentials: sigma = 600 / sqrt(100)
    exactly. Then ``ci95 * sqrt(n) / (t(n-1) sigma)`` is ``s / sigma``, which lies in the chi-square interval
    ``sqrt(chi2(alpha/2, n-1) / (n-1)) .. sqrt(chi2(1-alpha/2, n-1) / (n-1))`` except with probability alpha
    (alpha = 1e-6; the replications are Gamma(100), normal enough: excess kurtosis 0.06). At 10 and 40 seeds
    (the second run reuses the first's 10) the half-widths follow 1/sqrt(n): their ratio lies within the bounds
    around 0.5 t(39) / t(9) that the two intervals give."""
    sigma, alpha = 600 / math.sqrt(100), 1e-6
    directory = tmp_path / "ci"
    halves = {}
    for n in (10, 40):
        sweep = Experiment(UNCONGESTED, seeds=n).run(directory, executor="serial", tables=("jobs",))
        assert sweep.last_run is not None and sweep.last_run.skipped == (10 if n == 40 else 0)
        jobs = sweep.table("jobs")
        assert (jobs["queueing_delay"] == 0).all() and np.allclose(jobs["jct"], jobs["duration"], rtol=1e-12)
        row = sweep.aggregate(["jobs.jct.mean"]).iloc[0]
        assert row["n"] == n
        halves[n] = row["ci95"]
        ratio = row["ci95"] * math.sqrt(n) / (t_quantile(0.975, n - 1) * sigma)
        low, high = (math.sqrt(_chi2_quantile(q, n - 1) / (n - 1)) for q in (alpha / 2, 1 - alpha / 2))
        assert low <= ratio <= high, (n, ratio, low, high)
    expected = 0.5 * t_quantile(0.975, 39) / t_quantile(0.975, 9)
    low10, high10 = (math.sqrt(_chi2_quantile(q, 9) / 9) for q in (alpha / 2, 1 - alpha / 2))
    low40, high40 = (math.sqrt(_chi2_quantile(q, 39) / 39) for q in (alpha / 2, 1 - alpha / 2))
    assert expected * low40 / high10 <= halves[40] / halves[10] <= expected * high40 / low10
