"""Distributions against theory (confidence intervals from the sample size), config errors, synthetic jobs.

Each statistical check accepts an estimate within ``Z`` standard errors of the theoretical value, the
standard error coming from the sample size and the distribution's own moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import assert_close

from workloads import (
    DISTRIBUTIONS,
    Deterministic,
    Distribution,
    Empirical,
    JobTrace,
    WorkloadError,
    generate_training_jobs,
    load_philly_jobs,
    make_distribution,
)

N = 200_000
WHERE = "workload.training.duration"


def assert_sample_std(sample: np.ndarray, sigma: float, fourth_central_moment: float) -> None:
    """Sample standard deviation against ``sigma``; SE from Var(s^2) ~ (mu4 - sigma^4) / n (delta method)."""
    se = math.sqrt((fourth_central_moment - sigma**4) / sample.size) / (2 * sigma)
    assert_close(float(sample.std()), sigma, se, "standard deviation")


def assert_sample_median(sample: np.ndarray, median: float, density_at_median: float) -> None:
    """Sample median against ``median``; SE = 1 / (2 f(median) sqrt(n))."""
    assert_close(float(np.median(sample)), median, 1 / (2 * density_at_median * math.sqrt(sample.size)), "median")


def draw(spec: dict[str, object], seed: int = 1) -> tuple[Distribution, np.ndarray]:
    dist = make_distribution(spec, where=WHERE)
    return dist, dist.sample(np.random.default_rng(seed), N)


# --- against theory --------------------------------------------------------------------------------------


def test_exponential_mean_cv_and_median() -> None:
    mean = 600.0
    dist, x = draw({"dist": "exponential", "mean": mean})
    assert dist.mean == mean
    assert x.shape == (N,) and x.min() > 0
    assert_close(float(x.mean()), mean, mean / math.sqrt(N), "mean")
    assert_sample_std(x, mean, 9 * mean**4)  # CV 1
    assert_sample_median(x, mean * math.log(2), math.exp(-math.log(2)) / mean)


def test_lognormal_from_median() -> None:
    median, sigma = 900.0, 1.5
    dist, x = draw({"dist": "lognormal", "median": median, "sigma": sigma})
    logs = np.log(x)
    assert_close(float(logs.mean()), math.log(median), sigma / math.sqrt(N), "mean of log")
    assert_sample_std(logs, sigma, 3 * sigma**4)
    assert_sample_median(x, median, 1 / (median * sigma * math.sqrt(2 * math.pi)))
    mean = median * math.exp(sigma**2 / 2)
    assert dist.mean == pytest.approx(mean)
    assert_close(float(x.mean()), mean, mean * math.sqrt(math.exp(sigma**2) - 1) / math.sqrt(N), "mean")


def test_lognormal_from_mean() -> None:
    mean, sigma = 3000.0, 1.0
    dist, x = draw({"dist": "lognormal", "mean": mean, "sigma": sigma}, seed=2)
    assert dist.mean == pytest.approx(mean)
    assert_close(float(x.mean()), mean, mean * math.sqrt(math.exp(sigma**2) - 1) / math.sqrt(N), "mean")
    assert_close(float(np.log(x).mean()), math.log(mean) - sigma**2 / 2, sigma / math.sqrt(N), "mean of log")


def test_uniform_mean_and_spread() -> None:
    low, high = 10.0, 30.0
    dist, x = draw({"dist": "uniform", "low": low, "high": high})
    width = high - low
    assert dist.mean == 20.0
    assert low <= x.min() and x.max() < high
    assert_close(float(x.mean()), 20.0, width / math.sqrt(12 * N), "mean")
    assert_sample_std(x, width / math.sqrt(12), width**4 / 80)


def test_deterministic() -> None:
    dist, x = draw({"dist": "deterministic", "value": 7})
    assert dist.mean == 7.0
    assert np.all(x == 7.0)


def test_choice_respects_weights() -> None:
    dist, x = draw({"dist": "choice", "values": [1, 2, 4, 8, 16], "weights": [8, 4, 2, 1, 0]})
    probabilities = np.array([8, 4, 2, 1, 0]) / 15
    assert dist.mean == pytest.approx(float(np.dot([1, 2, 4, 8, 16], probabilities)))
    assert set(np.unique(x).tolist()) == {1.0, 2.0, 4.0, 8.0}  # the zero-weight 16 never appears
    for value, p in zip([1, 2, 4, 8], probabilities, strict=False):
        assert_close(float(np.mean(x == value)), p, math.sqrt(p * (1 - p) / N), f"P({value})")


def test_choice_without_weights_is_uniform() -> None:
    _, x = draw({"dist": "choice", "values": [3, 5, 9]})
    for value in (3, 5, 9):
        assert_close(float(np.mean(x == value)), 1 / 3, math.sqrt(2 / 9 / N), f"P({value})")


def test_empirical_values() -> None:
    dist, x = draw({"dist": "empirical", "values": [1, 5, 9, 9]})
    assert dist.mean == 6.0
    assert set(np.unique(x).tolist()) == {1.0, 5.0, 9.0}
    assert_close(float(np.mean(x == 9)), 0.5, math.sqrt(0.25 / N), "P(9)")


@pytest.fixture(scope="module")
def philly_columns() -> dict[str, np.ndarray]:
    jobs = load_philly_jobs().jobs
    return {
        "duration": np.array([job.duration for job in jobs]),
        "gpus": np.array([job.gpus for job in jobs], dtype=float),
        "interarrival": np.diff([job.arrival for job in jobs]),
    }


@pytest.mark.parametrize("field", ["duration", "gpus", "interarrival"])
def test_empirical_philly_resamples_the_trace(philly_columns: dict[str, np.ndarray], field: str) -> None:
    column = philly_columns[field]
    dist, x = draw({"dist": "empirical", "trace": "philly", "field": field})
    assert isinstance(dist, Empirical)
    assert len(dist.values) == len(column)
    assert dist.mean == pytest.approx(float(column.mean()))
    assert np.isin(x, column).all()
    assert_close(float(x.mean()), float(column.mean()), float(column.std()) / math.sqrt(N), "mean")
    if field == "gpus":
        p = float(np.mean(column == 1))
        assert round(100 * p, 2) == 93.17
        assert_close(float(np.mean(x == 1)), p, math.sqrt(p * (1 - p) / N), "P(1 GPU)")


def test_sampling_is_reproducible_and_sized() -> None:
    dist = make_distribution({"dist": "exponential", "mean": 3}, where=WHERE)
    a = dist.sample(np.random.default_rng(5), 10)
    b = dist.sample(np.random.default_rng(5), 10)
    assert np.array_equal(a, b)
    assert dist.sample(np.random.default_rng(5), 0).shape == (0,)
    with pytest.raises(WorkloadError, match="sample size"):
        dist.sample(np.random.default_rng(5), -1)


# --- bad specs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"dist": "exponental", "mean": 1}, r"unknown dist 'exponental'.*did you mean 'exponential'"),
        ({"mean": 1}, "missing key 'dist'"),
        ({"dist": "exponential"}, "needs key 'mean'"),
        ({"dist": "exponential", "mean": -1}, rf"{WHERE}\.mean: must be > 0"),
        ({"dist": "exponential", "mean": 0}, rf"{WHERE}\.mean: must be > 0"),
        ({"dist": "exponential", "mean": float("nan")}, rf"{WHERE}\.mean: must be finite"),
        ({"dist": "exponential", "mean": "600"}, rf"{WHERE}\.mean: must be a number"),
        ({"dist": "exponential", "mean": True}, rf"{WHERE}\.mean: must be a number"),
        ({"dist": "exponential", "mean": 1, "meen": 2}, r"unknown key 'meen'.*valid: dist, mean"),
        ({"dist": "lognormal", "median": 900, "sigma": 0}, rf"{WHERE}\.sigma: must be > 0"),
        ({"dist": "lognormal", "median": 900, "sigma": -1}, rf"{WHERE}\.sigma: must be > 0"),
        ({"dist": "lognormal", "median": 900, "mean": 1000, "sigma": 1}, "exactly one of 'median' or 'mean'"),
        ({"dist": "lognormal", "sigma": 1}, "exactly one of 'median' or 'mean'"),
        ({"dist": "uniform", "low": 5, "high": 5}, rf"{WHERE}\.high: must be > low"),
        ({"dist": "choice", "values": [1, 2], "weights": [1]}, rf"{WHERE}\.weights: has 1 items but values has 2"),
        ({"dist": "choice", "values": [1, 2], "weights": [1, -1]}, rf"{WHERE}\.weights\[1\]: must be >= 0"),
        ({"dist": "choice", "values": [1, 2], "weights": [0, 0]}, rf"{WHERE}\.weights: must not all be zero"),
        ({"dist": "choice", "values": []}, rf"{WHERE}\.values: must not be empty"),
        ({"dist": "choice", "values": "1,2"}, rf"{WHERE}\.values: must be a list"),
        ({"dist": "empirical", "values": [1, float("inf")]}, rf"{WHERE}\.values\[1\]: must be finite"),
        ({"dist": "empirical", "trace": "phily", "field": "duration"}, r"\.trace: unknown trace.*mean 'philly'"),
        ({"dist": "empirical", "trace": "philly", "field": "durations"}, r"\.field: unknown field.*'duration'"),
        ({"dist": "empirical", "trace": "philly"}, "needs 'values', or 'trace'"),
        ({"dist": "empirical", "values": [1], "trace": "philly", "field": "gpus"}, "not both"),
    ],
)
def test_bad_spec_names_the_key(spec: dict[str, object], expected: str) -> None:
    with pytest.raises(WorkloadError, match=expected) as info:
        make_distribution(spec, where=WHERE)
    assert str(info.value).startswith(WHERE)


def test_unknown_dist_lists_valid_ones() -> None:
    with pytest.raises(WorkloadError) as info:
        make_distribution({"dist": "gamma"}, where=WHERE)
    assert all(name in str(info.value) for name in DISTRIBUTIONS)


def test_spec_must_be_a_mapping() -> None:
    with pytest.raises(WorkloadError, match=f"{WHERE}: expected a mapping"):
        make_distribution(600, where=WHERE)  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(WorkloadError, match="value"):
        Deterministic(float("nan"))


# --- synthetic generator ---------------------------------------------------------------------------------


def rngs(seed: int = 0) -> dict[str, np.random.Generator]:
    streams = np.random.SeedSequence(seed).spawn(3)
    return {name: np.random.default_rng(s) for name, s in zip(["arrivals", "durations", "sizes"], streams,
                                                                strict=True)}


def dist(**spec: object) -> Distribution:
    return make_distribution(spec, where="test")


INTERARRIVAL = dist(dist="exponential", mean=60)
DURATION = dist(dist="lognormal", median=900, sigma=1.5)
GPUS = dist(dist="choice", values=[1, 2, 4, 8], weights=[8, 4, 2, 1])


def test_generated_jobs() -> None:
    trace = generate_training_jobs(1000, INTERARRIVAL, DURATION, GPUS, rngs(), allowed_devices=["v100", "a100"],
                                   reference_device="v100", tenant="team-a")
    assert len(trace) == 1000
    assert [job.job_id for job in trace.jobs] == list(range(1000))
    assert all(type(job.gpus) is int and job.gpus in (1, 2, 4, 8) for job in trace.jobs)
    assert {(job.allowed_devices, job.reference_device, job.tenant) for job in trace.jobs} == {
        (("v100", "a100"), "v100", "team-a")}
    gaps = INTERARRIVAL.sample(rngs()["arrivals"], 1000)
    arrivals = np.array([job.arrival for job in trace.jobs])
    assert arrivals[0] == gaps[0] > 0
    assert np.array_equal(arrivals, np.cumsum(gaps))


def column(trace: JobTrace, name: str) -> np.ndarray:
    return np.array([getattr(job, name) for job in trace.jobs])


@pytest.mark.parametrize("changed", ["arrival", "duration", "gpus"])
def test_streams_are_independent(changed: str) -> None:
    """Changing one attribute's distribution (to one drawing a different amount of randomness) leaves the others
    bit-identical."""
    other = {"arrival": dist(dist="deterministic", value=30), "duration": dist(dist="uniform", low=5, high=50),
             "gpus": dist(dist="choice", values=[1, 16])}[changed]
    chosen = {"arrival": INTERARRIVAL, "duration": DURATION, "gpus": GPUS, changed: other}
    base = generate_training_jobs(500, INTERARRIVAL, DURATION, GPUS, rngs(7))
    varied = generate_training_jobs(500, chosen["arrival"], chosen["duration"], chosen["gpus"], rngs(7))
    for name in ("arrival", "duration", "gpus"):
        same = np.array_equal(column(base, name), column(varied, name))
        assert same == (name != changed), name


@dataclass(frozen=True)
class Fixed:
    """A stand-in distribution returning given values (to produce what real kinds cannot)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.resize(np.array(self.values, dtype=float), n)


