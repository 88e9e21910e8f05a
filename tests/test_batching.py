"""Continuous batching: coalesced decode runs give the same per-token times as a step-by-step simulation,
and the step-time model's closed-form sums equal the step-by-step sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from helpers import Recorder

from sim.platform.hardware import get_device
from sim.serving.replica import BatchingConfig, BatchingReplica
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import StepCost
from workloads import get_model

H100_8B = StepCost.for_replica(get_model("llama-3.1-8b"), get_device("h100"), 1, default_step_factors("h100-sxm"))


def serve(requests: list[tuple[float, int, int]], *, coalesce: bool, kv_tokens: int = 1_000_000,
          config: BatchingConfig | None = None, cost: StepCost = H100_8B) -> tuple[Recorder, BatchingReplica, int]:
    """Run one replica on (arrival, prompt, output) requests; returns the recorder, replica and event count."""
    env = simpy.Environment()
    recorder = Recorder()

    def call_at(time: float, fn) -> None:  # same rule in both modes: at one instant, earlier-created first
        ev = env.timeout(time - env.now)
        ev.callbacks.append(lambda _e: fn())

    replica = BatchingReplica(0, cost, kv_tokens, config or BatchingConfig(), recorder, call_at, coalesce=coalesce)
    for i, (arrival, prompt, output) in enumerate(requests):
        ev = simpy.events.Timeout(env, arrival, value=None)
        ev.callbacks.append(lambda _e, i=i, p=prompt, o=output: replica.arrive(i, p, o, env.now))
    events = 0
    while env.peek() != math.inf:
        env.step()
        events += 1
    return recorder, replica, events


def random_requests(seed: int, n: int, rate: float, prompt_max: int, output_max: int) -> list[tuple[float, int, int]]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    prompts = rng.integers(1, prompt_max + 1, n)
    outputs = rng.integers(1, output_max + 1, n)
    return [(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs, strict=True)]


def assert_same_times(a: Recorder, b: Recorder) -> None:
    for kind in a.times:
        assert a.times[kind].keys() == b.times[kind].keys(), kind
        for rid, t in a.times[kind].items():
            # equal up to float rounding of a closed-form sum against a running sum
            assert t == pytest.approx(b.times[kind][rid], rel=1e-11, abs=1e-9), (kind, rid)
    assert [r for r, _ in a.evictions] == [r for r, _ in b.evictions]


@pytest.mark.parametrize("config", [BatchingConfig(), BatchingConfig(max_seqs=4),
                                    BatchingConfig(max_batched_tokens=512, chunked_prefill=True),
                                    BatchingConfig(max_batched_tokens=300)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_coalesced_equals_step_by_step(config: BatchingConfig, seed: int) -> None:
    requests = random_requests(seed, 60, rate=4.0, prompt_max=800, output_max=300)
    exact, _, exact_events = serve(requests, coalesce=False, config=config)
    coalesced, replica, events = serve(requests, coalesce=True, config=config)
    assert_same_times(coalesced, exact)
    assert len(coalesced.times["finished"]) == len(requests)
    assert events < exact_events / 3  # coalescing is the point: far fewer engine events
    _, exact_replica, _ = serve(requests, coalesce=False, config=config)
    assert replica.flops == pytest.approx(exact_replica.flops, rel=1e-12)  # MFU accounting in closed form too
    assert replica.steps == exact_replica.steps
    assert replica.kv_used == 0 and not replica.num_running and not replica.waiting


@pytest.mark.parametrize("seed", [4, 5])
def test_kv_pressure_preempts_and_recomputes_identically(seed: int) -> None:
    requests = random_requests(seed, 40, rate=20.0, prompt_max=400, output_max=400)
    exact, _, _ = serve(requests, coalesce=False, kv_tokens=2_000)
    coalesced, replica, _ = serve(requests, coalesce=True, kv_tokens=2_000)
    assert exact.evictions, "the case must actually exercise KV-cache eviction"
    assert_same_times(coalesced, exact)
    assert len(coalesced.times["finished"]) == len(requests) and replica.kv_used == 0


def test_single_request_timing_is_the_step_model_by_hand() -> None:
    # One request, prompt 100, output 3, alone: a prefill step (100 tokens of one sequence), then 2 decode steps
    # with contexts 101 and 102 (each writes the last emitted token's KV and attends to everything).
    c = H100_8B
    prefill = c.step(100, 100 * 101 / 2, 100, 1)
    d1, d2 = c.decode_step(1, 101), c.decode_step(1, 102)
    rec, replica, _ = serve([(0.0, 100, 3)], coalesce=True)
    assert rec.times["first_token"][0] == pytest.approx(prefill, rel=1e-12)
    assert rec.times["finished"][0] == pytest.approx(prefill + d1 + d2, rel=1e-12)
    assert replica.steps == 3
    assert d1 == c.step(1, 101, 101, 1) and d2 - d1 == pytest.approx(c.kv_read_per_token, rel=1e-9)
    assert replica.flops == pytest.approx(c.flops(100, 5050, 1) + c.flops(1, 101, 1) + c.flops(1, 102, 1), rel=1e-12)


def test_decode_run_closed_form_matches_the_step_sum() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        batch = int(rng.integers(1, 600))
        context = float(rng.integers(batch, 3_000_000))
        steps = int(rng.integers(1, 2000))
        total = sum(H100_8B.decode_step(batch, context + k * batch) for k in range(steps))
        assert H100_8B.decode_run(batch, context, steps) == pytest.approx(total, rel=1e-12)
        budget = float(rng.uniform(0, 1.2 * total))
        k = H100_8B.decode_steps_within(batch, context, budget, steps)
        assert H100_8B.decode_run(batch, context, k) <= budget
        assert k == steps or H100_8B.decode_run(batch, context, k + 1) > budget


def test_kv_free_bytes_counts_waiting_prefills_and_returns_to_full() -> None:
    # Waiting requests promise their prompt's KV, so kv-aware routing sees a burst as it builds up.
    env_calls: list[tuple[float, object]] = []
    replica = BatchingReplica(0, H100_8B, 10_000, BatchingConfig(), Recorder(),
                              lambda t, fn: env_calls.append((t, fn)))
    full = replica.kv_free_bytes
    replica.arrive(0, 1000, 10, 0.0)  # admitted at once: the batch holds its prompt
    replica.arrive(1, 3000, 10, 0.0)  # waits for the next step boundary
    assert replica.kv_free_bytes == full - (1000 + 3000) * H100_8B.kv_bytes_per_token
    while env_calls:  # run the replica to the end by hand, in time order
        env_calls.sort(key=lambda tf: tf[0])
        _, fn = env_calls.pop(0)
        fn()
    assert replica.kv_free_bytes == full and replica.outstanding == 0
