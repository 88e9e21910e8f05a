"""Elastic jobs (``TrainingJob.max_gpus``, ``scaling``) and the ``pollux`` scheduler: speeds on other gangs worked
out by hand, the fitness exponent's allocations solved by hand on a two-job case, the re-allocation discount, work
conserved across resizes, gang limits enforced, and bad input."""

from __future__ import annotations

import math

import pytest

from policies.schedulers import Pollux
from sim import Cluster, PolicyError, PoolSpec, PreemptionCost, Simulation
from sim.training.contracts import Assignment, Decision, Scheduler
from workloads import TrainingJob, WorkloadError

EIGHT = Cluster([PoolSpec("v100", nodes=2, devices_per_node=4)])
FOUR = Cluster([PoolSpec("v100", nodes=1, devices_per_node=4)])
CURVE = {1: 1.0, 2: 1.9, 4: 3.4, 8: 5.0}


def _elastic(job_id: int, arrival: float = 0.0, duration: float = 4000.0, scaling: dict | None = None,
             **kwargs: object) -> TrainingJob:
    return TrainingJob(job_id, arrival, 1, duration, max_gpus=max(scaling or CURVE), scaling=scaling or CURVE,
                       **kwargs)  # type: ignore[arg-type]


def test_gang_speedup_interpolates_the_scaling_curve():
    job = _elastic(0)
    assert job.gang_range == (1, 8)
    assert job.gang_speedup(1) == 1.0
    assert job.gang_speedup(3) == pytest.approx((1.9 + 3.4) / 2)
    assert job.gang_speedup(6) == pytest.approx((3.4 + 5.0) / 2)
    # the ratio is to the requested gang, whatever the curve's unit
    job = TrainingJob(0, 0.0, 2, 100.0, max_gpus=4, min_gpus=2, scaling={2: 10.0, 4: 15.0})
    assert job.gang_speedup(4) == 1.5 and job.gang_speedup(3) == 1.25
    assert TrainingJob(0, 0.0, 2, 100.0, max_gpus=4).gang_speedup(4) == 2.0  # no curve: perfect scaling


def test_alone_an_elastic_job_takes_its_largest_gang_under_pollux():
    res = Simulation(EIGHT, [_elastic(0)], scheduler="pollux", record_events=True).run()
    assert res.jobs["jct"].iloc[0] == pytest.approx(4000.0 / 5.0, rel=1e-12)
    assert len(res.events["devices"].iloc[1]) == 8
    assert res.jobs["device_seconds"].iloc[0] == pytest.approx(8 * 800.0, rel=1e-12)


def test_a_rigid_scheduler_runs_an_elastic_job_on_its_requested_gang():
    res = Simulation(EIGHT, [_elastic(0)], scheduler="fifo").run()
    assert res.jobs["jct"].iloc[0] == 4000.0


def _gangs_at_start(res) -> dict[int, int]:
    starts = res.events[(res.events["event"] == "start") & (res.events["time"] == 0.0)]
    return {int(r.job_id): len(r.devices) for r in starts.itertuples()}


def test_the_fitness_exponent_decides_who_gets_the_spare_devices():
    # 4 devices, both jobs arrive at once and first get 1 each. A scales linearly (1, 2, 3), B less (1, 1.5, 2).
    # p = 1 (total speedup): A's next devices gain 1 each, B's 0.5, so A takes both spares: 3 and 1.
    # p = -1 (Pollux's default): the gains of -1/speedup are A 1->2: 0.5, then B 1->2: 1/3 beats A 2->3: 1/6: 2 and 2.
    a = TrainingJob(0, 0.0, 1, 3000.0, max_gpus=3, scaling={1: 1.0, 3: 3.0})
    b = TrainingJob(1, 0.0, 1, 3000.0, max_gpus=3, scaling={1: 1.0, 3: 2.0})
    total = Simulation(FOUR, [a, b], scheduler={"name": "pollux", "p": 1}, record_events=True).run()
    assert _gangs_at_start(total) == {0: 3, 1: 1}
    fair = Simulation(FOUR, [a, b], scheduler={"name": "pollux", "p": -1}, record_events=True).run()
    assert _gangs_at_start(fair) == {0: 2, 1: 2}


def test_the_restart_discount_keeps_a_job_on_its_gang_when_moving_would_not_pay():
    # A (elastic to 4, linear) and B (rigid, 2 devices, 100 s) arrive at once: B gets 2, A 1 then grows to 2. B ends
    # at t=100; at the boundary t=120 A (age 120, no restarts) may take the 2 freed devices. With restart_s=0 its
    # factor is 1 and it grows to 4; with restart_s=1e6 the factor (120 / (120 + 1e6)) makes any change worth
    # nothing against its current speedup, so it stays on 2 and is never preempted.
    jobs = [_elastic(0, scaling={1: 1.0, 4: 4.0}), TrainingJob(1, 0.0, 2, 100.0)]
    eager = Simulation(FOUR, jobs, scheduler={"name": "pollux", "restart_s": 0.0}, record_events=True).run()
    patient = Simulation(FOUR, jobs, scheduler={"name": "pollux", "restart_s": 1e6}, record_events=True).run()
    for res in (eager, patient):
        assert _gangs_at_start(res) == {0: 2, 1: 2}
    grown = eager.events[(eager.events["job_id"] == 0) & (eager.events["event"] == "start")]
    assert list(grown["time"]) == [0.0, 120.0] and len(grown["devices"].iloc[1]) == 4
    assert patient.jobs.loc[0, "preemptions"] == 0
    assert patient.jobs.loc[0, "jct"] == pytest.approx(4000.0 / 2.0)


