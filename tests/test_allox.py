"""AlloX (``policies/schedulers/allox.py``): the min-cost matching on a case solved by hand and against brute force,
heterogeneity, gangs, alpha, no preemption, whole runs on Gavel's jobs and cluster, determinism and the invariants
every scheduler keeps (``sim.policy_checks``)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from policies.schedulers.allox import AlloX, allox_queues
from sim import Cluster, PoolSpec, PreemptionCost, Simulation, preset, registry
from sim.policy_checks import check_scheduler
from workloads import TrainingJob, generate_gavel_jobs

# pool 0: one V100, pool 1: one K80
TWO_TYPES = Cluster([PoolSpec("v100", nodes=1, devices_per_node=1), PoolSpec("k80", nodes=1, devices_per_node=1)])
ONE_DEVICE = Cluster([PoolSpec("h100", nodes=1, devices_per_node=1)])


def job(job_id: int, k80_seconds: float, v100_speedup: float, arrival: float = 0.0) -> TrainingJob:
    """A 1-device job running ``k80_seconds`` on a K80 and ``v100_speedup`` times faster on a V100."""
    return TrainingJob(job_id, arrival, 1, k80_seconds, reference_device="k80",
                       throughputs={"v100": v100_speedup, "k80": 1.0})


def total_completion(times: np.ndarray, queues: list[list[list[int]]]) -> float:
    total = 0.0
    for pool, pool_queues in enumerate(queues):
        for queue in pool_queues:
            total += np.cumsum(times[queue, pool]).sum()
    return float(total)


def test_matching_solved_by_hand():
    # Processing times (fast pool, slow pool): A (1, 3), B (4, 4), C (3, 6); one slot each. Orders on a slot are
    # shortest first; the sums of completion times of the assignments: all on fast A, C, B: 1 + 4 + 8 = 13;
    # fast A, C and slow B: 1 + 4 + 4 = 9; fast A, B and slow C: 1 + 5 + 6 = 12; fast B, C and slow A: 3 + 7 + 3 =
    # 13; fast A and slow B, C: 1 + 4 + 10 = 15; fast C and slow A, B: 3 + 3 + 7 = 13; ... 9 is the least (brute
    # force below agrees). So A starts on the fast pool, B on the slow one, and C waits behind A (A is at position 2
    # from the end, cost 2 x 1, C at 1, cost 3, B at 1, cost 4: 9).
    times = np.array([[1.0, 3.0], [4.0, 4.0], [3.0, 6.0]])
    queues = allox_queues(times, [1, 1])
    assert queues == [[[0, 2]], [[1]]]
    assert total_completion(times, queues) == 9.0


def brute_force(times: np.ndarray, slots: list[int]) -> float:
    places = [(p, s) for p, n in enumerate(slots) for s in range(n)]
    best = np.inf
    for choice in itertools.product(range(len(places)), repeat=len(times)):
        queues: list[list[list[int]]] = [[[] for _ in range(n)] for n in slots]
        for j, place in enumerate(choice):
            p, s = places[place]
            queues[p][s].append(j)
        for p, pool_queues in enumerate(queues):
            for queue in pool_queues:
                queue.sort(key=lambda j, p=p: times[j, p])
        best = min(best, total_completion(times, queues))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_matching_is_optimal_and_shortest_first_on_each_slot(seed):
    rng = np.random.default_rng(seed)
    jobs, pools = int(rng.integers(1, 6)), int(rng.integers(1, 3))
    slots = [int(n) for n in rng.integers(1, 3, size=pools)]
    times = rng.integers(1, 20, size=(jobs, pools)).astype(float)
    times[:, 1:][rng.random((jobs, pools - 1)) < 0.3] = np.inf  # some jobs may not use some pools; pool 0 always
    queues = allox_queues(times, slots)
    assert sorted(j for pool_queues in queues for queue in pool_queues for j in queue) == list(range(jobs))
    assert total_completion(times, queues) == pytest.approx(brute_force(times, slots))
    for p, pool_queues in enumerate(queues):
        for queue in pool_queues:
            assert list(times[queue, p]) == sorted(times[queue, p])


def test_a_job_with_no_usable_pool_is_left_out():
    times = np.array([[np.inf, 2.0], [1.0, 1.0]])
    assert allox_queues(times, [1, 0]) == [[[1]], []]


def finishes(results) -> dict[int, float]:
    return results.jobs.set_index("job_id")["finish"].to_dict()


def test_the_hand_solved_matching_in_a_run():
    # The case above in seconds x 100 on a V100 and a K80: A 300 s on a K80, 3x faster on the V100 (100 s); B 400 s on
    # both; C 600 s on a K80, 2x faster on the V100 (300 s). A runs 0-100 on the V100, B 0-400 on the K80; A's
    # finish changes the jobs, so at the next boundary (120 s, rounds of 60 s) C is matched to the free V100: 120-420.
    jobs = [job(0, 300.0, 3.0), job(1, 400.0, 1.0), job(2, 600.0, 2.0)]
    results = Simulation(TWO_TYPES, jobs, scheduler=AlloX(round_s=60.0), preemption=PreemptionCost(0.0, 0.0)).run()
    assert finishes(results) == pytest.approx({0: 100.0, 1: 400.0, 2: 420.0})
    assert results.jobs.set_index("job_id")["first_start"].to_dict() == pytest.approx({0: 0.0, 1: 0.0, 2: 120.0})


@pytest.mark.parametrize("fast_gainer", [0, 1])
def test_the_job_that_gains_most_from_the_fast_pool_gets_it(fast_gainer):
    # Both jobs have 600 s of work on a K80; one is 3x faster on the V100 (200 s there), the other 1.2x (500 s).
    # Sums of completion times: gainer on the V100, other on the K80: 200 + 600 = 800; the other way round: 500 +
    # 600 = 1,100; both on the V100, gainer first: 200 + 700 = 900; both on the K80: 1,800. So they start at once and
    # the gainer gets the V100, whatever its id.
    jobs = [job(j, 600.0, 3.0 if j == fast_gainer else 1.2) for j in (0, 1)]
    table = finishes(Simulation(TWO_TYPES, jobs, scheduler=AlloX(round_s=60.0)).run())
    assert table == pytest.approx({fast_gainer: 200.0, 1 - fast_gainer: 600.0})


def test_heterogeneity_unaware_counts_every_pool_alike():
    # Unaware, both jobs cost 600 s on either pool: any one-per-pool matching is optimal (the solver's tie-break
    # decides which), so both start at once; aware, the gainer (job 1) gets the V100 (above)
    jobs = [job(0, 600.0, 1.2), job(1, 600.0, 3.0)]
    aware = finishes(Simulation(TWO_TYPES, jobs, scheduler=AlloX(round_s=60.0)).run())
    results = Simulation(TWO_TYPES, jobs, scheduler=AlloX(round_s=60.0, heterogeneity_aware=False)).run()
    assert aware == pytest.approx({0: 600.0, 1: 200.0})
    assert results.jobs["first_start"].tolist() == [0.0, 0.0]
    assert sorted(finishes(results).values()) in (pytest.approx([200.0, 600.0]), pytest.approx([500.0, 600.0]))


def test_it_may_queue_two_jobs_on_the_fast_pool():
    # 600 s on a K80; 4x and 1.5x faster on the V100 (150 s and 400 s there). Both on the V100, gainer first: 150 +
    # 550 = 700, beats splitting them, 150 + 600 = 750. So the K80 stays idle: the second job waits and starts on the
    # V100 at the first boundary after the first ends (rounds of 60 s: 180 s).
    jobs = [job(0, 600.0, 4.0), job(1, 600.0, 1.5)]
    results = Simulation(TWO_TYPES, jobs, scheduler=AlloX(round_s=60.0), record_events=True).run()
    assert finishes(results) == pytest.approx({0: 150.0, 1: 580.0})
    assert results.jobs["pool"].tolist() == ["v100-sxm2", "v100-sxm2"]


def test_a_running_job_is_never_preempted():
    # A 1,000 s job runs alone; a 10 s job arrives at t = 5. Shortest-remaining-time would preempt; AlloX lets the
    # long job finish (its allocation is kept) and starts the short one at the first boundary after (t = 1,000).
    jobs = [TrainingJob(0, 0.0, 1, 1000.0), TrainingJob(1, 5.0, 1, 10.0)]
    results = Simulation(ONE_DEVICE, jobs, scheduler=AlloX(round_s=100.0), preemption=PreemptionCost(0.0, 0.0)).run()
    table = results.jobs.set_index("job_id")
    assert table["preemptions"].tolist() == [0, 0]
    assert table.loc[0, "finish"] == pytest.approx(1000.0) and table.loc[1, "first_start"] == pytest.approx(1000.0)
    srtf = Simulation(ONE_DEVICE, jobs, scheduler="srtf", preemption=PreemptionCost(0.0, 0.0)).run()
    assert srtf.jobs["preemptions"].sum() > 0  # the case does tempt a preemptive policy


@pytest.mark.parametrize(("alpha", "order"), [(1.0, [2, 1]), (0.5, [1, 2])])
def test_alpha_keeps_the_longest_waiting_jobs(alpha, order):
    # Job 0 (295 s) runs from t = 0; job 1 (195 s, arrived at 1) and job 2 (95 s, arrived at 2) wait. At t = 300
    # (rounds of 10 s) one device is free and two jobs wait. alpha = 1: both are candidates, the shorter (job 2) goes
    # first. alpha = 0.5: max(floor(0.5 x 2), 1 free device) = 1 candidate, the longest-waiting (job 1).
    jobs = [TrainingJob(0, 0.0, 1, 295.0), TrainingJob(1, 1.0, 1, 195.0), TrainingJob(2, 2.0, 1, 95.0)]
    results = Simulation(ONE_DEVICE, jobs, scheduler=AlloX(round_s=10.0, alpha=alpha),
                         preemption=PreemptionCost(0.0, 0.0)).run()
    starts = results.jobs.set_index("job_id")["first_start"]
    first, second = order
    assert starts[first] == pytest.approx(300.0)
    assert starts[second] == pytest.approx(400.0 if first == 2 else 500.0)


def test_gangs_are_matched_size_by_size_oldest_first():
    # Four devices; at t = 0 a 2-device job (100 s) and three 1-device jobs (50, 60, 70 s). Equal arrivals: job 0's
    # size goes first (lower id): 2 slots of 2 devices, job 0 takes one. Then 2 devices left, 2 slots of 1: the two
    # shortest (jobs 1, 2) start; job 3 waits for job 1's device, freed at 50, matched at the boundary of 60.
    cluster = Cluster([PoolSpec("a100", nodes=1, devices_per_node=4)])
    jobs = [TrainingJob(0, 0.0, 2, 100.0)] + [TrainingJob(j, 0.0, 1, 40.0 + 10 * j) for j in (1, 2, 3)]
    results = Simulation(cluster, jobs, scheduler=AlloX(round_s=20.0), preemption=PreemptionCost(0.0, 0.0)).run()
    assert results.jobs.set_index("job_id")["first_start"].to_dict() == pytest.approx({0: 0.0, 1: 0.0, 2: 0.0,
                                                                                        3: 60.0})


def gavel_run(**options) -> Simulation:
    jobs = generate_gavel_jobs(40, 1800.0, seed=0)
    return Simulation(preset("gavel", nodes=1), jobs, scheduler=AlloX(**options), placer="consolidate", seed=0,
                      record_events=True)


def test_gavel_jobs_on_gavel_cluster_all_finish_unpreempted():
    # Gavel's generator (1, 2 and 4-GPU jobs, 1-4 h on a V100) on 4 V100, 4 P100 and 4 K80
    results = gavel_run().run()
    assert len(results.jobs) == 40 and (results.jobs["status"] == "finished").all()
    assert (results.jobs["preemptions"] == 0).all()
    policy = results.summary()["policy"]
    assert policy["leases_lost"] == 0 and policy["resets"] > 1


def test_same_run_same_event_log():
    first, second = gavel_run(alpha=0.5).run(), gavel_run(alpha=0.5).run()
    assert len(first.events) > 0
    pd.testing.assert_frame_equal(first.events, second.events)
    pd.testing.assert_frame_equal(first.jobs, second.jobs)


def test_allox_keeps_every_scheduler_invariant():
    check_scheduler(AlloX(round_s=60.0), examples=6)
    check_scheduler(AlloX(round_s=60.0, alpha=0.3, heterogeneity_aware=False), examples=3)


def test_registered_with_its_parameters():
    policy = registry.create("scheduler", {"name": "allox", "alpha": 0.5, "round_s": 120})
    assert isinstance(policy, AlloX) and policy.alpha == 0.5 and policy.round_s == 120.0
    assert AlloX().min_reset_s == 0.0 and AlloX().alpha == 1.0


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5, float("nan"), True])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match="alpha"):
        AlloX(alpha=alpha)
