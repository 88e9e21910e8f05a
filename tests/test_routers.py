"""Behaviour of each built-in router on small hand-made replica states, and the randomized ones' statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from policies.routers import (
    NO_REPLICA,
    JoinShortestQueue,
    KvAware,
    LeastOutstanding,
    PowerOfTwo,
    RandomRouter,
    RoundRobin,
)
from sim import registry
from sim.errors import ConfigError
from sim.serving.contracts import ReplicaView, Router

ALL = ("round-robin", "random", "least-outstanding", "join-shortest-queue", "power-of-two", "kv-aware",
       "prefix-aware")


@dataclass(frozen=True)
class FakeReplica:
    """A ReplicaView with fixed numbers."""

    replica_id: int
    num_queued: int = 0
    num_running: int = 0
    kv_free_bytes: float = math.inf
    kv_capacity_bytes: float = math.inf
    accepting: bool = True

    @property
    def kv_free_bytes_bounds(self) -> tuple[float, float]:
        return self.kv_free_bytes, self.kv_free_bytes

    @property
    def outstanding(self) -> int:
        return self.num_queued + self.num_running


@dataclass(frozen=True)
class FakeRequest:
    request_id: int = 0
    arrival: float = 0.0
    prompt_tokens: int = 100
    output_tokens: int = 100


REQ = FakeRequest()


def replicas(*specs: tuple[int, int] | tuple[int, int, float] | tuple[int, int, float, bool]) -> list[FakeReplica]:
    """Replicas from (queued, running[, kv_free_bytes[, accepting]]) tuples, ids in order."""
    keys = ("num_queued", "num_running", "kv_free_bytes", "accepting")
    return [FakeReplica(i, **dict(zip(keys, spec, strict=False))) for i, spec in enumerate(specs)]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def draw(router: Router, reps: Sequence[ReplicaView], n: int, seed: int = 1) -> list[int]:
    g = rng(seed)
    return [router.route(REQ, reps, g) for _ in range(n)]


def assert_multinomial(choices: list[int], p: Sequence[float]) -> None:
    """Each count within mean ± 4 sd of its Binomial(n, p_i) marginal (zero-probability ones exactly 0)."""
    n = len(choices)
    counts = np.bincount(choices, minlength=len(p))
    assert len(counts) == len(p), counts
    for i, (c, pi) in enumerate(zip(counts, p, strict=True)):
        mean, sd = n * pi, math.sqrt(n * pi * (1 - pi))
        assert abs(c - mean) <= 4 * sd, (i, int(c), mean, sd)


# ------------------------------------------------------------------------------------------ deterministic
@pytest.mark.parametrize("cls", [RoundRobin, RandomRouter, LeastOutstanding, JoinShortestQueue, PowerOfTwo, KvAware])
def test_no_accepting_replica_gives_minus_one(cls):
    router = cls()
    assert router.route(REQ, [], rng()) == NO_REPLICA == -1
    reps = replicas((0, 0, 1e9, False), (0, 0, 1e9, False))
    assert router.route(REQ, reps, rng()) == -1


@pytest.mark.parametrize("cls", [RoundRobin, RandomRouter, LeastOutstanding, JoinShortestQueue, PowerOfTwo, KvAware])
def test_only_accepting_replicas_are_chosen(cls):
    # The non-accepting ones are the most attractive by every criterion: empty, most KV free.
    reps = replicas((0, 0, 1e12, False), (5, 5, 1e9), (0, 0, 1e12, False), (3, 9, 2e9), (0, 0, 1e12, False))
    router = cls()
    assert set(draw(router, reps, 200)) <= {1, 3}


def test_least_outstanding():
    # outstanding: 7, 4, 4, 9 -> index 1 (tie with 2 goes to the lowest index).
    reps = replicas((5, 2), (0, 4), (4, 0), (1, 8))
    assert LeastOutstanding().route(REQ, reps, rng()) == 1
    # The best one stops accepting -> the tie partner.
    reps = replicas((5, 2), (0, 4, math.inf, False), (4, 0), (1, 8))
    assert LeastOutstanding().route(REQ, reps, rng()) == 2


def test_join_shortest_queue():
    # queued: 2, 1, 1, 1; outstanding: 2, 9, 5, 5 -> fewest queued {1, 2, 3}, fewest outstanding {2, 3} -> 2.
    reps = replicas((2, 0), (1, 8), (1, 4), (1, 4))
    assert JoinShortestQueue().route(REQ, reps, rng()) == 2
    # It looks at the queue, not the load: replica 0 has fewer outstanding but a longer queue.
    reps = replicas((1, 0), (0, 6))
    assert JoinShortestQueue().route(REQ, reps, rng()) == 1
    assert LeastOutstanding().route(REQ, reps, rng()) == 0


def test_kv_aware():
    # kv free: 1, 3, 3, 3 GB; outstanding: 0, 4, 2, 2 -> most free {1, 2, 3}, fewest outstanding {2, 3} -> 2.
    reps = replicas((0, 0, 1e9), (1, 3, 3e9), (0, 2, 3e9), (1, 1, 3e9))
    assert KvAware().route(REQ, reps, rng()) == 2
    reps = replicas((0, 0, 1e9), (1, 3, 3e9), (0, 2, 3e9, False), (1, 1, 3e9, False))
    assert KvAware().route(REQ, reps, rng()) == 1
    # Fixed-service replicas report infinite free bytes: all tie, so it falls back to least outstanding.
    reps = replicas((3, 0), (1, 0), (0, 1))
    assert KvAware().route(REQ, reps, rng()) == 1


@dataclass
class BoundedReplica:
    """A ReplicaView whose free KV bytes lie between known bounds; counts the reads of the exact figure."""

    replica_id: int
    exact: float
    kv_free_bytes_bounds: tuple[float, float]
    outstanding: int = 0
    accepting: bool = True
    reads: int = 0

    @property
    def kv_free_bytes(self) -> float:
        self.reads += 1
        return self.exact


def _most_free(reps: Sequence[BoundedReplica]) -> int:
    """The kv-aware rule on exact figures: most free bytes, then fewest outstanding, then lowest index."""
    open_ = [r for r in reps if r.accepting]
    if not open_:
        return -1
    return min(open_, key=lambda r: (-r.exact, r.outstanding, r.replica_id)).replica_id


@pytest.mark.parametrize("seed", range(4))
def test_kv_aware_on_bounds_chooses_as_on_exact_figures_and_reads_only_the_contenders(seed: int) -> None:
    g = np.random.default_rng(seed)
    for _ in range(500):
        n = int(g.integers(1, 6))
        exact = g.integers(0, 8, n).astype(float)  # few values: ties in free bytes are common
        low = exact - g.integers(0, 3, n) * (g.random(n) < 0.7)  # often exact (low == high), else a range
        high = exact + g.integers(0, 3, n) * (g.random(n) < 0.7)
        reps = [BoundedReplica(i, exact[i], (low[i], high[i]), int(g.integers(0, 3)), bool(g.random() < 0.9))
                for i in range(n)]
        assert KvAware().route(REQ, reps, rng()) == _most_free(reps)
        floor = max((r.kv_free_bytes_bounds[0] for r in reps if r.accepting), default=-math.inf)
        contenders = [r for r in reps if r.accepting and r.kv_free_bytes_bounds[1] >= floor]
        for r in reps:  # the exact figure is read only where the bounds cannot decide
            ranged = r.kv_free_bytes_bounds[0] < r.kv_free_bytes_bounds[1]
            assert r.reads == int(r in contenders and ranged and len(contenders) > 1)


def test_round_robin_cycles_in_order_and_skips_non_accepting():
    reps = replicas((0, 0), (0, 0), (0, 0))
    rr = RoundRobin()
    assert [rr.route(REQ, reps, rng()) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    # Replica 1 stops accepting: the cycle continues from where it was, skipping it.
    reps[1] = FakeReplica(1, accepting=False)
    assert [rr.route(REQ, reps, rng()) for _ in range(5)] == [2, 0, 2, 0, 2]
    # It is back and a fourth replica joins.
    reps[1] = FakeReplica(1)
    reps.append(FakeReplica(3))
    assert [rr.route(REQ, reps, rng()) for _ in range(5)] == [0, 1, 2, 3, 0]


def test_round_robin_ignores_load_and_draws_nothing():
    reps = replicas((100, 0), (0, 0))
    g = rng(5)
    before = g.bit_generator.state
    rr = RoundRobin()
    assert [rr.route(REQ, reps, g) for _ in range(4)] == [0, 1, 0, 1]
    assert g.bit_generator.state == before


def test_round_robin_position_is_per_instance_and_not_a_parameter():
    reps = replicas((0, 0), (0, 0), (0, 0))
    a = registry.create("router", "round-robin")
    a.route(REQ, reps, rng())
    b = registry.create("router", a)  # a copy carries a's position but does not share it
    c = registry.create("router", "round-robin")
    assert (a.route(REQ, reps, rng()), b.route(REQ, reps, rng()), c.route(REQ, reps, rng())) == (1, 1, 0)
    assert a.route(REQ, reps, rng()) == 2
    assert a.describe() == {"name": "round-robin"}
    assert RoundRobin.parameters() == {}


# ------------------------------------------------------------------------------------------ randomized
N = 20_000


def test_random_is_uniform_over_accepting_and_reproducible():
    reps = replicas((9, 9), (0, 0, 1e9, False), (0, 0), (1, 1), (0, 0, 1e9, False), (50, 0))
    choices = draw(RandomRouter(), reps, N, seed=11)
    assert_multinomial(choices, [0.25, 0, 0.25, 0.25, 0, 0.25])
    assert draw(RandomRouter(), reps, 500, seed=11) == choices[:500]
    assert draw(RandomRouter(), reps, 500, seed=12) != choices[:500]


def test_power_of_two_probabilities_follow_the_ranks():
    # Distinct loads, so replica of rank k (0 = least outstanding among n accepting) wins exactly when it is
    # sampled and the other d - 1 come from the n - 1 - k busier ones: p_k = C(n-1-k, d-1) / C(n, d).
    loads = [6, 2, 9, 0, 4]  # ranks: 3, 1, 4, 0, 2
    reps = [*replicas(*[(q, 0) for q in loads]), FakeReplica(5, accepting=False)]
    n = len(loads)
    rank = {i: sorted(loads).index(q) for i, q in enumerate(loads)}
    for d in (2, 3):
        p = [math.comb(n - 1 - rank[i], d - 1) / math.comb(n, d) for i in range(n)] + [0.0]
        assert math.isclose(sum(p), 1.0)
        assert_multinomial(draw(PowerOfTwo(d=d), reps, N, seed=d), p)


def test_power_of_two_ties_go_to_the_first_sampled_so_equal_loads_are_uniform():
    reps = replicas((2, 1), (3, 0), (0, 0, 1e9, False), (1, 2), (0, 3))
    assert_multinomial(draw(PowerOfTwo(), reps, N, seed=3), [0.25, 0.25, 0, 0.25, 0.25])


def test_power_of_two_is_reproducible():
    reps = replicas(*[(q, 0) for q in (3, 1, 4, 1, 5, 9, 2, 6)])
    first = draw(PowerOfTwo(), reps, 1000, seed=7)
    assert draw(PowerOfTwo(), reps, 1000, seed=7) == first
    assert draw(PowerOfTwo(), reps, 1000, seed=8) != first


def test_power_of_one_is_random():
    # The loads do not matter with a single sample.
    reps = replicas((0, 0), (10, 0), (0, 0, 1e9, False), (99, 99))
    assert_multinomial(draw(PowerOfTwo(d=1), reps, N, seed=4), [1 / 3, 1 / 3, 0, 1 / 3])


@pytest.mark.parametrize("d", [4, 5, 100])
def test_power_of_d_at_least_n_is_least_outstanding(d):
    reps = replicas((5, 0), (2, 1), (0, 0, 1e9, False), (1, 2), (4, 4), (7, 0))  # accepting: 5; tie 1 / 3
    if d == 4:
        reps[5] = FakeReplica(5, accepting=False)  # 4 accepting
    expected = LeastOutstanding().route(REQ, reps, rng())
    assert expected == 1
    g = rng(9)
    before = g.bit_generator.state
    router = PowerOfTwo(d=d)
    assert [router.route(REQ, reps, g) for _ in range(50)] == [expected] * 50
    assert g.bit_generator.state == before  # compared in index order, nothing sampled


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_and_builds_every_router():
    assert registry.available("router") == sorted(ALL)
    for name in ALL:
        router = registry.create("router", name)
        assert isinstance(router, Router) and router.name == name
        assert router.describe()["name"] == name


def test_registry_passes_parameters_and_names_unknown_ones():
    router = registry.create("router", {"name": "power-of-two", "d": 3})
    assert isinstance(router, PowerOfTwo) and router.d == 3
    assert router.describe() == {"name": "power-of-two", "d": 3}
    with pytest.raises(ConfigError, match="'k'"):
        registry.create("router", {"name": "power-of-two", "k": 3})
    with pytest.raises(ConfigError, match="no parameter 'd'"):
        registry.create("router", {"name": "least-outstanding", "d": 3})
    with pytest.raises(ConfigError, match="d must be at least 1"):
        registry.create("router", {"name": "power-of-two", "d": 0})
    with pytest.raises(ConfigError, match="expected int"):
        registry.create("router", {"name": "power-of-two", "d": 2.5})
