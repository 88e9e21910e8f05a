"""Prefix caching (issue 17 item 2): requests with shared prefixes, the replica's prefix cache and its eviction,
the prefix-aware router, the session and system-prompt generators, and what the tables report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy

from sim import ContinuousBatching, PrefixCacheConfig, ServiceSpec, Simulation, preset
from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_services
from sim.output.results import Results
from sim.platform.hardware import get_device
from sim.random import RandomStreams
from sim.serving.prefix_cache import PrefixCache
from sim.serving.replica import BatchingConfig, BatchingReplica, ReplicaListener
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import StepCost
from workloads import (
    Deterministic,
    Exponential,
    InferenceRequest,
    LogNormal,
    Poisson,
    RequestTrace,
    Uniform,
    WorkloadError,
    generate_sessions,
    generate_system_prompt_requests,
    get_model,
    load_request_csv,
)

MODEL = get_model("llama-3.1-8b")
H100_8B = StepCost.for_replica(MODEL, get_device("h100"), 1, default_step_factors("h100-sxm"))
CACHE = ContinuousBatching(prefix_cache=True)


def run(trace: RequestTrace, *, replicas: int = 1, mode: ContinuousBatching = CACHE, router: str | dict = "round-robin",
        seed: int = 0, **options) -> Results:
    service = ServiceSpec("chat", trace, replicas=replicas, model=MODEL, device="h100", mode=mode)
    return Simulation(preset("dgx-h100", nodes=1), [], services=[service], router=router, seed=seed, **options).run()


def trace_of(rows: list[tuple[float, int, int, int, int]]) -> RequestTrace:
    """(arrival, prompt, output, prefix id, prefix tokens) rows."""
    arrival, prompt, output, ids, tokens = (list(c) for c in zip(*rows, strict=True))
    return RequestTrace(arrival=arrival, prompt_tokens=prompt, output_tokens=output, prefix_id=ids,
                        prefix_tokens=tokens)


def prefill(tokens: int, cached: int) -> float:
    """One prefill step of ``tokens`` new tokens attending to ``cached`` tokens already in the KV cache, alone."""
    return H100_8B.step(tokens, tokens * cached + tokens * (tokens + 1) / 2, cached + tokens, 1)


def sessions(seed: int = 1, count: int = 60, rate: float = 0.3) -> RequestTrace:
    return generate_sessions(Poisson(rate), Uniform(0, 6), Exponential(20.0), LogNormal(100, 1.0),
                             LogNormal(150, 1.0), RandomStreams(seed), count=count)


# ------------------------------------------------------------------------------------------------ a hit's saving
@pytest.mark.parametrize("block", [1, 16])
def test_a_hit_saves_exactly_the_cached_tokens_prefill(block: int) -> None:
    # at low load each request is alone: TTFT is one prefill step. The second request's first 1500 tokens are the
    # first request's prefix: it prefills only the rest, attending to the cached blocks
    trace = trace_of([(0.0, 2000, 20, 7, 1500), (100.0, 1800, 20, 7, 1500)])
    hit = 1500 - 1500 % block
    cached = run(trace, mode=ContinuousBatching(prefix_cache={"block_tokens": block}))
    plain = run(trace, mode=ContinuousBatching())
    ttft, base = cached.requests["ttft"].tolist(), plain.requests["ttft"].tolist()
    # exact up to the rounding of (arrival + step) - arrival
    assert ttft == pytest.approx([prefill(2000, 0), prefill(1800 - hit, hit)], rel=1e-12)
    assert base == pytest.approx([prefill(2000, 0), prefill(1800, 0)], rel=1e-12)
    assert base[1] - ttft[1] > 0.5 * (prefill(1800, 0) - prefill(300, 0))  # a real saving, not a rounding
    assert cached.requests["cached_tokens"].tolist() == [0, hit]
    summary = cached.summary()["requests"]["prefix_cache"]
    assert (summary["lookups"], summary["hits"], summary["hit_rate"]) == (2, 1, 0.5)
    assert summary["prefill_tokens_saved"] == hit
    assert summary["saved_fraction"] == pytest.approx(hit / 3800)
    replica = cached.replicas.iloc[0]
    assert (replica["prefix_hits"], replica["prefill_tokens_saved"]) == (1, hit)
    # TPOT is unchanged: decode steps read the same context either way
    assert cached.requests["tpot"].tolist() == pytest.approx(plain.requests["tpot"].tolist())


def test_a_partial_hit_reads_what_is_cached_and_at_least_one_token_is_computed() -> None:
    # turn 2's history (prefix 600) is longer than what turn 1 left cached (its context: 400 + 9 = 409 tokens);
    # turn 3's prompt is all prefix, within what turn 2 left (709 tokens): it still computes its last token
    trace = trace_of([(0.0, 400, 10, 3, 0), (50.0, 700, 10, 3, 600), (100.0, 705, 10, 3, 705)])
    sim = run(trace, mode=ContinuousBatching(prefix_cache={"block_tokens": 1}))
    requests = sim.requests
    assert requests["cached_tokens"].tolist() == [0, 409, 704]
    assert requests["ttft"].tolist() == pytest.approx([prefill(400, 0), prefill(700 - 409, 409), prefill(1, 704)],
                                                      rel=1e-12)
    assert sim.summary()["requests"]["prefix_cache"]["lookups"] == 2  # a prefix of 0 tokens is no lookup


# ------------------------------------------------------------------------------------------------ eviction
class Recorder(ReplicaListener):
    def __init__(self) -> None:
        self.finished_at: dict[int, float] = {}
        self.cached: dict[int, float] = {}

    def finished(self, request_id: int, time: float) -> None:
        self.finished_at[request_id] = time

    def record(self, request_id: int, column: str, value: float) -> None:
        self.cached[request_id] = value


def serve(rows: list[tuple[float, int, int, int, int]], *, kv_tokens: int, eviction: str = "lru", block: int = 1,
          coalesce: bool = True, probe: float | None = None) -> tuple[BatchingReplica, Recorder, dict]:
    """One replica serving (arrival, prompt, output, prefix id, prefix tokens) requests on a simpy clock;
    ``probe``: a time at which to copy the cache's entries."""
    env = simpy.Environment()
    recorder = Recorder()

    def call_at(time: float, fn) -> None:
        env.timeout(time - env.now).callbacks.append(lambda _e: fn())

    replica = BatchingReplica(0, H100_8B, kv_tokens, BatchingConfig(), recorder, call_at, coalesce=coalesce,
                              prefix_cache=PrefixCacheConfig(eviction=eviction, block_tokens=block))
    for i, (arrival, prompt, output, prefix_id, tokens) in enumerate(rows):
        env.timeout(arrival).callbacks.append(
            lambda _e, i=i, p=prompt, o=output, k=prefix_id, m=tokens: replica.arrive(i, p, o, env.now, k, m))
    seen: dict = {}
    if probe is not None:
        assert replica.prefix is not None
        env.timeout(probe).callbacks.append(lambda _e: seen.update(
            {k: (e.tokens, e.pinned) for k, e in replica.prefix.entries.items()}))
    env.run()
    return replica, recorder, seen


