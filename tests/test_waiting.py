"""Issue 15, item 3: waiting counted honestly (first queueing plus every wait after a preemption), per job, in
the summary and per tenant, with Jain's index of the tenants' slowdowns; and the CLI's hint when nobody waited."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import Cluster, PoolSpec, PreemptionCost, Simulation
from sim.cli import main
from sim.output.results import jain_index
from workloads.jobs import TrainingJob

ONE_NODE = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])


def test_a_preempted_job_waits_again_and_the_wait_is_counted() -> None:
    # las with one threshold at 100 GPU-seconds: job 0 (8 GPUs) crosses it at 12.5 s and job 1 (arrived at 10)
    # preempts it; job 1 runs 12.5..62.5, then job 0 resumes: it waited 0 s first, then 50 s.
    jobs = [TrainingJob(0, 0.0, 8, 100.0, tenant="a"), TrainingJob(1, 10.0, 8, 50.0, tenant="b"),
            TrainingJob(2, 20.0, 16, 5.0)]
    results = Simulation(ONE_NODE, jobs, scheduler={"name": "las", "thresholds": [100]},
                         preemption=PreemptionCost(30.0, 30.0)).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[0, ["queueing_delay", "waiting_seconds", "preemptions", "finish"]].tolist() == [0.0, 50.0, 1,
                                                                                                   210.0]
    assert table.loc[1, ["queueing_delay", "waiting_seconds"]].tolist() == [2.5, 2.5]
    assert math.isnan(table.loc[2, "waiting_seconds"])  # unschedulable: it never queued
    summary = results.summary()["jobs"]
    assert summary["waiting"]["total"] == 52.5 and summary["waiting"]["mean"] == 26.25
    assert summary["by_tenant"]["a"]["waiting"]["total"] == 50.0
    assert summary["by_tenant"]["a"]["slowdown"]["mean"] == pytest.approx(210 / 100)
    # Jain's index of the two tenants' mean slowdowns, 2.1 and 52.5 / 50
    assert summary["fairness"]["jain_slowdown"] == pytest.approx((2.1 + 1.05) ** 2 / (2 * (2.1**2 + 1.05**2)))
    assert summary["fairness"]["tenants"] == 2


@pytest.mark.parametrize("scheduler", ["fifo", "sjf", "srtf", "las", "easy-backfill"])
def test_every_second_of_a_job_is_running_restoring_or_waiting(scheduler: str) -> None:
    # on its reference device at full speed: jct = duration + restore overhead + every wait
    rng = np.random.default_rng(7)
    jobs = [TrainingJob(i, float(t), int(g), float(d), tenant=f"t{i % 3}")
            for i, (t, g, d) in enumerate(zip(np.cumsum(rng.exponential(20, 60)), rng.choice([1, 2, 4, 8], 60),
                                              rng.exponential(300, 60), strict=True))]
    table = Simulation(ONE_NODE, jobs, scheduler=scheduler, preemption=PreemptionCost(10.0, 5.0)).run().jobs
    assert (table["status"] == "finished").all()
    accounted = table["duration"] + table["overhead_seconds"] + table["waiting_seconds"]
    np.testing.assert_allclose(table["jct"], accounted, rtol=1e-9, atol=1e-6)
    assert (table["waiting_seconds"] >= table["queueing_delay"] - 1e-9).all()
    if scheduler in ("fifo", "sjf", "easy-backfill"):  # non-preemptive: the only wait is the first
        np.testing.assert_allclose(table["waiting_seconds"], table["queueing_delay"])


def test_a_job_still_waiting_at_the_horizon_has_waited_until_then() -> None:
    jobs = [TrainingJob(0, 0.0, 8, 1000.0), TrainingJob(1, 10.0, 8, 10.0)]
    table = Simulation(ONE_NODE, jobs, horizon=400.0).run().jobs.set_index("job_id")
    assert table.loc[1, "status"] == "queued" and table.loc[1, "waiting_seconds"] == 390.0


def test_jain_index_is_one_for_equal_shares_and_one_over_n_for_one_taker() -> None:
    assert jain_index(np.array([2.0, 2.0, 2.0])) == pytest.approx(1.0)
    assert jain_index(np.array([5.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert jain_index(np.array([1.0, 3.0])) == pytest.approx(16 / 20)
    assert math.isnan(jain_index(np.array([])))


def test_tenant_counts_add_up_to_the_run() -> None:
    jobs = [TrainingJob(i, float(i), 1 + i % 8, 50.0 + i, tenant="abc"[i % 3]) for i in range(30)]
    summary = Simulation(ONE_NODE, [*jobs, TrainingJob(99, 5.0, 64, 1.0, tenant="c")], horizon=200.0).run().summary()
    tenants = summary["jobs"]["by_tenant"]
    for key in ("count", "completed", "unschedulable", "unfinished", "not_arrived"):
        assert sum(t[key] for t in tenants.values()) == summary["jobs"][key], key
    assert sum(t["waiting"]["total"] for t in tenants.values()) == pytest.approx(summary["jobs"]["waiting"]["total"])


def _config(tmp_path, interarrival: float) -> str:
    path = tmp_path / f"c{interarrival}.yaml"
    path.write_text(f"""
cluster: {{preset: dgx-h100, nodes: 1}}
workload:
  training: {{jobs: 30, interarrival: {{dist: exponential, mean: {interarrival}}},
              duration: {{dist: exponential, mean: 100}}, gpus: {{dist: choice, values: [4, 8]}}}}
sim: {{progress: false}}
""")
    return str(path)


def test_the_cli_hints_when_no_job_waited(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", _config(tmp_path, 100_000), "-o", str(tmp_path / "idle")]) == 0
    assert "hint: no job waited" in capsys.readouterr().out
    assert main(["run", _config(tmp_path, 5), "-o", str(tmp_path / "busy")]) == 0
    out = capsys.readouterr().out
    assert "hint:" not in out and "waiting (every wait) mean" in out
    assert main(["compare", _config(tmp_path, 100_000), "--schedulers", "fifo,las", "-o", str(tmp_path / "c")]) == 0
    assert "hint: in every run no job waited" in capsys.readouterr().out
