"""Fractional-GPU training jobs (``TrainingJob.gpu_fraction``, issue 18 item 2): jobs that ask for a share of one
device are packed onto shared devices by the engine. Hand-computed small cases (finish times exact), the share
book's choice (best-fit, worst-fit), whole-device jobs kept off shared devices, the shares on a device never above
one at any event of random runs under every order-based scheduler (replayed from the event log, independently of
the engine), work conservation, accounting at the fraction, preemption, failures, the trace timeline, bad input and
broken decisions, determinism."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import StepUp

from sim import Simulation
from sim.engine import PreemptionCost
from sim.errors import ConfigError, PolicyError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_simulation
from sim.failures import FailureModel, failures
from sim.output.trace_events import trace_events
from sim.platform.cluster import Cluster, PoolSpec
from sim.policy_checks import check_run, check_same_results
from sim.serving.service import ServiceSpec
from sim.training.contracts import Assignment, Decision, Scheduler
from workloads import RequestTrace, get_model
from workloads.errors import WorkloadError
from workloads.jobs import TrainingJob

FREE = PreemptionCost(0.0, 0.0)


def cluster(devices: int, nodes: int = 1) -> Cluster:
    return Cluster([PoolSpec("h100", nodes=nodes, devices_per_node=devices)])


def job(i: int, fraction: float, duration: float = 100.0, arrival: float = 0.0, gpus: int = 1) -> TrainingJob:
    return TrainingJob(job_id=i, arrival=arrival, gpus=gpus, duration=duration, gpu_fraction=fraction)


def run(devices: int, jobs: list[TrainingJob], **options: object):  # type: ignore[no-untyped-def]
    options.setdefault("record_events", True)
    options.setdefault("preemption", FREE)
    return Simulation(cluster(devices), jobs, **options).run()  # type: ignore[arg-type]


def starts(results) -> dict[int, tuple[int, ...]]:  # type: ignore[no-untyped-def]
    ev = results.events
    return {int(j): tuple(d) for j, d in zip(ev.job_id[ev.event == "start"], ev.devices[ev.event == "start"],
                                              strict=True)}


# ----------------------------------------------------------------------------- hand-computed cases
def test_four_halves_on_one_device_run_two_at_a_time() -> None:
    results = run(1, [job(i, 0.5) for i in range(4)])
    jobs = results.jobs.set_index("job_id")
    assert jobs["first_start"].tolist() == [0.0, 0.0, 100.0, 100.0]
    assert jobs["finish"].tolist() == [100.0, 100.0, 200.0, 200.0]
    assert jobs["jct"].tolist() == [100.0, 100.0, 200.0, 200.0]
    assert jobs["device_seconds"].tolist() == [50.0] * 4  # half the device for 100 s
    assert jobs["gpu_fraction"].tolist() == [0.5] * 4
    tl = results.timeline
    assert tl.loc[tl.time == 0.0, "utilization"].item() == 1.0  # two halves: the device fully used
    assert tl.loc[tl.time == 0.0, "allocated_devices"].item() == 1


def test_fractions_that_do_not_fit_together_run_one_after_the_other() -> None:
    # 0.7 and 0.5 exceed one device; the shorter 0.3 fits beside the 0.7 (sjf tries it first)
    specs = [job(0, 0.7), job(1, 0.5), job(2, 0.3, 50.0, arrival=1.0)]
    jobs = run(1, specs, scheduler="sjf").jobs.set_index("job_id")
    assert jobs.loc[0, "finish"] == 100.0
    assert jobs.loc[2, "first_start"] == 1.0 and jobs.loc[2, "finish"] == 51.0  # beside job 0
    assert jobs.loc[1, "first_start"] == 100.0 and jobs.loc[1, "finish"] == 200.0
    # fifo keeps strict order: job 2 waits behind job 1, then both fit beside each other (0.8)
    results = run(1, specs, scheduler="fifo")
    jobs = results.jobs.set_index("job_id")
    assert jobs["first_start"].tolist() == [0.0, 100.0, 100.0] and jobs["finish"].tolist() == [100.0, 200.0, 150.0]
    tl = results.timeline.set_index("time")
    assert tl.loc[0.0, "utilization"] == pytest.approx(0.7)
    assert tl.loc[100.0, "utilization"] == pytest.approx(0.8)


def test_a_whole_device_job_never_gets_a_shared_device() -> None:
    # device 0 is shared by a long half job; the whole jobs get device 1 one after the other, although device 0
    # has half its share free all along
    results = run(2, [job(0, 0.5, duration=1000.0), job(1, 1.0, arrival=1.0), job(2, 1.0, arrival=2.0)])
    placed = starts(results)
    assert placed == {0: (0,), 1: (1,), 2: (1,)}
    jobs = results.jobs.set_index("job_id")
    assert jobs.loc[2, "first_start"] == 101.0


@pytest.mark.parametrize(("fit", "device"), [("best-fit", 1), ("worst-fit", 0)])
def test_a_fractional_job_goes_to_the_shared_device_the_fit_names(fit: str, device: int) -> None:
    # job 0 (0.5) opens device 0, job 1 (0.7) does not fit beside it and opens device 1; job 2 (0.25) fits both:
    # best-fit takes device 1 (0.05 left), worst-fit device 0 (0.25 left); a whole device is never opened for it
    jobs = [job(0, 0.5, 1000.0), job(1, 0.7, 1000.0, arrival=1.0), job(2, 0.25, 1000.0, arrival=2.0)]
    results = Simulation(cluster(3), jobs, record_events=True, share_fit=fit).run()
    assert starts(results)[2] == (device,)


def test_srtf_preempts_a_fractional_job_for_a_shorter_one() -> None:
    # two long halves fill the device; a short half arriving at t=1 takes the share of one of them
    results = run(1, [job(0, 0.5, 1000.0), job(1, 0.5, 1000.0), job(2, 0.5, 10.0, arrival=1.0)], scheduler="srtf")
    jobs = results.jobs.set_index("job_id")
    assert jobs.loc[2, "first_start"] == 1.0 and jobs.loc[2, "finish"] == 11.0
    assert jobs["preemptions"].sum() == 1
    victim = int(jobs.index[jobs["preemptions"] == 1][0])
    assert jobs.loc[victim, "finish"] == 1010.0  # 1 s done, 999 s left from t=11 (no preemption cost here)
    assert jobs.loc[1 - victim, "finish"] == 1000.0
    check_run(cluster(1), [job(0, 0.5, 1000.0), job(1, 0.5, 1000.0), job(2, 0.5, 10.0, arrival=1.0)], FREE, results)


def first_starts(devices: int, specs: list[TrainingJob], scheduler: str) -> dict[int, float]:
    results = run(devices, specs, scheduler=scheduler, placer="first-fit")
    return {int(k): float(v) for k, v in results.jobs.set_index("job_id")["first_start"].items()}


BACKFILL_CASES = [
    # 5 devices: device 0 shared by job 0 (ends at 5) and job 1 (ends at 200); job 2 holds devices 1-2 until 10, job 3
    # device 3 until 200; device 4 free. The head, job 4 (3 devices, at 1), can start at 10 (devices 1, 2 and 4):
    # device 0 frees only at 200, when job 1 ends. Job 5 (1 device for 100 s, at 2) would take device 4 past that, so
    # it waits for the head, as in fifo (counting job 0's end as a device freed at 5, the reservation saw a spare
    # device and let job 5 delay the head to 102).
    pytest.param(5, [job(0, 0.5, 5.0), job(1, 0.5, 200.0), job(2, 1.0, 10.0, gpus=2), job(3, 1.0, 200.0),
                     job(4, 1.0, 10.0, arrival=1.0, gpus=3), job(5, 1.0, 100.0, arrival=2.0)],
                 4, {4: 10.0, 5: 20.0}, id="a-shared-device-frees-when-its-last-sharer-ends"),
    # 4 devices: device 0 shared by job 0 (ends at 10) and job 1 (ends at 100), job 2 on device 1 until 50. The head,
    # job 3 (4 devices, at 1), starts at 100. Job 4 (1 device for 70 s, at 2) ends at 72 on a free device: backfilled
    # at 2 (counting each sharer's end as a device freed, the shadow came out at 50 and job 4 waited until 10).
    pytest.param(4, [job(0, 0.5, 10.0), job(1, 0.5, 100.0), job(2, 1.0, 50.0), job(3, 1.0, 10.0, arrival=1.0, gpus=4),
                     job(4, 1.0, 70.0, arrival=2.0)],
                 3, {3: 100.0, 4: 2.0}, id="so-the-shadow-is-not-too-early"),
    # 3 devices: job 0 holds half of device 0 until 300, job 1 device 1 until 10, job 2 device 2 until 200. The head,
    # job 3 (2 devices, at 1), starts at 200 on devices 1 and 2. Job 4 (half a device for 500 s, at 2) fits beside job
    # 0 on device 0, which the head does not wait for: backfilled at 2 although it runs past the shadow.
    pytest.param(3, [job(0, 0.5, 300.0), job(1, 1.0, 10.0), job(2, 1.0, 200.0), job(3, 1.0, 10.0, arrival=1.0, gpus=2),
                     job(4, 0.5, 500.0, arrival=2.0)],
                 3, {3: 200.0, 4: 2.0}, id="a-share-joins-a-device-the-head-does-not-count-on"),
    # 3 devices: job 0 on device 0 until 50, job 1 on device 1 until 300; device 2 free. The head, job 2 (2 devices, at
    # 1), waits for devices 0 and 2 at 50. Job 3 (half a device for 20 s, at 2) opens device 2 and leaves it by 22:
    # backfilled. Job 4 (half a device for 500 s, also at 2, so in the same pass) would share device 2 past 50 and
    # delay the head: it starts when the head is done, at 60.
    pytest.param(3, [job(0, 1.0, 50.0), job(1, 1.0, 300.0), job(2, 1.0, 10.0, arrival=1.0, gpus=2),
                     job(3, 0.5, 20.0, arrival=2.0), job(4, 0.5, 500.0, arrival=2.0)],
                 2, {2: 50.0, 3: 2.0, 4: 60.0}, id="a-device-a-short-share-opened-stays-counted"),
    # 4 devices: job 0 holds a quarter of device 0 until 40, job 1 devices 1-2 until 50, job 2 device 3 until 300. The
    # head, job 3 (2 devices, at 1), counts on device 0 at 40 and on devices 1-2 at 50: one device to spare at 50.
    # Jobs 4 and 5 (a quarter each for 500 s, at 2) join device 0 past 50: the first spends the spare device (device
    # 0 is then no longer counted on) and the second costs nothing more; the head still starts at 50.
    pytest.param(4, [job(0, 0.25, 40.0), job(1, 1.0, 50.0, gpus=2), job(2, 1.0, 300.0),
                     job(3, 1.0, 10.0, arrival=1.0, gpus=2), job(4, 0.25, 500.0, arrival=2.0),
                     job(5, 0.25, 500.0, arrival=2.0)],
                 3, {3: 50.0, 4: 2.0, 5: 2.0}, id="a-counted-shared-device-is-charged-once"),
]


@pytest.mark.parametrize(("devices", "specs", "head", "expected"), BACKFILL_CASES)
def test_easy_backfill_around_shared_devices_never_delays_the_head(devices: int, specs: list[TrainingJob], head: int,
                                                                   expected: dict[int, float]) -> None:
    backfill = first_starts(devices, specs, "easy-backfill")
    assert {i: backfill[i] for i in expected} == expected
    assert backfill[head] == first_starts(devices, specs, "fifo")[head]


@pytest.mark.parametrize(("scheduler", "arrival"), [("srtf", 1.0), ("las", 7000.0)])
def test_a_whole_job_preempts_every_share_of_a_device_it_outranks(scheduler: str, arrival: float) -> None:
    # two long halves fill the only device; a whole job of higher priority arrives (srtf: 10 s left against 19,999;
    # las: at 7,000 s the halves have held 3,500 device-seconds each, past Tiresias' first threshold of 3,250, and the
    # newcomer none). Preempting one half frees no device: both go, and the whole job runs at once.
    specs = [job(0, 0.5, 20_000.0), job(1, 0.5, 20_000.0), job(2, 1.0, 10.0, arrival=arrival)]
    results = run(1, specs, scheduler=scheduler)
    jobs = results.jobs.set_index("job_id")
    assert (jobs.loc[2, "first_start"], jobs.loc[2, "finish"]) == (arrival, arrival + 10.0)
    assert jobs.loc[[0, 1], "preemptions"].tolist() == [1, 1]
    assert jobs.loc[[0, 1], "finish"].tolist() == [20_010.0, 20_010.0]  # 10 s later, no preemption cost here
    check_run(cluster(1), specs, FREE, results)


def test_a_whole_job_waits_while_a_share_of_the_device_outranks_it() -> None:
    # srtf: the device's halves have 20,000 s and 6 s of work; a whole job of 10 s at 1 outranks only the first, and
    # preempting it alone frees no device: nothing is preempted until the short half ends at 6, then the long one is
    specs = [job(0, 0.5, 20_000.0), job(1, 0.5, 6.0), job(2, 1.0, 10.0, arrival=1.0)]
    results = run(1, specs, scheduler="srtf")
    jobs = results.jobs.set_index("job_id")
    assert jobs.loc[2, "first_start"] == 6.0 and jobs["preemptions"].tolist() == [1, 0, 0]
    check_run(cluster(1), specs, FREE, results)


def test_a_gang_passes_over_a_shared_device_it_cannot_free() -> None:
    # srtf, one node of 4 devices: device 0 shared by a half with 30,000 s of work and one with 6 s; devices 1-3 whole
    # jobs of 20,000 s. A 2-device job of 10 s at 1 outranks all but the short half, so device 0 cannot be freed: it
    # preempts two whole jobs instead and starts at once (counting the long half as a device freed, it waited until
    # the short half ended at 6)
    specs = [job(0, 0.5, 30_000.0), job(1, 0.5, 6.0), job(2, 1.0, 20_000.0), job(3, 1.0, 20_000.0),
             job(4, 1.0, 20_000.0), job(5, 1.0, 10.0, arrival=1.0, gpus=2)]
    results = run(4, specs, scheduler="srtf")
    jobs = results.jobs.set_index("job_id")
    assert jobs.loc[5, "first_start"] == 1.0 and jobs.loc[1, "preemptions"] == 0
    assert jobs.loc[[2, 3, 4], "preemptions"].sum() == 2
    check_run(cluster(4), specs, FREE, results)


def test_a_one_device_job_passes_over_a_shared_device_it_cannot_free() -> None:
    # srtf, one node of 2 devices: device 0 shared by a half with 30,000 s of work and one with 6 s, device 1 a whole
    # job of 20,000 s. A whole job of 10 s at 1: the long half is the node's lowest-priority job, but the short half
    # keeps its device, so the whole job preempts the job on device 1 and starts at once (before: at 6). (That job
    # in turn preempts the long half at 6, when the short one ends.)
    specs = [job(0, 0.5, 30_000.0), job(1, 0.5, 6.0), job(2, 1.0, 20_000.0), job(3, 1.0, 10.0, arrival=1.0)]
    results = run(2, specs, scheduler="srtf")
    jobs = results.jobs.set_index("job_id")
    assert jobs.loc[3, "first_start"] == 1.0 and jobs["preemptions"].tolist() == [1, 0, 1, 0]
    check_run(cluster(2), specs, FREE, results)


def test_a_device_failure_interrupts_every_fractional_job_on_it(tmp_path: Path) -> None:
    trace = tmp_path / "outages.csv"
    trace.write_text("time,device,duration\n10,0,100000\n")
    specs = [job(i, 0.3) for i in range(3)]  # all three on device 0 (0.9 of it)
    results = Simulation(cluster(2), specs, record_events=True, subsystems=[
        failures(FailureModel(trace=trace, restart_s=0.0))]).run()
    jobs = results.jobs.set_index("job_id")
    assert jobs["interruptions"].tolist() == [1, 1, 1]
    assert jobs["finish"].tolist() == [110.0] * 3  # no checkpoint: all 100 s again, on device 1, from t=10
    assert jobs["lost_device_seconds"].tolist() == pytest.approx([3.0] * 3)  # 10 s at 0.3 of a device
    assert jobs["goodput"].tolist() == pytest.approx([100 / 110] * 3)
    assert {d for j, d in starts(results).items()} == {(1,)}  # the last start of each: device 1


def test_the_trace_timeline_shows_sharing_jobs_on_their_device_row() -> None:
    results = run(1, [job(0, 0.5), job(1, 0.5, 50.0)])
    events = json.loads(json.dumps(trace_events(results)))["traceEvents"]
    slices = [e for e in events if e["ph"] == "X" and e["cat"] == "job"]
    assert len(slices) == 2 and {e["tid"] for e in slices} == {1}  # both on device 0's row
    assert sorted((e["ts"], e["dur"], e["args"]["gpu_fraction"]) for e in slices) == [(0.0, 50e6, 0.5),
                                                                                       (0.0, 100e6, 0.5)]


# ----------------------------------------------------------------------------- random workloads
def random_jobs(seed: int, n: int = 40) -> list[TrainingJob]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gpus = int(rng.choice([1, 1, 1, 2, 4]))
        fraction = float(rng.choice([0.1, 0.25, 0.3, 0.5, 0.6, 0.75, 1.0])) if gpus == 1 else 1.0
        out.append(TrainingJob(job_id=i, arrival=float(rng.integers(0, 1500)), gpus=gpus,
                               duration=float(rng.integers(20, 600)), gpu_fraction=fraction))
    return out


def replay_shares(results, specs: list[TrainingJob], devices: int) -> float:  # type: ignore[no-untyped-def]
    """The largest sum of fractions on one device after any event, from the event log alone; also checks that a
    whole job never shares its device and that the timeline's utilization is the held share at each sample."""
    fraction = {j.job_id: j.gpu_fraction for j in specs}
    on: dict[int, dict[int, float]] = defaultdict(dict)
    held_at: list[tuple[float, float]] = []
    worst = 0.0
    for t, kind, jid, devs in results.events.itertuples(index=False):
        if kind == "start":
            for d in devs:
                on[d][jid] = fraction[jid]
                if fraction[jid] == 1.0:
                    assert len(on[d]) == 1, f"t={t}: whole job {jid} on device {d} shared with {on[d]}"
                worst = max(worst, math.fsum(on[d].values()))
        elif kind in ("preempt", "finish", "fail"):
            for d in [d for d, jobs in on.items() if jid in jobs]:
                del on[d][jid]
        held_at.append((t, math.fsum(f for jobs in on.values() for f in jobs.values())))
    state = dict(held_at)  # the held share after the last event of each instant
    for t, utilization in results.timeline[["time", "utilization"]].itertuples(index=False):
        assert utilization * devices == pytest.approx(state[t], abs=1e-9)
    return worst


