"""Jobs whose speed is not one number (``workloads.jobs.Phase``): a phase schedule worked out by hand on one and two
device types, work conserved across phases and preemptions, per-job checkpoint and restore costs, and the errors
of a schedule that does not add up."""

from __future__ import annotations

import math

import pytest

from sim import Cluster, PoolSpec, PreemptionCost, Simulation
from sim.policy_checks import check_run
from workloads import Phase, TrainingJob, WorkloadError, phases_from_steps

ONE_DEVICE = Cluster([PoolSpec("h100", nodes=1, devices_per_node=1)])
TWO_TYPES = Cluster([PoolSpec("v100", nodes=1, devices_per_node=1), PoolSpec("k80", nodes=1, devices_per_node=1)])


def _phased(job_id: int = 0, arrival: float = 0.0, **kwargs: object) -> TrainingJob:
    # 1,000 steps at 10 steps/s on a V100 and 5 on a K80, then 1,000 steps at 4 on a V100 and 1 on a K80
    phases = phases_from_steps([(1000, {"v100": 10.0, "k80": 5.0}), (1000, {"v100": 4.0, "k80": 1.0})], "v100")
    duration = math.fsum(p.duration for p in phases)
    return TrainingJob(job_id=job_id, arrival=arrival, gpus=1, duration=duration, reference_device="v100",
                       phases=phases, **kwargs)  # type: ignore[arg-type]


def test_phases_from_steps_lasts_steps_over_reference_throughput():
    job = _phased()
    assert [p.duration for p in job.phases] == [100.0, 250.0]
    assert job.duration == 350.0


def test_a_phased_job_runs_each_phase_at_its_own_speed():
    # alone on the K80: 1,000 / 5 + 1,000 / 1 = 1,200 s; on the V100: 100 + 250 = 350 s
    k80_only = TrainingJob(**{**_fields(_phased()), "allowed_devices": ("k80",)})
    res = Simulation(TWO_TYPES, [k80_only], record_events=True).run()
    assert res.jobs["jct"].iloc[0] == pytest.approx(1200.0, rel=1e-12)
    assert res.jobs["slowdown"].iloc[0] == pytest.approx(1200.0 / 1200.0, rel=1e-12)  # K80 is its only pool
    assert list(res.events["event"]) == ["arrive", "start", "phase", "finish"]
    assert res.events["time"].iloc[2] == pytest.approx(200.0, rel=1e-12)
    res = Simulation(TWO_TYPES, [_phased()]).run()
    assert res.jobs["jct"].iloc[0] == pytest.approx(350.0, rel=1e-12)
    assert res.jobs["slowdown"].iloc[0] == pytest.approx(1.0, rel=1e-12)


def _fields(job: TrainingJob) -> dict[str, object]:
    return {name: getattr(job, name) for name in TrainingJob.__dataclass_fields__}


def test_work_is_conserved_across_phases_and_preemptions():
    # LAS (short queue thresholds) on one K80 with a restore cost: the phased job (1,000 steps at 5/s, then 1,000
    # at 1/s on a K80) is preempted by later arrivals; replaying its runs at each phase's K80 speed (0.5 then 0.25
    # of its V100 speed) uses up both phases exactly when it finishes, the restore time of each resume aside
    cost = PreemptionCost(checkpoint_s=3.0, restore_s=2.0)
    one_k80 = Cluster([PoolSpec("k80", nodes=1, devices_per_node=1)])
    others = [TrainingJob(job_id=i, arrival=90.0 * i, gpus=1, duration=30.0) for i in range(1, 12)]
    las = {"name": "las", "thresholds": [20.0, 60.0, 150.0]}
    res = Simulation(one_k80, [_phased(), *others], scheduler=las, preemption=cost, record_events=True).run()
    events = res.events[res.events["job_id"] == 0]
    assert (events["event"] == "preempt").sum() >= 2
    runs, start = [], None
    for time, event in zip(events["time"], events["event"], strict=True):
        if event == "start":
            start = time
        elif event in ("preempt", "finish"):
            runs.append((start, time))
    work_left, speeds, phase = [100.0, 250.0], [0.5, 0.25], 0
    for k, (begin, end) in enumerate(runs):
        wall = end - begin - (cost.total if k else 0.0)
        while phase < 2 and wall > 0:
            needs = work_left[phase] / speeds[phase]
            if wall >= needs * (1 - 1e-12):
                wall -= needs
                work_left[phase], phase = 0.0, phase + 1
            else:
                work_left[phase] -= wall * speeds[phase]
                wall = 0.0
        assert phase < 2 or k == len(runs) - 1, "the job finished its work before its last run ended"
    assert phase == 2 and abs(wall) <= 1e-9 * res.jobs["finish"].max()
    row = res.jobs.set_index("job_id").loc[0]
    assert row["overhead_seconds"] == pytest.approx(cost.total * row["preemptions"], rel=1e-12)