@pytest.mark.parametrize(("eviction", "left"), [("lru", {0: 400, 2: 100}), ("fifo", {1: 200, 2: 300})])
def test_eviction_order_on_a_tiny_cache_worked_by_hand(eviction: str, left: dict[int, int]) -> None:
    # a 1000-token cache. Three requests leave prefixes 0, 1, 2 of 300 tokens each (cached, unpinned: 900 of 1000).
    # The fourth reads prefix 0 (a use: LRU order 1, 2, 0) and leaves it 400 tokens long (its context): 1000 cached.
    # The fifth, with no prefix, reserves 500 tokens: 500 cached tokens go. LRU: all of prefix 1, then 200 of
    # prefix 2's tail; FIFO (creation order 0, 1, 2): all of prefix 0, then 100 of prefix 1.
    rows = [(0.0, 300, 1, 0, 300), (1.0, 300, 1, 1, 300), (2.0, 300, 1, 2, 300), (3.0, 400, 1, 0, 300),
            (4.0, 500, 1, -1, 0)]
    replica, recorder, _ = serve(rows, kv_tokens=1000, eviction=eviction)
    cache = replica.prefix
    assert cache is not None
    assert recorder.cached == {0: 0, 1: 0, 2: 0, 3: 300, 4: 0}
    assert {k: e.tokens for k, e in cache.entries.items()} == left
    assert cache.evicted == 500 and replica.kv_used == 0 and cache.evictable == 500
    assert [replica.cached_prefix_tokens(k) for k in range(3)] == [left.get(k, 0) for k in range(3)]


