"""The round mechanism's pool order (``RoundScheduler.pool_order``, ``policies/schedulers/rounds.py``): Gavel's
shuffled worker-type order for its plain policies. The order is drawn from the run's ``scheduling`` stream: the
same for the same seed, another for another seed, every order about equally often; ``fixed`` never moves."""

from __future__ import annotations

import itertools
from collections import Counter
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
from scipy.stats import chisquare

from policies.schedulers.finish_time_fairness import FinishTimeFairness
from policies.schedulers.max_min_fairness import MaxMinFairness
from policies.schedulers.throughput_policies import MaxSumThroughput, MinTotalDuration
from sim import Cluster, PoolSpec, PreemptionCost, Simulation
from sim.errors import ConfigError, PolicyError
from workloads import TrainingJob

THREE_POOLS = Cluster([PoolSpec(device, nodes=1, devices_per_node=1, name=device)
                       for device in ("h100", "a100", "v100")])


class RecordingMaxMin(MaxMinFairness):
    """Plain max-min fairness that records each round's pool order (in a class list: a run copies its scheduler)."""

    orders: ClassVar[list[tuple[int, ...]]] = []
    streams: ClassVar[list[tuple[int, int]]] = []  # (instance, the stream it was shown), by id

    def _pool_order(self, view):
        order = super()._pool_order(view)
        RecordingMaxMin.orders.append(tuple(order))
        RecordingMaxMin.streams.append((id(self), id(view.rng)))
        return order


def round_orders(seed: int, pool_order: str | None = None, jobs: int = 5) -> list[tuple[int, ...]]:
    """The pool order of every round decided: ``jobs`` one-device jobs on three one-device pools, so some job waits
    at every boundary until the last few finish."""
    RecordingMaxMin.orders = []
    workload = [TrainingJob(i, 0.0, 1, 30_000.0) for i in range(jobs)]
    Simulation(THREE_POOLS, workload, scheduler=RecordingMaxMin(round_s=60.0, heterogeneity_aware=False,
                                                                pool_order=pool_order),
               preemption=PreemptionCost(0.0, 0.0), seed=seed).run()
    return RecordingMaxMin.orders


def test_gavels_rule_is_the_default_shuffled_for_the_plain_forms_only():
    for policy in (MaxMinFairness, FinishTimeFairness, MinTotalDuration):
        assert policy(heterogeneity_aware=False).pool_order == "shuffled"
        assert policy().pool_order == "fixed"
        assert policy(heterogeneity_aware=False, pool_order="fixed").pool_order == "fixed"
    # Gavel has no plain max-sum-throughput (ThroughputSumWithPerf) and never shuffles for it
    assert MaxSumThroughput(heterogeneity_aware=False).pool_order == "fixed"


def test_shuffled_order_is_the_same_for_a_seed_and_differs_across_seeds():
    first = round_orders(seed=3)
    assert len(first) > 100
    assert round_orders(seed=3) == first
    assert round_orders(seed=4) != first


def test_every_pool_order_appears_about_equally_often():
    orders = round_orders(seed=11, jobs=6)
    counts = Counter(orders)
    permutations = list(itertools.permutations(range(3)))
    assert set(counts) == set(permutations)
    # uniform over the 6 orders: a draw that favoured some (a rotation only, a fixed first pool) fails this
    assert chisquare([counts[p] for p in permutations]).pvalue > 1e-4


def test_fixed_order_never_moves():
    orders = round_orders(seed=3, pool_order="fixed")
    assert len(orders) > 100 and set(orders) == {(0, 1, 2)}


def test_the_round_serves_the_pools_in_its_order():
    # a job with no share anywhere fills the first pool of the round's order that has room
    policy = MaxMinFairness(heterogeneity_aware=False)
    job = SimpleNamespace(allowed_pools=(0, 1, 2), gpus=1)
    state = {"allocation": {}, "ran": {}, "since_reset": 0.0}
    for seed in range(20):
        view = SimpleNamespace(cluster=THREE_POOLS, rng=np.random.default_rng(seed))
        expected = policy._pool_order(SimpleNamespace(cluster=THREE_POOLS, rng=np.random.default_rng(seed)))
        assert policy._choose({7: job}, view, state) == [(7, expected[0])]
    fixed = MaxMinFairness(heterogeneity_aware=False, pool_order="fixed")
    view = SimpleNamespace(cluster=THREE_POOLS, rng=np.random.default_rng(0))
    assert fixed._choose({7: job}, view, state) == [(7, 0)]


def test_shuffled_order_without_a_random_stream_is_a_policy_error():
    with pytest.raises(PolicyError, match=r"view\.rng"):
        MaxMinFairness(heterogeneity_aware=False)._pool_order(SimpleNamespace(cluster=THREE_POOLS, rng=None))


def test_a_bad_pool_order_is_named():
    with pytest.raises(ValueError, match="pool_order"):
        MaxMinFairness(pool_order="random")
    with pytest.raises(ConfigError, match="pool_order"):
        Simulation(THREE_POOLS, [TrainingJob(0, 0.0, 1, 10.0)],
                   scheduler={"name": "max-min-fairness", "pool_order": "random"})


def test_under_quotas_each_tenant_draws_from_its_own_stream():
    # each tenant's instance is shown one stream of its own (``scheduling:TENANT``), so its draws do not depend on
    # when the other tenants are asked
    jobs = [TrainingJob(i, 0.0, 1, 3000.0, tenant="a" if i % 2 else "b") for i in range(8)]
    RecordingMaxMin.orders, RecordingMaxMin.streams = [], []
    Simulation(THREE_POOLS, jobs, scheduler=RecordingMaxMin(round_s=60.0, heterogeneity_aware=False),
               preemption=PreemptionCost(0.0, 0.0), quotas={"a": {"h100": 1, "a100": 1}, "b": {"v100": 1}},
               seed=5).run()
    by_instance: dict[int, set[int]] = {}
    for instance, stream in RecordingMaxMin.streams:
        by_instance.setdefault(instance, set()).add(stream)
    assert len(by_instance) == 2 and all(len(streams) == 1 for streams in by_instance.values())
    assert len(set.union(*by_instance.values())) == 2
