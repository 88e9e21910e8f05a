"""Property-based invariants over random small clusters and workloads, for every registered policy pair.

Each example runs with ``record_events=True`` and replays the event log independently of the engine, with the
same code the public checker runs (``sim.policy_checks.check_scenario`` and ``check_run``), so the two cannot
drift apart: devices are never held twice, gangs are well formed, work is conserved, every job that fits some
allowed pool finishes and the others are unschedulable, and the jobs table and timeline agree with the
log. Determinism: same seed, same tables and log; the policy never changes the workload. Hypothesis shrinks a
failing example; ``tests/test_policy_checks.py`` tests the checker itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import registry
from sim.engine import PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.policy_checks import Scenario, check_scenario
from sim.random import RandomStreams
from workloads import Choice, Exponential, LogNormal, generate_training_jobs
from workloads.jobs import TrainingJob

SCHEDULERS = registry.available("scheduler")
PLACERS = registry.available("placer")
PAIRS = [(s, p) for s in SCHEDULERS for p in PLACERS]
DEVICE_TYPES = ("h100", "a100", "v100", "t4")

# Arrivals and durations are exact binary fractions, so ties (same arrival, same duration) are frequent.
PROPERTY_SETTINGS = settings(max_examples=75, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_registry_lists_the_builtin_policies():
    # The property tests below iterate over the registry; make sure it is not silently empty.
    assert {"fifo", "sjf", "srtf", "las", "easy-backfill"} <= set(SCHEDULERS)
    assert {"max-min-fairness", "finish-time-fairness", "max-sum-throughput", "min-total-duration",
            "allox"} <= set(SCHEDULERS)  # the round-based policies
    assert {"first-fit", "consolidate", "spread", "random"} <= set(PLACERS)


# Per-job options as indices into small tables (drawing plain integers keeps generation fast: a
# strategy built from nested draws per job was 13x slower). Most jobs may use any device type.
SUBSETS = [None] * 8 + [tuple(t for i, t in enumerate(DEVICE_TYPES) if mask >> i & 1) for mask in range(1, 16)]
REFERENCES = (None, *DEVICE_TYPES)
THROUGHPUTS = [None] * 6 + [{"h100": 3.0, "a100": 1.5}, {"a100": 1.0, "v100": 0.5, "t4": 0.25}, {"h100": 2.0}]


@st.composite
def scenarios(draw):
    """A ``Scenario``: 1-3 pools of distinct device types, 1-4 nodes of 1-8 devices; up to 30 jobs with gangs up
    to 2 above the largest pool, tied arrivals and durations likely, one-device jobs often on a share of their
    device; a preemption cost and a run seed."""
    types = draw(st.permutations(DEVICE_TYPES))[: draw(st.integers(1, 3))]
    pools = [PoolSpec(t, nodes=draw(st.integers(1, 4)), devices_per_node=draw(st.integers(1, 8))) for t in types]
    largest = max(p.nodes * p.devices_per_node for p in pools)
    rows = draw(st.lists(st.tuples(
        st.integers(0, 400),  # arrival, half-seconds
        st.one_of(st.integers(1, 4), st.integers(1, largest + 2)),  # gang
        st.integers(1, 4000),  # duration, eighths of a second
        st.integers(0, len(SUBSETS) - 1), st.integers(0, len(REFERENCES) - 1), st.integers(0, len(THROUGHPUTS) - 1),
        st.sampled_from([1.0, 1.0, 1.0, 0.25, 0.5, 0.75]),  # share of its device, for a one-device job
    ), min_size=1, max_size=30))
    jobs = [TrainingJob(i, arrival / 2, gpus, duration / 8, reference_device=REFERENCES[ref],
                        allowed_devices=SUBSETS[subset], throughputs=THROUGHPUTS[tput],
                        gpu_fraction=fraction if gpus == 1 else 1.0)
            for i, (arrival, gpus, duration, subset, ref, tput, fraction) in enumerate(rows)]
    preemption = PreemptionCost(draw(st.sampled_from([0.0, 1.5, 30.0])), draw(st.sampled_from([0.0, 2.0, 30.0])))
    seed = draw(st.integers(0, 2**32 - 1))
    return Scenario(tuple(pools), tuple(jobs), preemption, seed)


@pytest.mark.parametrize(("scheduler", "placer"), PAIRS)
@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_invariants_hold_for_every_policy_pair(scheduler, placer, scenario):
    # runs the scenario (with a horizon far past any sensible end) and replays its log: sim.policy_checks.check_run
    check_scenario(scenario, scheduler=scheduler, placer=placer)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_same_seed_gives_identical_tables_and_log(scheduler, scenario):
    # The random placer draws from the run's placement stream: with the same seed it must decide the same, even
    # when Python's and numpy's global random states differ between the two runs (check_same_results).
    check_scenario(scenario, scheduler=scheduler, placer="random", determinism=True)


@settings(max_examples=10, deadline=None, database=None)
@given(seed=st.integers(0, 2**63 - 1), count=st.integers(1, 40))
def test_policy_never_changes_the_workload(seed, count):
    # Common random numbers: the workload comes from the arrivals/durations/sizes streams of the seed; a
    # policy draws only from its own stream ("placement"), so every policy pair sees the same jobs.
    cluster = Cluster([PoolSpec("h100", 2, 4), PoolSpec("a100", 1, 8)])
    workload_columns = ["job_id", "arrival", "gpus", "duration"]
    tables = []
    for scheduler, placer in (("fifo", "first-fit"), ("las", "random"), ("srtf", "spread"),
                              ("easy-backfill", "consolidate")):
        streams = RandomStreams(seed)
        streams["placement"].random(5)  # a policy's draws happen before or after: must not matter
        trace = generate_training_jobs(count, Exponential(mean=120.0), LogNormal.from_mean(600.0, 1.0),
                                       Choice((1, 2, 4, 8)), streams)
        res = Simulation(cluster, trace, scheduler=scheduler, placer=placer, seed=seed).run()
        tables.append(res.jobs[workload_columns].sort_values("job_id").reset_index(drop=True))
    for table in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], table)


@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 2**63 - 1), names=st.lists(st.sampled_from(["placement", "tie-breaks", "failures"]),
                                                        max_size=3))
def test_named_streams_do_not_depend_on_draw_order(seed, names):
    fresh = RandomStreams(seed)["arrivals"].random(8)
    streams = RandomStreams(seed)
    for name in names:
        streams[name].random(3)
    np.testing.assert_array_equal(streams["arrivals"].random(8), fresh)
    if names:
        assert not np.array_equal(RandomStreams(seed)[names[0]].random(8), fresh)