def test_eviction_takes_whole_blocks_from_the_least_recently_used_tail() -> None:
    cache = PrefixCache(PrefixCacheConfig(block_tokens=4))
    for prefix_id, tokens in ((1, 40), (2, 30), (3, 20)):  # 30 is cached as 28 (whole blocks)
        reading, held = cache.publish(prefix_id, 0, tokens)  # the request that computed them reads them ...
        assert held == reading == tokens - tokens % 4
        assert cache.unpin(prefix_id, reading) == -reading  # ... until it finishes
    assert cache.evictable == 88
    assert cache.pin(1, 40) == 40 and cache.unpin(1, 40) == -40  # a read: 1 is now the most recently used
    assert list(cache.entries) == [2, 3, 1]
    cache.shrink(60)  # 28 to evict: all of 2
    assert {k: e.tokens for k, e in cache.entries.items()} == {3: 20, 1: 40}
    cache.shrink(45)  # 15 to evict: 16 (four blocks) of 3's tail
    assert {k: e.tokens for k, e in cache.entries.items()} == {3: 4, 1: 40}
    assert (cache.evicted, cache.evictable) == (44, 44)
    assert cache.match(1, 100, 23) == (20, 20)  # whole blocks, at least one prompt token left to compute


def test_a_pinned_prefix_is_never_evicted() -> None:
    # prefixes 0 and 1 (300 tokens each) are cached; request 2 reads prefix 0 and decodes 649 tokens, request 3
    # reads prefix 1 later (so prefix 0, pinned, is the least recently used). As request 2's context grows to
    # 950 tokens, the 1000-token cache must evict: only prefix 1's tail can go, down to 50 tokens
    rows = [(0.0, 300, 1, 0, 300), (1.0, 300, 1, 1, 300), (2.0, 301, 650, 0, 300), (3.0, 301, 1, 1, 300)]
    replica, recorder, seen = serve(rows, kv_tokens=1000, probe=6.5, coalesce=False)  # the probe sees each step
    assert recorder.finished_at[2] > 6.5  # the probe saw request 2 running late in its decode
    assert seen[0] == (300, 300)  # pinned, whole, though least recently used
    assert 50 <= seen[1][0] < 301 and seen[1][1] == 0
    cache = replica.prefix
    assert cache is not None
    # at the end request 2's context (950 tokens) continues prefix 0; prefix 1 kept 50
    assert {k: e.tokens for k, e in cache.entries.items()} == {0: 950, 1: 50}
    assert cache.evicted == 251 and replica.kv_used == 0
    assert recorder.cached == {0: 0, 1: 0, 2: 300, 3: 300}


def check_cache(replica: BatchingReplica) -> None:
    """Invariants of a replica's KV accounting with a prefix cache."""
    cache = replica.prefix
    assert cache is not None
    readers: dict[int, list[int]] = {}
    own = 0
    for s in replica.batch:
        own += s.ctx - s.reading + (s.target - s.prefilled)
        if s.reading:
            readers.setdefault(s.prefix_id, []).append(s.reading)
    for prefix_id, entry in cache.entries.items():
        assert entry.tokens > 0 and entry.pinned <= entry.tokens and entry.tokens % cache.block == 0
        assert entry.pinned == max(readers.get(prefix_id, [0]))
        assert sorted(r for r, n in entry.readers.items() for _ in range(n)) == sorted(readers.get(prefix_id, []))
    assert set(readers) <= set(cache.entries)  # what a running request reads is still cached
    assert cache.evictable == sum(e.tokens - e.pinned for e in cache.entries.values())
    assert replica.kv_used == own + sum(e.pinned for e in cache.entries.values())
    assert replica.kv_used + cache.evictable <= replica.kv_capacity


