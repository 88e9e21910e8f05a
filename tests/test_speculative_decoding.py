"""Speculative decoding (issue 17, item 3): the expected tokens per iteration against a Monte Carlo of the
acceptance process, step costs by hand, token and FLOP counts that add up, no request lost, determinism, and bad
input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from helpers import Recorder

from sim import Cluster, PoolSpec, Simulation
from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import run_config
from sim.platform.hardware import get_device
from sim.policy_checks import check_same_results, check_serving_run
from sim.random import RandomStreams
from sim.serving.prefix_cache import PrefixCacheConfig
from sim.serving.replica import BatchingConfig
from sim.serving.service import ContinuousBatching, ServiceSpec
from sim.serving.speculative import (
    SpeculativeDecoding,
    SpeculativeStepCost,
    acceptance_uniforms,
    accepted_counts,
    expected_tokens,
)
from sim.serving.speculative_replica import SpeculativeReplica
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import StepCost
from workloads import RequestTrace, get_model

Z_999 = 3.291  # two-sided 99.9% normal quantile: the Monte Carlo checks fail about once in a thousand seeds
TARGET, DRAFT = get_model("llama-3.1-8b"), get_model("llama-3.2-1b")
H100 = get_device("h100")
FACTORS = default_step_factors("h100-sxm")
TARGET_COST = StepCost.for_replica(TARGET, H100, 1, FACTORS)
DRAFT_COST = StepCost.for_replica(DRAFT, H100, 1, FACTORS)
ONE_H100 = Cluster([PoolSpec("h100", nodes=1, devices_per_node=1)])


def service(trace: RequestTrace, speculative: dict | None, *, replicas: int = 1, **mode: object) -> ServiceSpec:
    return ServiceSpec("chat", trace, replicas=replicas, model=TARGET,
                       mode=ContinuousBatching(speculative=speculative, **mode))  # type: ignore[arg-type]


def one_request(prompt: int, output: int) -> RequestTrace:
    return RequestTrace(arrival=np.array([1.0]), prompt_tokens=np.array([prompt]), output_tokens=np.array([output]))


def poisson(n: int, rate: float, seed: int, prompt_max: int = 1500, output_max: int = 300) -> RequestTrace:
    rng = np.random.default_rng(seed)
    return RequestTrace(arrival=np.cumsum(rng.exponential(1 / rate, n)), prompt_tokens=rng.integers(1, prompt_max, n),
                        output_tokens=rng.integers(1, output_max, n))


# ------------------------------------------------------------------------------------------ the formula
@pytest.mark.parametrize(("a", "k"), [(0.3, 1), (0.6, 3), (0.8, 5), (0.9, 8)])
def test_expected_tokens_formula_against_a_monte_carlo_of_the_acceptance_process(a: float, k: int) -> None:
    # Leviathan et al. 2023, eq. 1: E = (1 - a^(k+1)) / (1 - a). The process: the draft proposes k tokens; the
    # target accepts each with probability a, in order, until the first rejection; it then adds one token.
    rng = np.random.default_rng(17)
    draws = 200_000
    accepted = rng.random((draws, k)) < a
    run = np.where(accepted.all(axis=1), k, np.argmin(accepted, axis=1))  # accepted before the first rejection
    tokens = run + 1
    half = Z_999 * tokens.std(ddof=1) / math.sqrt(draws)
    assert abs(tokens.mean() - expected_tokens(a, k)) <= half
    # the simulator's own draws (inverse transform of SplitMix64 uniforms) follow the same law
    ids = np.arange(2_000)
    simulated = accepted_counts(acceptance_uniforms(12345, ids, np.zeros(ids.size, dtype=np.int64), 100), a, k) + 1
    half = Z_999 * simulated.std(ddof=1) / math.sqrt(simulated.size)
    assert abs(simulated.mean() - expected_tokens(a, k)) <= half
    everything = (simulated == k + 1).mean()  # P(all k accepted) = a^k
    assert abs(everything - a**k) <= Z_999 * math.sqrt(a**k * (1 - a**k) / simulated.size)
    assert SpeculativeDecoding("llama-3.2-1b", k, a).expected_tokens == pytest.approx(sum(a**j for j in range(k + 1)))


def test_a_request_draws_the_same_whatever_the_run_it_is_in() -> None:
    whole = acceptance_uniforms(99, np.array([5, 7]), np.array([0, 3]), 6)
    later = acceptance_uniforms(99, np.array([7]), np.array([5]), 4)
    assert np.array_equal(whole[2:, 1], later[:, 0])
    assert not np.array_equal(whole, acceptance_uniforms(98, np.array([5, 7]), np.array([0, 3]), 6))


# ------------------------------------------------------------------------------------------ costs by hand
def verify_seconds(k: int, context: int) -> float:
    """The target's verify step of one sequence with ``context`` KV tokens: k + 1 positions, each with its head."""
    k1 = k + 1
    return TARGET_COST.step(k1, k1 * context + k1 * (k1 + 1) / 2, context + k1, k1)