@pytest.mark.parametrize("scheduler", ["fifo", "sjf", "srtf", "las", "easy-backfill"])
def test_shares_never_exceed_one_device_and_work_is_conserved(scheduler: str) -> None:
    for seed in (1, 2):
        specs = random_jobs(seed)
        results = Simulation(cluster(4, nodes=2), specs, scheduler=scheduler, record_events=True, seed=seed).run()
        assert replay_shares(results, specs, 8) <= 1.0 + 1e-9
        # the replay of every training invariant: device exclusivity by shares, work conserved (each run at its
        # speed adds up to the duration), device_seconds at the fraction, timeline allocation, completion
        check_run(cluster(4, nodes=2), specs, PreemptionCost(), results)
        jobs = results.jobs
        assert (jobs["status"] == "finished").all()
        assert jobs["device_seconds"].to_numpy() == pytest.approx(
            (jobs["duration"] * jobs["gpus"] * jobs["gpu_fraction"]).to_numpy() + (
                jobs["overhead_seconds"] * jobs["gpus"] * jobs["gpu_fraction"]).to_numpy())


def test_sharing_devices_shortens_the_makespan_of_small_jobs() -> None:
    # the same jobs as whole-device jobs take longer: a check that packing does something, with its size known
    specs = [job(i, 0.25, 100.0) for i in range(8)]
    shared = run(1, specs).jobs["finish"].max()
    whole = run(1, [job(i, 1.0, 100.0) for i in range(8)]).jobs["finish"].max()
    assert (shared, whole) == (200.0, 800.0)