@pytest.mark.parametrize(("seed", "block", "chunked"), [(0, 1, False), (1, 16, False), (2, 16, True), (3, 1, True)])
def test_kv_accounting_holds_at_every_step_under_pressure(seed: int, block: int, chunked: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # a small cache, sessions sharing few prefixes, long outputs: evictions, recomputes and pins all happen
    rng = np.random.default_rng(seed)
    n = 300
    arrival = np.cumsum(rng.exponential(0.05, n))
    prompt = rng.integers(50, 1500, n)
    ids = np.where(rng.random(n) < 0.8, rng.integers(0, 6, n), -1)
    tokens = np.where(ids >= 0, (prompt * rng.random(n)).astype(int), 0)
    rows = list(zip(arrival.tolist(), prompt.tolist(), rng.integers(1, 400, n).tolist(), ids.tolist(),
                    tokens.tolist(), strict=True))
    checked = []
    step = BatchingReplica._next_step

    def checked_step(self: BatchingReplica, now: float) -> None:
        check_cache(self)
        checked.append(now)
        step(self, now)

    monkeypatch.setattr(BatchingReplica, "_next_step", checked_step)
    env = simpy.Environment()
    evictions = []

    class Counting(Recorder):
        def evicted(self, request_id: int, time: float) -> None:
            evictions.append(request_id)

    recorder = Counting()
    replica = BatchingReplica(0, H100_8B, 6000, BatchingConfig(max_batched_tokens=1024, chunked_prefill=chunked),
                              recorder, lambda t, fn: env.timeout(t - env.now).callbacks.append(lambda _e: fn()),
                              prefix_cache=PrefixCacheConfig(block_tokens=block))
    for i, (a, p, o, k, m) in enumerate(rows):
        env.timeout(a).callbacks.append(lambda _e, i=i, p=p, o=o, k=k, m=m: replica.arrive(i, p, o, env.now, k, m))
    env.run()
    cache = replica.prefix
    assert cache is not None
    assert len(recorder.finished_at) == n and replica.kv_used == 0 and len(checked) > n
    assert cache.evicted > 0 and cache.hits > 0 and evictions  # the test is not vacuous
    assert cache.evictable == sum(e.tokens for e in cache.entries.values()) <= replica.kv_capacity


def test_coalesced_runs_give_the_step_by_step_times_with_prefix_caching() -> None:
    trace = sessions(seed=4, count=40, rate=1.0)
    rows = list(zip(trace.arrival.tolist(), trace.prompt_tokens.tolist(), trace.output_tokens.tolist(),
                    trace.prefix_id.tolist(), trace.prefix_tokens.tolist(), strict=True))
    a, ra, _ = serve(rows, kv_tokens=20_000, coalesce=True, block=16)
    b, rb, _ = serve(rows, kv_tokens=20_000, coalesce=False, block=16)
    assert ra.cached == rb.cached
    assert ra.finished_at.keys() == rb.finished_at.keys()
    for rid, t in ra.finished_at.items():
        assert t == pytest.approx(rb.finished_at[rid], rel=1e-11, abs=1e-9)
    assert a.prefix is not None and b.prefix is not None
    assert (a.prefix.hits, a.prefix.saved, a.prefix.evicted) == (b.prefix.hits, b.prefix.saved, b.prefix.evicted)
    assert a.prefix.evicted > 0


# ------------------------------------------------------------------------------------------------ the router
@dataclass
class FakeReplica:
    replica_id: int
    outstanding: int
    cached: dict[int, int] = field(default_factory=dict)
    accepting: bool = True
    num_queued: int = 0
    num_running: int = 0
    kv_free_bytes: float = math.inf
    kv_capacity_bytes: float = math.inf

    @property
    def kv_free_bytes_bounds(self) -> tuple[float, float]:
        return self.kv_free_bytes, self.kv_free_bytes

    def cached_prefix_tokens(self, prefix_id: int) -> int:
        return self.cached.get(prefix_id, 0)


@dataclass
class FakeRequest:
    prefix_id: int = -1
    prefix_tokens: int = 0
    request_id: int = 0
    arrival: float = 0.0
    prompt_tokens: int = 1000
    output_tokens: int = 10


def test_prefix_aware_router_prefers_the_longest_cached_prefix_within_the_load_threshold() -> None:
    from policies.routers import PrefixAware

    router, rng = PrefixAware(max_imbalance=2), np.random.default_rng(0)
    replicas = [FakeReplica(0, 1), FakeReplica(1, 3, {5: 800}), FakeReplica(2, 2, {5: 400}),
                FakeReplica(3, 9, {5: 900})]
    assert router.route(FakeRequest(5, 1000), replicas, rng) == 1  # 3 <= 1 + 2; replica 3 (9) is overloaded
    assert router.route(FakeRequest(5, 300), replicas, rng) == 2  # 300 match on 1 and 2: the less loaded
    assert router.route(FakeRequest(-1, 0), replicas, rng) == 0  # no prefix: least outstanding
    assert router.route(FakeRequest(6, 500), replicas, rng) == 0  # nobody holds it: least outstanding
    replicas[0].outstanding = 0
    assert router.route(FakeRequest(5, 1000), replicas, rng) == 2  # now 1 (3) is beyond 0 + 2: fall back to 2
    assert PrefixAware(max_imbalance=0).route(FakeRequest(5, 1000), replicas, rng) == 0
    replicas[0].accepting = replicas[2].accepting = False  # least loaded now 1 (3): 3 (9) still too loaded
    assert router.route(FakeRequest(5, 1000), replicas, rng) == 1
    assert router.route(FakeRequest(5, 1000), [FakeReplica(0, 0, {5: 900}, accepting=False)], rng) == -1
    with pytest.raises(ValueError, match="max_imbalance"):
        PrefixAware(max_imbalance=-1)


def test_prefix_aware_sends_a_sessions_turns_to_the_replica_holding_its_history() -> None:
    trace = sessions(seed=2, count=80, rate=0.3)
    aware = run(trace, replicas=4, router="prefix-aware")
    spread = run(trace, replicas=4, router="least-outstanding")
    table = aware.requests.assign(session=trace.prefix_id, history=trace.prefix_tokens)
    table = table.sort_values(["session", "arrival"], kind="stable")
    before = table.groupby("session")[["replica", "finish"]].shift()
    follows = (table["history"] > 0) & (table["arrival"] > before["finish"])  # the previous turn was done
    assert follows.sum() > 100
    assert (table["replica"][follows] == before["replica"][follows]).all()
    a = aware.summary()["requests"]["prefix_cache"]
    b = spread.summary()["requests"]["prefix_cache"]
    assert a["hits"] >= follows.sum() and a["hit_rate"] > 0.95 > b["hit_rate"] + 0.2
    assert a["prefill_tokens_saved"] > 1.5 * b["prefill_tokens_saved"]
    assert aware.summary()["requests"]["ttft"]["p99"] < spread.summary()["requests"]["ttft"]["p99"]


@pytest.mark.parametrize(("max_imbalance", "replica"), [(0, 1), (1, 0)])
def test_prefix_aware_falls_back_when_the_replica_with_the_history_is_overloaded(max_imbalance: int,
                                                                                 replica: int) -> None:
    # session 9's first turn goes to replica 0 (a tie: the lowest index) and finishes; three long requests without
    # a prefix then go to 0, 1, 0 (least outstanding). When the second turn comes, replica 0 holds its history
    # but has 2 outstanding against replica 1's 1
    trace = trace_of([(0.0, 500, 5, 9, 0), (5.0, 100, 3000, -1, 0), (5.1, 100, 3000, -1, 0),
                      (5.2, 100, 3000, -1, 0), (6.0, 700, 5, 9, 504)])
    sim = run(trace, replicas=2, router={"name": "prefix-aware", "max_imbalance": max_imbalance})
    requests = sim.requests
    assert requests["replica"].tolist() == [0, 0, 1, 0, replica]
    assert requests["cached_tokens"].iloc[-1] == (496 if replica == 0 else 0)  # its history, in whole blocks


# ------------------------------------------------------------------------------------------------ workloads
def test_shared_system_prompt_hit_rate_is_all_but_the_first() -> None:
    trace = generate_system_prompt_requests(Poisson(0.2), [1000], LogNormal(80, 1.0), LogNormal(100, 1.0),
                                            RandomStreams(3), count=200)
    assert (trace.prefix_id == 0).all() and (trace.prefix_tokens == 1000).all()
    summary = run(trace).summary()["requests"]["prefix_cache"]
    assert (summary["lookups"], summary["hits"]) == (200, 199)
    assert summary["prefill_tokens_saved"] == 199 * 992  # 1000 tokens cached in whole blocks of 16
    busy = generate_system_prompt_requests(Poisson(20.0), [1000], LogNormal(80, 1.0), LogNormal(100, 1.0),
                                           RandomStreams(3), count=2000)
    assert run(busy).summary()["requests"]["prefix_cache"]["hit_rate"] > 0.995


def test_system_prompts_are_picked_by_their_weights() -> None:
    trace = generate_system_prompt_requests(Poisson(5.0), [1500, 400, 64], Deterministic(10), Deterministic(5),
                                            RandomStreams(0), weights=[6, 3, 1], count=20_000)
    shares = np.bincount(trace.prefix_id, minlength=3) / len(trace)
    assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.015)
    assert (trace.prompt_tokens == np.array([1500, 400, 64])[trace.prefix_id] + 10).all()
    assert (trace.prefix_tokens == np.array([1500, 400, 64])[trace.prefix_id]).all()


