"""Failures and checkpoints (sim.failures): the closed form of the work lost without checkpoints, work
conservation, a failure trace replayed exactly, the Young/Daly interval, the ledger keeping failed devices out of
reach, Meta's Llama 3 interruption count and its rate against OPT-175B's and BLOOM-176B's hardware failures, and
clear errors on bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sim import CheckpointPolicy, FailureModel, Simulation, SpotPool, failures, load_config, run_config
from sim.errors import ConfigError
from sim.failures import expected_run_time, load_failure_trace, young_daly_interval
from sim.platform.cluster import Cluster, PoolSpec
from sim.serving.service import FixedService, ServiceSpec
from workloads import RequestTrace, get_model
from workloads.distributions import Exponential
from workloads.jobs import TrainingJob

H100 = "h100"


def cluster(nodes: int, per_node: int = 8) -> Cluster:
    return Cluster([PoolSpec(H100, nodes=nodes, devices_per_node=per_node)])


def jobs(count: int, gpus: int, duration: float, gap: float = 0.0) -> list[TrainingJob]:
    return [TrainingJob(job_id=i, arrival=i * gap, gpus=gpus, duration=duration) for i in range(count)]


def test_lost_work_without_checkpoints_matches_the_closed_form() -> None:
    # A job of T seconds on a gang whose failure rate is lam, restarting from scratch (no checkpoints) and at once
    # (restart_s 0, spare devices), runs until a failure-free stretch of T: E[running time] = (e^{lam T} - 1) / lam,
    # so E[lost work] = E - T. Waiting for repairs adds no running time, so it does not change the lost work.
    T, gpus, mtbf_h = 3600.0, 2, 2.0  # lam T = gpus * T / MTBF = 1
    lam = gpus / (mtbf_h * 3600)
    expected = (math.exp(lam * T) - 1) / lam - T
    n = 1500
    results = Simulation(cluster(8), jobs(n, gpus, T, gap=1.0), seed=5, subsystems=[
        failures(FailureModel(mtbf_hours={H100: mtbf_h}, mttr_hours=0.2, restart_s=0.0))]).run()
    lost = results.jobs["lost_work_seconds"].to_numpy()
    assert (results.jobs["status"] == "finished").all()
    half = stats.norm.ppf(0.9995) * lost.std(ddof=1) / math.sqrt(n)  # a 99.9% confidence interval of the mean
    assert abs(lost.mean() - expected) < half, (lost.mean(), expected, half)
    # the interruptions are Poisson-like too: E[failures before a clean stretch of T] = e^{lam T} - 1
    count = results.jobs["interruptions"].to_numpy()
    assert abs(count.mean() - (math.exp(lam * T) - 1)) < stats.norm.ppf(0.9995) * count.std(ddof=1) / math.sqrt(n)


def test_work_conservation_with_failures_and_checkpoints() -> None:
    # per finished job: device time held = its work at the checkpointing speed + the device time lost to failures
    # (rework since the last save, and restarts); and the work redone is the rework time at that speed
    interval, cost, restart = 600.0, 20.0, 45.0
    specs = [TrainingJob(job_id=i, arrival=i * 300.0, gpus=(1, 2, 4, 8)[i % 4], duration=4000.0 + 500 * i)
             for i in range(40)]
    results = Simulation(cluster(4), specs, seed=2, subsystems=[failures(
        FailureModel(mtbf_hours={H100: 30.0}, mttr_hours=0.5, node_correlated=True, restart_s=restart),
        CheckpointPolicy(interval=interval, cost=cost))]).run()
    done = results.jobs[results.jobs["status"] == "finished"]
    assert len(done) == len(specs) and done["interruptions"].sum() > 20  # failures did happen
    e = interval / (interval + cost)
    gpus, held = done["gpus"].to_numpy(float), done["device_seconds"].to_numpy(float)
    np.testing.assert_allclose(held, gpus * done["duration"].to_numpy(float) / e + done["lost_device_seconds"],
                               rtol=1e-9)
    rework = done["lost_device_seconds"].to_numpy(float) / gpus - restart * done["interruptions"].to_numpy(float)
    np.testing.assert_allclose(done["lost_work_seconds"].to_numpy(float), rework * e, rtol=1e-9, atol=1e-6)
    assert (done["lost_work_seconds"] <= done["interruptions"] * interval * e + 1e-6).all()  # never more than a period
    np.testing.assert_allclose(done["goodput"], gpus * done["duration"] / held, rtol=1e-12)
    summary = results.summary()["failures"]
    assert summary["interruptions"] == int(done["interruptions"].sum())
    assert summary["goodput"] == pytest.approx((done["duration"] * done["gpus"]).sum() / held.sum())


def test_a_failure_trace_gives_exactly_the_interruptions_it_lists(tmp_path: Path) -> None:
    # two nodes of 8, one 8-device job of 1000 s, restarting at once from scratch (first-fit: node 0 first)
    trace = tmp_path / "outages.csv"
    trace.write_text("time,node,device,duration\n"
                     "100,0,,500\n"     # the job's node: interrupted at 100 (100 s lost), restarts on node 1
                     "200,,3,10\n"      # a device of node 0, already down: no job there
                     "300,,12,50\n"     # a device of node 1, under the job: interrupted (200 s lost); it waits to 350
                     "5000,1,,10\n")    # after the job finished: nothing to interrupt
    results = Simulation(cluster(2), jobs(1, 8, 1000.0), record_events=True, subsystems=[
        failures(FailureModel(trace=trace, restart_s=0.0))]).run()
    job = results.jobs.iloc[0]
    assert job["interruptions"] == 2 and job["lost_work_seconds"] == pytest.approx(300.0)
    assert job["finish"] == pytest.approx(1350.0) and job["status"] == "finished"
    table = results.failures
    assert list(table["time"]) == [100, 200, 300, 5000]
    assert list(table["jobs_interrupted"]) == [1, 0, 1, 0]
    assert table["devices"].iloc[0] == tuple(range(8)) and table["devices"].iloc[2] == (12,)
    events = results.events
    assert list(events.loc[events["event"] == "fail", "time"]) == [100.0, 300.0]
    starts = events[events["event"] == "start"]
    assert list(starts["time"]) == [0.0, 100.0, 350.0]
    assert all(8 <= d < 16 for devices in starts["devices"].iloc[1:] for d in devices)  # never on failed node 0


def test_failed_devices_are_never_handed_out() -> None:
    # while a device is out of service no job holds it: check every start in the log against the outages
    results = Simulation(cluster(3), jobs(60, 4, 1800.0, gap=120.0), seed=9, record_events=True, subsystems=[
        failures(FailureModel(mtbf_hours={H100: 5.0}, mttr_hours=1.0))]).run()
    outages = results.failures
    assert len(outages) > 10
    for time, devices in zip(results.events["time"], results.events["devices"], strict=True):
        for t0, gone, duration in zip(outages["time"], outages["devices"], outages["duration"], strict=True):
            if t0 <= time < t0 + duration:
                assert not set(devices) & set(gone), (time, devices, t0, gone)


def test_young_daly_interval_is_the_default_for_each_gang() -> None:
    cost, mtbf_h = 30.0, 1000.0
    specs = [TrainingJob(job_id=0, arrival=0.0, gpus=1, duration=100.0),
             TrainingJob(job_id=1, arrival=0.0, gpus=8, duration=100.0),
             TrainingJob(job_id=2, arrival=0.0, gpus=4, duration=100.0, checkpoint_s=5.0)]
    results = Simulation(cluster(2), specs, subsystems=[failures(
        FailureModel(mtbf_hours={H100: mtbf_h}), CheckpointPolicy(interval="young-daly", cost=cost))]).run()
    got = results.jobs.set_index("job_id")["checkpoint_interval"]
    assert got[0] == pytest.approx(math.sqrt(2 * cost * mtbf_h * 3600))
    assert got[1] == pytest.approx(math.sqrt(2 * cost * mtbf_h * 3600 / 8))
    assert got[2] == pytest.approx(math.sqrt(2 * 5.0 * mtbf_h * 3600 / 4))  # its own checkpoint cost
    assert young_daly_interval(cost, 3600.0) == pytest.approx(math.sqrt(2 * 30 * 3600))


@pytest.mark.parametrize("interval", [300.0, 1200.0, math.inf])
def test_device_time_held_matches_dalys_expectation(interval: float) -> None:
    # Each job holds its device for the periods it runs, failed attempts, saves and restarts included (not while
    # it waits): on average Daly's exact expectation for exponential failures (sim.failures.expected_run_time)
    work, cost, restart, mtbf_h, n = 3600.0, 60.0, 120.0, 2.0, 800
    results = Simulation(cluster(4), jobs(n, 1, work, gap=2.0), seed=8, subsystems=[failures(
        FailureModel(mtbf_hours={H100: mtbf_h}, mttr_hours=0.5, restart_s=restart),
        CheckpointPolicy(interval=interval if math.isfinite(interval) else None, cost=cost))]).run()
    held = results.jobs["device_seconds"].to_numpy(float)
    assert (results.jobs["status"] == "finished").all() and results.jobs["interruptions"].sum() > n / 4
    expected = expected_run_time(work, interval, 0.0 if math.isinf(interval) else cost, mtbf_h * 3600, restart)
    half = stats.norm.ppf(0.9995) * held.std(ddof=1) / math.sqrt(n)
    assert abs(held.mean() - expected) < half, (held.mean(), expected, half)


def test_goodput_peaks_near_the_young_daly_interval() -> None:
    # goodput against the checkpoint interval (what notebook 09 plots): the simulated optimum sits near Young's
    cost, mtbf_h, gpus = 60.0, 16.0, 8  # the gang's MTBF: 2 h, Young/Daly interval sqrt(2 * 60 * 7200) = 930 s
    best = young_daly_interval(cost, mtbf_h * 3600 / gpus)

    def goodput(interval: float) -> float:
        results = Simulation(cluster(2), jobs(60, gpus, 20_000.0, gap=0.0), seed=4, subsystems=[failures(
            FailureModel(mtbf_hours={H100: mtbf_h}, mttr_hours=0.01, restart_s=0.0),
            CheckpointPolicy(interval=interval, cost=cost))]).run()
        return float(results.summary()["failures"]["goodput"])

    at = {k: goodput(best * k) for k in (0.25, 1.0, 4.0)}
    assert at[1.0] > at[0.25] and at[1.0] > at[4.0], at


def test_spot_reclaims_interrupt_jobs_and_notice_saves_their_work() -> None:
    # every reclaim takes a node after a notice; a job that saves within the notice loses no work
    model = FailureModel(spot=(SpotPool(H100, mean_hours_between=1.0, notice_s=120.0, duration_hours=0.5),))
    runs = {}
    for cost in (60.0, 600.0):  # saves within the notice, or not
        runs[cost] = Simulation(cluster(2), jobs(20, 8, 7200.0), seed=1, subsystems=[failures(
            model, CheckpointPolicy(interval=1800.0, cost=cost))]).run()
    kinds = runs[60.0].failures["kind"]
    assert (kinds == "spot-notice").sum() == (kinds == "spot-reclaim").sum() > 0
    quick, slow = runs[60.0].jobs, runs[600.0].jobs
    assert quick["interruptions"].sum() > 0 and quick["lost_work_seconds"].sum() == 0.0
    assert slow["interruptions"].sum() > 0 and slow["lost_work_seconds"].sum() > 0.0


# Meta, "The Llama 3 Herd of Models" (Dubey et al., 2024, arXiv:2407.21783), section 3.3.4 "Reliability and
# operational challenges": in a 54-day snapshot of Llama 3 405B pre-training on 16,384 H100 GPUs (2,048 servers of 8)
# there were 466 job interruptions, 47 planned (maintenance) and 419 unexpected, about 78% of the unexpected ones
# attributed to confirmed or suspected hardware issues. It measures interruptions of one synchronous 16k-GPU job (a
# failure anywhere stops all of it). The per-GPU MTBF it implies: 16,384 GPUs * 54 days * 24 h / 419 = 50,677 h.
# (Figures read in reports of the paper, e.g. https://www.datacenterdynamics.com/en/news/meta-report-details-hundreds-
# of-gpu-and-hbm3-related-interruptions-to-llama-3-training-run, which quote its table of root causes; the paper's own
# PDF was not in the reference store this was written from.) Not checked: its "more than 90% effective training
# time", which would need the run's checkpoint and restart times, which the paper does not give.
LLAMA3_GPUS, LLAMA3_SERVERS, LLAMA3_DAYS, LLAMA3_UNEXPECTED = 16_384, 2_048, 54, 419
LLAMA3_MTBF_H = LLAMA3_GPUS * LLAMA3_DAYS * 24 / LLAMA3_UNEXPECTED


def llama3_run(seed: int, restart_s: float) -> int:
    """Interruptions of the 16,384-GPU job over 54 days, with GPUs failing at the rate the paper's count implies.

    Each simulated device stands for one 8-GPU server (a server fails when any of its GPUs does: at 8 times a GPU's
    rate), so the job is a gang of 2,048 devices: the same failure process for the job as 16,384 GPUs, at an eighth
    of the bookkeeping. The cluster has 64 spare servers (the paper's has 24k GPUs) and repairs take 2 h on average
    (an assumption: the paper gives none; spares keep the job from waiting for one)."""
    servers = Cluster([PoolSpec(H100, nodes=(LLAMA3_SERVERS + 64) // 8, devices_per_node=8)])
    results = Simulation(servers, jobs(1, LLAMA3_SERVERS, 1e9), seed=seed, horizon=LLAMA3_DAYS * 86400.0,
                         subsystems=[failures(FailureModel(mtbf_hours={H100: LLAMA3_MTBF_H / 8}, mttr_hours=2.0,
                                                           restart_s=restart_s))]).run()
    return int(results.jobs["interruptions"].iloc[0])


def test_llama3_interruption_count_falls_in_the_papers_confidence_interval() -> None:
    # The paper's 419 is one Poisson count: its exact 95% interval (Garwood) is [380, 461]. Runs configured with the
    # rate it implies and a 5-minute restart (an assumption) must land there on average. This checks the engine's
    # counting against the figure it was configured from (only the job's own devices interrupt it, only while it
    # runs; restarts take it off the clock), not the paper's failure rate, which is an input.
    low, high = stats.chi2.ppf(0.025, 2 * LLAMA3_UNEXPECTED) / 2, stats.chi2.ppf(0.975, 2 * (LLAMA3_UNEXPECTED + 1)) / 2
    counts = np.array([llama3_run(seed, restart_s=300.0) for seed in range(4)])
    assert low <= counts.mean() <= high, (counts, low, high)
    # the replications spread as Poisson counts do: sample variance over mean in a 99.9% chi-square band
    dof = len(counts) - 1
    ratio = counts.var(ddof=1) * dof / counts.mean()
    assert stats.chi2.ppf(0.0005, dof) <= ratio <= stats.chi2.ppf(0.9995, dof), counts


# A second, independent figure. Meta's OPT-175B (metaseq, projects/OPT/chronicles/final_update.md, "175B Training
# Run Completed", S. Zhang, S. Roller, N. Goyal, S. Shleifer, posted 2022-01-07): trained on "1024 80GB A100s" of a
# cloud provider, "we were able to automatically recover from 8 hardware failures between Christmas and New Years"
# (7 days, 2021-12-25 to 2022-01-01). It measures hardware failures that took the one 175B job down and that its
# automation recovered (so if anything a lower bound). The same note's "~2 machines go down every day" is rougher.
# And BigScience's BLOOM-176B (bigscience-workshop/bigscience, train/tr11-176B-ml/chronicles.md, "2022-04-XX repeated
# hardware crashes"): on 48 nodes of 8 A100s (384 GPUs; 4 spare nodes) at IDRIS's Jean Zay, "every week or so we have
# hardware issues where one of the gpus dies", from the launch on 2022-03-11 to 2022-07-04 (when it went to 24 nodes).
OPT_GPUS, OPT_DAYS, OPT_FAILURES = 1024, 7, 8
OPT_MTBF_H = OPT_GPUS * OPT_DAYS * 24 / OPT_FAILURES  # 21,504 GPU-hours: the per-GPU MTBF OPT's count implies
BLOOM_GPUS, BLOOM_SPARE_GPUS, BLOOM_DAYS = 384, 32, 115


def gang_interruptions(gpus: int, spare: int, days: float, gpu_mtbf_h: float, seed: int) -> int:
    """Interruptions of one job on ``gpus`` GPUs (one device each) over ``days``, ``spare`` GPUs beside it, every
    GPU failing at random with mean ``gpu_mtbf_h`` hours, repairs 2 h, restarts 5 minutes (assumptions)."""
    nodes = (gpus + spare) // 8
    results = Simulation(cluster(nodes), jobs(1, gpus, 1e9), seed=seed, horizon=days * 86400.0, subsystems=[
        failures(FailureModel(mtbf_hours={H100: gpu_mtbf_h}, mttr_hours=2.0, restart_s=300.0))]).run()
    return int(results.jobs["interruptions"].iloc[0])


def test_llama3_rate_against_opt_175b_hardware_failures() -> None:
    # OPT's 8 is one Poisson count: exact 95% interval [3.45, 15.76]. Llama 3's per-GPU rate on OPT's 1,024 GPUs for
    # its 7 days predicts 1024 * 168 / 50,677 = 3.39 (P(N >= 8 | 3.39) = 0.023): at the lower edge of that interval,
    # so consistent only at its edge, and the point estimates differ by 2.4 times: OPT's cloud A100s of 2021 failed
    # more often per GPU than Llama 3's H100s of 2024 (the 27% note blames ECC errors and bad replacement machines from
    # the provider). Checked: the simulated mean (99% interval) reaches OPT's interval yet is under half of 8; and
    # OPT's own rate reproduces its own count.
    low, high = stats.chi2.ppf(0.025, 2 * OPT_FAILURES) / 2, stats.chi2.ppf(0.975, 2 * (OPT_FAILURES + 1)) / 2
    n = 60
    llama = np.array([gang_interruptions(OPT_GPUS, 96, OPT_DAYS, LLAMA3_MTBF_H, seed) for seed in range(n)])
    opt = np.array([gang_interruptions(OPT_GPUS, 96, OPT_DAYS, OPT_MTBF_H, seed) for seed in range(n)])
    half = stats.norm.ppf(0.995) * np.array([llama.std(ddof=1), opt.std(ddof=1)]) / math.sqrt(n)
    assert low <= llama.mean() + half[0] and llama.mean() < OPT_FAILURES / 2, (llama.mean(), half[0], low)
    assert low <= opt.mean() <= high and abs(opt.mean() - OPT_FAILURES) < half[1], (opt.mean(), half[1])


def test_llama3_rate_predicts_bloom_176b_gpu_deaths() -> None:
    # BLOOM's "every week or so" one GPU dies, read as a mean interval between a half and twice a week (3.5 to 14
    # days): Llama 3's per-GPU rate on BLOOM's 384 GPUs over its 115 days predicts one every 50,677 / 384 h = 5.5
    # days. The simulated mean interval (with its 99% interval) must fall in the stated range; OPT's rate would not
    # (one every 2.3 days).
    n = 20
    counts = np.array([gang_interruptions(BLOOM_GPUS, BLOOM_SPARE_GPUS, BLOOM_DAYS, LLAMA3_MTBF_H, seed)
                       for seed in range(n)])
    half = stats.norm.ppf(0.995) * counts.std(ddof=1) / math.sqrt(n)
    slow, fast = BLOOM_DAYS / (counts.mean() - half), BLOOM_DAYS / (counts.mean() + half)  # days between failures
    assert fast >= 3.5 and slow <= 14.0, (counts.mean(), fast, slow)
    opt = np.array([gang_interruptions(BLOOM_GPUS, BLOOM_SPARE_GPUS, BLOOM_DAYS, OPT_MTBF_H, seed)
                    for seed in range(n)])
    assert BLOOM_DAYS / (opt.mean() - stats.norm.ppf(0.995) * opt.std(ddof=1) / math.sqrt(n)) < 3.5, opt.mean()


@pytest.mark.parametrize(("data", "message"), [
    ({"mtbf_hours": {H100: -5}}, "failures.mtbf_hours.h100 must be a finite number > 0"),
    ({"mtbf_hours": {H100: 0}}, "failures.mtbf_hours.h100 must be a finite number > 0"),
    ({"mtbf_hours": {"h9000": 10}}, "failures.mtbf_hours.h9000"),
    ({"mttr_hours": -1}, "failures.mttr_hours must be a finite number > 0"),
    ({"spot": [{"pool": H100, "mean_hours_between": 2, "notice_s": -1}]}, "notice_s must be a finite number >= 0"),
    ({"spot": [{"pool": H100}]}, "needs mean_hours_between"),
])
def test_bad_failure_settings_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailureModel.from_config(data)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("row", "message"), [
    ("abc,0,,10", ":2: time 'abc' is not a number"),
    ("-5,0,,10", ":2: time '-5' must be a finite number >= 0"),
    ("5,9,,10", ":2: node 9 is not a node of the cluster"),
    ("5,,99,10", ":2: device 99 is not a device of the cluster"),
    ("5,0,,0", ":2: duration '0' must be a finite number > 0"),
    ("5,0,3,10", ":2: give one of node, device or link"),
])
def test_bad_failure_trace_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(f"time,node,device,duration\n{row}\n")
    with pytest.raises(ConfigError) as info:
        load_failure_trace(path, cluster(2))
    assert str(path) + message in str(info.value) and "\n" not in str(info.value)


def test_bad_checkpoint_settings_are_errors() -> None:
    for interval in (0, -60, "often"):
        with pytest.raises(ConfigError, match=r"checkpoint\.interval must be"):
            CheckpointPolicy(interval=interval)
    with pytest.raises(ConfigError, match=r"checkpoint\.cost must be"):
        CheckpointPolicy(interval=60, cost=-1)


def test_config_sections_build_the_subsystem(tmp_path: Path) -> None:
    base = {"seed": 3, "cluster": {"preset": "dgx-h100", "nodes": 2}, "sim": {"progress": False},
            "workload": {"training": {"jobs": 60, "interarrival": {"dist": "exponential", "mean": 60}}}}
    plain = run_config(load_config(base))
    assert plain.failures is None and "interruptions" not in plain.jobs and "failures" not in plain.summary()
    with_failures = run_config(load_config({**base, "failures": {"mtbf_hours": {H100: 20}, "node_correlated": True},
                                            "checkpoint": {"interval": "young-daly", "cost": 30}}))
    assert with_failures.summary()["failures"]["outages"] > 0
    assert set(with_failures.failures["kind"]) == {"node"}
    with pytest.raises(ConfigError, match=r"failures\.spot: pool .nope. is not a pool"):
        run_config(load_config({**base, "failures": {"spot": [{"pool": "nope", "mean_hours_between": 1}]}}))
    written = with_failures.save(tmp_path / "out")
    assert (written / "failures.csv").is_file()


def poisson_requests(rate: float, n: int, seed: int) -> RequestTrace:
    rng = np.random.default_rng(seed)
    ones = np.ones(n, dtype=np.int64)
    return RequestTrace(arrival=np.cumsum(rng.exponential(1 / rate, n)), prompt_tokens=ones * 200,
                        output_tokens=ones * 50, source=f"poisson {seed}")


def test_a_failed_replica_hands_its_requests_to_the_others(tmp_path: Path) -> None:
    # two one-device replicas (devices 0 and 1) beside training jobs; device 0 fails mid-stream: the replica on it is
    # lost, the requests it held are routed to the other, and every request is accounted for
    trace = tmp_path / "outages.csv"
    trace.write_text("time,device,duration\n10,0,100000\n")
    spec = ServiceSpec("chat", poisson_requests(20.0, 600, 3), replicas=2, model=get_model("llama-3.1-8b"),
                       device=H100)
    results = Simulation(cluster(1), jobs(4, 1, 600.0), services=[spec], router="least-outstanding", subsystems=[
        failures(FailureModel(trace=trace, restart_s=0.0))]).run()
    assert list(results.replicas.loc[results.replicas["device_indexes"].map(lambda d: 0 in d), "replica"]) == [0]
    figures = results.summary()["failures"]
    assert figures["replicas_lost"] == 1 and figures["requests_rerouted"] > 0 and figures["requests_rejected"] == 0
    requests = results.requests
    counts = results.summary()["requests"]
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] == counts["count"] == 600
    assert counts["completed"] == 600  # the survivor served them all
    assert (requests.loc[requests["arrival"] > 10, "replica"] == 1).all()
    assert results.jobs["interruptions"].sum() == 0  # the jobs ran on devices 2..5


def test_a_lost_last_replica_rejects_its_requests_with_a_reason(tmp_path: Path) -> None:
    trace = tmp_path / "outages.csv"
    trace.write_text("time,node,duration\n20,0,100000\n")
    spec = ServiceSpec("q", poisson_requests(2.0, 200, 4), replicas=1, mode=FixedService(Exponential(1.0)))
    results = Simulation(cluster(1), [], services=[spec], subsystems=[failures(FailureModel(trace=trace))]).run()
    requests, figures = results.requests, results.summary()["failures"]
    reasons = requests["reason"].value_counts()
    assert figures["replicas_lost"] == 1 and figures["requests_rerouted"] == 0
    assert reasons["replica_failed"] == figures["requests_rejected"] > 0  # those it held when it went down
    assert reasons["no_replica_accepting"] == (requests["arrival"] > 20).sum()  # those that came after
    counts = results.summary()["requests"]
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] == counts["count"] == 200
    assert (requests.loc[requests["status"] == "finished", "finish"] <= 20).all()

