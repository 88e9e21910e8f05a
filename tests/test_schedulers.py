"""Behaviour of each built-in scheduler and placer on small hand-made cases (times worked out in comments)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine import PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.free_devices import FreeDevices
from sim.registry import create
from sim.training.jobs import JobRecord
from workloads.jobs import TrainingJob


def run(cluster: Cluster, jobs: list[TrainingJob], **kwargs):
    return Simulation(cluster, jobs, record_events=True, **kwargs).run()


def starts(res) -> dict[int, float]:
    return dict(zip(res.jobs["job_id"], res.jobs["first_start"], strict=True))


def log(res, *kinds: str) -> list[tuple[float, str, int]]:
    return [(float(t), e, int(j)) for t, e, j, _ in res.events.itertuples(index=False) if e in kinds]


# ------------------------------------------------------------------------------------------ fifo / backfill
def test_fifo_blocks_and_easy_backfill_fills_without_delaying_the_head():
    # 1 node x 4 GPUs.
    #   job 0: t=0, 3 GPUs, 100 s -> runs 0..100; one device stays free.
    #   job 1: t=1, 4 GPUs,  50 s -> the head: cannot start before 100 (its reservation, the shadow time).
    #   job 2: t=2, 1 GPU,  500 s -> fits now, but would hold a device past 100 and job 1 needs all 4: no.
    #   job 3: t=3, 1 GPU,   50 s -> fits now and ends at 53 < 100: backfilled at 3.
    # easy-backfill: 3 runs 3..53, 1 runs 100..150, 2 runs 150..650.
    # fifo (blocking): 1 holds back 2 and 3: 1 at 100, then 2 and 3 together at 150.
    cluster = Cluster([PoolSpec("h100", 1, 4)])
    jobs = [TrainingJob(0, 0.0, 3, 100.0), TrainingJob(1, 1.0, 4, 50.0), TrainingJob(2, 2.0, 1, 500.0),
            TrainingJob(3, 3.0, 1, 50.0)]
    assert starts(run(cluster, jobs, scheduler="fifo")) == {0: 0.0, 1: 100.0, 2: 150.0, 3: 150.0}
    assert starts(run(cluster, jobs, scheduler="easy-backfill")) == {0: 0.0, 1: 100.0, 2: 150.0, 3: 3.0}


def test_easy_backfill_lets_a_long_job_use_devices_the_head_does_not_need():
    # 1 node x 4 GPUs. job 0 (2 GPUs, 100 s) runs 0..100. Head job 1 needs 3: at its shadow time 100 there
    # will be 4 free, one spare. job 2 (1 GPU, 500 s) is long but takes only that spare: starts at 2.
    # job 3 (1 GPU, 500 s) would take a device the head needs at 100: it waits. The head starts at 100 on
    # the 3 devices job 2 leaves, and job 3 follows at 150 when job 1 ends.
    cluster = Cluster([PoolSpec("h100", 1, 4)])
    jobs = [TrainingJob(0, 0.0, 2, 100.0), TrainingJob(1, 1.0, 3, 50.0), TrainingJob(2, 2.0, 1, 500.0),
            TrainingJob(3, 3.0, 1, 500.0)]
    assert starts(run(cluster, jobs, scheduler="easy-backfill")) == {0: 0.0, 1: 100.0, 2: 2.0, 3: 150.0}


def test_easy_backfill_on_user_estimates_trusts_them():
    # 1 node x 4 GPUs; user estimates differ from the true run times.
    #   job 0: t=0, 3 GPUs, runs 100 s (estimate 200).  job 1: t=1, 4 GPUs, 50 s, the head.
    #   job 2: t=2, 1 GPU, runs 500 s but estimates 150: ends "by 152", before the head's shadow time 200
    #          (job 0's estimated end), so it is backfilled at 2 -- and then really holds its device to 502.
    #   job 3: t=101, 1 GPU, 10 s, no estimate: assumed never to end, and no device is spare at the shadow
    #          time (152 by job 2's estimate): it waits. The head starts at 502, job 3 after it at 552.
    # On the oracle job 2 is not backfilled (it really ends after job 0's true end, 100): 1 at 100, 2 and
    # 3 at 150.
    cluster = Cluster([PoolSpec("h100", 1, 4)])
    jobs = [TrainingJob(0, 0.0, 3, 100.0, duration_estimate=200.0), TrainingJob(1, 1.0, 4, 50.0),
            TrainingJob(2, 2.0, 1, 500.0, duration_estimate=150.0), TrainingJob(3, 101.0, 1, 10.0)]
    user = {"name": "easy-backfill", "estimate": "user"}
    assert starts(run(cluster, jobs, scheduler=user)) == {0: 0.0, 1: 502.0, 2: 2.0, 3: 552.0}
    assert starts(run(cluster, jobs, scheduler="easy-backfill")) == {0: 0.0, 1: 100.0, 2: 150.0, 3: 150.0}


def test_non_blocking_fifo_lets_small_jobs_pass():
    cluster = Cluster([PoolSpec("h100", 1, 4)])
    jobs = [TrainingJob(0, 0.0, 3, 100.0), TrainingJob(1, 1.0, 4, 50.0), TrainingJob(2, 2.0, 1, 500.0)]
    assert starts(run(cluster, jobs, scheduler={"name": "fifo", "blocking": False}))[2] == 2.0


# ------------------------------------------------------------------------------------------ sjf / srtf
def test_sjf_starts_the_shortest_waiting_job_first():
    # 1 x 1 GPU. job 0 (10 s) runs 0..10 while 1 (30 s), 2 (5 s) and 3 (20 s) arrive at 1, 2, 3.
    # sjf: 2 at 10, 3 at 15, 1 at 35. fifo: 1 at 10, 2 at 40, 3 at 45.
    cluster = Cluster([PoolSpec("h100", 1, 1)])
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 1.0, 1, 30.0), TrainingJob(2, 2.0, 1, 5.0),
            TrainingJob(3, 3.0, 1, 20.0)]
    assert starts(run(cluster, jobs, scheduler="sjf")) == {0: 0.0, 1: 35.0, 2: 10.0, 3: 15.0}
    assert starts(run(cluster, jobs, scheduler="fifo")) == {0: 0.0, 1: 10.0, 2: 40.0, 3: 45.0}


def test_srtf_preempts_for_a_shorter_arrival_and_the_victim_pays_the_overhead():
    # 1 x 1 GPU, checkpoint 7 + restore 11 = 18 s.
    #   job 0 (100 s) runs from 0; job 1 (5 s) arrives at 10 with less work than job 0's 90: preempts it,
    #   runs 10..15. job 0 resumes at 15: 18 s overhead, then 90 s -> ends 123.
    #   job 2 (200 s) arrives at 20: job 0 still has 90 s left (its overhead runs to 33): no preemption;
    #   job 2 starts at 123, ends 323.
    cluster = Cluster([PoolSpec("h100", 1, 1)])
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 5.0), TrainingJob(2, 20.0, 1, 200.0)]
    res = run(cluster, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (10.0, "preempt", 0), (10.0, "start", 1), (15.0, "finish", 1), (15.0, "start", 0),
        (123.0, "finish", 0), (123.0, "start", 2), (323.0, "finish", 2)]
    table = res.jobs.set_index("job_id")
    assert table.loc[0, ["preemptions", "overhead_seconds", "finish"]].tolist() == [1, 18.0, 123.0]
    assert table.loc[2, ["preemptions", "overhead_seconds"]].tolist() == [0, 0.0]


# ------------------------------------------------------------------------------------------ las
LAS = {"name": "las", "thresholds": [100.0], "promote_knob": 0.0}


def test_las_demotes_at_the_threshold_crossing_time():
    # 1 node x 2 GPUs, one threshold at 100 device-seconds, no starvation guard, checkpoint 5 + restore 5.
    #   job 0 (2 GPUs, 1000 s) starts at 0. job 1 (1 GPU, 50 s) arrives at 10: both in queue 0, job 0 came
    #   first, so job 1 waits; the scheduler asks to wake when job 0 crosses 100 device-seconds:
    #   10 + (100 - 20) / 2 = 50. At exactly 50 job 0 drops to queue 1 and job 1 preempts it, runs 50..100.
    #   job 0 resumes at 100: 10 s overhead, 950 s of work left -> ends 1060.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 10.0, 1, 50.0)]
    res = run(cluster, jobs, scheduler=LAS, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (50.0, "preempt", 0), (50.0, "start", 1), (100.0, "finish", 1), (100.0, "start", 0),
        (1060.0, "finish", 0)]


def test_las_wakes_for_a_crossing_after_a_preemption():
    # 1 node x 2 GPUs, thresholds 100 and 200 device-seconds, no starvation guard, 5 + 5 s overhead.
    #   t=0   job 0 (2 GPUs, 1000 s) starts; it crosses 100 device-seconds at t=50 (queue 1).
    #   t=60  job 1 (2 GPUs, 1000 s) arrives in queue 0 and preempts job 0 (queue 1, 120 device-seconds).
    #         That decision starts every job that was waiting before it, but its victim now waits: the
    #         scheduler must still ask to be woken for job 1's crossings.
    #   t=110 job 1 crosses 100 (queue 1, like job 0): same queue, no preemption.
    #   t=160 job 1 crosses 200 (queue 2), above waiting job 0's queue 1: job 0 preempts it exactly then.
    #   job 0 resumes at 160: 10 s overhead + 940 s of work -> ends 1110; it passes 200 device-seconds at
    #   200 (queue 2, like waiting job 1: no preemption). Job 1 resumes at 1110: 10 + 900 -> ends 2020.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    las = {"name": "las", "thresholds": [100.0, 200.0], "promote_knob": 0.0}
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 60.0, 2, 1000.0)]
    res = run(cluster, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (60.0, "preempt", 0), (60.0, "start", 1), (160.0, "preempt", 1), (160.0, "start", 0),
        (1110.0, "finish", 0), (1110.0, "start", 1), (2020.0, "finish", 1)]


def test_las_never_preempts_within_a_queue():
    # 1 x 2 GPUs, threshold 100. job 0 (1 GPU) starts at 0, job 2 (1 GPU) at 2; job 1 (2 GPUs) arrived at 1
    # and waits. When job 0 ends at 30, job 1 (queue 0) does not preempt job 2 (also queue 0) although it
    # arrived first; it does once job 2 crosses 100 device-seconds at 102 (queue 1). Job 1 then crosses 100
    # at 152 into queue 1, job 2's queue: no preemption, job 1 runs to its end at 1102.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    las = {"name": "las", "thresholds": [100.0], "promote_knob": 0.0}
    jobs = [TrainingJob(0, 0.0, 1, 30.0), TrainingJob(1, 1.0, 2, 1000.0), TrainingJob(2, 2.0, 1, 1000.0)]
    res = run(cluster, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt")[:5] == [
        (0.0, "start", 0), (2.0, "start", 2), (102.0, "preempt", 2), (102.0, "start", 1), (1102.0, "start", 2)]


def test_las_starvation_guard_promotes_a_long_waiting_job():
    # 1 x 1 GPU, threshold 100, promote_knob 2, checkpoint 5 + restore 5.
    #   job 0 (10000 s) runs from 0. From t=150 a 90 s job arrives every 80 s (jobs 1..39), so from 230 on a
    #   queue-0 job is always waiting. At 150 job 1 preempts job 0 (150 device-seconds: queue 1); job 0's
    #   last run was 150 s, so after waiting 2 x 150 s, at exactly 450, it goes back to queue 0 ahead of
    #   every short job (earliest arrival). Jobs of one queue never preempt each other, so it starts when
    #   the running short job (job 4, started 420) ends at 510. Its service counts afresh from its
    #   promotion, so it keeps queue 0 until it has held the device another 100 s (overhead included):
    #   the short jobs preempt it again only at 610.
    # Without the guard job 0 waits until the last short job ends (39 x 90 s of work from 150: 3660).
    cluster = Cluster([PoolSpec("h100", 1, 1)])
    jobs = [TrainingJob(0, 0.0, 1, 10000.0)] + [TrainingJob(k, 150.0 + 80 * (k - 1), 1, 90.0) for k in range(1, 40)]
    guarded = run(cluster, jobs, scheduler={**LAS, "promote_knob": 2.0}, preemption=PreemptionCost(5.0, 5.0))
    job0 = [e for e in log(guarded, "start", "preempt") if e[2] == 0]
    assert job0[:4] == [(0.0, "start", 0), (150.0, "preempt", 0), (510.0, "start", 0), (610.0, "preempt", 0)]
    assert (510.0, "finish", 4) in log(guarded, "finish")
    unguarded = run(cluster, jobs, scheduler=LAS, preemption=PreemptionCost(5.0, 5.0))
    assert [e for e in log(unguarded, "start") if e[2] == 0] == [(0.0, "start", 0), (3660.0, "start", 0)]


# ------------------------------------------------------------------------------------------ placers
# One h100 pool of 4 nodes x 4 devices: node n holds devices 4n..4n+3. Free after the setup below:
#   node 0: 2, 3 (2 free)   node 1: 7 (1 free)   node 2: 8..11 (4 free)   node 3: 14, 15 (2 free)
PLACER_CLUSTER = Cluster([PoolSpec("h100", 4, 4)])


def free_devices() -> FreeDevices:
    free = FreeDevices(PLACER_CLUSTER)
    free.take([0, 1, 4, 5, 6, 12, 13])
    return free


def job(gpus: int):
    return JobRecord(TrainingJob(0, 0.0, gpus, 10.0), allowed_pools=(0,), speeds={0: 1.0}).view


def place(name: str, gpus: int, seed: int = 0) -> tuple[int, ...] | None:
    placer = create("placer", name)
    return placer.place(job(gpus), free_devices(), np.random.default_rng(seed))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("gpus", "first_fit", "consolidate", "spread"), [
    (1, (2,), (7,), (8,)),  # first node with room / tightest node (1 free) / emptiest node (4 free)
    (2, (2, 3), (2, 3), (8, 9)),  # nodes 0 and 3 tie on tightness: the lower id wins
    (3, (8, 9, 10), (8, 9, 10), (8, 9, 10)),  # only node 2 holds 3
])
def test_placers_pick_their_node(gpus, first_fit, consolidate, spread):
    assert place("first-fit", gpus) == first_fit
    assert place("consolidate", gpus) == consolidate
    assert place("spread", gpus) == spread


def test_placers_for_a_gang_larger_than_a_node():
    # 6 GPUs > 4 per node. first-fit takes free devices node by node: 2, 3 | 7 | 8, 9, 10.
    # consolidate: fewest nodes (node 2's 4, then the tightest node with the 2 missing: node 0).
    # spread: one device per node in turn, emptiest first (node 2, 0, 3, 1, then 2, 0 again).
    assert place("first-fit", 6) == (2, 3, 7, 8, 9, 10)
    assert sorted(place("consolidate", 6)) == [2, 3, 8, 9, 10, 11]
    assert sorted(place("spread", 6)) == [2, 3, 7, 8, 9, 14]
    assert place("first-fit", 8) == (2, 3, 7, 8, 9, 10, 11, 14)
    assert place("first-fit", 10) is None and place("consolidate", 10) is None and place("spread", 10) is None


def test_random_placer_only_picks_nodes_that_fit_and_is_reproducible():
    chosen = {seed: place("random", 2, seed) for seed in range(200)}
    nodes = {PLACER_CLUSTER.device_node[d[0]] for d in chosen.values() if d}
    assert all(d is not None and len({PLACER_CLUSTER.device_node[x] for x in d}) == 1 for d in chosen.values())
    assert nodes == {0, 2, 3}  # node 1 has a single free device; over 200 seeds every fitting node shows up
    assert all(place("random", 2, seed) == chosen[seed] for seed in range(20))
    big = place("random", 6, 3)
    assert big is not None and len(set(big)) == 6 and all(free_devices().is_free(d) for d in big)
    assert place("random", 6, 3) == big


def test_first_fit_prefers_the_first_pool_and_consolidate_the_tightest_across_pools():
    cluster = Cluster([PoolSpec("h100", 1, 4), PoolSpec("a100", 1, 4)])
    free = FreeDevices(cluster)
    free.take([4, 5, 6])  # a100 node keeps one free device (7); h100 node all four
    view = JobRecord(TrainingJob(0, 0.0, 1, 10.0), allowed_pools=(0, 1), speeds={0: 1.0, 1: 1.0}).view
    rng = np.random.default_rng(0)
    assert create("placer", "first-fit").place(view, free, rng) == (0,)  # type: ignore[attr-defined]
    assert create("placer", "consolidate").place(view, free, rng) == (7,)  # type: ignore[attr-defined]
    assert create("placer", "spread").place(view, free, rng) == (0,)  # type: ignore[attr-defined]