def draft_seconds(k: int, context: int) -> float:
    """k draft decode steps of one sequence: step j attends its context plus j + 1 tokens."""
    return sum(DRAFT_COST.decode_step(1, context + j + 1) for j in range(k))


def test_acceptance_zero_yields_one_token_per_iteration_and_costs_draft_plus_verify() -> None:
    prompt, output, k = 700, 40, 3
    plain = Simulation(ONE_H100, [], services=[service(one_request(prompt, output), None)]).run()
    spec = Simulation(ONE_H100, [], services=[service(one_request(prompt, output),
                                                      {"draft": "llama-3.2-1b", "k": k, "acceptance": 0.0})]).run()
    row = spec.requests.iloc[0]
    assert row["draft_tokens"] == k * (output - 1) and row["draft_accepted"] == 0
    assert row["draft_rejected"] == k * (output - 1)
    # after the prefill the sequence holds the prompt; iteration i starts with prompt + i tokens
    by_hand = sum(draft_seconds(k, prompt + i) + verify_seconds(k, prompt + i) for i in range(output - 1))
    assert row["tpot"] == pytest.approx(by_hand / (output - 1), rel=1e-9)
    plain_tpot = plain.requests["tpot"].iloc[0]
    assert plain_tpot == pytest.approx(sum(TARGET_COST.decode_step(1, prompt + i + 1) for i in range(output - 1))
                                       / (output - 1), rel=1e-9)
    assert row["tpot"] > plain_tpot
    # the draft prefills the prompt too: TTFT is both models' prefill step
    attended = prompt * (prompt + 1) / 2
    assert row["ttft"] == pytest.approx(TARGET_COST.step(prompt, attended, prompt, 1)
                                        + DRAFT_COST.step(prompt, attended, prompt, 1), rel=1e-9)
    # FLOPs: the draft's prefill and k decode steps per iteration; k wasted verify positions per iteration
    replica = spec.replicas.iloc[0]
    draft_flops = DRAFT_COST.flops(prompt, attended, 1) + sum(
        DRAFT_COST.decode_run_flops(1, prompt + i + 1, k) for i in range(output - 1))
    assert replica["draft_flops"] == pytest.approx(draft_flops, rel=1e-9)
    per_position = TARGET_COST.flops_per_token + TARGET_COST.head_flops
    wasted = sum(k * per_position + TARGET_COST.attention_flops * sum(prompt + i + q for q in range(2, k + 2))
                 for i in range(output - 1))
    assert replica["rejected_flops"] == pytest.approx(wasted, rel=1e-9)
    # more time busy, more energy for the same tokens
    assert spec.services["kwh_per_million_tokens"].iloc[0] > plain.services["kwh_per_million_tokens"].iloc[0]
    assert spec.services["speculation_flops_share"].iloc[0] > 0


@pytest.mark.parametrize("draft", ["llama-3.2-1b", 0.15])
def test_low_load_tpot_is_the_drawn_iterations_costed_by_hand(draft: str | float) -> None:
    prompt, output, k, a, seed = 1200, 90, 4, 0.75, 5
    results = Simulation(ONE_H100, [], seed=seed, services=[
        service(one_request(prompt, output), {"draft": draft, "k": k, "acceptance": a})]).run()
    row = results.requests.iloc[0]
    # the request's draws: its service's stream key (sim.serving.speculative), request 0, draws 0, 1, ...
    key = int(RandomStreams(seed)["speculative:chat"].integers(0, 2**63))
    drawn = accepted_counts(acceptance_uniforms(key, np.array([0]), np.array([0]), output)[:, 0], a, k) + 1
    context, left, seconds, iterations = prompt, output - 1, 0.0, 0
    for tokens in drawn:
        if left == 0:
            break
        if isinstance(draft, str):
            seconds += draft_seconds(k, context)
        else:
            seconds += draft * sum(TARGET_COST.decode_step(1, context + j + 1) for j in range(k))
        seconds += verify_seconds(k, context)
        kept = min(int(tokens), left)
        context, left, iterations = context + kept, left - kept, iterations + 1
    assert row["tpot"] == pytest.approx(seconds / (output - 1), rel=1e-9)
    assert row["draft_tokens"] == k * iterations
    assert row["draft_accepted"] == output - 1 - iterations
    assert iterations < output - 1  # speculation paid: fewer iterations than tokens