def test_a_job_just_started_keeps_its_allocation():
    # age 0: the factor is 0, so it is pinned (Pollux's artifact divides by age + restart_s: no move pays at once)
    policy = Pollux()
    state = {"started": {5: 100.0}, "moves": {5: 2}}
    assert policy._discount(5, 100.0, state) == 0.0
    assert policy._discount(5, 160.0, state) == 0.0  # 60 s old and moved twice: 60 - 2 * 30 = 0
    assert policy._discount(5, 190.0, state) == pytest.approx(30.0 / 120.0)


def test_work_is_conserved_across_resizes():
    cost = PreemptionCost(checkpoint_s=10.0, restore_s=20.0)
    jobs = [_elastic(i, arrival=100.0 * i) for i in range(5)]
    res = Simulation(EIGHT, jobs, scheduler="pollux", preemption=cost, record_events=True).run()
    assert res.summary()["policy"]["reallocations"] > 0
    for job in jobs:
        events = res.events[res.events["job_id"] == job.job_id]
        work, start, gang, resumed = 0.0, None, 0, False
        for row in events.itertuples():
            if row.event == "start":
                start, gang = row.time, len(row.devices)
            elif row.event in ("preempt", "finish"):
                overhead = 30.0 if resumed else 0.0
                work += max(0.0, row.time - start - overhead) * job.gang_speedup(gang)
                resumed = True
        assert work == pytest.approx(job.duration, rel=1e-9)
        assert res.jobs.loc[job.job_id, "preemptions"] == (events["event"] == "preempt").sum()


class _Resizer(Scheduler):
    """Starts every waiting job on ``gang`` devices of the placer's choosing."""

    name = "resizer"

    def __init__(self, gang: int) -> None:
        self.gang = gang

    def schedule(self, view):
        trial = view.trial()
        starts = [Assignment(j.job_id, d) for j in view.queued if (d := trial.place(j.with_gang(self.gang)))]
        return Decision(start=tuple(starts))


def test_a_gang_outside_the_elastic_range_is_a_policy_error():
    job = TrainingJob(0, 0.0, 2, 100.0, min_gpus=2, max_gpus=4)
    Simulation(EIGHT, [job], scheduler=_Resizer(3)).run()  # inside: fine
    with pytest.raises(PolicyError, match=r"runs on 2 to 4 devices, got 1"):
        Simulation(EIGHT, [job], scheduler=_Resizer(1)).run()
    with pytest.raises(PolicyError, match=r"needs exactly 2 devices, got 3"):
        Simulation(EIGHT, [TrainingJob(0, 0.0, 2, 100.0)], scheduler=_Resizer(3)).run()


def test_under_quotas_an_elastic_job_is_placed_with_the_gang_it_asks_for():
    # The tenant has room for 2 devices on h100 and 4 on a100: a gang of 3 fits a100 only. The trial cuts the
    # pools the placer sees; the placer must still see the gang of 3, not the job's nominal 2.
    mixed = Cluster([PoolSpec("h100", nodes=1, devices_per_node=4), PoolSpec("a100", nodes=1, devices_per_node=4)])
    job = TrainingJob(0, 0.0, 2, 100.0, min_gpus=2, max_gpus=4, tenant="a")
    res = Simulation(mixed, [job], scheduler=_Resizer(3), quotas={"a": {"h100": 2, "a100": 4}},
                     record_events=True).run()
    start = res.events[res.events["event"] == "start"].iloc[0]
    assert len(start.devices) == 3
    assert all(mixed.pool_of_device(d) == 1 for d in start.devices)


def test_pollux_schedules_rigid_jobs_in_arrival_order():
    jobs = [TrainingJob(i, float(i), 4, 100.0) for i in range(3)]
    res = Simulation(FOUR, jobs, scheduler="pollux").run()
    assert list(res.jobs.sort_values("first_start")["job_id"]) == [0, 1, 2]
    assert res.jobs["preemptions"].sum() == 0


def test_pollux_runs_are_deterministic():
    jobs = [_elastic(i, arrival=37.0 * i, duration=900.0 + 100 * i) for i in range(8)]
    runs = [Simulation(EIGHT, jobs, scheduler="pollux", record_events=True).run() for _ in range(2)]
    assert runs[0].events.equals(runs[1].events)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_gpus": 4, "max_gpus": 2, "gpus": 2}, "min_gpus 4 is larger than max_gpus 2"),
    ({"min_gpus": 3, "max_gpus": 8, "gpus": 2}, "gpus 2 is outside its elastic range 3..8"),
    ({"scaling": {1: 1.0, 2: 2.0}}, "without max_gpus"),
    ({"max_gpus": 4, "scaling": {1: 1.0, 4: 0.0}}, "scaling on a gang of 4 must be a positive throughput"),
    ({"max_gpus": 4, "scaling": {2: 1.0, 4: 2.0}}, "scaling covers gangs 2..4, not its elastic range 1..4"),
    ({"max_gpus": 4, "scaling": {1: 1.0, 4: math.nan}}, "must be a positive throughput"),
    ({"max_gpus": 0}, "must be positive integers"),
])
def test_bad_elastic_jobs_are_refused(kwargs, message):
    gpus = kwargs.pop("gpus", 2)
    with pytest.raises(WorkloadError, match=message):
        TrainingJob(7, 0.0, gpus, 100.0, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval_s": 0}, "interval_s must be a positive"),
    ({"restart_s": -1.0}, "restart_s must be a non-negative"),
    ({"p": math.inf}, "p must be a finite number"),
])
def test_bad_pollux_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pollux(**kwargs)