def test_sessions_grow_their_history_turn_by_turn() -> None:
    trace = generate_sessions(Poisson(0.1), Deterministic(3), Deterministic(30.0), Deterministic(50),
                              Deterministic(20), RandomStreams(0), count=4)
    assert len(trace) == 12
    frame = pd.DataFrame({"arrival": trace.arrival, "prompt": trace.prompt_tokens, "session": trace.prefix_id,
                          "history": trace.prefix_tokens})
    for _, turns in frame.groupby("session"):
        assert turns["prompt"].tolist() == [50, 120, 190]  # history + 50 new tokens; each turn adds 50 + 20
        assert turns["history"].tolist() == [0, 70, 140]
        assert np.diff(turns["arrival"]).tolist() == pytest.approx([30.0, 30.0])
    assert (np.diff(trace.arrival) >= 0).all()
    starts = frame.groupby("session")["arrival"].min().to_numpy()
    assert starts == pytest.approx(Poisson(0.1).times(RandomStreams(0)["arrivals"], count=4))


def test_session_turn_counts_and_think_times_follow_their_distributions() -> None:
    trace = generate_sessions(Poisson(1.0), Uniform(0, 6), Exponential(25.0), LogNormal(100, 1.0),
                              LogNormal(150, 1.0), RandomStreams(5), count=4000)
    turns = np.bincount(trace.prefix_id)
    assert turns.min() == 1 and turns.max() == 6 and turns.mean() == pytest.approx(3.5, abs=0.1)
    frame = pd.DataFrame({"session": trace.prefix_id, "arrival": trace.arrival}).sort_values(
        ["session", "arrival"], kind="stable")
    gaps = frame.groupby("session")["arrival"].diff().dropna()
    assert gaps.mean() == pytest.approx(25.0, rel=0.05)