def test_more_acceptance_fewer_iterations_and_a_cheap_draft_beats_plain_decoding() -> None:
    trace = poisson(200, 2.0, seed=3)
    plain = Simulation(ONE_H100, [], services=[service(trace, None)]).run()
    tpot = {a: Simulation(ONE_H100, [], services=[service(trace, {"draft": 0.05, "k": 4, "acceptance": a})]).run()
            .requests["tpot"].mean() for a in (0.0, 0.5, 0.9)}
    assert tpot[0.0] > tpot[0.5] > tpot[0.9]
    assert tpot[0.9] < plain.requests["tpot"].mean() < tpot[0.0]


# ------------------------------------------------------------------------------------------ invariants
def with_prefixes(trace: RequestTrace, seed: int) -> RequestTrace:
    """``trace`` with 70% of its requests starting with half their prompt from one of four shared prefixes."""
    rng = np.random.default_rng(seed)
    ids = np.where(rng.random(len(trace)) < 0.7, rng.integers(0, 4, len(trace)), -1)
    return RequestTrace(arrival=trace.arrival, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens,
                        prefix_id=ids, prefix_tokens=np.where(ids >= 0, trace.prompt_tokens // 2, 0))


@pytest.mark.parametrize("mode", [{}, {"batching": BatchingConfig(max_batched_tokens=512, chunked_prefill=True)},
                                  {"kv_reserve": 0.70}, {"kv_reserve": 0.70, "prefix_cache": True}])
def test_no_request_lost_and_counted_tokens_add_up(mode: dict) -> None:
    trace = poisson(400, 12.0, seed=11, prompt_max=3000, output_max=600)
    if "prefix_cache" in mode:
        trace = with_prefixes(trace, seed=1)
    k = 3
    spec = service(trace, {"draft": "llama-3.2-1b", "k": k, "acceptance": 0.7}, replicas=2, **mode)
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)])
    sim = Simulation(cluster, [], services=[spec], seed=2, record_events=True)
    results = sim.run()
    check_serving_run(sim, results)  # completed + rejected + unfinished = arrived, and the serving invariants
    counts = results.summary()["requests"]
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] == counts["count"] == len(trace)
    done = results.requests[results.requests["status"] == "finished"]
    assert len(done) > 300
    assert (done["draft_accepted"] + done["draft_rejected"] == done["draft_tokens"]).all()
    assert (done["draft_tokens"] % k == 0).all()
    # output = one token per prefill (recomputes included) + one per verify step + the accepted draft tokens
    # (+ one-token decodes beside prompt chunks in chunked-prefill steps)
    steps = done["draft_tokens"] // k
    produced = 1 + done["kv_evictions"] + steps + done["draft_accepted"]
    if mode.get("batching") is None:
        assert (produced == done["output_tokens"]).all()
    else:
        assert (produced <= done["output_tokens"]).all() and (produced < done["output_tokens"]).any()
    if "kv_reserve" in mode:
        assert done["kv_evictions"].sum() > 0  # the cache filled: sequences were evicted and recomputed
    if "prefix_cache" in mode:
        assert (done["cached_tokens"] > 0).sum() > 100  # prefix hits skipped prefill (the draft's too)
    replicas = results.replicas
    for column in ("draft_tokens", "draft_accepted", "draft_rejected"):
        assert replicas[column].sum() == results.requests[column].sum()
    assert (replicas["draft_tokens"] == replicas["draft_accepted"] + replicas["draft_rejected"]).all()
    assert (replicas["draft_flops"] + replicas["rejected_flops"] < replicas["flops"]).all()


