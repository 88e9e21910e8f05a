"""Broken policies, bad names and bad jobs: each gets a clear error, and nothing is half-applied.

Scenario for the broken decisions (devices numbered pool by pool, node by node):

    pool h100: node 0 = devices 0, 1; node 1 = devices 2, 3.    pool a100: node 2 = devices 4, 5.

At t=0 the scripted scheduler starts job 0 on device 0 and job 4 on device 2 (valid). At t=1 jobs 1, 2,
3 and 5 arrive and it returns a decision whose first part is valid (preempt job 0, start job 1 on the
freed device 0) followed by one broken part. The engine must raise ``PolicyError`` naming the policy
and leave the state exactly as it was before that decision: jobs 0 and 4 running where they were, jobs
1, 2, 3, 5 waiting, 4 devices free, nothing logged at t=1 but the arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from sim import registry
from sim.engine import Simulation
from sim.errors import ConfigError, PolicyError, StarvationError, UnknownNameError
from sim.platform.cluster import Cluster, PoolSpec
from sim.training.contracts import Assignment, ClusterView, Decision, Placer, Scheduler
from sim.training.jobs import JobStatus
from workloads.errors import WorkloadError
from workloads.jobs import TrainingJob


@dataclass
class Scripted(Scheduler):
    """Returns ``first`` at the first pass and ``then(view)`` at every later one."""

    name = "scripted-policy"
    preemptive = True
    first: Decision = field(default_factory=Decision)
    then: Callable[[ClusterView], object] = lambda view: Decision()
    calls: int = 0

    def schedule(self, view: ClusterView) -> Decision:
        self.calls += 1
        return self.first if self.calls == 1 else self.then(view)  # type: ignore[return-value]


def cluster() -> Cluster:
    return Cluster([PoolSpec("h100", nodes=2, devices_per_node=2), PoolSpec("a100", nodes=1, devices_per_node=2)])


def workload() -> list[TrainingJob]:
    return [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(4, 0.0, 1, 100.0),
            TrainingJob(1, 1.0, 1, 100.0), TrainingJob(2, 1.0, 2, 100.0), TrainingJob(3, 1.0, 1, 100.0),
            TrainingJob(5, 1.0, 1, 100.0, allowed_devices=("a100",))]


FIRST = Decision(start=(Assignment(0, (0,)), Assignment(4, (2,))))
VALID_START = (Assignment(1, (0,)),)
VALID_PREEMPT = (0,)

# name -> (extra starts, extra preemptions, wake_at) appended to the valid part of the t=1 decision
BROKEN: dict[str, tuple[tuple[object, ...], tuple[int, ...], object]] = {
    "device twice in one gang": ((Assignment(2, (1, 1)),), (), None),
    "device twice across gangs": ((Assignment(3, (0,)),), (), None),
    "gang of the wrong size": ((Assignment(2, (1,)),), (), None),
    "gang too large": ((Assignment(3, (1, 3)),), (), None),
    "gang split though it fits one node": ((Assignment(2, (1, 3)),), (), None),
    "gang across two pools": ((Assignment(2, (3, 4)),), (), None),
    "busy device": ((Assignment(3, (2,)),), (), None),
    "device id out of range": ((Assignment(3, (99,)),), (), None),
    "negative device id": ((Assignment(3, (-1,)),), (), None),
    "bool as device id": ((Assignment(3, (True,)),), (), None),
    "pool not allowed for the job": ((Assignment(5, (1,)),), (), None),
    "start a running job": ((Assignment(4, (3,)),), (), None),
    "start an unknown job": ((Assignment(99, (3,)),), (), None),
    "start one job twice": ((Assignment(3, (1,)), Assignment(3, (3,))), (), None),
    "not an Assignment": (((3, (1,)),), (), None),
    "preempt a waiting job": ((), (2,), None),
    "preempt an unknown job": ((), (99,), None),
    "preempt a job twice": ((), (0,), None),
    "wake in the past": ((), (), 0.5),
    "wake now": ((), (), 1.0),
    "wake at NaN": ((), (), math.nan),
    "wake at infinity": ((), (), math.inf),
    "wake at a string": ((), (), "soon"),
}


def assert_state_before_t1(sim: Simulation) -> None:
    """The state after the valid t=0 decision and the t=1 arrivals, untouched by the broken decision."""
    assert sim.env.now == 1.0
    assert {j: r.devices for j, r in sim.running.items()} == {0: (0,), 4: (2,)}
    assert sim.records[0].status is JobStatus.RUNNING and sim.records[0].preemptions == 0
    assert set(sim.queue) == {1, 2, 3, 5}
    assert all(r.status is JobStatus.QUEUED and math.isnan(r.first_start) for r in sim.queue.values())
    assert sim.free.total == 4 and sim.free.pool_free == [2, 2]
    assert [d for d in range(6) if sim.free.is_free(d)] == [1, 3, 4, 5]
    assert [e for e in sim.event_log if e[0] == 1.0] == [(1.0, "arrive", j, ()) for j in (1, 2, 3, 5)]


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_decision_raises_policy_error_and_changes_nothing(case):
    starts, preempts, wake_at = BROKEN[case]
    bad = Decision(start=VALID_START + starts, preempt=VALID_PREEMPT + preempts, wake_at=wake_at)  # type: ignore[arg-type]
    sim = Simulation(cluster(), workload(), scheduler=Scripted(first=FIRST, then=lambda view: bad),
                     record_events=True)
    with pytest.raises(PolicyError, match="scripted-policy"):
        sim.run()
    assert_state_before_t1(sim)


def test_the_valid_part_alone_is_accepted():
    # Control for the test above: without the broken part the same decision is carried out.
    good = Decision(start=VALID_START, preempt=VALID_PREEMPT)
    policy = Scripted(first=FIRST, then=lambda view: good if view.now == 1.0 else Decision())
    sim = Simulation(cluster(), workload(), scheduler=policy, record_events=True)
    with pytest.raises(StarvationError):  # afterwards it starts nothing: stopped once jobs 1 and 4 end
        sim.run()
    assert [e for e in sim.event_log if e[0] == 1.0][-2:] == [(1.0, "preempt", 0, ()), (1.0, "start", 1, (0,))]


def test_a_job_preempted_and_started_in_one_decision_moves():
    # a migration: job 0 goes from device 0 to device 1 at t=1, paying the preemption cost like any preemption
    move = Decision(start=(Assignment(0, (1,)),), preempt=(0,))
    policy = Scripted(first=FIRST, then=lambda view: move if view.now == 1.0 else Decision())
    sim = Simulation(cluster(), workload(), scheduler=policy, record_events=True)
    with pytest.raises(StarvationError):  # afterwards it starts nothing
        sim.run()
    assert [e for e in sim.event_log if e[0] == 1.0][-2:] == [(1.0, "preempt", 0, ()), (1.0, "start", 0, (1,))]
    assert sim.records[0].preemptions == 1


@dataclass
class Undeclared(Scripted):
    """The scripted scheduler, saying it never preempts (the engine skips passes on that promise)."""

    preemptive = False


def test_preempting_without_saying_so_raises_policy_error_and_changes_nothing():
    good = Decision(start=VALID_START, preempt=VALID_PREEMPT)
    sim = Simulation(cluster(), workload(), scheduler=Undeclared(first=FIRST, then=lambda view: good),
                     record_events=True)
    with pytest.raises(PolicyError, match=r"scripted-policy.*preemptive = True"):
        sim.run()
    assert_state_before_t1(sim)


@pytest.mark.parametrize("returned", [None, {"start": []}, [Assignment(0, (0,))], Decision])
def test_returning_something_else_than_a_decision(returned):
    sim = Simulation(cluster(), workload(), scheduler=Scripted(first=returned))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"scripted-policy.*not a Decision"):
        sim.run()
    assert not sim.running and sim.free.total == 6


def test_scheduler_writing_to_the_live_free_devices_is_caught():
    def grab(view: ClusterView) -> Decision:
        view.free.take([1])  # not through a trial: the engine's own state
        return Decision()

    sim = Simulation(cluster(), workload(), scheduler=Scripted(first=FIRST, then=grab))
    with pytest.raises(PolicyError, match=r"scripted-policy.*changed the cluster's free devices"):
        sim.run()


def test_exception_inside_schedule_is_wrapped():
    def boom(view: ClusterView) -> Decision:
        raise ZeroDivisionError("the policy divided by zero")

    sim = Simulation(cluster(), workload(), scheduler=Scripted(first=FIRST, then=boom), record_events=True)
    with pytest.raises(PolicyError, match="scripted-policy") as info:
        sim.run()
    assert isinstance(info.value.__cause__, ZeroDivisionError) and "divided by zero" in str(info.value)
    assert_state_before_t1(sim)


# ------------------------------------------------------------------------------------------ placers
@dataclass
class BadPlacer(Placer):
    """Job 0 gets device 0; every other job gets ``devices``, right or wrong."""

    name = "bad-placer"
    devices: tuple[int, ...] = ()

    def place(self, job, free, rng: np.random.Generator):
        return (0,) if job.job_id == 0 else self.devices


# Job 2 (2 GPUs) arrives at t=1, while job 0 holds device 0.
BAD_PLACEMENTS = {
    "busy device": (0, 1),
    "device twice": (1, 1),
    "too few devices": (1,),
    "too many devices": (1, 3, 4),
    "split over nodes": (1, 3),
    "across pools": (3, 4),
    "out of range": (98, 99),
    "negative id": (-1, 1),
}


@pytest.mark.parametrize("case", list(BAD_PLACEMENTS))
def test_placer_returning_bad_devices_is_named(case):
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(2, 1.0, 2, 100.0)]
    sim = Simulation(cluster(), jobs, scheduler="fifo", placer=BadPlacer(devices=BAD_PLACEMENTS[case]),
                     record_events=True)
    with pytest.raises(PolicyError, match="bad-placer"):
        sim.run()
    assert {j: r.devices for j, r in sim.running.items()} == {0: (0,)}
    assert set(sim.queue) == {2} and sim.free.total == 5


def test_placer_exception_is_wrapped_naming_the_placer():
    @dataclass
    class Crashing(Placer):
        name = "crashing-placer"

        def place(self, job, free, rng):
            raise KeyError("no such node")

    sim = Simulation(cluster(), workload(), placer=Crashing())
    with pytest.raises(PolicyError, match="crashing-placer") as info:
        sim.run()
    assert isinstance(info.value.__cause__, KeyError)
    assert not sim.running and sim.free.total == 6


# ------------------------------------------------------------------------------------------ starvation
def test_scheduler_that_never_starts_anything_is_stopped():
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 5.0, 1, 10.0)]
    sim = Simulation(cluster(), jobs, scheduler=Scripted())  # always Decision(): starts nothing
    with pytest.raises(StarvationError, match="scripted-policy") as info:
        sim.run()
    # Stopped at the pass after the last arrival (nothing else can change), not later.
    assert sim.env.now == 5.0 and sim.scheduler.calls == 2
    assert "2 jobs wait" in str(info.value)


def test_starving_a_job_is_caught_when_the_last_arrival_is_unschedulable():
    # The last arrival (a gang larger than the cluster) brings no scheduling pass: the run simply runs out of
    # events with job 0 still waiting on an idle cluster, which is starvation, not a finished run.
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 1.0, 99, 10.0)]
    sim = Simulation(cluster(), jobs, scheduler=Scripted())
    with pytest.raises(StarvationError, match=r"scripted-policy.*1 jobs wait.*job 0"):
        sim.run()


def test_jobs_still_waiting_at_the_horizon_are_not_starvation():
    jobs = [TrainingJob(0, 0.0, 4, 100.0), TrainingJob(1, 1.0, 4, 100.0)]
    res = Simulation(cluster(), jobs, horizon=50.0).run()
    assert list(res.jobs["status"]) == ["running", "queued"]


def test_scheduler_that_only_wakes_itself_is_stopped():
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 5.0, 1, 10.0)]
    snooze = Scripted(first=Decision(wake_at=1.0), then=lambda view: Decision(wake_at=view.now + 1.0))
    sim = Simulation(cluster(), jobs, scheduler=snooze, max_idle_passes=50)
    with pytest.raises(StarvationError, match="scripted-policy"):
        sim.run()
    # 50 idle passes allowed after the last arrival at t=5, one per simulated second (one more at most).
    assert 5.0 + 50 <= sim.env.now <= 5.0 + 51
    assert sim.scheduler.calls <= 5 + 52


# ------------------------------------------------------------------------------------------ names, parameters
@pytest.mark.parametrize(("kind", "wrong", "close"), [("scheduler", "fifoo", "fifo"),
                                                      ("placer", "frist-fit", "first-fit")])
def test_unknown_policy_name_lists_the_valid_ones(kind, wrong, close):
    with pytest.raises(UnknownNameError) as info:
        Simulation(cluster(), workload(), **{kind: wrong})
    message = str(info.value)
    assert wrong in message and f"did you mean {close!r}" in message
    for name in registry.available(kind):
        assert name in message


def test_unknown_policy_parameter_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as info:
        Simulation(cluster(), workload(), scheduler={"name": "las", "thresholdz": [1]})
    message = str(info.value)
    assert "thresholdz" in message and "did you mean 'thresholds'" in message


@pytest.mark.parametrize("spec", [{"thresholds": [1]}, {"name": "las", "thresholds": [-5]},
                                  {"name": "las", "thresholds": [10, 5]}, {"name": "fifo", "blocking": "yes"}])
def test_bad_policy_configs(spec):
    with pytest.raises(ConfigError):
        Simulation(cluster(), workload(), scheduler=spec)


def test_policy_of_the_wrong_kind():
    with pytest.raises(ConfigError, match="scheduler"):
        Simulation(cluster(), workload(), scheduler=BadPlacer())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ bad jobs
@pytest.mark.parametrize("duration", [-1.0, 0.0, math.nan, math.inf, "10"])
def test_job_with_bad_duration(duration):
    with pytest.raises(WorkloadError, match="job 7"):
        TrainingJob(7, 0.0, 1, duration)  # type: ignore[arg-type]


@pytest.mark.parametrize("gpus", [-1, 0, math.nan, 1.5, True, "2"])
def test_job_with_bad_gang(gpus):
    with pytest.raises(WorkloadError, match="job 7"):
        TrainingJob(7, 0.0, gpus, 10.0)  # type: ignore[arg-type]


def test_jobs_no_pool_can_hold_are_unschedulable_and_the_run_finishes():
    # Largest pool has 4 devices: a gang of 5 never fits; a job allowed only on V100s has no pool.
    jobs = [TrainingJob(0, 0.0, 5, 10.0), TrainingJob(1, 0.0, 1, 10.0, allowed_devices=("v100",)),
            TrainingJob(2, 0.0, 4, 10.0), TrainingJob(3, 1.0, 2, 10.0, allowed_devices=("a100",))]
    sim = Simulation(cluster(), jobs, record_events=True)
    res = sim.run()
    status = dict(zip(res.jobs["job_id"], res.jobs["status"], strict=True))
    assert status == {0: "unschedulable", 1: "unschedulable", 2: "finished", 3: "finished"}
    reasons = dict(zip(res.jobs["job_id"], res.jobs["reason"], strict=True))
    assert "gang of 5" in reasons[0] and "largest 4" in reasons[0]
    assert "no pool" in reasons[1]
    assert reasons[2] == reasons[3] == ""
    assert [(e[1], e[2]) for e in sim.event_log if e[1] == "unschedulable"] == [("unschedulable", 0),
                                                                               ("unschedulable", 1)]
    assert res.summary()["jobs"]["unschedulable"] == 2 and res.summary()["jobs"]["completed"] == 2


@pytest.mark.parametrize(("report", "message"), [([1, 2], "not a mapping"),
                                                 ({"rounds": "many"}, "figures are numbers")])
def test_a_scheduler_report_that_is_not_figures_by_name_is_a_policy_error(report, message):
    @dataclass
    class Reporting(Scripted):
        def report(self):  # type: ignore[override]
            return report

    with pytest.raises(PolicyError, match=f"scripted-policy.*{message}"):
        Simulation(cluster(), [TrainingJob(0, 0.0, 1, 10.0)], scheduler=Reporting(first=Decision(
            start=(Assignment(0, (0,)),)))).run()
