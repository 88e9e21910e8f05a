"""Round-based scheduling (``policies/schedulers/rounds.py``) and Gavel's max-min fairness
(``policies/schedulers/max_min_fairness.py``): the linear program on cases solved by hand, the rounds' leases on a
one-device cluster worked out by hand, restore costs charged once per lost lease, and the invariants every
scheduler keeps (``sim.policy_checks``)."""

from __future__ import annotations

import numpy as np
import pytest

from policies.schedulers._lp import max_sum_allocation
from policies.schedulers.finish_time_fairness import FinishTimeFairness, finish_time_fair_allocation
from policies.schedulers.gandiva import Gandiva
from policies.schedulers.max_min_fairness import MaxMinFairness, max_min_allocation
from policies.schedulers.throughput_policies import MaxSumThroughput, MinTotalDuration, min_total_duration_allocation
from sim import Cluster, PoolSpec, PreemptionCost, Simulation
from sim.policy_checks import check_scheduler
from workloads import TrainingJob

ONE_DEVICE = Cluster([PoolSpec("h100", nodes=1, devices_per_node=1)])


@pytest.mark.parametrize(("gangs", "speeds", "devices", "expected"), [
    # two 1-device jobs on one device: half the time each
    ([1, 1], [[1.0], [1.0]], [1], [[0.5], [0.5]]),
    # a 1-device and a 2-device job on 2 devices: equal device-time, so the small job runs all the time and the
    # gang half of it (x1 + 2 x2 <= 2, 1 * x1 = 2 * x2)
    ([1, 2], [[1.0], [1.0]], [2], [[1.0], [0.5]]),
    # three jobs, two pools of one device; the middle job may run on both: each job gets half a device's time
    ([1, 1, 1], [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], [1, 1], [[0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]),
])
def test_allocation_solved_by_hand(gangs, speeds, devices, expected):
    np.testing.assert_allclose(max_min_allocation(gangs, np.array(speeds), devices), expected, atol=1e-7)


def test_heterogeneity_aware_objective_equalizes_normalized_throughput():
    # A runs 4x faster on the second pool, B 2x; one device each. Proportional throughputs 2.5 and 1.5; the optimum
    # gives both a normalized throughput of 1 (no allocation does better for both: checked on a grid below).
    speeds = np.array([[1.0, 4.0], [1.0, 2.0]])
    x = max_min_allocation([1, 1], speeds, [1, 1])
    normalized = (speeds * x).sum(axis=1) / np.array([2.5, 1.5])
    assert normalized.min() == pytest.approx(1.0, abs=1e-7)
    best = 0.0
    grid = np.linspace(0, 1, 21)
    for a_k in grid:
        for a_v in grid:
            if a_k + a_v > 1:
                continue
            b_k, b_v = 1 - a_k, 1 - a_v
            if b_k + b_v > 1 + 1e-12:
                b_k, b_v = b_k / (b_k + b_v), b_v / (b_k + b_v)
            best = max(best, min((a_k + 4 * a_v) / 2.5, (b_k + 2 * b_v) / 1.5))
    assert best <= normalized.min() + 1e-7
    # capacity and per-job limits hold
    assert (x.sum(axis=1) <= 1 + 1e-9).all() and (x.sum(axis=0) <= 1 + 1e-9).all()


def test_a_job_with_no_allowed_pool_gets_nothing_and_does_not_block_the_others():
    x = max_min_allocation([1, 1], np.array([[0.0], [1.0]]), [1])
    np.testing.assert_allclose(x, [[0.0], [1.0]], atol=1e-7)


def run_two_jobs(restore_s: float = 0.0) -> Simulation:
    jobs = [TrainingJob(0, 0.0, 1, 1000.0), TrainingJob(1, 0.0, 1, 1000.0)]
    policy = MaxMinFairness(round_s=100.0, min_reset_s=0.0)
    return Simulation(ONE_DEVICE, jobs, scheduler=policy, preemption=PreemptionCost(0.0, restore_s),
                      record_events=True)


def test_two_jobs_on_one_device_take_turns_round_by_round():
    # Each job is allocated half the device. Round 0 goes to job 0 (a tie, lower id first), round 1 to job 1 (it has
    # not run yet), then they alternate: job 0 has its 1,000 s after 10 of the even rounds (t = 1,900), job 1 runs the
    # last round alone (t = 2,000). Each loses its lease 9 times.
    results = run_two_jobs().run()
    table = results.jobs.set_index("job_id")
    assert table.loc[0, "finish"] == pytest.approx(1900.0) and table.loc[1, "finish"] == pytest.approx(2000.0)
    assert table.loc[1, "first_start"] == pytest.approx(100.0)
    assert table["preemptions"].tolist() == [9, 9]
    starts = results.events[results.events["event"] == "start"]
    assert starts["time"].tolist() == pytest.approx([100.0 * k for k in range(20)])
    assert starts["job_id"].tolist() == [0, 1] * 10


def test_restore_cost_is_charged_once_per_lost_lease():
    table = run_two_jobs(restore_s=10.0).run().jobs.set_index("job_id")
    assert (table["overhead_seconds"] == 10.0 * table["preemptions"]).all()
    assert (table["preemptions"] > 0).all()


def test_a_job_alone_keeps_its_lease_round_after_round():
    results = Simulation(ONE_DEVICE, [TrainingJob(0, 0.0, 1, 1000.0)], scheduler=MaxMinFairness(round_s=100.0),
                         preemption=PreemptionCost(30.0, 30.0)).run()
    row = results.jobs.iloc[0]
    assert row["preemptions"] == 0 and row["finish"] == pytest.approx(1000.0)


def test_a_job_arriving_mid_round_waits_for_the_next_round():
    jobs = [TrainingJob(0, 0.0, 1, 50.0), TrainingJob(1, 30.0, 1, 50.0)]
    results = Simulation(ONE_DEVICE, jobs, scheduler=MaxMinFairness(round_s=100.0, min_reset_s=0.0)).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[0, "finish"] == pytest.approx(50.0)  # its device then stays idle until t = 100
    assert table.loc[1, "first_start"] == pytest.approx(100.0)


TWO_DEVICES = Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)])