def test_same_seed_same_tables() -> None:
    specs = random_jobs(3)
    first = Simulation(cluster(4, nodes=2), specs, scheduler="las", record_events=True, seed=5).run()
    second = Simulation(cluster(4, nodes=2), specs, scheduler="las", record_events=True, seed=5).run()
    check_same_results(first, second)


# ----------------------------------------------------------------------------- bad input, broken decisions
@pytest.mark.parametrize(("fraction", "gpus", "message"), [
    (0.0, 1, "job 7: gpu_fraction must be a number in (0, 1], got 0.0"),
    (1.5, 1, "job 7: gpu_fraction must be a number in (0, 1], got 1.5"),
    (math.nan, 1, "job 7: gpu_fraction must be a number in (0, 1], got nan"),
    (-0.5, 1, "got -0.5"),
    (True, 1, "got True"),
    (0.5, 2, "job 7: gpu_fraction 0.5 below 1 needs gpus 1 and no elastic range, got gpus 2"),
])
def test_bad_fractions_are_one_line_errors(fraction: float, gpus: int, message: str) -> None:
    with pytest.raises(WorkloadError) as info:
        TrainingJob(job_id=7, arrival=0.0, gpus=gpus, duration=10.0, gpu_fraction=fraction)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_config_key_sets_fractions_and_bad_values_name_the_key(tmp_path: Path) -> None:
    base = ("cluster: {preset: null, pools: [{device: h100, nodes: 1, devices_per_node: 2}]}\n"
            "workload: {training: {jobs: 30, gpus: {dist: choice, values: [1, 2]}, gpu_fraction: %s}}\n"
            "sim: {progress: false, share_fit: %s}\n")
    path = tmp_path / "c.yaml"
    path.write_text(base % ("{dist: choice, values: [0.25, 0.5]}", "worst-fit"))
    sim = build_simulation(load_config(path))
    fractions = {(j.gpus, j.gpu_fraction) for j in sim.jobs}
    assert fractions == {(1, 0.25), (1, 0.5), (2, 1.0)}
    assert sim.ledger.shared.fit == "worst-fit"
    assert (sim.run().jobs["status"] == "finished").all()
    path.write_text(base % ("1.5", "best-fit"))
    with pytest.raises(ConfigError, match=r"workload\.training\.gpu_fraction: job \d+: gpu_fraction must be a number "
                                          r"in \(0, 1\], got 1.5"):
        build_simulation(load_config(path))
    path.write_text(base % ("0.5", "tightest"))
    with pytest.raises(ConfigError, match=re.escape("sim.share_fit must be one of best-fit, worst-fit, got 'tightest")):
        build_simulation(load_config(path))


