"""Exact event logs on tiny hand-checked scenarios (STYLE.md item 8, first layer).

Every expected time below is worked out by hand in the comment above it; the tests compare the whole
event log, the jobs table and the timeline exactly. All times are small binary fractions, so float
arithmetic is exact, except where a speed ratio is involved (said so there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

from sim.engine import EventOrder, PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.hardware import get_device
from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from workloads.jobs import TrainingJob

H100 = get_device("h100").name


def run(cluster: Cluster, jobs: list[TrainingJob], **kwargs):
    sim = Simulation(cluster, jobs, record_events=True, **kwargs)
    return sim, sim.run()


def log(results) -> list[tuple[float, str, int, tuple[int, ...]]]:
    return [(float(t), str(e), int(j), tuple(d)) for t, e, j, d in results.events.itertuples(index=False)]


def job_rows(results, columns: list[str]) -> dict[int, tuple]:
    table = results.jobs.set_index("job_id")
    return {int(i): tuple(row) for i, row in table[columns].iterrows()}


def timeline(results) -> list[tuple[float, int, int, int]]:
    cols = ["time", "allocated_devices", "queued_jobs", "running_jobs"]
    return [(float(t), int(a), int(q), int(r)) for t, a, q, r in results.timeline[cols].itertuples(index=False)]


COLUMNS = ["arrival", "first_start", "finish", "queueing_delay", "jct", "slowdown", "status", "preemptions",
           "overhead_seconds", "device_seconds"]


# ------------------------------------------------------------------------------------------ FIFO
def test_fifo_log_with_head_of_line_blocking_and_same_time_finish_and_arrival():
    # 1 node x 2 GPUs, strict FIFO, first-fit.
    #   job 0: t=0,  1 GPU, 10 s -> starts 0 on device 0, finishes 10.
    #   job 1: t=2,  2 GPUs, 5 s -> only 1 device free: waits. At t=10 job 0 finishes (processed before job
    #          3's arrival at the same instant), the single pass at t=10 starts job 1 on (0, 1); finishes 15.
    #   job 2: t=3,  1 GPU, 4 s  -> device 1 is free, but FIFO blocks it behind job 1; starts 15 on device 0,
    #          finishes 19.
    #   job 3: t=10, 1 GPU, 3 s  -> arrives at job 0's finish; queued behind jobs 1, 2; starts 15 on device
    #          1, finishes 18.
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)])
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 2.0, 2, 5.0), TrainingJob(2, 3.0, 1, 4.0),
            TrainingJob(3, 10.0, 1, 3.0)]
    _, res = run(cluster, jobs, scheduler="fifo", placer="first-fit")
    assert log(res) == [
        (0.0, "arrive", 0, ()), (0.0, "start", 0, (0,)),
        (2.0, "arrive", 1, ()),
        (3.0, "arrive", 2, ()),
        (10.0, "finish", 0, ()), (10.0, "arrive", 3, ()), (10.0, "start", 1, (0, 1)),
        (15.0, "finish", 1, ()), (15.0, "start", 2, (0,)), (15.0, "start", 3, (1,)),
        (18.0, "finish", 3, ()),
        (19.0, "finish", 2, ()),
    ]
    # queueing_delay = first_start - arrival, jct = finish - arrival, slowdown = jct / duration (speed 1).
    assert job_rows(res, COLUMNS) == {
        0: (0.0, 0.0, 10.0, 0.0, 10.0, 1.0, "finished", 0, 0.0, 10.0),
        1: (2.0, 10.0, 15.0, 8.0, 13.0, 13.0 / 5.0, "finished", 0, 0.0, 10.0),
        2: (3.0, 15.0, 19.0, 12.0, 16.0, 16.0 / 4.0, "finished", 0, 0.0, 4.0),
        3: (10.0, 15.0, 18.0, 5.0, 8.0, 8.0 / 3.0, "finished", 0, 0.0, 3.0),
    }
    assert set(res.jobs["pool"]) == {H100} and set(res.jobs["device_type"]) == {H100}
    # One sample per scheduling pass: (time, allocated, queued, running) after the pass.
    assert timeline(res) == [(0.0, 1, 0, 1), (2.0, 1, 1, 1), (3.0, 1, 2, 1), (10.0, 2, 2, 1), (15.0, 2, 0, 2),
                             (18.0, 1, 0, 1), (19.0, 0, 0, 0)]


# ------------------------------------------------------------------------------------------ same-time order
def test_event_order_is_documented():
    # The documented same-time order: completions, then arrivals, then policy timers, then one pass.
    order = sorted(EventOrder, key=int)
    assert order == [EventOrder.FINISH, EventOrder.ARRIVAL, EventOrder.TIMER, EventOrder.SCHEDULE]


def test_completion_before_arrival_frees_the_device_for_the_arriving_job():
    # 1 x 1 GPU. job 0: t=0, 5 s -> finishes at 5. job 1 arrives at exactly 5: the completion is processed
    # first, so the single pass at t=5 sees device 0 free and starts job 1 there at once (no wait); it
    # finishes at 7.
    cluster = Cluster([PoolSpec("h100", 1, 1)])
    _, res = run(cluster, [TrainingJob(0, 0.0, 1, 5.0), TrainingJob(1, 5.0, 1, 2.0)])
    assert log(res) == [(0.0, "arrive", 0, ()), (0.0, "start", 0, (0,)),
                        (5.0, "finish", 0, ()), (5.0, "arrive", 1, ()), (5.0, "start", 1, (0,)),
                        (7.0, "finish", 1, ())]
    assert job_rows(res, ["first_start", "queueing_delay", "finish"])[1] == (5.0, 0.0, 7.0)
    assert timeline(res) == [(0.0, 1, 0, 1), (5.0, 1, 0, 1), (7.0, 0, 0, 0)]


def test_same_time_arrivals_keep_their_order():
    # 1 x 2 GPUs, all three arrive at t=1, given in the order 7, 3, 5 (not id order). Arrivals are logged
    # and queued in that order: FIFO starts 7 on device 0 and 3 on device 1; 5 waits. Both finish at 11,
    # in the order their completions were created (7 then 3); 5 starts at 11 on device 0, ends at 21.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    jobs = [TrainingJob(7, 1.0, 1, 10.0), TrainingJob(3, 1.0, 1, 10.0), TrainingJob(5, 1.0, 1, 10.0)]
    _, res = run(cluster, jobs)
    assert log(res) == [(1.0, "arrive", 7, ()), (1.0, "arrive", 3, ()), (1.0, "arrive", 5, ()),
                        (1.0, "start", 7, (0,)), (1.0, "start", 3, (1,)),
                        (11.0, "finish", 7, ()), (11.0, "finish", 3, ()), (11.0, "start", 5, (0,)),
                        (21.0, "finish", 5, ())]


@dataclass
class _WakeOnce(Scheduler):
    """Starts nothing at its first pass but asks to be woken at ``at``; then behaves like FIFO on one device."""

    name = "wake-once"
    at: float = 5.0
    seen: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)

    def schedule(self, view: ClusterView) -> Decision:
        self.seen.append((view.now, tuple(j.job_id for j in view.queued)))
        if view.now < self.at:
            return Decision(wake_at=self.at)
        trial = view.trial()
        starts = []
        for job in view.queued:
            devices = trial.place(job)
            if devices is not None:
                starts.append(Assignment(job.job_id, devices))
        return Decision(start=tuple(starts))


def test_timer_and_arrival_at_one_instant_give_one_pass_that_sees_the_arrival():
    # job 0 arrives at 0; the scheduler waits until its own timer at 5. job 1 arrives at 5 too: the
    # arrival (ARRIVAL) and the timer (TIMER) are both processed before the single pass (SCHEDULE) at 5,
    # which sees both jobs queued and starts them (1 x 2 GPUs).
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    sim, res = run(cluster, [TrainingJob(0, 0.0, 1, 4.0), TrainingJob(1, 5.0, 1, 4.0)], scheduler=_WakeOnce(at=5.0))
    assert sim.scheduler.seen == [(0.0, (0,)), (5.0, (0, 1))]  # the run's own copy of the policy
    assert log(res) == [(0.0, "arrive", 0, ()), (5.0, "arrive", 1, ()), (5.0, "start", 0, (0,)),
                        (5.0, "start", 1, (1,)), (9.0, "finish", 0, ()), (9.0, "finish", 1, ())]


# ------------------------------------------------------------------------------------------ preemption
def test_srtf_log_with_preemption_and_checkpoint_restore_cost():
    # 1 node x 2 GPUs, SRTF, first-fit, checkpoint 3 s + restore 2 s (both charged when the victim resumes).
    #   t=0   job 0 (2 GPUs, 100 s) starts on (0, 1).
    #   t=10  job 1 (1 GPU, 20 s) arrives; job 0 has 90 s left > 20: job 0 is preempted (remaining 90), job 1
    #         starts on device 0. Device 1 stays idle: job 0 needs two.
    #   t=15  job 2 (1 GPU, 50 s) arrives: starts on the free device 1 (job 0 with 90 s left does not fit and
    #         job 1 with 15 s left has less work than it, so nothing is preempted).
    #   t=30  job 1 finishes. job 0 still does not fit; job 2 (35 s left) has less work: nothing happens.
    #   t=65  job 2 finishes; job 0 resumes on (0, 1): 5 s overhead, then 90 s of work -> finishes at 160.
    # job 0: device-seconds 2 x 10 + 2 x (160 - 65) = 210; overhead 5; slowdown 160 / 100.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    jobs = [TrainingJob(0, 0.0, 2, 100.0), TrainingJob(1, 10.0, 1, 20.0), TrainingJob(2, 15.0, 1, 50.0)]
    _, res = run(cluster, jobs, scheduler="srtf", preemption=PreemptionCost(checkpoint_s=3.0, restore_s=2.0))
    assert log(res) == [
        (0.0, "arrive", 0, ()), (0.0, "start", 0, (0, 1)),
        (10.0, "arrive", 1, ()), (10.0, "preempt", 0, ()), (10.0, "start", 1, (0,)),
        (15.0, "arrive", 2, ()), (15.0, "start", 2, (1,)),
        (30.0, "finish", 1, ()),
        (65.0, "finish", 2, ()), (65.0, "start", 0, (0, 1)),
        (160.0, "finish", 0, ()),
    ]
    assert job_rows(res, COLUMNS) == {
        0: (0.0, 0.0, 160.0, 0.0, 160.0, 1.6, "finished", 1, 5.0, 210.0),
        1: (10.0, 10.0, 30.0, 0.0, 20.0, 1.0, "finished", 0, 0.0, 20.0),
        2: (15.0, 15.0, 65.0, 0.0, 50.0, 1.0, "finished", 0, 0.0, 50.0),
    }
    assert timeline(res) == [(0.0, 2, 0, 1), (10.0, 1, 1, 1), (15.0, 2, 1, 2), (30.0, 1, 1, 1),
                             (65.0, 2, 0, 1), (160.0, 0, 0, 0)]


def test_preemption_during_restore_charges_the_overhead_again_and_makes_no_progress():
    # 1 x 1 GPU, SRTF, checkpoint 4 + restore 4 = 8 s per resume.
    #   t=0  job 0 (100 s) starts.        t=10 job 1 (20 s) preempts it (job 0 has 90 left).
    #   t=30 job 1 ends; job 0 resumes, in overhead until 38.
    #   t=35 job 2 (10 s) arrives: job 0 still has 90 s left (no progress during the overhead): preempted.
    #   t=45 job 2 ends; job 0 resumes with a fresh 8 s overhead: finishes at 45 + 8 + 90 = 143.
    # job 0: 2 preemptions; overhead is the restore time spent: 5 s (30..35, cut short) + 8 s = 13 s;
    # device-seconds 10 + 5 + 98 = 113.
    cluster = Cluster([PoolSpec("h100", 1, 1)])
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 20.0), TrainingJob(2, 35.0, 1, 10.0)]
    _, res = run(cluster, jobs, scheduler="srtf", preemption=PreemptionCost(4.0, 4.0))
    starts = [(t, j) for t, e, j, _ in log(res) if e in ("start", "preempt", "finish") and j == 0]
    assert starts == [(0.0, 0), (10.0, 0), (30.0, 0), (35.0, 0), (45.0, 0), (143.0, 0)]
    assert job_rows(res, ["finish", "preemptions", "overhead_seconds", "device_seconds"])[0] == (143.0, 2, 13.0,
                                                                                                   113.0)


# ------------------------------------------------------------------------------------------ device speed
def test_reference_device_scales_run_time_by_training_peak_ratio():
    # A job whose 1000 s are measured on a V100 runs training_peak(H100) / training_peak(V100) times faster
    # on an H100 (989 / 125 TFLOP/s in REFERENCE.md's table). The same job restricted to a V100 pool takes
    # exactly its duration. Slowdown is relative to the job's best allowed device, so both jobs have 1.
    ratio = get_device("h100").training_peak / get_device("v100").training_peak
    assert ratio == pytest.approx(989 / 125, rel=1e-12)  # the datasheet ratio, up to rounding
    cluster = Cluster([PoolSpec("h100", 1, 1), PoolSpec("v100", 1, 1)])
    jobs = [TrainingJob(0, 0.0, 1, 1000.0, reference_device="v100", allowed_devices=("h100",)),
            TrainingJob(1, 0.0, 1, 1000.0, reference_device="v100", allowed_devices=("v100",))]
    _, res = run(cluster, jobs)
    rows = job_rows(res, ["first_start", "finish", "device_type", "slowdown"])
    # Relative tolerance 1e-12: only the rounding of one division separates the two sides.
    assert rows[0][1] == pytest.approx(1000.0 / ratio, rel=1e-12)
    assert rows[0][2] == H100 and rows[0][3] == pytest.approx(1.0, rel=1e-12)
    assert rows[1] == (0.0, 1000.0, get_device("v100").name, 1.0)


def test_throughputs_override_peak_ratio():
    # throughputs {h100: 3, a100: 1.5} with reference a100: speed 2 on an H100, 1 on an A100. A 300 s job
    # therefore takes 150 s on the H100 and 300 s on the A100; its slowdown is measured against the H100
    # (best allowed speed 2): 300 / 150 = 2 on the A100. A job whose throughputs name no device of the
    # cluster has no pool and is unschedulable.
    cluster = Cluster([PoolSpec("h100", 1, 1), PoolSpec("a100", 1, 1)])
    tp = {"h100": 3.0, "a100": 1.5}
    jobs = [TrainingJob(0, 0.0, 1, 300.0, reference_device="a100", throughputs=tp),
            TrainingJob(1, 0.0, 1, 300.0, reference_device="a100", throughputs=tp),
            TrainingJob(2, 0.0, 1, 300.0, throughputs={"v100": 1.0})]
    _, res = run(cluster, jobs)
    rows = job_rows(res, ["first_start", "finish", "device_type", "slowdown", "status"])
    assert rows[0] == (0.0, 150.0, H100, 1.0, "finished")
    assert rows[1] == (0.0, 300.0, get_device("a100").name, 2.0, "finished")
    assert rows[2][4] == "unschedulable" and pd.isna(rows[2][0]) and pd.isna(rows[2][1])
    assert (0.0, "unschedulable", 2, ()) in log(res)