@pytest.mark.parametrize("policy_class", [MaxMinFairness, Gandiva])
@pytest.mark.parametrize(("new_jobs_wait", "start"), [(False, 100.0), (True, 500.0)])
def test_a_job_arriving_after_a_reset_waits_for_the_next_one_only_with_new_jobs_wait(policy_class, new_jobs_wait,
                                                                                     start):
    # Job 0 arrives at 0 (the first reset); job 1 at 30, with the second device idle. By default it runs there from
    # the next round (t = 100, on idle devices with no share); with new_jobs_wait, as in Gavel's simulator, it gets
    # no device until the next reset, the first round at least min_reset_s = 450 s after the last: t = 500.
    jobs = [TrainingJob(0, 0.0, 1, 2000.0), TrainingJob(1, 30.0, 1, 100.0)]
    policy = policy_class(round_s=100.0, min_reset_s=450.0, new_jobs_wait=new_jobs_wait)
    results = Simulation(TWO_DEVICES, jobs, scheduler=policy).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[1, "first_start"] == pytest.approx(start)
    assert table.loc[1, "finish"] == pytest.approx(start + 100.0)
    assert table.loc[0, "finish"] == pytest.approx(2000.0)  # never preempted: two devices, two jobs
    # resets: at 0 ({0}); with new_jobs_wait also at 500 ({0, 1}) and at 1000 ({0} again, 450 s after); by default
    # job 1 came and went between resets, so the set of jobs at the next round is the last reset's
    assert results.summary()["policy"]["resets"] == (3 if new_jobs_wait else 1)


def test_new_jobs_wait_keeps_every_scheduler_invariant():
    check_scheduler(MaxMinFairness(round_s=60.0, min_reset_s=120.0, new_jobs_wait=True), examples=4)


def test_max_min_fairness_keeps_every_scheduler_invariant():
    check_scheduler(MaxMinFairness(round_s=60.0, min_reset_s=0.0), examples=6)
    check_scheduler(MaxMinFairness(round_s=60.0, heterogeneity_aware=False), examples=3)


@pytest.mark.parametrize(("field", "value"), [("round_s", 0.0), ("round_s", float("nan")), ("min_reset_s", -1.0)])
def test_bad_round_parameters_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        MaxMinFairness(**{field: value})


def test_finish_time_fairness_solved_by_hand():
    # Two jobs of 100 s of work on one device, isolated share 1/2 each, so each one's isolated time is 200 s.
    # Arriving together: half the device each (rho 1 for both).
    np.testing.assert_allclose(finish_time_fair_allocation([1, 1], np.array([[1.0], [1.0]]), [1], np.zeros(2),
                                                           np.array([100.0, 100.0]), np.zeros(2)), [[0.5], [0.5]],
                               atol=2e-3)
    # Job A has already waited 100 s: equal rho needs (100 + 100 / x) / 200 = (100 / (1 - x)) / 200, so
    # x^2 + x - 1 = 0: A gets the golden ratio's 0.618 of the device, B 0.382, both rho 1.309.
    x = finish_time_fair_allocation([1, 1], np.array([[1.0], [1.0]]), [1], np.array([100.0, 0.0]),
                                    np.array([100.0, 100.0]), np.zeros(2))
    golden = (5 ** 0.5 - 1) / 2
    np.testing.assert_allclose(x[:, 0], [golden, 1 - golden], atol=2e-3)  # the bisection stops at 0.1% of rho