def test_generators_draw_each_attribute_from_its_own_stream() -> None:
    a = sessions(seed=7)
    b = generate_sessions(Poisson(0.3), Uniform(0, 6), Exponential(20.0), LogNormal(100, 1.0),
                          LogNormal(400, 1.0), RandomStreams(7), count=60)  # only the outputs differ
    assert a == sessions(seed=7)
    assert np.array_equal(np.sort(a.arrival), np.sort(b.arrival))
    assert np.array_equal(a.prefix_id, b.prefix_id) and not np.array_equal(a.output_tokens, b.output_tokens)


# ------------------------------------------------------------------------------------------------ the run
@pytest.mark.filterwarnings("ignore::sim.serving.service.ContextLimitWarning")
def test_no_request_is_lost_and_the_same_seed_gives_the_same_tables() -> None:
    trace = sessions(seed=3, count=150, rate=2.0)
    long = RequestTrace(arrival=np.insert(trace.arrival, 0, 0.0),
                        prompt_tokens=np.insert(trace.prompt_tokens, 0, 200_000),  # more than the model's context
                        output_tokens=np.insert(trace.output_tokens, 0, 10),
                        prefix_id=np.insert(trace.prefix_id, 0, 0), prefix_tokens=np.insert(trace.prefix_tokens, 0, 5))
    mode = ContinuousBatching(kv_reserve=0.78, prefix_cache=True)  # a small KV cache: evictions and recomputes
    for horizon in (None, 120.0):
        first = run(long, replicas=2, mode=mode, router="prefix-aware", horizon=horizon)
        counts = first.summary()["requests"]
        assert counts["count"] == len(long)
        assert counts["completed"] + counts["rejected"] + counts["unfinished"] + counts["not_arrived"] == len(long)
        assert counts["rejected"] == 1
        if horizon is None:
            assert counts["completed"] == len(long) - 1
            assert counts["prefix_cache"]["evicted_tokens"] > 0 and first.requests["kv_evictions"].sum() > 0
        else:
            assert counts["unfinished"] + counts["not_arrived"] > 0
        again = run(long, replicas=2, mode=mode, router="prefix-aware", horizon=horizon)
        for name in ("requests", "replicas", "replica_samples"):
            pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
        assert first.summary()["requests"] == again.summary()["requests"]