def test_same_seed_same_tables_and_the_seed_drives_the_draws() -> None:
    trace = poisson(150, 6.0, seed=4)

    def run(seed: int):
        return Simulation(ONE_H100, [], seed=seed, record_events=True, services=[
            service(trace, {"draft": "llama-3.2-1b", "k": 4, "acceptance": 0.6})]).run()

    first = run(1)
    check_same_results(first, run(1))
    assert not first.requests["draft_accepted"].equals(run(2).requests["draft_accepted"])


def serve(requests: RequestTrace, *, coalesce: bool, kv_tokens: int,
          prefix_cache: PrefixCacheConfig | None = None) -> tuple[Recorder, SpeculativeReplica]:
    env = simpy.Environment()
    recorder = Recorder()

    def call_at(time: float, fn) -> None:
        recorder.events += 1
        env.timeout(time - env.now).callbacks.append(lambda _e: fn())

    cost = SpeculativeStepCost.build(TARGET_COST, DRAFT_COST, SpeculativeDecoding("llama-3.2-1b", 4, 0.8))
    replica = SpeculativeReplica(0, cost, kv_tokens, BatchingConfig(max_seqs=16), recorder, call_at, acceptance=0.8,
                                 key=7, coalesce=coalesce, prefix_cache=prefix_cache)
    n = len(requests)
    ids = requests.prefix_id if requests.prefix_id is not None else np.full(n, -1)
    shared = requests.prefix_tokens if requests.prefix_tokens is not None else np.zeros(n, dtype=np.int64)
    for i, row in enumerate(zip(requests.arrival, requests.prompt_tokens, requests.output_tokens, ids, shared,
                                strict=True)):
        arrival, prompt, output, prefix_id, prefix_tokens = row

        def arrive(_e, i=i, p=int(prompt), o=int(output), k=int(prefix_id), m=int(prefix_tokens)) -> None:
            replica.arrive(i, p, o, env.now, k, m)
            cache = replica.prefix  # the KV accounting holds at every arrival: in use plus evictable fit
            assert cache is None or replica.kv_used + cache.evictable <= replica.kv_capacity

        env.timeout(float(arrival)).callbacks.append(arrive)
    env.run()
    assert replica.kv_used == 0 and not replica.batch and not replica.waiting
    return recorder, replica


