"""Inference serving in the engine: queueing theory on fixed-service replicas, conservation of requests,
bad input, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import Cluster, PoolSpec, Simulation, preset
from sim.errors import ConfigError, PolicyError
from sim.serving.contracts import Router
from sim.serving.replica import BatchingConfig
from sim.serving.service import ContinuousBatching, FixedService, ServiceSpec
from workloads import RequestTrace, get_model
from workloads.distributions import Deterministic, Exponential, LogNormal

# two-sided 95% Student t quantile with 19 degrees of freedom (20 replications)
T_19 = 2.093
REPLICATIONS = 20


def poisson_trace(rate: float, n: int, seed: int) -> RequestTrace:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    ones = np.ones(n, dtype=np.int64)
    return RequestTrace(arrival=arrival, prompt_tokens=ones * 100, output_tokens=ones * 10, source=f"poisson {seed}")


def mean_wait(replicas: int, rate: float, service: FixedService, seed: int, n: int = 20_000) -> float:
    """Mean queueing delay of one replication, dropping the first 10% of requests (warm-up)."""
    cluster = Cluster([PoolSpec("h100", nodes=replicas, devices_per_node=1)])
    spec = ServiceSpec("q", poisson_trace(rate, n, seed), replicas=replicas, mode=service, dispatch="shared-queue")
    results = Simulation(cluster, [], services=[spec], seed=seed).run()
    waits = results.requests["queueing_delay"].to_numpy()
    assert results.summary()["requests"]["completed"] == n
    return float(waits[n // 10:].mean())


def confidence_interval(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    half = T_19 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean - half, mean + half


def erlang_c_wait(c: int, rate: float, mu: float) -> float:
    a = rate / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - rate)


@pytest.mark.slow
@pytest.mark.parametrize(("c", "rho"), [(1, 0.7), (4, 0.8)])
def test_fixed_service_reproduces_erlang_c(c: int, rho: float) -> None:
    mu = 1 / 2.0  # mean service 2 s
    rate = rho * c * mu
    waits = [mean_wait(c, rate, FixedService(Exponential(2.0)), seed) for seed in range(REPLICATIONS)]
    low, high = confidence_interval(waits)
    expected = erlang_c_wait(c, rate, mu)
    assert low <= expected <= high, (low, expected, high)
    assert low > 0  # and the engine does queue


@pytest.mark.slow
@pytest.mark.parametrize("service", [Deterministic(2.0), LogNormal(median=1.5, sigma=0.8)], ids=["M/D/1", "M/G/1"])
def test_fixed_service_reproduces_pollaczek_khinchine(service) -> None:
    rng = np.random.default_rng(123)
    draws = service.sample(rng, 2_000_000)
    mean, second = float(draws.mean()), float((draws**2).mean())
    if isinstance(service, LogNormal):  # exact moments of the lognormal
        mean = 1.5 * math.exp(0.8**2 / 2)
        second = 1.5**2 * math.exp(2 * 0.8**2)
    rate = 0.75 / mean
    expected = rate * second / (2 * (1 - rate * mean))
    waits = [mean_wait(1, rate, FixedService(service), seed) for seed in range(REPLICATIONS)]
    low, high = confidence_interval(waits)
    assert low <= expected <= high, (low, expected, high)


def test_every_request_is_accounted_for_and_long_ones_are_rejected() -> None:
    rng = np.random.default_rng(0)
    n = 400
    prompt = rng.integers(100, 3000, n)
    prompt[::50] = 600_000  # longer than any KV cache of one H100
    trace = RequestTrace(arrival=np.cumsum(rng.exponential(0.2, n)), prompt_tokens=prompt,
                         output_tokens=rng.integers(1, 400, n))
    # context_limit "allow": past the model's 131,072-token context, to reach the KV-cache check
    spec = ServiceSpec("chat", trace, replicas=2, model=get_model("llama-3.1-8b"), device="h100",
                       context_limit="allow")
    with pytest.warns(UserWarning, match="exceed llama-3.1-8b's max_context"):
        results = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], horizon=40.0).run()
    req = results.requests
    s = results.summary()["requests"]
    # every request of the workload is in the table and the counts: those after the horizon as not arrived
    assert s["count"] == len(req) == n
    assert s["not_arrived"] == int((trace.arrival > 40.0).sum()) == int((req["status"] == "not_arrived").sum()) > 0
    assert s["completed"] + s["rejected"] + s["unfinished"] + s["not_arrived"] == s["count"]
    assert s["by_service"] == {"chat": {k: s[k] for k in ("count", "completed", "rejected", "unfinished",
                                                          "not_arrived")}}
    assert s["rejected_reasons"] == {"exceeds_kv_cache": s["rejected"]}
    rejected = req[req["status"] == "rejected"]
    assert set(rejected["request_id"]) == {i for i in range(0, n, 50) if trace.arrival[i] <= 40.0}
    assert rejected["reason"].str.contains("KV tokens").all()


def test_model_too_big_for_the_replica_is_a_clear_error() -> None:
    spec = ServiceSpec("big", poisson_trace(1.0, 10, 0), replicas=1, model=get_model("llama-3.1-70b"), device="h100")
    with pytest.raises(ConfigError, match=r"llama-3.1-70b.*1 x h100-sxm.*GB"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[spec])


def test_not_enough_devices_for_the_replicas() -> None:
    spec = ServiceSpec("s", poisson_trace(1.0, 10, 0), replicas=3, model=get_model("llama-3.1-8b"),
                       devices_per_replica=4)
    with pytest.raises(ConfigError, match="no room for replica 2"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[spec])


def test_same_seed_same_requests_table_and_router_sees_the_same_requests() -> None:
    trace = poisson_trace(6.0, 2000, 3)
    spec = ServiceSpec("chat", trace, replicas=4, model=get_model("llama-3.1-8b"), device="h100",
                       mode=ContinuousBatching(BatchingConfig(max_seqs=32)), slo_ttft=0.5, slo_tpot=0.05)
    a = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router="power-of-two", seed=9).run()
    b = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router="power-of-two", seed=9).run()
    pd_a, pd_b = a.requests.drop(columns=["router"]), b.requests.drop(columns=["router"])
    assert pd_a.equals(pd_b)
    c = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router="least-outstanding", seed=9).run()
    assert c.requests["arrival"].equals(a.requests["arrival"])
    summary = a.summary()["requests"]
    for key in ("count", "completed", "ttft", "tpot", "e2e", "queueing_delay", "slo_attainment", "goodput"):
        assert key in summary
    assert set(summary["ttft"]) == {"mean", "p50", "p90", "p99"}


def test_a_broken_router_gets_a_policy_error() -> None:
    class Broken(Router):
        name = "broken"

        def route(self, request, replicas, rng) -> int:
            return len(replicas)

    spec = ServiceSpec("s", poisson_trace(1.0, 10, 0), replicas=2, model=get_model("llama-3.1-8b"))
    with pytest.raises(PolicyError, match="router 'broken' chose 2"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router=Broken()).run()


def test_a_router_must_choose_an_accepting_replica_and_reject_only_when_none_accepts() -> None:
    # the autoscaler drains replicas; a router that keeps sending to replica 0 whatever its state, or rejects
    # while replicas accept, breaks the contract and is named, not obeyed (no request silently lost or misplaced)
    class Stubborn(Router):
        name = "stubborn"

        def route(self, request, replicas, rng) -> int:
            return 0

    class Refusing(Router):
        name = "refusing"

        def route(self, request, replicas, rng) -> int:
            return -1

    spec = ServiceSpec("s", poisson_trace(1.0, 10, 0), replicas=2, model=get_model("llama-3.1-8b"))
    with pytest.raises(PolicyError, match=r"router 'refusing' rejected request 0 of service 's' \(-1\) although "
                                          r"replicas \[0, 1\] accept"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router=Refusing()).run()
    Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router=Stubborn()).run()  # 0 accepts: fine
    class Newest(Router):
        name = "newest"

        def route(self, request, replicas, rng) -> int:
            return len(replicas) - 1  # a replica the autoscaler just added is still loading its weights

    busy = ServiceSpec("s", poisson_trace(200.0, 4000, 3), replicas=1, min_replicas=1, max_replicas=3,
                       model=get_model("llama-3.1-8b"))
    with pytest.raises(PolicyError, match=r"router 'newest' chose replica [12] of service 's' for request \d+, which "
                                          r"is not accepting"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[busy], router=Newest(),
                   autoscaler={"name": "queue-length", "per_replica": 4.0, "interval": 5.0}).run()


def test_littles_law_per_replica() -> None:
    # L (the time-average of each replica's own outstanding counter, kept by the replica) equals
    # lambda x W (its requests per second times their mean time in the replica, from the request log).
    trace = poisson_trace(8.0, 3000, 11)
    spec = ServiceSpec("chat", trace, replicas=3, model=get_model("llama-3.1-8b"), device="h100")
    sim = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], router="power-of-two", seed=2)
    results = sim.run()
    req = results.requests
    end = float(req["finish"].max())
    for replica in sim.services[0].replicas:
        mine = req[req["replica"] == replica.replica_id]
        assert len(mine) > 500
        little_l = (replica.outstanding_seconds + replica.outstanding * (end - replica._counted_at)) / end
        arrival_rate, mean_sojourn = len(mine) / end, float((mine["finish"] - mine["arrival"]).mean())
        assert little_l == pytest.approx(arrival_rate * mean_sojourn, rel=1e-9)
        assert replica.outstanding == 0


def test_replica_samples_over_time() -> None:
    trace = poisson_trace(8.0, 2000, 5)
    spec = ServiceSpec("chat", trace, replicas=2, model=get_model("llama-3.1-8b"), device="h100")
    results = Simulation(preset("dgx-h100", nodes=1), [], services=[spec], sample_interval=10.0).run()
    samples = results.replica_samples
    last_finish = float(results.requests["finish"].max())
    assert np.allclose(np.unique(samples["time"]) % 10.0, 0.0)  # every 10 s, from 0
    assert samples["time"].max() <= last_finish + 10.0  # and no longer than serving lasts
    assert set(samples["replica"]) == {0, 1}
    assert samples["kv_utilization"].between(0, 1).all() and (samples["kv_utilization"] > 0).any()
    assert (samples["running_requests"] > 0).any()


@pytest.mark.parametrize("policy", ["reject", "truncate", "allow"])
def test_requests_past_the_models_context_are_handled_counted_and_warned_once(policy: str) -> None:
    # The Azure conversation trace against OPT-13B's 2,048-token context: 2,838 of its 19,366 requests exceed it
    # (prompt + output); the first 1,500 of them here.
    from workloads import load_request_trace

    full = load_request_trace("azure-conv")
    over_full = int(((full.prompt_tokens + full.output_tokens) > 2048).sum())
    assert (over_full, len(full)) == (2838, 19366)
    n = 1500
    trace = RequestTrace(arrival=full.arrival[:n], prompt_tokens=full.prompt_tokens[:n],
                         output_tokens=full.output_tokens[:n])
    over = (trace.prompt_tokens + trace.output_tokens) > 2048
    spec = ServiceSpec("chat", trace, replicas=4, model=get_model("opt-13b"), device="h100", context_limit=policy)
    with pytest.warns(UserWarning) as caught:
        results = Simulation(preset("dgx-h100", nodes=1), [], services=[spec]).run()
    context_warnings = [w for w in caught if "max_context" in str(w.message)]
    assert len(context_warnings) == 1 and f"{int(over.sum())} of {n} requests" in str(context_warnings[0].message)
    s, req = results.summary()["requests"], results.requests
    assert s["exceeds_max_context"] == int(over.sum()) > 0
    assert s["completed"] + s["rejected"] + s["unfinished"] == s["count"] == n
    long = req[over]
    if policy == "reject":
        assert (long["status"] == "rejected").all() and (long["reason"] == "exceeds_max_context").all()
        assert s["rejected"] == int(over.sum())
    elif policy == "truncate":
        assert (long["status"] == "finished").all() and (long["reason"] == "truncated_to_max_context").all()
        assert ((long["prompt_tokens"] + long["output_tokens"]) == 2048).all()
        kept = long["output_tokens"].to_numpy() == trace.output_tokens[over]
        assert kept.mean() > 0.9  # outputs are cut only when they alone reach the limit
    else:
        assert (long["status"] == "finished").all() and s["rejected"] == 0
        assert ((long["prompt_tokens"] + long["output_tokens"]) > 2048).all()


def test_context_limit_must_be_a_known_policy() -> None:
    with pytest.raises(ConfigError, match="context_limit must be one of reject, truncate, allow"):
        ServiceSpec("s", poisson_trace(1.0, 10, 0), replicas=1, model=get_model("llama-3.1-8b"),
                    context_limit="drop")