def test_off_by_default_and_the_tables_say_nothing_of_it() -> None:
    trace = sessions(seed=3, count=30)
    plain = RequestTrace(arrival=trace.arrival, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens)
    assert ContinuousBatching().prefix_cache is None and ContinuousBatching(prefix_cache=False).prefix_cache is None
    with_ids, without = run(trace, mode=ContinuousBatching()), run(plain, mode=ContinuousBatching())
    pd.testing.assert_frame_equal(with_ids.requests, without.requests)
    pd.testing.assert_frame_equal(with_ids.replicas, without.replicas)
    assert "cached_tokens" not in without.requests and "prefix_hits" not in without.replicas
    assert "prefix_cache" not in without.summary()["requests"]


def test_the_per_request_and_per_replica_figures_add_up() -> None:
    sim = run(sessions(seed=5, count=100, rate=1.0), replicas=3, router="prefix-aware")
    requests, replicas = sim.requests, sim.replicas
    summary = sim.summary()["requests"]["prefix_cache"]
    assert requests["cached_tokens"].sum() == replicas["prefill_tokens_saved"].sum() == summary["prefill_tokens_saved"]
    assert replicas["prefix_hit_rate"].tolist() == pytest.approx((replicas["prefix_hits"]
                                                                   / replicas["prefix_lookups"]).tolist())
    assert summary["hit_rate"] == replicas["prefix_hits"].sum() / replicas["prefix_lookups"].sum()
    assert (requests["cached_tokens"] <= requests["prompt_tokens"] - 1).all()


def test_a_prompt_truncated_to_the_context_loses_its_prefix() -> None:
    long = trace_of([(0.0, 1000, 10, 1, 1000), (10.0, 140_000, 10, 1, 1000)])
    service = ServiceSpec("chat", long, replicas=1, model=MODEL, device="h100", mode=CACHE, context_limit="truncate")
    with pytest.warns(UserWarning, match="exceed"):
        results = Simulation(preset("dgx-h100", nodes=1), [], services=[service]).run()
    assert results.requests["cached_tokens"].tolist() == [0, 0]


