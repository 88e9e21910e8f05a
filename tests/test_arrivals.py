"""Arrival processes and request lengths against theory, config errors, and the columnar request trace.

Statistical checks accept an estimate within ``Z`` standard errors of the theoretical value, the standard
error coming from the sample size and the process's own moments:

- mean inter-arrival of a renewal process: ``SE = sd / sqrt(n)`` with ``sd = cv / rate``;
- sample CV of i.i.d. Gamma gaps, by the delta method on ``(mean, variance)``: with central moments
  ``mu3 = 2 sigma^3 cv`` and ``mu4 = (3 + 6 cv^2) sigma^4`` of a Gamma of shape ``1/cv^2``,
  ``Var(cv_hat) ~ cv^2 (1 + cv^2) / (2 n)`` (``1/n`` for the exponential);
- MMPP gaps are dependent, so its rate and CV are checked across independent replications (each started
  in the stationary state, so the expected count over a horizon is exactly rate x horizon):
  ``SE = sd(replicates) / sqrt(R)``;
- counts of a (non-homogeneous) Poisson process over a window are Poisson: ``SE = sqrt(expected)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import Z, assert_close

from workloads import (
    MMPP,
    PROCESSES,
    ArrivalProcess,
    Diurnal,
    GammaRenewal,
    InferenceRequest,
    PiecewiseRate,
    Poisson,
    RequestTrace,
    TraceReplay,
    WorkloadError,
    Zipf,
    generate_requests,
    make_arrivals,
    make_distribution,
)

N = 200_000
WHERE = "workload.inference.arrivals"


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- renewal processes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("process", [Poisson(5.0), GammaRenewal(5.0, 0.5), GammaRenewal(5.0, 1.0),
                                     GammaRenewal(5.0, 3.0), GammaRenewal(0.01, 2.0)], ids=repr)
def test_renewal_reproduces_rate_and_cv(process: Poisson | GammaRenewal) -> None:
    times = process.times(rng(), count=N)
    assert times.shape == (N,) and times.dtype == np.float64
    assert times[0] > 0 and np.all(np.diff(times) >= 0)
    gaps = np.diff(times, prepend=0.0)
    rate, cv = process.rate, process.cv
    assert_close(float(gaps.mean()), 1 / rate, cv / rate / math.sqrt(N), "mean inter-arrival")
    assert_close(float(gaps.std() / gaps.mean()), cv, math.sqrt(cv**2 * (1 + cv**2) / (2 * N)), "inter-arrival CV")


def test_gamma_parameterisation_follows_reference() -> None:
    process = make_arrivals({"process": "gamma", "rate": 5, "cv": 3}, where=WHERE)
    assert isinstance(process, GammaRenewal) and isinstance(process, ArrivalProcess)
    assert process.shape == pytest.approx(1 / 9) and process.scale == pytest.approx(9 / 5)
    assert process.shape * process.scale == pytest.approx(1 / process.rate)
    assert Poisson(2.0).cv == 1.0


@pytest.mark.parametrize("process", [Poisson(5.0), GammaRenewal(5.0, 3.0)], ids=repr)
def test_horizon_count_is_renewal_normal(process: Poisson | GammaRenewal) -> None:
    """Renewal CLT: N(T) is about normal with mean rate T and variance cv^2 rate T."""
    horizon = 40_000.0
    times = process.times(rng(7), horizon=horizon)
    assert times.size and times[-1] < horizon and np.all(np.diff(times) >= 0)
    expected = process.rate * horizon
    assert_close(times.size, expected, math.sqrt(process.cv**2 * expected), "count in the horizon")


def test_count_and_horizon_together_and_reproducible() -> None:
    process = GammaRenewal(5.0, 2.0)
    by_count = process.times(rng(3), count=1000)
    np.testing.assert_array_equal(by_count, process.times(rng(3), count=1000))
    both = process.times(rng(3), count=1000, horizon=50.0)
    assert both.size <= 1000 and (both.size == 0 or both[-1] < 50.0)
    assert process.times(rng(3), count=10, horizon=1e6).size == 10
    assert process.times(rng(), count=0).size == 0 and process.times(rng(), horizon=0).size == 0


# --- MMPP ------------------------------------------------------------------------------------------------


def mmpp_theory(rates: list[float], sojourns: list[float]) -> tuple[float, float]:
    """Long-run rate and stationary inter-arrival CV of a cyclic MMPP.

    Generator ``Q`` and rate matrix ``L``: gaps are phase-type with initial vector ``pi L / (pi L 1)``
    (``pi`` the time-stationary distribution) and ``E[X^k] = k! a (L - Q)^-k 1``.
    """
    k = len(rates)
    q = np.zeros((k, k))
    for i in range(k):
        q[i, i] -= 1 / sojourns[i]
        q[i, (i + 1) % k] += 1 / sojourns[i]
    lam = np.diag(rates)
    pi = np.array(sojourns) / sum(sojourns)
    start = pi @ lam / (pi @ lam).sum()
    inverse = np.linalg.inv(lam - q)
    m1 = start @ inverse @ np.ones(k)
    m2 = 2 * start @ inverse @ inverse @ np.ones(k)
    return float(pi @ np.array(rates)), float(math.sqrt(m2 - m1 * m1) / m1)


def test_mmpp_rate_formula_and_bursty_cv() -> None:
    rates, sojourns = [1.0, 20.0], [60.0, 10.0]
    process = make_arrivals({"process": "mmpp", "rates": rates, "mean_sojourns": sojourns, "initial_state": None},
                            where=WHERE)
    assert isinstance(process, MMPP)
    formula = sum(r * s for r, s in zip(rates, sojourns, strict=True)) / sum(sojourns)
    theory_rate, theory_cv = mmpp_theory(rates, sojourns)
    assert process.rate == pytest.approx(formula) == pytest.approx(theory_rate)
    assert process.time_fractions == pytest.approx((60 / 70, 10 / 70))

    replications, horizon = 40, 50_000.0
    counts, cvs = [], []
    for seed in range(replications):
        times = process.times(rng(seed), horizon=horizon)
        assert times[-1] < horizon and np.all(np.diff(times) >= 0)
        gaps = np.diff(times)
        counts.append(times.size / horizon)
        cvs.append(gaps.std() / gaps.mean())
    se_rate = np.std(counts, ddof=1) / math.sqrt(replications)
    se_cv = np.std(cvs, ddof=1) / math.sqrt(replications)
    assert_close(float(np.mean(counts)), formula, se_rate, "MMPP long-run rate")
    assert np.mean(cvs) - Z * se_cv > 1, f"MMPP inter-arrival CV {np.mean(cvs):.3f} +- {se_cv:.3f} is not > 1"
    assert_close(float(np.mean(cvs)), theory_cv, se_cv, "MMPP inter-arrival CV (phase-type theory)")


def test_mmpp_count_mode_and_transition_matrix() -> None:
    cyclic = MMPP((2.0, 0.0, 10.0), (5.0, 20.0, 1.0))
    assert cyclic.rate == pytest.approx((10 + 10) / 26)
    times = cyclic.times(rng(), count=5000)
    assert times.shape == (5000,) and np.all(np.diff(times) >= 0)
    # a 3-cycle written as a matrix gives the same long-run rate; a non-cyclic chain weights by pi * sojourn
    matrix = MMPP((2.0, 0.0, 10.0), (5.0, 20.0, 1.0), transitions=((0, 1, 0), (0, 0, 1), (1, 0, 0)))
    assert matrix.rate == pytest.approx(cyclic.rate)
    star = MMPP((1.0, 4.0, 9.0), (1.0, 2.0, 3.0), transitions=((0, 0.5, 0.5), (1, 0, 0), (1, 0, 0)))
    # jump chain pi = (1/2, 1/4, 1/4): time fractions proportional to (1/2, 2/4, 3/4)
    assert star.time_fractions == pytest.approx((0.5 / 1.75, 0.5 / 1.75, 0.75 / 1.75))
    assert star.rate == pytest.approx((0.5 * 1 + 0.5 * 4 + 0.75 * 9) / 1.75)
    replications, horizon = 30, 20_000.0
    stationary = MMPP(star.rates, star.mean_sojourns, initial_state=None, transitions=star.transitions)
    counts = [stationary.times(rng(seed), horizon=horizon).size / horizon for seed in range(replications)]
    assert_close(float(np.mean(counts)), star.rate, np.std(counts, ddof=1) / math.sqrt(replications),
                 "MMPP with transitions: long-run rate")


# --- time-varying rates (thinning) -----------------------------------------------------------------------


def test_diurnal_mean_rate_and_peak_to_trough() -> None:
    rate, amplitude, period, peak_time = 5.0, 0.6, 1_000.0, 250.0
    process = make_arrivals({"process": "diurnal", "rate": rate, "amplitude": amplitude, "period": period,
                             "peak_time": peak_time}, where=WHERE)
    assert isinstance(process, Diurnal)
    assert process.peak / process.trough == pytest.approx((1 + amplitude) / (1 - amplitude))
    periods = 200
    times = process.times(rng(), horizon=periods * period)
    assert np.all(np.diff(times) >= 0)
    expected = rate * periods * period  # over whole periods the cosine integrates to 0
    assert_close(times.size, expected, math.sqrt(expected), "arrivals over whole periods")

    # counts in narrow windows around the peak and the trough, every period
    width = period / 20
    phase = np.mod(times - peak_time + width / 2, period)
    at_peak = int(np.count_nonzero(phase < width))
    at_trough = int(np.count_nonzero(np.abs(phase - period / 2) < width / 2))
    swing = amplitude * period / math.pi * math.sin(math.pi * width / period)  # integral of the cosine term
    expected_peak, expected_trough = rate * periods * (width + swing), rate * periods * (width - swing)
    assert_close(at_peak, expected_peak, math.sqrt(expected_peak), "arrivals near the peak")
    assert_close(at_trough, expected_trough, math.sqrt(expected_trough), "arrivals near the trough")
    # log ratio of two independent Poisson counts: Var ~ 1/E1 + 1/E2
    assert_close(math.log(at_peak / at_trough), math.log(expected_peak / expected_trough),
                 math.sqrt(1 / expected_peak + 1 / expected_trough), "peak/trough ratio")
    assert expected_peak / expected_trough == pytest.approx((1 + amplitude) / (1 - amplitude), rel=0.02)


def test_piecewise_rate_per_interval() -> None:
    process = make_arrivals({"process": "piecewise", "rates": [1, 0, 4, 2], "interval": 100}, where=WHERE)
    assert isinstance(process, PiecewiseRate) and process.rate == pytest.approx(7 / 4)
    cycles = 300
    times = process.times(rng(), horizon=cycles * process.period)
    slot = (times // 100).astype(int) % 4
    for i, r in enumerate([1, 0, 4, 2]):
        expected = r * 100 * cycles
        assert_close(int(np.count_nonzero(slot == i)), expected, math.sqrt(max(expected, 1)), f"slot {i}")
    assert process.times(rng(), count=1234).size == 1234


# --- trace replay ----------------------------------------------------------------------------------------


def test_trace_replay_scale_and_window() -> None:
    recorded = np.array([0.0, 1.0, 3.0, 4.0, 10.0, 12.0])
    plain = TraceReplay(recorded)
    np.testing.assert_array_equal(plain.times(rng(), count=6), recorded)
    fast = TraceReplay(recorded, scale=2.0)
    np.testing.assert_array_equal(fast.times(rng(), count=6), recorded / 2)
    assert fast.rate == pytest.approx(2 * plain.rate)
    window = TraceReplay(recorded, scale=2.0, window=(3.0, 11.0))
    np.testing.assert_array_equal(window.replayed, [0.0, 0.5, 3.5])
    assert window.rate == pytest.approx(3 / (8 / 2))
    np.testing.assert_array_equal(window.times(None, horizon=1.0), [0.0, 0.5])
    open_ended = TraceReplay(recorded, window=(4.0, None))
    np.testing.assert_array_equal(open_ended.replayed, [0.0, 6.0, 8.0])
    with pytest.raises(WorkloadError, match="holds 3 arrivals, 4 asked for"):
        window.times(rng(), count=4)
    with pytest.raises(WorkloadError, match="window: holds no arrivals"):
        TraceReplay(recorded, window=(20.0, 30.0))
    with pytest.raises(WorkloadError, match="scale: must be a positive"):
        TraceReplay(recorded, scale=0)
    with pytest.raises(WorkloadError, match=r"window.end: must be after start"):
        TraceReplay(recorded, window=(5.0, 5.0))


def test_request_trace_replay_keeps_lengths() -> None:
    trace = RequestTrace(arrival=[0.0, 1.0, 3.0, 4.0], prompt_tokens=[10, 20, 30, 40], output_tokens=[1, 2, 3, 4],
                         service=np.array(["a", "b", "a", "b"], dtype=object))
    replay = trace.replay(scale=2.0, window=(1.0, 4.0))
    np.testing.assert_array_equal(replay.arrival, [0.0, 1.0])
    assert [(r.prompt_tokens, r.output_tokens, r.service) for r in replay] == [(20, 2, "b"), (30, 3, "a")]


# --- config errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "match"), [
    ({"process": "poisson", "rate": -1}, rf"^{WHERE}\.rate: must be > 0, got -1"),
    ({"process": "poisson", "rate": 0}, rf"^{WHERE}\.rate: must be > 0"),
    ({"process": "gamma", "rate": -5, "cv": 2}, rf"^{WHERE}\.rate: must be > 0"),
    ({"process": "gamma", "rate": 5, "cv": 0}, rf"^{WHERE}\.cv: must be > 0, got 0"),
    ({"process": "gamma", "rate": 5, "cv": -1.5}, rf"^{WHERE}\.cv: must be > 0"),
    ({"process": "gamma", "rate": 5, "cv": float("nan")}, rf"^{WHERE}\.cv: must be finite"),
    ({"process": "gamma", "rate": 5}, rf"^{WHERE}: process 'gamma' needs key 'cv'"),
    ({"process": "gamma", "rate": 5, "cv": 2, "burst": 1}, rf"^{WHERE}: unknown key 'burst' for process 'gamma'"),
    ({"process": "poisson", "rte": 5}, r"unknown key 'rte'.*did you mean 'rate'"),
    ({"process": "mmpp", "rates": [1, 20], "mean_sojourns": [60, 10, 5]},
     rf"^{WHERE}\.mean_sojourns: has 3 items but rates has 2"),
    ({"process": "mmpp", "rates": [1, -2], "mean_sojourns": [60, 10]}, rf"^{WHERE}\.rates\[1\]: must be >= 0"),
    ({"process": "mmpp", "rates": [0, 0], "mean_sojourns": [60, 10]}, rf"^{WHERE}\.rates: at least one"),
    ({"process": "mmpp", "rates": [1, 2], "mean_sojourns": [60, 0]}, rf"^{WHERE}\.mean_sojourns\[1\]: must be > 0"),
    ({"process": "mmpp", "rates": [1, 2], "mean_sojourns": [6, 1], "initial_state": 2},
     rf"^{WHERE}\.initial_state: must be a state index 0..1"),
    ({"process": "mmpp", "rates": [1, 2, 3], "mean_sojourns": [1, 1, 1],
      "transitions": [[0, 1, 0], [1, 0, 0], [0.5, 0.5, 0]]}, rf"^{WHERE}\.transitions: every state must be reachable"),
    ({"process": "mmpp", "rates": [1, 2], "mean_sojourns": [1, 1], "transitions": [[0, 0.9], [1, 0]]},
     rf"^{WHERE}\.transitions\[0\]: must be probabilities summing to 1"),
    ({"process": "diurnal", "rate": 5, "amplitude": 1.5}, rf"^{WHERE}\.amplitude: must be in \[0, 1\]"),
    ({"process": "diurnal", "rate": 5, "amplitude": 0.5, "period": -1}, rf"^{WHERE}\.period: must be > 0"),
    ({"process": "piecewise", "rates": []}, rf"^{WHERE}\.rates: must not be empty"),
    ({"process": "trace", "trace": "azure-con"}, r"\.trace: unknown request trace 'azure-con'.*'azure-conv'"),
    ({"process": "trace", "trace": "azure-conv", "scale": -2}, rf"^{WHERE}\.scale: must be a positive"),
    ({"process": "posson", "rate": 5}, rf"^{WHERE}: unknown process 'posson'; valid: .*\(did you mean 'poisson'\?\)"),
    ({"rate": 5}, rf"^{WHERE}: missing key 'process'; valid: {', '.join(PROCESSES)}"),
    ([5], rf"^{WHERE}: expected a mapping"),
])
def test_bad_specs_name_the_key(spec: object, match: str) -> None:
    with pytest.raises(WorkloadError, match=match):
        make_arrivals(spec, where=WHERE)  # type: ignore[arg-type]


def test_direct_construction_and_times_arguments_are_checked() -> None:
    with pytest.raises(WorkloadError, match=r"^rate: must be > 0"):
        Poisson(-1.0)
    with pytest.raises(WorkloadError, match=r"^cv: must be > 0"):
        GammaRenewal(1.0, 0.0)
    with pytest.raises(WorkloadError, match="give count, horizon or both"):
        Poisson(1.0).times(rng())
    with pytest.raises(WorkloadError, match=r"^count: must be a non-negative integer"):
        Poisson(1.0).times(rng(), count=-3)
    with pytest.raises(WorkloadError, match=r"^horizon: must be a finite number"):
        Poisson(1.0).times(rng(), horizon=math.inf)


def test_make_arrivals_builds_every_process() -> None:
    specs = {
        "poisson": {"rate": 5},
        "gamma": {"rate": 5, "cv": 3},
        "mmpp": {"rates": [1, 20], "mean_sojourns": [60, 10]},
        "diurnal": {"rate": 5, "amplitude": 0.5},
        "piecewise": {"rates": [1, 2, 3], "interval": 3600},
        "trace": {"trace": "azure-conv", "scale": 2, "window": {"start": 0, "end": 600}},
    }
    assert set(specs) == set(PROCESSES)
    for name, params in specs.items():
        process = make_arrivals({"process": name, **params}, where=WHERE)
        times = process.times(rng(), horizon=300.0)
        assert times.size > 0 and np.all(np.diff(times) >= 0) and times[-1] < 300.0, name
        assert process.rate > 0, name


# --- lengths ---------------------------------------------------------------------------------------------


def test_zipf_bounds_monotone_pmf_and_frequencies() -> None:
    dist = make_distribution({"dist": "zipf", "a": 1.5, "max": 4096}, where="prompt")
    assert isinstance(dist, Zipf)
    pmf = dist.pmf
    assert pmf.shape == (4096,) and pmf.sum() == pytest.approx(1.0)
    assert np.all(np.diff(pmf) < 0)
    assert pmf[0] / pmf[1] == pytest.approx(2**1.5)
    x = dist.sample(rng(), N)
    assert x.min() >= 1 and x.max() <= 4096 and np.all(x == np.floor(x))
    k = np.arange(1, 4097)
    variance = float(np.dot(k * k, pmf) - dist.mean**2)
    assert_close(float(x.mean()), dist.mean, math.sqrt(variance / N), "zipf mean")
    for value in (1, 2, 10):
        p = float(pmf[value - 1])
        assert_close(float(np.mean(x == value)), p, math.sqrt(p * (1 - p) / N), f"P(X = {value})")
    small = Zipf(a=0.5, max=3)  # any a > 0 is fine on a bounded support
    assert np.all(np.isin(small.sample(rng(), 1000), [1, 2, 3]))


@pytest.mark.parametrize(("spec", "match"), [
    ({"dist": "zipf", "a": 0, "max": 10}, r"^len\.a: must be > 0"),
    ({"dist": "zipf", "a": 1.2, "max": 0}, r"^len\.max: must be an integer in 1\.\."),
    ({"dist": "zipf", "a": 1.2, "max": 2.5}, r"^len\.max: must be an integer"),
    ({"dist": "zipf", "a": 1.2}, r"^len: dist 'zipf' needs key 'max'"),
    ({"dist": "zpf", "a": 1.2, "max": 4}, r"did you mean 'zipf'"),
])
def test_zipf_bad_specs(spec: dict[str, object], match: str) -> None:
    with pytest.raises(WorkloadError, match=match):
        make_distribution(spec, where="len")


def streams(seed: int = 0) -> dict[str, np.random.Generator]:
    return {name: rng(seed + i) for i, name in enumerate(("arrivals", "prompt_tokens", "output_tokens"))}


def test_generate_requests_streams_and_whole_tokens() -> None:
    arrivals = GammaRenewal(10.0, 2.0)
    prompt = make_distribution({"dist": "lognormal", "median": 1020, "sigma": 1.0}, where="p")
    output = make_distribution({"dist": "uniform", "low": 0, "high": 300}, where="o")
    trace = generate_requests(arrivals, prompt, output, streams(), count=10_000)
    assert len(trace) == 10_000 and trace.services == ("default",)
    assert trace.prompt_tokens.dtype == np.int64 and trace.prompt_tokens.min() >= 1
    assert trace.output_tokens.min() >= 1 and trace.output_tokens.max() <= 300
    raw = prompt.sample(streams()["prompt_tokens"], 10_000)
    np.testing.assert_array_equal(trace.prompt_tokens, np.ceil(raw))  # rounded up to whole tokens
    other = generate_requests(arrivals, prompt, make_distribution({"dist": "deterministic", "value": 7}, where="o"),
                              streams(), count=10_000, service="chat")
    np.testing.assert_array_equal(other.arrival, trace.arrival)  # output lengths use their own stream
    np.testing.assert_array_equal(other.prompt_tokens, trace.prompt_tokens)
    assert set(other.output_tokens.tolist()) == {7} and other[3].service == "chat"
    by_horizon = generate_requests(arrivals, prompt, output, streams(), horizon=100.0)
    assert by_horizon.arrival[-1] < 100.0
    with pytest.raises(WorkloadError, match=r"^wl\.output_tokens: distribution produced -1\.0"):
        generate_requests(arrivals, prompt, make_distribution({"dist": "deterministic", "value": -1}, where="o"),
                          streams(), count=10, where="wl")
    with pytest.raises(WorkloadError, match="missing random stream 'output_tokens'"):
        generate_requests(arrivals, prompt, output, {"arrivals": rng(), "prompt_tokens": rng()}, count=10)


# --- requests and the columnar trace ---------------------------------------------------------------------


def test_inference_request_validation() -> None:
    request = InferenceRequest(3, 1.5, 100, 20, service="chat")
    assert request.total_tokens == 120
    for kwargs, match in [
        ({"prompt_tokens": 0}, "prompt_tokens must be a positive integer"),
        ({"output_tokens": 2.5}, "output_tokens must be a positive integer"),
        ({"arrival": -1.0}, "arrival must be a finite number >= 0"),
        ({"arrival": math.nan}, "arrival must be a finite number >= 0"),
        ({"request_id": -1}, "request_id must be a non-negative integer"),
        ({"service": ""}, "service must be a non-empty string"),
    ]:
        with pytest.raises(WorkloadError, match=match):
            InferenceRequest(**{"request_id": 0, "arrival": 0.0, "prompt_tokens": 1, "output_tokens": 1, **kwargs})


def test_request_trace_is_columnar_and_indexable() -> None:
    trace = RequestTrace(arrival=[0.0, 0.5, 0.5, 2.0], prompt_tokens=[5, 6, 7, 8], output_tokens=[1, 1, 2, 3],
                         source="test")
    assert len(trace) == 4 and trace.arrival.dtype == np.float64 and trace.prompt_tokens.dtype == np.int64
    assert not trace.arrival.flags.writeable
    assert trace[1] == InferenceRequest(1, 0.5, 6, 1) and trace[-1].request_id == 3
    assert [r.request_id for r in trace] == [0, 1, 2, 3]
    assert len(trace[1:3]) == 2 and trace[1:3][0].prompt_tokens == 6
    assert trace.span == 2.0 and trace.rate == 2.0
    with pytest.raises(IndexError):
        trace[4]
    assert RequestTrace.from_requests(list(trace), source="test") == trace
    backwards = RequestTrace.from_requests(list(trace)[::-1])  # sorted by arrival (stable), renumbered
    assert backwards.arrival.tolist() == trace.arrival.tolist() and backwards.prompt_tokens.tolist() == [5, 7, 6, 8]
    for kwargs, match in [
        ({"arrival": [1.0, 0.5]}, "arrival: must be sorted; request 1 arrives at 0.5"),
        ({"arrival": [-1.0, 0.5]}, "arrival: must be >= 0"),
        ({"prompt_tokens": [1, 0]}, "prompt_tokens: must be positive integers, got 0 for request 1"),
        ({"output_tokens": [1.0, 2.5]}, "output_tokens: must be whole numbers"),
        ({"output_tokens": [1, 2, 3]}, "output_tokens: has 3 items but arrival has 2"),
    ]:
        with pytest.raises(WorkloadError, match=match):
            RequestTrace(**{"arrival": [0.0, 1.0], "prompt_tokens": [1, 1], "output_tokens": [1, 1], **kwargs})


def test_million_requests_fast() -> None:
    """The columnar trace holds a million requests without building a million objects."""
    prompt = make_distribution({"dist": "zipf", "a": 1.2, "max": 8192}, where="p")
    output = make_distribution({"dist": "lognormal", "median": 129, "sigma": 1.0}, where="o")
    trace = generate_requests(GammaRenewal(100.0, 3.0), prompt, output, streams(), count=1_000_000)
    assert len(trace) == 1_000_000
    assert trace.arrival.nbytes + trace.prompt_tokens.nbytes + trace.output_tokens.nbytes == 24_000_000
    gaps = np.diff(trace.arrival, prepend=0.0)
    assert_close(float(gaps.std() / gaps.mean()), 3.0, math.sqrt(9 * 10 / (2 * 1_000_000)), "CV at 1M")
