"""Every arrival of the workload is accounted for when a run stops at its horizon (issue 13, item 1).

A job or request is completed, unschedulable or rejected (with a reason), unfinished, or not arrived by the
horizon; the four counts add up to the workload, in the summary, the tables, the CLI line, per tenant and per
service.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import tiny_training_config

from sim import preset
from sim.cli import main
from sim.engine import Simulation
from sim.experiments.config import load_config
from sim.experiments.scenario import run_config
from workloads.jobs import TrainingJob

JOBS, HORIZON = 200, 3000.0


def training(horizon: float | None = HORIZON) -> dict:
    config = tiny_training_config(seed=3, jobs=JOBS)
    if horizon is not None:
        config["sim"]["horizon"] = horizon
    return config


def tenant_jobs() -> list[TrainingJob]:
    """Two tenants' jobs, one arriving every 20 s, each 1-8 GPUs for 5-50 minutes."""
    rng = np.random.default_rng(5)
    return [TrainingJob(job_id=i, arrival=20.0 * i, gpus=int(rng.choice([1, 2, 4, 8])),
                        duration=float(rng.uniform(300, 3000)), tenant=("alpha", "beta")[i % 3 == 0])
            for i in range(JOBS)]


def serving(horizon: float = 40.0) -> dict:
    return {
        "seed": 2,
        "cluster": {"preset": "dgx-h100", "nodes": 1},
        "workload": {"inference": {"services": [
            {"name": "chat", "model": "llama-3.1-8b", "replicas": 1, "requests": 3000,
             "arrivals": {"process": "poisson", "rate": 40.0}, "slo": {"ttft": 0.5}},
            {"name": "code", "model": "llama-3.1-8b", "replicas": 1, "requests": 500,
             "arrivals": {"process": "poisson", "rate": 5.0}},
        ]}},
        "sim": {"horizon": horizon, "progress": False},
    }


JOB_STATES = ("completed", "unschedulable", "unfinished", "not_arrived")
REQUEST_STATES = ("completed", "rejected", "unfinished", "not_arrived")


def test_jobs_after_the_horizon_are_counted_as_not_arrived() -> None:
    results = Simulation(preset("dgx-h100", nodes=2), tenant_jobs(), horizon=HORIZON).run()
    jobs, s = results.jobs, results.summary()["jobs"]
    assert len(jobs) == JOBS == s["count"]
    assert sum(s[k] for k in JOB_STATES) == JOBS
    later = jobs[jobs["status"] == "not_arrived"]
    assert s["not_arrived"] == len(later) == int((np.arange(JOBS) * 20.0 > HORIZON).sum())
    assert s["unfinished"] > 0 and s["completed"] > 0
    arrived = jobs[jobs["status"] != "not_arrived"]
    assert (later["arrival"] > HORIZON).all() and (arrived["arrival"] <= HORIZON).all()
    assert later["reason"].eq("arrives after the horizon").all() and later["first_start"].isna().all()
    assert (later["device_seconds"] == 0).all()
    # per tenant: the same four counts, adding up to the tenant's jobs and, over tenants, to the whole
    by_tenant = s["by_tenant"]
    assert set(by_tenant) == {"alpha", "beta"}
    for tenant, counts in by_tenant.items():
        assert counts["count"] == int((jobs["tenant"] == tenant).sum()) == sum(counts[k] for k in JOB_STATES)
        assert counts["not_arrived"] > 0
    for key in ("count", *JOB_STATES):
        assert sum(counts[key] for counts in by_tenant.values()) == s[key]


def test_the_horizon_leaves_what_ran_unchanged() -> None:
    # the jobs that arrived before the horizon fare the same with or without the extra rows
    cut = run_config(load_config(training())).jobs
    full = run_config(load_config(training(horizon=None))).jobs
    done = cut[cut["status"] == "finished"].set_index("job_id")
    same = full.set_index("job_id").loc[done.index]
    pd.testing.assert_series_equal(done["finish"], same["finish"])
    assert (full["status"] == "finished").sum() == JOBS


def test_requests_after_the_horizon_are_counted_per_service() -> None:
    results = run_config(load_config(serving()))
    req, s = results.requests, results.summary()["requests"]
    assert len(req) == 3500 == s["count"] == sum(s[k] for k in REQUEST_STATES)
    assert s["not_arrived"] > 0 and s["unfinished"] > 0  # the chat service is overloaded (40 req/s on one H100)
    for name, n in (("chat", 3000), ("code", 500)):
        counts = s["by_service"][name]
        rows = req[req["service"] == name]
        assert counts["count"] == n == len(rows) == sum(counts[k] for k in REQUEST_STATES)
        assert rows["request_id"].tolist() == list(range(n))
        assert counts["not_arrived"] == int((rows["arrival"] > 40.0).sum())
    # latency and SLO figures are of the requests that arrived: not-arrived rows neither meet nor miss
    arrived = req[req["status"] != "not_arrived"]
    assert s["slo_attainment"] == pytest.approx(arrived["slo_met"].mean())
    assert np.isnan(req.loc[req["status"] == "not_arrived", "ttft"]).all()


def test_the_cli_line_and_the_tables_add_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serving.yaml"
    config.write_text(yaml.safe_dump(serving()))
    out = tmp_path / "out"
    assert main(["run", str(config), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["requests"]
    line = next(line for line in printed.splitlines() if line.strip().startswith("requests"))
    assert f"{summary['count']:,} ({summary['completed']:,} completed, {summary['rejected']:,} rejected, " \
           f"{summary['unfinished']:,} unfinished, {summary['not_arrived']:,} not arrived by the horizon)" in line
    assert len(pd.read_csv(out / "requests.csv")) == summary["count"] == 3500

    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(training()))
    out = tmp_path / "jobs"
    assert main(["run", str(config), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    jobs = json.loads((out / "summary.json").read_text())["jobs"]
    assert f"{jobs['count']:,} ({jobs['completed']:,} completed, {jobs['unschedulable']:,} unschedulable, " \
           f"{jobs['unfinished']:,} unfinished, {jobs['not_arrived']:,} not arrived by the horizon)" in printed
    assert len(pd.read_csv(out / "jobs.csv")) == JOBS


def test_no_slo_prints_na_not_100_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = serving(horizon=20.0)
    for service in config["workload"]["inference"]["services"]:
        service.pop("slo", None)
    path = tmp_path / "no_slo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "SLO attainment n/a (no SLO set)" in printed and "100.0%" not in printed.split("SLO attainment")[1][:20]


def test_cli_figures_missing_or_huge_are_readable() -> None:
    from sim.cli import _f

    assert _f(float("nan")) == "n/a" and _f(None) == "n/a" and _f(float("inf"), ".1%") == "n/a"
    assert _f(1e300) == "1e+300" and len(_f(-3.2e15)) < 12
    assert _f(12345.6) == "12,346" and _f(0.5, ".1%") == "50.0%" and _f(0.0123, ".1f", 1e3) == "12.3"