@pytest.mark.parametrize(
    ("interarrival", "duration", "gpus", "key"),
    [
        (INTERARRIVAL, DURATION, dist(dist="choice", values=[0, 1]), "workload.training.gpus"),
        (INTERARRIVAL, DURATION, dist(dist="uniform", low=1, high=4), "workload.training.gpus"),
        (INTERARRIVAL, DURATION, Fixed((1.0, -2.0)), "workload.training.gpus"),
        (INTERARRIVAL, DURATION, Fixed((1.0, float("nan"))), "workload.training.gpus"),
        (INTERARRIVAL, dist(dist="uniform", low=-5, high=5), GPUS, "workload.training.duration"),
        (INTERARRIVAL, Fixed((1.0, float("nan"))), GPUS, "workload.training.duration"),
        (Fixed((1.0, -1.0)), DURATION, GPUS, "workload.training.interarrival"),
    ],
)
def test_bad_generated_values_raise(interarrival: Distribution, duration: Distribution, gpus: Distribution,
                                    key: str) -> None:
    with pytest.raises(WorkloadError, match=key.replace(".", r"\.") + ": distribution produced"):
        generate_training_jobs(100, interarrival, duration, gpus, rngs(), where="workload.training")


def test_generator_arguments() -> None:
    assert len(generate_training_jobs(0, INTERARRIVAL, DURATION, GPUS, rngs())) == 0
    with pytest.raises(WorkloadError, match="missing random stream 'sizes'"):
        generate_training_jobs(5, INTERARRIVAL, DURATION, GPUS, {k: v for k, v in rngs().items() if k != "sizes"})
    with pytest.raises(WorkloadError, match="count"):
        generate_training_jobs(-1, INTERARRIVAL, DURATION, GPUS, rngs())