def test_a_round_policy_keeps_the_lease_through_a_phase_change():
    # max-sum-throughput, one job alone on V100 + K80, round 60 s: it takes the V100 (2x the K80 in phase 1, 4x in
    # phase 2) and keeps its lease through the phase change: 350 s, no preemption, no restore
    res = Simulation(TWO_TYPES, [_phased()], scheduler={"name": "max-sum-throughput", "round_s": 60.0},
                     record_events=True).run()
    assert res.jobs["jct"].iloc[0] == pytest.approx(350.0, rel=1e-9)
    assert list(res.events["event"]) == ["arrive", "start", "phase", "finish"]


def test_a_jobs_own_checkpoint_and_restore_replace_the_simulations():
    cost = PreemptionCost(checkpoint_s=30.0, restore_s=30.0)
    big = TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=100.0, checkpoint_s=7.0, restore_s=4.0)
    small = TrainingJob(job_id=1, arrival=10.0, gpus=1, duration=100.0)
    only_restore = TrainingJob(job_id=2, arrival=20.0, gpus=1, duration=100.0, restore_s=1.0)
    las = {"name": "las", "thresholds": [20.0, 60.0]}
    res = Simulation(ONE_DEVICE, [big, small, only_restore], scheduler=las, preemption=cost).run()
    table = res.jobs.set_index("job_id")
    assert table["preemptions"].min() >= 1
    assert table.loc[0, "overhead_seconds"] == pytest.approx(11.0 * table.loc[0, "preemptions"], rel=1e-12)
    assert table.loc[1, "overhead_seconds"] == pytest.approx(60.0 * table.loc[1, "preemptions"], rel=1e-12)
    assert table.loc[2, "overhead_seconds"] == pytest.approx(31.0 * table.loc[2, "preemptions"], rel=1e-12)


@pytest.mark.parametrize(("phases", "message"), [
    ((Phase(100.0), Phase(200.0)), "phases last 300.0 s in all, its duration is 350.0 s"),
    ((), "non-empty tuple of Phase"),
    ([Phase(350.0)], "non-empty tuple of Phase"),
])
def test_a_phase_schedule_that_does_not_add_up_is_refused(phases, message):
    with pytest.raises(WorkloadError, match=message):
        TrainingJob(job_id=3, arrival=0.0, gpus=1, duration=350.0, phases=phases, name="bert")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"duration": 0.0}, "phase duration must be a positive"),
    ({"duration": 1.0, "throughputs": {"v100": 0.0}}, "phase throughput on 'v100' must be positive"),
    ({"duration": 1.0, "throughputs": {}}, "phase throughputs are empty"),
])
def test_bad_phases_are_named(kwargs, message):
    with pytest.raises(WorkloadError, match=message):
        Phase(**kwargs)


def test_steps_without_a_reference_throughput_are_named():
    with pytest.raises(WorkloadError, match="phase 1: no throughput on the reference device 'v100'"):
        phases_from_steps([(10, {"v100": 1.0}), (10, {"k80": 1.0})], "v100")
    with pytest.raises(WorkloadError, match="phase 0: steps must be positive"):
        phases_from_steps([(0, {"v100": 1.0})], "v100")


@pytest.mark.parametrize("key", ["checkpoint_s", "restore_s"])
def test_negative_checkpoint_costs_are_named(key):
    with pytest.raises(WorkloadError, match=f"job 0: {key} must be a finite number of seconds >= 0"):
        TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=1.0, **{key: -1.0})


def test_a_phase_on_no_common_pool_is_unschedulable_with_a_reason():
    phases = (Phase(10.0, {"v100": 1.0}), Phase(10.0, {"k80": 1.0}))
    job = TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=20.0, phases=phases)
    res = Simulation(TWO_TYPES, [job]).run()
    row = res.jobs.iloc[0]
    assert row["status"] == "unschedulable"
    assert "every phase" in row["reason"]


def test_the_invariant_replay_follows_phased_jobs():
    # check_run replays each phase at its own speed (tests/test_check_run_phases_elastic.py has the failing logs)
    res = Simulation(TWO_TYPES, [_phased()], record_events=True).run()
    check_run(TWO_TYPES, [_phased()], PreemptionCost(), res)
