"""The engine against exact queueing theory (docs/REFERENCE.md, "Queueing theory").

M/M/c: single-GPU jobs, Poisson arrivals, exponential run times, strict FIFO on c identical devices.
Each case runs R independent replications (seeds spawned from one root: ``SeedSequence(ROOT,
spawn_key=(case, r))``), discards the first WARMUP fraction of jobs of each (the system starts empty),
and builds a t-interval over the R replication means. The file builds 2 x 9 intervals (Erlang C and
Little's law for each case); they are simultaneous at 95% (Bonferroni: each interval has level
1 - 0.05 / 18), so the file as a whole has at most a 5% chance of a false alarm for any root seed;
nothing depends on one seed's values.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from sim.engine import Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.random import RandomStreams
from workloads import Deterministic, Exponential, generate_training_jobs

ROOT = 7
MEAN_S = 100.0  # mean run time 1 / mu, seconds
R = 16  # replications per case
WARMUP = 0.10  # fraction of each replication's jobs discarded
# Jobs per replication: more where the queue relaxes slowly (the variance of the mean wait grows like
# (1 - rho)^-4). Measured cost is about 50 us per job: the file takes about 30 s.
JOBS = {0.5: 2_000, 0.7: 3_000, 0.9: 6_000}
# (c, layout): one node of c devices, or c nodes of one device. Same queue either way for 1-GPU jobs.
SERVERS = ((1, "1 node x 1"), (4, "1 node x 4"), (8, "8 nodes x 1"))
CASES = [(c, layout, rho) for c, layout in SERVERS for rho in (0.5, 0.7, 0.9)]

INTERVALS = 2 * len(CASES)
# Student-t quantile t_{1 - 0.05 / (2 * 18), R - 1 = 15} (scipy is not installed, so hard-coded;
# test_t_quantile_constant re-derives it by integrating the t density). For a single 95% interval it
# would be 2.131; the Bonferroni correction over the 18 intervals widens it to 3.5725.
T_QUANTILE = 3.5725
assert INTERVALS == 18 and R == 16


def erlang_c(c: int, rho: float, mu: float) -> tuple[float, float]:
    """(P_wait, W_q) of M/M/c, REFERENCE.md's formula."""
    a = c * rho
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait, p_wait / (c * mu - c * rho * mu)


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of the simultaneous interval over replication values."""
    mean = float(values.mean())
    half = T_QUANTILE * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


@cache
def replications(c: int, layout: str, rho: float) -> dict[str, np.ndarray]:
    """Per replication: mean queueing delay after warm-up, and Little's-law quantities over the whole run."""
    case = CASES.index((c, layout, rho))
    lam = c * rho / MEAN_S
    n = JOBS[rho]
    pools = [PoolSpec("h100", 1, c)] if layout.startswith("1 node") else [PoolSpec("h100", c, 1)]
    waits, little_gap, area, jct_sum = [], [], [], []
    for r in range(R):
        seq = np.random.SeedSequence(ROOT, spawn_key=(case, r))
        trace = generate_training_jobs(n, Exponential(mean=1 / lam), Exponential(mean=MEAN_S), Deterministic(1),
                                       RandomStreams(seq))
        res = Simulation(Cluster(pools), trace, scheduler="fifo", placer="first-fit", seed=seq).run()
        jobs = res.jobs.sort_values("arrival")
        assert (jobs["status"] == "finished").all()
        waits.append(float(jobs["queueing_delay"].to_numpy()[int(WARMUP * n):].mean()))
        # Little's law: time-average number in system (queued + running, time-weighted from the timeline)
        # over [0, end]; the system is empty before the first arrival and after the last finish.
        tl = res.timeline
        times = np.append(tl["time"].to_numpy(), res.run["end_time"])
        in_system = (tl["queued_jobs"] + tl["running_jobs"]).to_numpy(dtype=float)
        integral = float(np.sum(in_system * np.diff(times)))
        jct = jobs["jct"].to_numpy()
        little_gap.append(integral / res.run["end_time"] - lam * float(jct.mean()))
        area.append(integral)
        jct_sum.append(float(jct.sum()))
    return {"wait": np.array(waits), "little_gap": np.array(little_gap), "area": np.array(area),
            "jct_sum": np.array(jct_sum)}


def test_t_quantile_constant():
    # P(|T_15| <= T_QUANTILE) must be 1 - 0.05 / 18: integrate the Student-t density numerically.
    df = R - 1
    x = np.linspace(0.0, T_QUANTILE, 200_001)
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    mass = 2 * np.trapezoid(scale * (1 + x**2 / df) ** (-(df + 1) / 2), x)
    assert mass == pytest.approx(1 - 0.05 / INTERVALS, abs=2e-5)  # T_QUANTILE is given to 4 decimals


def test_erlang_c_formula_on_known_values():
    # M/M/1: W_q = rho / (mu - lambda). M/M/2 at a = 1 (rho 0.5): P_wait = 1/3, W_q = (1/3) / (2 mu - 1 mu).
    assert erlang_c(1, 0.5, 1.0) == pytest.approx((0.5, 1.0))
    assert erlang_c(2, 0.5, 1.0) == pytest.approx((1 / 3, 1 / 3))


@pytest.mark.slow
@pytest.mark.parametrize(("c", "layout", "rho"), CASES)
def test_mmc_mean_wait_matches_erlang_c(c, layout, rho):
    mu = 1 / MEAN_S
    _, wq = erlang_c(c, rho, mu)
    mean, low, high = interval(replications(c, layout, rho)["wait"])
    assert low <= wq <= high, f"M/M/{c} rho={rho}: W_q {mean:.3f} in [{low:.3f}, {high:.3f}], Erlang C {wq:.3f}"
    # A plainly wrong engine: one that never queues (W_q = 0, e.g. capacity not enforced) is excluded in
    # every case. Where the M/M/1 queue with one c-times-faster server (W_q = rho / (c mu (1 - rho)))
    # differs clearly from M/M/c (c > 1 and rho <= 0.7: by 60% or more), the interval excludes it too: an
    # engine that pooled the devices into one fast server would fail.
    assert low > 0
    fast = rho / (c * mu * (1 - rho))
    if c > 1 and rho <= 0.7:
        assert not low <= fast <= high, f"cannot tell M/M/{c} from a fast M/M/1 ({fast:.3f})"


@pytest.mark.slow
@pytest.mark.parametrize(("c", "layout", "rho"), CASES)
def test_littles_law_on_timeline(c, layout, rho):
    reps = replications(c, layout, rho)
    # Sample-path identity (holds exactly for every run that ends empty): the area under the number in
    # system equals the sum of the jobs' times in system. Any sample missing from the timeline breaks it;
    # the tolerance is float rounding over ~10^4 terms.
    np.testing.assert_allclose(reps["area"], reps["jct_sum"], rtol=1e-9)
    # Little's law with the nominal arrival rate: L - lambda W has mean zero over replications.
    mean, low, high = interval(reps["little_gap"])
    assert low <= 0.0 <= high, f"L - lambda W = {mean:.4f} in [{low:.4f}, {high:.4f}]"