@pytest.mark.parametrize(("kv_tokens", "prefixes"), [(1_000_000, False), (6_000, False), (8_000, True)])
def test_coalesced_runs_equal_the_step_by_step_reference(kv_tokens: int, prefixes: bool) -> None:
    trace = poisson(120, 8.0, seed=9, prompt_max=2000, output_max=400)
    cache = None
    if prefixes:  # shared prefixes and a prefix cache
        trace, cache = with_prefixes(trace, seed=1), PrefixCacheConfig(block_tokens=16)
    (a, ra), (b, rb) = (serve(trace, coalesce=c, kv_tokens=kv_tokens, prefix_cache=cache) for c in (True, False))
    assert len(a.times["finished"]) == len(trace)
    for kind, times in a.times.items():
        assert times.keys() == b.times[kind].keys()
        for rid, t in times.items():
            assert t == pytest.approx(b.times[kind][rid], rel=1e-11, abs=1e-9), (kind, rid)
    assert a.columns == b.columns and [r for r, _ in a.evictions] == [r for r, _ in b.evictions]
    assert bool(a.evictions) == (kv_tokens < 10_000)  # the small cache does evict and recompute
    if prefixes:
        assert ra.prefix is not None and rb.prefix is not None and ra.prefix.hits == rb.prefix.hits > 0
    assert a.events < b.events / 2  # coalescing is the point: far fewer engine events
    assert (ra.draft_tokens, ra.draft_accepted, ra.steps) == (rb.draft_tokens, rb.draft_accepted, rb.steps)
    assert ra.flops == pytest.approx(rb.flops, rel=1e-9)
    assert ra.rejected_flops == pytest.approx(rb.rejected_flops, rel=1e-9)
    assert ra.busy_seconds == pytest.approx(rb.busy_seconds, rel=1e-9)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("option", "message"), [
    ({"draft": "llama-3.2-1b", "k": 0, "acceptance": 0.5}, r"speculative\.k: .*integer >= 1, got 0"),
    ({"draft": "llama-3.2-1b", "k": 2.5, "acceptance": 0.5}, r"speculative\.k: .*got 2\.5"),
    ({"draft": "llama-3.2-1b", "k": True, "acceptance": 0.5}, r"speculative\.k: .*got True"),
    ({"draft": "llama-3.2-1b", "k": 2, "acceptance": 1.0}, r"speculative\.acceptance: .*\[0, 1\), got 1\.0"),
    ({"draft": "llama-3.2-1b", "k": 2, "acceptance": -0.1}, r"speculative\.acceptance: .*got -0\.1"),
    ({"draft": "llama-3.2-1b", "k": 2, "acceptance": math.nan}, r"speculative\.acceptance: .*got nan"),
    ({"draft": "llama-9b", "k": 2, "acceptance": 0.5}, r"speculative\.draft: unknown model 'llama-9b'"),
    ({"draft": "resnet-50", "k": 2, "acceptance": 0.5}, r"speculative\.draft: resnet-50 is not a language model"),
    ({"draft": 0.0, "k": 2, "acceptance": 0.5}, r"speculative\.draft: .*fraction .* \(0, 1\), got 0\.0"),
    ({"draft": 1.0, "k": 2, "acceptance": 0.5}, r"speculative\.draft: .*got 1\.0"),
    ({"draft": 0.1, "k": 2}, r"speculative\.acceptance: missing"),
    ({"draft": 0.1, "k": 2, "acceptance": 0.5, "lookahead": 3}, r"speculative\.lookahead: unknown key"),
])
def test_bad_input_is_a_one_line_error_naming_the_service_and_field(option: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ContinuousBatching(speculative=option)
    assert "\n" not in str(info.value)
    config = load_config({"cluster": {"preset": "dgx-h100", "nodes": 1}, "workload": {"inference": {"services": [
        {"name": "chat", "requests": 5, "speculative": option}]}}})
    with pytest.raises(ConfigError, match=r"services\[0\] \(service 'chat'\): " + message) as info:
        run_config(config)
    assert "\n" not in str(info.value)


def test_a_draft_must_be_smaller_than_its_target_and_fit_beside_it() -> None:
    with pytest.raises(ConfigError, match=r"service 'chat': speculative\.draft llama-3\.1-70b .* is not smaller than "
                                          r"the target llama-3\.1-8b"):
        service(one_request(10, 10), {"draft": "llama-3.1-70b", "k": 2, "acceptance": 0.5})
    with pytest.raises(ConfigError, match=r"service 'chat': speculative\.draft llama-3\.1-8b .* is not smaller"):
        service(one_request(10, 10), {"draft": "llama-3.1-8b", "k": 2, "acceptance": 0.5})
    big = ServiceSpec("chat", one_request(10, 10), replicas=1, model=get_model("llama-3.1-70b"), devices_per_replica=2,
                      mode=ContinuousBatching(speculative={"draft": "qwen2.5-14b", "k": 2, "acceptance": 0.5}))
    with pytest.raises(ConfigError, match=r"service 'chat': model llama-3\.1-70b with its draft qwen2\.5-14b .* does "
                                          r"not fit"):
        Simulation(Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)]), [], services=[big]).run()
    config = load_config({"cluster": {"preset": "dgx-h100", "nodes": 1}, "workload": {"inference": {"services": [
        {"name": "chat", "requests": 5, "mode": "fixed-service", "service_time": {"dist": "exponential", "mean": 1},
         "speculative": {"draft": 0.1, "k": 2, "acceptance": 0.5}}]}}})
    with pytest.raises(ConfigError, match=r"speculative \(service 'chat'\): speculative decoding is for "
                                          r"continuous-batching"):
        run_config(config)


def test_the_draft_shares_the_replicas_memory() -> None:
    def kv_tokens(speculative: dict | None) -> int:
        sim = Simulation(ONE_H100, [], services=[service(one_request(10, 10), speculative)])
        return sim.services[0].kv_tokens

    hbm = H100.memory_bytes * 0.9
    assert kv_tokens(None) == int((hbm - TARGET.weight_bytes) // TARGET.kv_bytes_per_token)
    assert kv_tokens({"draft": "llama-3.2-1b", "k": 2, "acceptance": 0.5}) == int(
        (hbm - TARGET.weight_bytes - DRAFT.weight_bytes) // (TARGET.kv_bytes_per_token + DRAFT.kv_bytes_per_token))
    assert kv_tokens({"draft": 0.1, "k": 2, "acceptance": 0.5}) == kv_tokens(None)  # an assumption: no memory
