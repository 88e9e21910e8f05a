"""Non-exponential failures (sim.failures.distributions): draws follow the named distribution scaled to the MTBF,
the simulated failures of each device match renewal theory (an independent numpy Monte Carlo of the same
alternating renewal process, or the closed form for exponential), each unit's first time to failure follows the
distribution it should (new, or stationary), the lost-work closed form holds through the per-unit clocks, and bad
settings are one-line errors naming the key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from sim import FailureModel, Simulation, failures, load_config, run_config
from sim.errors import ConfigError
from sim.failures.distributions import LifeDistribution
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.hardware import get_device
from workloads.jobs import TrainingJob

H100 = "h100"
Z = stats.norm.ppf(0.9995)  # two-sided 99.9%

EXPONENTIAL = LifeDistribution()
WEIBULL_EARLY = LifeDistribution("weibull", shape=0.7)  # a hazard falling with age
WEIBULL_WEAR = LifeDistribution("weibull", shape=2.5)  # a hazard rising with age
LOGNORMAL = LifeDistribution("lognormal", sigma=1.0)
ALL = [EXPONENTIAL, WEIBULL_EARLY, WEIBULL_WEAR, LOGNORMAL]


def frozen(dist: LifeDistribution, mean: float) -> stats.rv_continuous:
    """scipy's own parameterisation of the distribution whose mean is ``mean``."""
    if dist.kind == "weibull":
        return stats.weibull_min(dist.shape, scale=mean / math.gamma(1 + 1 / dist.shape))
    if dist.kind == "lognormal":
        return stats.lognorm(dist.sigma, scale=math.exp(math.log(mean) - dist.sigma ** 2 / 2))
    return stats.expon(scale=mean)


def residual_cdf(dist: LifeDistribution, mean: float):
    """The equilibrium (forward-recurrence) cdf, ``(1 / mean) * integral_0^x S(u) du``, in closed form."""
    ref = frozen(dist, mean)
    if dist.kind == "weibull":
        k, scale = dist.shape, ref.kwds["scale"]
        return lambda x: special.gammainc(1 / k, (np.asarray(x) / scale) ** k)
    if dist.kind == "lognormal":  # x S(x) / mean + the length-biased lognormal's cdf
        mu, s = math.log(mean) - dist.sigma ** 2 / 2, dist.sigma
        return lambda x: np.asarray(x) * ref.sf(x) / mean + stats.norm.cdf((np.log(x) - mu - s * s) / s)
    return ref.cdf


@pytest.mark.parametrize("dist", ALL, ids=lambda d: f"{d.kind}-{d.shape or d.sigma}")
def test_draws_match_the_distribution_and_its_mean(dist: LifeDistribution) -> None:
    rng, mean, n = np.random.default_rng(11), 7.0, 4000
    draws = dist.sample(rng, mean, n)
    assert stats.kstest(draws, frozen(dist, mean).cdf).pvalue > 1e-3
    assert abs(draws.mean() - mean) < Z * draws.std(ddof=1) / math.sqrt(n)  # the MTBF is the mean, whatever shape
    residual = dist.sample_residual(rng, mean, n)
    assert stats.kstest(residual, residual_cdf(dist, mean)).pvalue > 1e-3
    # renewal theory: the mean time left to a unit met at random is E[X^2] / (2 E[X])
    second = frozen(dist, mean).moment(2)
    assert abs(residual.mean() - second / (2 * mean)) < Z * residual.std(ddof=1) / math.sqrt(n)


MTBF_H, MTTR_H, HORIZON_H, DEVICES = 10.0, 0.5, 20.0, 1600
REPAIR = LifeDistribution("lognormal", sigma=0.5)