def test_fractional_jobs_under_quotas_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("job 3: gpu_fraction 0.5 with quotas")):
        Simulation(cluster(2), [job(3, 0.5)], quotas={"default": {"h100": 2}})


class _Fixed(Scheduler):
    """Starts the queued jobs on the devices it is given, whatever they are."""

    name = "fixed"

    def __init__(self, plan: dict[int, tuple[int, ...]]) -> None:
        self.plan = plan

    def schedule(self, view):  # type: ignore[no-untyped-def]
        return Decision(start=tuple(Assignment(j.job_id, self.plan[j.job_id]) for j in view.queued))


@pytest.mark.parametrize(("specs", "plan", "message"), [
    ([job(0, 0.5), job(1, 0.6)], {0: (0,), 1: (0,)}, "asks for 0.6 of a device and device 0 has 0.5 free"),
    ([job(0, 0.5), job(1, 1.0)], {0: (0,), 1: (0,)}, "device 0 is given twice"),
    ([job(0, 1.0), job(1, 0.5)], {0: (0,), 1: (0,)}, "device 0 is given twice"),
])
def test_a_decision_that_overfills_a_device_is_a_policy_error(specs: list[TrainingJob],
                                                              plan: dict[int, tuple[int, ...]], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Simulation(cluster(2), specs, scheduler=_Fixed(plan)).run()


def test_a_whole_job_on_a_shared_device_is_a_policy_error() -> None:
    # job 0 shares device 0 from t=0; at t=1 the scheduler puts whole job 1 on it
    specs = [job(0, 0.5, 1000.0), job(1, 1.0, arrival=1.0)]
    with pytest.raises(PolicyError, match="device 0 is busy \\(shared by fractional jobs\\)"):
        Simulation(cluster(2), specs, scheduler=_Fixed({0: (0,), 1: (0,)})).run()


def test_a_replica_preempting_a_fractional_job_takes_its_device_whole() -> None:
    # test_colocation's first case with device 1 shared by two halves: the replica that needs a device at t=100
    # preempts the job of least attained service, a half, and with it the other half on its device
    times = np.arange(0.0, 400.0, 5.0)
    requests = RequestTrace(arrival=times, prompt_tokens=np.full(len(times), 200),
                            output_tokens=np.full(len(times), 20))
    spec = ServiceSpec("chat", requests, replicas=1, model=get_model("llama-3.1-8b"), device="h100", max_replicas=2,
                       load_bandwidth=16.06e9)
    jobs = [TrainingJob(0, 0.0, 2, 10_000.0), job(1, 0.5, 10_000.0, arrival=10.0), job(2, 0.5, 10_000.0, 10.0)]
    results = Simulation(cluster(2, nodes=2), jobs, services=[spec], autoscaler=StepUp(),
                         colocation="inference-priority", scheduler="fifo", record_events=True).run()
    ev = results.events
    first = ev[(ev.event == "preempt") & (ev.time == 100.0)]
    assert sorted(first.job_id) == [1, 2]
    replica = results.replicas.set_index("replica").loc[1]
    assert replica["created"] == 100.0 and replica["device_indexes"] == (1,)
    retired = replica["retired"] if not math.isnan(replica["retired"]) else math.inf
    later = ev[(ev.event == "start") & (ev.time >= 100.0) & (ev.time < retired)]
    assert all(1 not in devices for devices in later.devices)  # no training job back on the replica's device


# ----------------------------------------------------------------------------- openb pods in the engine
def test_openb_pods_replay_in_the_engine_with_their_gpu_fractions() -> None:
    from workloads.traces import load_openb_pods, openb_training_jobs

    pods = load_openb_pods("default")
    trace = openb_training_jobs(pods)
    ran = pods[(pods.num_gpu > 0) & (pods.deletion_time > pods.scheduled_time)]  # NaN compares False
    assert len(trace.jobs) == len(ran)
    assert sum(j.gpu_fraction < 1 for j in trace.jobs) == int(((ran.num_gpu == 1) & (ran.gpu_milli < 1000)).sum())
    by_name = ran.set_index("name")
    sample = trace.jobs[:: max(1, len(trace.jobs) // 50)]
    assert all(j.gpu_fraction == (by_name.loc[j.name, "gpu_milli"] / 1000 if j.gpus == 1 else 1.0)
               and j.duration == by_name.loc[j.name, "deletion_time"] - by_name.loc[j.name, "scheduled_time"]
               for j in sample)
    specs = list(openb_training_jobs(pods, limit=300).jobs)
    assert 50 < sum(j.gpu_fraction < 1 for j in specs) < 300
    hosts = Cluster([PoolSpec("v100", nodes=4, devices_per_node=8)])
    results = Simulation(hosts, specs, scheduler="sjf", record_events=True).run()
    check_run(hosts, specs, PreemptionCost(), results)  # shares, work, device time at the fraction, timeline
    jobs = results.jobs
    assert jobs["device_seconds"].sum() == pytest.approx(sum(j.duration * j.gpus * j.gpu_fraction for j in specs))