def test_finish_time_fairness_in_rounds_by_hand():
    # Job 0 (900 s of work) runs alone from t=0; job 1 (600 s) arrives at t=300, when both have 600 s left.
    # Isolated shares are then 1/2: job 0's isolated time is 300 (its work so far, alone) + 600 / 0.5 = 1,500 s,
    # job 1's 600 / 0.5 = 1,200 s. Equal rho, (300 + 600 / x0) / 1500 = (600 / x1) / 1200 with x0 + x1 = 1, gives
    # 2 x0^2 + 7 x0 - 4 = 0: x0 = x1 = 1/2. Rounds of 100 s then alternate from job 0 (a tie, lower id first): job 0
    # has its 600 s after 6 of its rounds (t = 1,400), job 1 ran 5 and runs the last one alone (t = 1,500).
    jobs = [TrainingJob(0, 0.0, 1, 900.0), TrainingJob(1, 300.0, 1, 600.0)]
    results = Simulation(ONE_DEVICE, jobs, scheduler=FinishTimeFairness(round_s=100.0, min_reset_s=0.0),
                         preemption=PreemptionCost(0.0, 0.0)).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[0, "finish"] == pytest.approx(1400.0) and table.loc[1, "finish"] == pytest.approx(1500.0)


def test_finish_time_fairness_keeps_every_scheduler_invariant():
    check_scheduler(FinishTimeFairness(round_s=60.0, min_reset_s=0.0), examples=5)


def test_rounds_and_leases_are_reported_in_the_summary():
    # the two-job run above: 20 rounds of 100 s (t = 0 ... 1,900), 2 allocation resets (t = 0, and t = 1,900 when
    # job 0 has finished); every boundary after the first swaps the jobs (18 leases lost, 20 granted), except that
    # at t = 1,900 the finished job frees the device: no lease is extended
    policy = run_two_jobs().run().summary()["policy"]
    assert policy == {"rounds": 20, "resets": 2, "lease_extensions": 0, "leases_lost": 18, "leases_granted": 20}
    # a job alone: every boundary while it runs is a round, as in Gavel's simulator, each extending its lease:
    # rounds at t = 0, 100, ..., 900 (the job is done at 1,000)
    alone = Simulation(ONE_DEVICE, [TrainingJob(0, 0.0, 1, 1000.0)], scheduler=MaxMinFairness(round_s=100.0)).run()
    assert alone.summary()["policy"] == {"rounds": 10, "resets": 1, "lease_extensions": 9, "leases_lost": 0,
                                         "leases_granted": 1}


def test_rounds_stay_on_their_boundaries_when_no_job_waited_for_a_while():
    # job 0 runs alone from t=0 (rounds of 100 s, each extending its lease); job 1 arrives at t=350,
    # mid-round, and waits for the boundary at t=400 (not t=450, as rounds started at its arrival would have it).
    # There the allocation is reset (1/2 each) and neither has run since: a tie, lower id first, so job 0 keeps its
    # lease for one more round and job 1 starts at t=500 (not t=550)
    jobs = [TrainingJob(0, 0.0, 1, 1000.0), TrainingJob(1, 350.0, 1, 50.0)]
    results = Simulation(ONE_DEVICE, jobs, scheduler=MaxMinFairness(round_s=100.0, min_reset_s=0.0),
                         preemption=PreemptionCost(0.0, 0.0)).run()
    assert results.jobs.set_index("job_id").loc[1, "first_start"] == pytest.approx(500.0)


def test_max_sum_throughput_solved_by_hand():
    # A is 4x faster on pool 0 than on pool 1, B 2x; one device each: A on pool 0 and B on pool 1 give 4 + 1 = 5,
    # the other way round 1 + 2 = 3
    x = max_sum_allocation(np.array([1.0, 1.0]), np.array([[4.0, 1.0], [2.0, 1.0]]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(x, [[1.0, 0.0], [0.0, 1.0]], atol=1e-9)


def test_min_total_duration_solved_by_hand():
    # 100 s and 300 s of work on one device: both are done by D = 400 s at the earliest, with the device split
    # 100/400 and 300/400
    x = min_total_duration_allocation(np.array([1.0, 1.0]), np.array([[1.0], [1.0]]), np.array([1.0]),
                                      np.array([100.0, 300.0]))
    np.testing.assert_allclose(x[:, 0], [0.25, 0.75], atol=1e-5)


@pytest.mark.parametrize("policy", [MaxSumThroughput, MinTotalDuration])
def test_throughput_policies_keep_every_scheduler_invariant(policy):
    check_scheduler(policy(round_s=60.0, min_reset_s=0.0), examples=4)