def simulate(dist: LifeDistribution, first: str, repair: LifeDistribution = REPAIR,
             seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per device: its failure count and first failure time (hours, inf if none) over the horizon; and every
    repair's duration (hours). One 1-GPU job runs throughout (failures stop once no job is left)."""
    cluster = Cluster([PoolSpec(H100, nodes=DEVICES // 8, devices_per_node=8)])
    job = TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=1e12)
    model = FailureModel(mtbf_hours={H100: MTBF_H}, mttr_hours=MTTR_H, restart_s=0.0, distribution=dist,
                         repair_distribution=repair, first_failure=first)
    results = Simulation(cluster, [job], seed=seed, horizon=HORIZON_H * 3600,
                         subsystems=[failures(model)]).run()
    table = results.failures
    assert set(table["kind"]) == {"device"}
    device = np.array([d[0] for d in table["devices"]])
    counts = np.bincount(device, minlength=DEVICES)
    first_time = np.full(DEVICES, np.inf)
    np.minimum.at(first_time, device, table["time"].to_numpy(float) / 3600)
    return counts, first_time, table["duration"].to_numpy(float) / 3600


def monte_carlo(dist: LifeDistribution, first: str, repair: LifeDistribution, n: int, seed: int) -> np.ndarray:
    """Failures before the horizon of ``n`` independent units, each up for a draw of ``dist`` (the first from the
    equilibrium distribution when ``first`` is stationary) then down for a draw of ``repair``: written apart from
    the simulator, with numpy's generators and scipy's parameterisation."""
    rng = np.random.default_rng(seed)
    life, fix = frozen(dist, MTBF_H), frozen(repair, MTTR_H)
    if first == "stationary":  # inverse transform sampling of the equilibrium cdf, on a fine grid
        grid = np.geomspace(1e-6, life.ppf(1 - 1e-9), 20_000)
        t = np.interp(rng.random(n), np.concatenate([[0.0], residual_cdf(dist, MTBF_H)(grid)]),
                      np.concatenate([[0.0], grid]))
    else:
        t = life.rvs(n, random_state=rng)
    count = np.zeros(n)
    while (alive := t < HORIZON_H).any():
        count += alive
        t = np.where(alive, t + fix.rvs(n, random_state=rng) + life.rvs(n, random_state=rng), t)
    return count


@pytest.mark.parametrize("first", ["stationary", "new"])
@pytest.mark.parametrize("dist", ALL, ids=lambda d: f"{d.kind}-{d.shape or d.sigma}")
def test_failures_per_device_match_renewal_theory(dist: LifeDistribution, first: str) -> None:
    # each device is an alternating renewal process (up a time to failure, down a repair); the simulated mean
    # count over the horizon must match an independent Monte Carlo of that process within a 99.9% interval
    counts, _, _ = simulate(dist, first)
    reference = monte_carlo(dist, first, REPAIR, 100_000, seed=7)
    half = Z * math.sqrt(counts.var(ddof=1) / len(counts) + reference.var(ddof=1) / len(reference))
    assert abs(counts.mean() - reference.mean()) < half, (counts.mean(), reference.mean(), half)
    if dist.kind == "weibull":  # the test can tell shapes apart: new units of a Weibull fail unlike stationary ones
        other = monte_carlo(dist, "new" if first == "stationary" else "stationary", REPAIR, 100_000, seed=8)
        assert abs(counts.mean() - other.mean()) > half, (counts.mean(), other.mean(), half)


def test_exponential_failures_match_the_closed_form() -> None:
    # exponential up and down times (rates lam, mu), starting up: E[N(t)] = lam * integral_0^t P(up at s) ds with
    # P(up at s) = mu / (lam + mu) + lam / (lam + mu) * exp(-(lam + mu) s)
    counts, _, _ = simulate(EXPONENTIAL, "stationary", repair=EXPONENTIAL)
    lam, mu, t = 1 / MTBF_H, 1 / MTTR_H, HORIZON_H
    expected = lam * (mu * t / (lam + mu) + lam / (lam + mu) ** 2 * (1 - math.exp(-(lam + mu) * t)))
    assert abs(counts.mean() - expected) < Z * counts.std(ddof=1) / math.sqrt(len(counts)), (counts.mean(), expected)


@pytest.mark.parametrize("first", ["stationary", "new"])
def test_first_failures_and_repairs_follow_their_distributions(first: str) -> None:
    # a device's first failure is its first draw: censored at the horizon, so compare the failures seen with the
    # distribution conditioned on failing before it, and the share seen with the probability of that
    dist = WEIBULL_EARLY
    _, first_time, repairs = simulate(dist, first, seed=5)
    cdf = residual_cdf(dist, MTBF_H) if first == "stationary" else frozen(dist, MTBF_H).cdf
    seen = first_time[np.isfinite(first_time)]
    by_horizon = float(cdf(HORIZON_H))
    assert stats.kstest(seen, lambda x: cdf(x) / by_horizon).pvalue > 1e-3
    assert stats.binomtest(len(seen), DEVICES, by_horizon).pvalue > 1e-3
    assert stats.kstest(repairs, frozen(REPAIR, MTTR_H).cdf).pvalue > 1e-3  # every repair drawn is in the table


def test_lost_work_closed_form_holds_through_per_unit_clocks() -> None:
    # a Weibull of shape 1 is the exponential, but runs on the per-unit clocks: tests/test_failures.py's closed form
    # of the work lost without checkpoints, E[lost] = (e^{lam T} - 1) / lam - T, must still hold
    T, gpus, mtbf_h, n = 3600.0, 2, 2.0, 1000
    lam = gpus / (mtbf_h * 3600)
    expected = (math.exp(lam * T) - 1) / lam - T
    specs = [TrainingJob(job_id=i, arrival=float(i), gpus=gpus, duration=T) for i in range(n)]
    model = FailureModel(mtbf_hours={H100: mtbf_h}, mttr_hours=0.2, restart_s=0.0,
                         distribution={"kind": "weibull", "shape": 1.0})
    results = Simulation(Cluster([PoolSpec(H100, nodes=8, devices_per_node=8)]), specs, seed=6,
                         subsystems=[failures(model)]).run()
    lost = results.jobs["lost_work_seconds"].to_numpy()
    assert (results.jobs["status"] == "finished").all()
    assert abs(lost.mean() - expected) < Z * lost.std(ddof=1) / math.sqrt(n), (lost.mean(), expected)


def test_node_correlated_units_fail_at_the_node_rate() -> None:
    # with node_correlated a node is the unit: its mean time to failure is the device MTBF over its 8 devices
    cluster = Cluster([PoolSpec(H100, nodes=200, devices_per_node=8)])
    model = FailureModel(mtbf_hours={H100: 80.0}, mttr_hours=0.01, node_correlated=True,
                         distribution={"kind": "lognormal", "sigma": 1.5})
    hours = 30.0
    results = Simulation(cluster, [TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=1e12)], seed=2,
                         horizon=hours * 3600, subsystems=[failures(model)]).run()
    table = results.failures
    assert set(table["kind"]) == {"node"} and all(len(d) == 8 for d in table["devices"])
    per_node = np.bincount(table["node"].to_numpy(int), minlength=200)
    # stationary start and repairs ~100x shorter than lives: about hours / (80 / 8 + 0.01) failures per node
    expected = hours / (80.0 / 8 + 0.01)
    assert abs(per_node.mean() - expected) < Z * per_node.std(ddof=1) / math.sqrt(200), (per_node.mean(), expected)


def test_config_sets_the_distributions() -> None:
    base = {"seed": 1, "cluster": {"preset": "dgx-h100", "nodes": 2}, "sim": {"progress": False},
            "workload": {"training": {"jobs": 20, "interarrival": {"dist": "exponential", "mean": 60}}}}
    results = run_config(load_config({**base, "failures": {
        "mtbf_hours": {H100: 20}, "distribution": {"kind": "weibull", "shape": 0.7},
        "repair_distribution": {H100: {"kind": "lognormal", "sigma": 1.0}}, "first_failure": "new"}}))
    record = results.run["failures"]
    assert record["distribution"] == {"kind": "weibull", "shape": 0.7}
    assert record["repair_distribution"] == {get_device(H100).name: {"kind": "lognormal", "sigma": 1.0}}
    assert record["first_failure"] == "new" and results.summary()["failures"]["outages"] > 0


@pytest.mark.parametrize(("data", "message"), [
    ({"distribution": {"kind": "weibull", "shape": 0}},
     "failures.distribution.shape must be a finite number > 0 for a weibull distribution"),
    ({"distribution": {"kind": "weibull", "shape": -0.5}}, "failures.distribution.shape must be a finite number > 0"),
    ({"distribution": {"kind": "weibull"}}, "failures.distribution.shape must be a finite number > 0"),
    ({"distribution": {"kind": "weibull", "shape": 0.001}}, "failures.distribution.shape 0.001 is outside [0.1, 100"),
    ({"repair_distribution": {"kind": "lognormal", "sigma": 40}}, "failures.repair_distribution.sigma 40 is outside"),
    ({"distribution": {"kind": "gamma", "shape": 2}}, "failures.distribution.kind: unknown distribution 'gamma'"),
    ({"distribution": "pareto"}, "failures.distribution.kind: unknown distribution 'pareto'"),
    ({"repair_distribution": {"kind": "lognormal", "sigma": -1}},
     "failures.repair_distribution.sigma must be a finite number >= 0"),
    ({"repair_distribution": {"kind": "lognormal", "sigma": 1, "shape": 2}},
     "failures.repair_distribution.shape: a lognormal distribution takes sigma"),
    ({"distribution": {"kind": "weibull", "shape": 0.7, "scale": 3}}, "failures.distribution: unknown key(s) scale"),
    ({"distribution": {"h100": {"kind": "weibull", "shape": float("nan")}}},
     "failures.distribution.h100.shape must be a finite number > 0"),
    ({"distribution": {"h9000": {"kind": "weibull", "shape": 1}}}, "failures.distribution.h9000"),
    ({"distribution": 3}, "failures.distribution must be a distribution"),
    ({"first_failure": "old"}, "failures.first_failure must be one of stationary, new"),
])
def test_bad_distribution_settings_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailureModel.from_config(data)
    assert message in str(info.value) and "\n" not in str(info.value)