# ------------------------------------------------------------------------------------------------ input
def test_prefix_columns_in_a_csv_trace_and_a_bad_row_named(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text("t,inp,out,sid,hist\n0.0,100,10,-1,0\n1.0,300,10,4,200\n2.0,200,10,4,250\n")
    columns = {"arrival": "t", "prompt_tokens": "inp", "output_tokens": "out", "prefix_id": "sid",
               "prefix_tokens": "hist"}
    with pytest.raises(WorkloadError, match=r"line 4, field 'hist'.*250"):
        load_request_csv(path, columns=columns)
    path.write_text("t,inp,out,sid,hist\n0.0,100,10,-1,0\n1.0,300,10,4,200\n")
    trace = load_request_csv(path, columns=columns)
    assert trace.prefix_id.tolist() == [-1, 4] and trace.prefix_tokens.tolist() == [0, 200]
    assert trace[1] == InferenceRequest(1, 1.0, 300, 10, prefix_id=4, prefix_tokens=200)
    assert trace.replay(2.0) == RequestTrace.from_requests(list(trace.replay(2.0)), source=str(path))
    with pytest.raises(WorkloadError, match=r"prefix_tokens.*go together"):
        load_request_csv(path, columns={k: v for k, v in columns.items() if k != "prefix_tokens"})


@pytest.mark.parametrize(("columns", "message"), [
    ({"prefix_id": [0, 1], "prefix_tokens": [10, 201]}, r"^prefix_tokens: request 1: 201 is longer than the prompt"),
    ({"prefix_id": [0, 1], "prefix_tokens": [-1, 5]}, r"^prefix_tokens: request 0: must be >= 0, got -1$"),
    ({"prefix_id": [-2, 1], "prefix_tokens": [0, 5]}, r"^prefix_id: request 0: must be -1 \(none\)"),
    ({"prefix_id": [-1, 1], "prefix_tokens": [3, 5]}, r"^prefix_tokens: request 0: 3 without a prefix_id"),
    ({"prefix_id": [0, 1]}, r"^prefix_tokens: missing; prefix_id and prefix_tokens go together"),
    ({"prefix_id": [0.5, 1], "prefix_tokens": [0, 5]}, r"^prefix_id: must be whole numbers"),
    ({"prefix_id": [0, 1, 2], "prefix_tokens": [0, 5, 1]}, r"^prefix_id: has 3 items but arrival has 2"),
])
def test_bad_prefix_columns_are_one_line_errors_naming_the_field(columns: dict, message: str) -> None:
    with pytest.raises(WorkloadError, match=message) as info:
        RequestTrace(arrival=[0.0, 1.0], prompt_tokens=[100, 200], output_tokens=[5, 5], **columns)
    assert "\n" not in str(info.value)


def test_bad_requests_generators_and_options_are_one_line_errors_naming_the_field() -> None:
    cases = [
        (WorkloadError, r"^prefix_tokens: request 3: 150 is longer than the prompt \(100 tokens\)$",
         lambda: InferenceRequest(3, 0.0, 100, 5, prefix_id=1, prefix_tokens=150)),
        (WorkloadError, r"^sessions\.user_tokens: distribution produced -5\.0",
         lambda: generate_sessions(Poisson(1.0), Deterministic(2), Deterministic(1.0), Deterministic(-5),
                                   Deterministic(5), RandomStreams(0), count=3, where="sessions")),
        (WorkloadError, r"^think_time: distribution produced -1\.0 for turn 0",
         lambda: generate_sessions(Poisson(1.0), Deterministic(2), Deterministic(-1.0), Deterministic(5),
                                   Deterministic(5), RandomStreams(0), count=3)),
        (WorkloadError, r"^turns: distribution produced 0\.0",
         lambda: generate_sessions(Poisson(1.0), Deterministic(0), Deterministic(1.0), Deterministic(5),
                                   Deterministic(5), RandomStreams(0), count=3)),
        (WorkloadError, r"^rngs: missing random stream 'turns'; needed: arrivals, turns, think_time",
         lambda: generate_sessions(Poisson(1.0), Deterministic(2), Deterministic(1.0), Deterministic(5),
                                   Deterministic(5), {"arrivals": np.random.default_rng(0)}, count=3)),
        (WorkloadError, r"^system_tokens: expected a non-empty list of positive whole token counts",
         lambda: generate_system_prompt_requests(Poisson(1.0), [100, -3], Deterministic(5), Deterministic(5),
                                                 RandomStreams(0), count=3)),
        (WorkloadError, r"^weights: expected 2 non-negative weights",
         lambda: generate_system_prompt_requests(Poisson(1.0), [100, 30], Deterministic(5), Deterministic(5),
                                                 RandomStreams(0), weights=[1.0], count=3)),
        (ConfigError, r"^prefix_cache\.eviction: unknown eviction policy 'mru'.*valid: lru, fifo$",
         lambda: ContinuousBatching(prefix_cache={"eviction": "mru"})),
        (ConfigError, r"^prefix_cache\.block_tokens: must be a positive integer, got 0$",
         lambda: PrefixCacheConfig(block_tokens=0)),
        (ConfigError,
         r"^prefix_cache\.evict: unknown key \(did you mean 'eviction'\?\); valid: eviction, block_tokens$",
         lambda: ContinuousBatching(prefix_cache={"evict": "lru"})),
        (ConfigError, r"^prefix_cache: expected true, false",
         lambda: ContinuousBatching(prefix_cache="lru")),
    ]
    for error, message, make in cases:
        with pytest.raises(error, match=message) as info:
            make()
        assert "\n" not in str(info.value), message


def test_prefix_cache_in_a_config_file_and_its_errors_name_the_key() -> None:
    service = {"name": "chat", "requests": 10, "prefix_cache": {"eviction": "fifo", "block_tokens": 4}}
    config = load_config({"workload": {"inference": {"services": [service]}}})
    mode = build_services(config.workload.inference.services, 0)[0].mode
    assert isinstance(mode, ContinuousBatching) and mode.prefix_cache == PrefixCacheConfig("fifo", 4)
    config = load_config({"workload": {"inference": {"services": [{**service, "prefix_cache": {"eviction": "mru"}}]}}})
    with pytest.raises(ConfigError, match=r"^workload\.inference\.services\[0\]\.prefix_cache\.eviction: unknown "):
        build_services(config.workload.inference.services, 0)
