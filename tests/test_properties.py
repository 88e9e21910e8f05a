"""Property-based invariants over random small clusters and workloads, for every registered policy pair.

Each example runs with ``record_events=True`` and replays the event log independently of the engine:
devices are never held twice, gangs are well formed, work is conserved, every job that fits some
allowed pool finishes and the others are unschedulable, and the jobs table and timeline agree with the
log. Determinism: same seed, same tables and log; the policy never changes the workload.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import registry
from sim.cluster import Cluster, PoolSpec
from sim.engine import PreemptionCost, Simulation
from sim.hardware import get_device
from sim.random import RandomStreams
from workloads import Choice, Exponential, LogNormal, generate_training_jobs
from workloads.jobs import TrainingJob

SCHEDULERS = registry.available("scheduler")
PLACERS = registry.available("placer")
PAIRS = [(s, p) for s in SCHEDULERS for p in PLACERS]
DEVICE_TYPES = ("h100", "a100", "v100", "t4")

# Arrivals and durations are exact binary fractions, so ties (same arrival, same duration) are frequent;
# checks that add up float run lengths use REL, a float-rounding tolerance.
REL = 1e-9
PROPERTY_SETTINGS = settings(max_examples=75, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_registry_lists_the_builtin_policies():
    # The property tests below iterate over the registry; make sure it is not silently empty.
    assert {"fifo", "sjf", "srtf", "las", "easy-backfill"} <= set(SCHEDULERS)
    assert {"first-fit", "consolidate", "spread", "random"} <= set(PLACERS)


# Per-job options as indices into small tables (drawing plain integers keeps generation fast: a
# strategy built from nested draws per job was 13x slower). Most jobs may use any device type.
SUBSETS = [None] * 8 + [tuple(t for i, t in enumerate(DEVICE_TYPES) if mask >> i & 1) for mask in range(1, 16)]
REFERENCES = (None, *DEVICE_TYPES)
THROUGHPUTS = [None] * 6 + [{"h100": 3.0, "a100": 1.5}, {"a100": 1.0, "v100": 0.5, "t4": 0.25}, {"h100": 2.0}]


@st.composite
def scenarios(draw):
    """(cluster, jobs, preemption cost, seed): 1-3 pools of distinct device types, 1-4 nodes of 1-8
    devices; up to 30 jobs with gangs up to 2 above the largest pool, tied arrivals and durations likely."""
    types = draw(st.permutations(DEVICE_TYPES))[: draw(st.integers(1, 3))]
    pools = [PoolSpec(t, nodes=draw(st.integers(1, 4)), devices_per_node=draw(st.integers(1, 8))) for t in types]
    largest = max(p.nodes * p.devices_per_node for p in pools)
    rows = draw(st.lists(st.tuples(
        st.integers(0, 400),  # arrival, half-seconds
        st.one_of(st.integers(1, 4), st.integers(1, largest + 2)),  # gang
        st.integers(1, 4000),  # duration, eighths of a second
        st.integers(0, len(SUBSETS) - 1), st.integers(0, len(REFERENCES) - 1), st.integers(0, len(THROUGHPUTS) - 1),
    ), min_size=1, max_size=30))
    jobs = [TrainingJob(i, arrival / 2, gpus, duration / 8, reference_device=REFERENCES[ref],
                        allowed_devices=SUBSETS[subset], throughputs=THROUGHPUTS[tput])
            for i, (arrival, gpus, duration, subset, ref, tput) in enumerate(rows)]
    preemption = PreemptionCost(draw(st.sampled_from([0.0, 1.5, 30.0])), draw(st.sampled_from([0.0, 2.0, 30.0])))
    seed = draw(st.integers(0, 2**32 - 1))
    return Cluster(pools), jobs, preemption, seed


def speed(job: TrainingJob, device: str) -> float | None:
    """Documented speed of ``job`` on ``device`` relative to its reference device; None if not allowed."""
    name = get_device(device).name
    if job.allowed_devices is not None and name not in {get_device(d).name for d in job.allowed_devices}:
        return None
    if job.throughputs is not None:
        tp = {get_device(k).name: v for k, v in job.throughputs.items()}
        if name not in tp:
            return None
        ref = get_device(job.reference_device).name if job.reference_device else None
        return tp[name] / (tp.get(ref, 1.0) if ref else 1.0)
    if job.reference_device is None:
        return 1.0
    return get_device(device).training_peak / get_device(job.reference_device).training_peak


def allowed_pools(cluster: Cluster, job: TrainingJob) -> dict[int, float]:
    out = {}
    for p, pool in enumerate(cluster.pools):
        s = speed(job, pool.device)
        if s is not None and cluster.pool_devices[p] >= job.gpus:
            out[p] = s
    return out


def check_run(cluster: Cluster, jobs: list[TrainingJob], preemption: PreemptionCost, res) -> None:
    """Replay the event log and check every invariant against it and against the tables."""
    spec = {j.job_id: j for j in jobs}
    pools_of = {j.job_id: allowed_pools(cluster, j) for j in jobs}
    events = list(res.events.itertuples(index=False))
    assert all(a.time <= b.time for a, b in itertools.pairwise(events)), "log out of time order"

    holder: dict[int, int] = {}  # device -> job
    running: dict[int, tuple[float, tuple[int, ...], int]] = {}  # job -> (start, devices, pool)
    arrived: set[int] = set()
    unschedulable: set[int] = set()
    finished: dict[int, float] = {}
    runs: dict[int, list[tuple[float, float, int, int]]] = defaultdict(list)  # (start, end, pool, nth run)
    first_start: dict[int, float] = {}
    preemptions: dict[int, int] = defaultdict(int)
    states: list[tuple[float, int, int, int]] = []  # (time, allocated, queued, running) after each event

    for ev in events:
        t, kind, jid, devices = float(ev.time), ev.event, int(ev.job_id), tuple(ev.devices)
        job = spec[jid]
        if kind == "arrive":
            assert jid not in arrived and t == job.arrival
            arrived.add(jid)
        elif kind == "unschedulable":
            assert jid in arrived and not pools_of[jid], f"job {jid} fits pools {pools_of[jid]} but was rejected"
            unschedulable.add(jid)
        elif kind == "start":
            assert jid in arrived and jid not in running and jid not in finished and jid not in unschedulable
            assert len(devices) == job.gpus and len(set(devices)) == job.gpus, f"job {jid}: gang {devices}"
            assert all(0 <= d < cluster.num_devices for d in devices)
            for d in devices:
                assert d not in holder, f"t={t}: device {d} given to job {jid} while job {holder.get(d)} holds it"
                holder[d] = jid
            nodes = {cluster.device_node[d] for d in devices}
            pools = {cluster.node_pool[n] for n in nodes}
            assert len(pools) == 1, f"job {jid} spans pools {pools}"
            pool = pools.pop()
            assert pool in pools_of[jid], f"job {jid} started on pool {pool}, allowed {pools_of[jid]}"
            if job.gpus <= cluster.pools[pool].devices_per_node:
                assert len(nodes) == 1, f"job {jid} ({job.gpus} gpus) split over nodes {nodes}"
            first_start.setdefault(jid, t)
            running[jid] = (t, devices, pool)
        elif kind in ("preempt", "finish"):
            assert jid in running, f"{kind} of job {jid}, which is not running"
            start, held, pool = running.pop(jid)
            for d in held:
                del holder[d]
            runs[jid].append((start, t, pool, len(runs[jid])))
            if kind == "preempt":
                preemptions[jid] += 1
            else:
                finished[jid] = t
        else:
            raise AssertionError(f"unknown event {kind!r}")
        for p in range(len(cluster.pools)):  # allocation never exceeds capacity, per pool
            assert sum(cluster.pool_of_device(d) == p for d in holder) <= cluster.pool_devices[p]
        queued = len(arrived) - len(unschedulable) - len(finished) - len(running)
        states.append((t, len(holder), queued, len(running)))

    # Every job arrived; each one either finished (it fits some allowed pool) or is unschedulable.
    assert arrived == set(spec) and not running and not holder
    for jid in spec:
        if pools_of[jid]:
            assert jid in finished, f"job {jid} fits pools {pools_of[jid]} but did not finish"
        else:
            assert jid in unschedulable

    # Work conservation: each run does (length - overhead) x speed of work, the overhead being the
    # checkpoint + restore charged on every resume; the runs of a finished job add up to its duration.
    table = res.jobs.set_index("job_id")
    for jid, t_end in finished.items():
        job = spec[jid]
        work = sum(max(0.0, (end - start) - (preemption.total if k else 0.0)) * pools_of[jid][pool]
                   for start, end, pool, k in runs[jid])
        assert math.isclose(work, job.duration, rel_tol=REL), f"job {jid}: work {work} != {job.duration}"
        best = max(pools_of[jid].values())
        row = table.loc[jid]
        # No job finishes before arrival + duration / best speed (float rounding of one sum allowed).
        assert row["finish"] - job.arrival >= job.duration / best * (1 - REL)
        assert row["first_start"] == first_start[jid] and row["finish"] == t_end
        assert row["queueing_delay"] == first_start[jid] - job.arrival >= 0
        assert row["preemptions"] == preemptions[jid]
        # overhead: the restore time spent, the whole checkpoint + restore unless a preemption cut it short
        spent = sum(min(preemption.total, end - start) for start, end, _, k in runs[jid] if k)
        assert math.isclose(row["overhead_seconds"], spent, rel_tol=REL, abs_tol=REL)
        held = sum((end - start) * job.gpus for start, end, _, _ in runs[jid])
        assert math.isclose(row["device_seconds"], held, rel_tol=REL, abs_tol=REL)
        assert row["device_type"] == cluster.pools[runs[jid][-1][2]].device
        assert row["status"] == "finished"
    for jid in unschedulable:
        assert table.loc[jid, "status"] == "unschedulable" and pd.isna(table.loc[jid, "first_start"])

    # The timeline: never more allocated than the cluster has, and each sample equals the state the log
    # gives after all events at or before its time.
    tl = res.timeline
    assert (tl["allocated_devices"] <= cluster.num_devices).all() and (tl["allocated_devices"] >= 0).all()
    assert (tl["utilization"] <= 1.0).all()
    after: dict[float, tuple[int, int, int]] = {}  # state after the last event of each instant
    for t, *state in states:
        after[t] = tuple(state)
    previous, changed = (0, 0, 0), set()
    for t, state in after.items():
        if state != previous:
            changed.add(t)
        previous = state
    assert changed <= set(tl["time"]), f"no timeline sample at the changes {sorted(changed - set(tl['time']))}"
    k = -1
    for sample in tl[["time", "allocated_devices", "queued_jobs", "running_jobs"]].itertuples(index=False):
        while k + 1 < len(states) and states[k + 1][0] <= sample.time:
            k += 1
        assert k >= 0
        assert (sample.allocated_devices, sample.queued_jobs, sample.running_jobs) == states[k][1:], (
            f"timeline at t={sample.time} disagrees with the event log")


@pytest.mark.parametrize(("scheduler", "placer"), PAIRS)
@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_invariants_hold_for_every_policy_pair(scheduler, placer, scenario):
    cluster, jobs, preemption, seed = scenario
    res = Simulation(cluster, jobs, scheduler=scheduler, placer=placer, seed=seed, preemption=preemption,
                     record_events=True).run()
    check_run(cluster, jobs, preemption, res)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_same_seed_gives_identical_tables_and_log(scheduler, scenario):
    # The random placer draws from the run's placement stream: with the same seed it must decide the same.
    cluster, jobs, preemption, seed = scenario
    first, second = (Simulation(cluster, jobs, scheduler=scheduler, placer="random", seed=seed,
                                preemption=preemption, record_events=True).run() for _ in range(2))
    pd.testing.assert_frame_equal(first.jobs, second.jobs)
    pd.testing.assert_frame_equal(first.events, second.events)
    pd.testing.assert_frame_equal(first.timeline, second.timeline)


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
