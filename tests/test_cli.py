"""The ``gpusim`` command: run, compare, policies, config, and its errors. In-process through
``sim.cli.main`` except one end-to-end run of the installed command on the default scenario."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from sim import registry
from sim.cli import main
from sim.experiments.config import describe_config, load_config

TINY = """\
seed: 5
cluster: {preset: dgx-h100, nodes: 2}
workload:
  training:
    jobs: 200
    interarrival: {dist: exponential, mean: 60}
policy: {scheduler: las, placer: consolidate}
"""

SUMMARY_KEYS = [
    "jobs.count", "jobs.completed", "jobs.unschedulable",
    *(f"jobs.{m}.{s}" for m in ("jct", "queueing_delay") for s in ("mean", "p50", "p95", "p99")),
    "jobs.slowdown.mean", "makespan", "utilization.mean", "events", "wall_seconds",
]
JOB_COLUMNS = ["arrival", "first_start", "finish", "queueing_delay", "jct", "slowdown", "gpus", "device_type",
               "preemptions", "device_seconds"]
TIMELINE_COLUMNS = ["time", "allocated_devices", "utilization", "queued_jobs", "running_jobs"]
ALL_POLICIES = {"scheduler": {"fifo", "sjf", "srtf", "las", "easy-backfill"},
                "router": {"round-robin", "random", "least-outstanding", "join-shortest-queue", "power-of-two",
                           "kv-aware"},
                "placer": {"first-fit", "consolidate", "spread", "random", "topology", "buddy", "fragmentation-aware"},
                "autoscaler": {"static", "target-utilization", "queue-length"},
                "colocation": {"shared", "partitioned", "inference-priority", "headroom", "scheduler-aware"},
                "tenant_order": {"quota-share", "drf", "fair-share"}}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def lookup(summary: dict[str, Any], dotted: str) -> Any:
    node: Any = summary
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"summary.json has no {dotted}"
        node = node[part]
    return node


def without_wall_seconds(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


def time_weighted_utilization(timeline: pd.DataFrame, start: float, end: float) -> float:
    """Mean of the step function ``utilization`` (each row holds until the next) over [start, end]."""
    t = timeline["time"].to_numpy(dtype=float)
    u = timeline["utilization"].to_numpy(dtype=float)
    nxt = np.append(t[1:], max(end, t[-1]))
    lo, hi = np.clip(t, start, end), np.clip(nxt, start, end)
    return float((u * (hi - lo)).sum() / (end - start))


def check_run_directory(out: Path, devices: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Check the files a run writes and that they agree with each other."""
    for name in ("summary.json", "jobs.csv", "timeline.csv", "config.yaml"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    summary = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        value = lookup(summary, key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
    jobs = pd.read_csv(out / "jobs.csv")
    timeline = pd.read_csv(out / "timeline.csv")
    assert set(JOB_COLUMNS) <= set(jobs.columns), set(JOB_COLUMNS) - set(jobs.columns)
    assert set(TIMELINE_COLUMNS) <= set(timeline.columns)

    # one row per job, and the columns mean what they say
    assert len(jobs) == summary["jobs"]["count"]
    assert jobs["job_id"].is_unique
    done = jobs[jobs["status"] == "finished"]
    assert len(done) == summary["jobs"]["completed"]
    assert (jobs["status"] == "unschedulable").sum() == summary["jobs"]["unschedulable"]
    np.testing.assert_allclose(jobs["queueing_delay"], jobs["first_start"] - jobs["arrival"])
    np.testing.assert_allclose(done["jct"], done["finish"] - done["arrival"])
    assert (done["queueing_delay"] >= 0).all() and (done["jct"] >= done["queueing_delay"]).all()
    assert (done["slowdown"] >= 1 - 1e-9).all()
    jct = done["jct"].to_numpy()
    assert summary["jobs"]["jct"]["mean"] == pytest.approx(jct.mean(), rel=1e-9)
    for q in (50, 95, 99):
        assert summary["jobs"]["jct"][f"p{q}"] == pytest.approx(np.percentile(jct, q), rel=1e-9)
    assert summary["makespan"] == pytest.approx(done["finish"].max() - jobs["arrival"].min(), rel=1e-12)

    # the timeline is a step function of allocated devices in time order
    assert timeline["time"].is_monotonic_increasing
    assert (timeline["allocated_devices"].between(0, devices)).all()
    np.testing.assert_allclose(timeline["utilization"], timeline["allocated_devices"] / devices)

    # utilization.mean is the time-weighted mean of the timeline over [first arrival, end]
    start = float(jobs["arrival"].min())
    end = start + summary["simulated_seconds"]
    if summary["jobs"]["completed"] == summary["jobs"]["count"] - summary["jobs"]["unschedulable"]:
        assert end == pytest.approx(done["finish"].max(), rel=1e-12)
    expected = time_weighted_utilization(timeline, start, end)
    assert summary["utilization"]["mean"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    return summary, jobs, timeline


# ----------------------------------------------------------------------------- run


def test_run_writes_results(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", str(tiny), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    summary, jobs, _ = check_run_directory(out, devices=16)
    assert summary["jobs"]["count"] == 200
    assert summary["jobs"]["completed"] == 200
    assert summary["jobs"]["preemptions"] > 0  # las under load: the overhead path is exercised
    # each resume pays checkpoint + restore (30 s + 30 s) on each of its devices, or less when a preemption cuts
    # the restore short; overhead_device_hours adds up what was spent
    assert (jobs["overhead_seconds"] <= jobs["preemptions"] * 60.0 + 1e-9).all()
    spent = (jobs["overhead_seconds"] * jobs["gpus"]).sum() / 3600
    assert summary["jobs"]["overhead_device_hours"] == pytest.approx(spent, rel=1e-12)
    assert summary["run"]["scheduler"] == "las" and summary["run"]["placer"] == "consolidate"
    assert set(jobs["device_type"]) == {"h100-sxm"}
    assert summary["events"] > 400

    # the resolved config loads back and reproduces the run
    config = load_config(out / "config.yaml")
    assert config == load_config(tiny)
    again = tmp_path / "again"
    assert main(["run", str(out / "config.yaml"), "-o", str(again)]) == 0
    rerun = json.loads((again / "summary.json").read_text())
    assert without_wall_seconds(rerun) == without_wall_seconds(summary)
    pd.testing.assert_frame_equal(pd.read_csv(again / "jobs.csv"), jobs)


def test_run_set_overrides(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(tiny), "-o", str(out), "--set", "policy.scheduler=sjf",
                 "--set", "workload.training.limit=50"]) == 0
    summary, jobs, _ = check_run_directory(out, devices=16)
    assert summary["run"]["scheduler"] == "sjf"
    assert summary["jobs"]["count"] == 50 == len(jobs)
    assert summary["jobs"]["preemptions"] == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["policy"]["scheduler"] == "sjf"
    assert written["workload"]["training"]["limit"] == 50


def test_run_set_policy_parameter(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(tiny), "-o", str(out), "--set", "policy.scheduler.thresholds=[100, 1000]",
                 "--set", "workload.training.limit=40"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"]["count"] == 40
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["policy"]["scheduler"] == {"name": "las", "thresholds": [100, 1000]}


def test_run_with_horizon_keeps_utilization_consistent(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(tiny), "-o", str(out), "--set", "sim.horizon=5000"]) == 0
    summary, _, _ = check_run_directory(out, devices=16)
    assert summary["jobs"]["completed"] < summary["jobs"]["count"]


# ----------------------------------------------------------------------------- compare


def test_compare_writes_table_folders_and_plots(tiny: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny), "--schedulers", "fifo,sjf,las", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    labels = ["fifo+consolidate", "sjf+consolidate", "las+consolidate"]
    for label in labels:
        assert label in printed

    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert list(table.columns) == labels
    for png in ("jct_cdf.png", "queueing_delay_cdf.png", "utilization.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png

    arrivals = {}
    for label in labels:
        summary, jobs, _ = check_run_directory(out / label, devices=16)
        assert f"{summary['run']['scheduler']}+{summary['run']['placer']}" == label
        # the table's columns are the folders' summaries
        assert table.loc["jobs.jct.mean", label] == pytest.approx(summary["jobs"]["jct"]["mean"], rel=1e-9)
        assert table.loc["utilization.mean", label] == pytest.approx(summary["utilization"]["mean"], rel=1e-9)
        arrivals[label] = jobs.sort_values("job_id")[["job_id", "arrival", "gpus", "duration"]]
    # common random numbers: every policy saw the same jobs
    for label in labels[1:]:
        pd.testing.assert_frame_equal(arrivals[label], arrivals[labels[0]])
    # and the policies did differ
    assert len({table.loc["jobs.jct.mean", label] for label in labels}) == 3


SERVICE = """\
    services:
      - name: chat
        model: llama-3.1-8b
        device: h100
        replicas: 2
        arrivals: {process: poisson, rate: 5}
        requests: 200
        prompt_tokens: {dist: lognormal, median: 1020, sigma: 1.0}
        output_tokens: {dist: lognormal, median: 129, sigma: 1.0}
        slo: {ttft: 0.5, tpot: 0.05}
"""
INFERENCE = f"""\
seed: 1
cluster: {{preset: dgx-h100, nodes: 1}}
workload:
  inference:
{SERVICE}policy: {{router: least-outstanding}}
"""
MIXED = TINY.replace("jobs: 200", "jobs: 30").replace("policy:", f"  inference:\n{SERVICE}policy:")
REQUEST_ROWS = ["requests.completed", "requests.ttft.p99", "requests.tpot.p99", "requests.slo_attainment",
                "requests.goodput", "energy.kwh", "cost.usd", "inference.cost.usd_per_1k_requests"]


def test_compare_on_an_inference_config_shows_request_slo_energy_and_cost(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "inference.yaml"
    config.write_text(INFERENCE)
    out = tmp_path / "cmp"
    assert main(["compare", str(config), "--schedulers", "fifo,sjf", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert list(table.columns) == ["fifo+first-fit", "sjf+first-fit"]
    assert not [row for row in table.index if row.startswith("jobs.")], "no training jobs: no job rows"
    assert set(REQUEST_ROWS) <= set(table.index)
    assert table.notna().all().all(), table
    assert "NaN" not in printed and "requests.slo_attainment" in printed
    for label in table.columns:
        summary = json.loads((out / label / "summary.json").read_text())
        assert table.loc["requests.slo_attainment", label] == pytest.approx(summary["requests"]["slo_attainment"])
        assert table.loc["cost.usd", label] == pytest.approx(summary["cost"]["usd"])
        assert summary["requests"]["completed"] == 200
        # the config's router (and autoscaler, co-location) are kept: only the scheduler and placer vary
        written = yaml.safe_load((out / label / "config.yaml").read_text())
        assert written["policy"]["router"] == "least-outstanding"
    assert (out / "ttft_cdf.png").is_file() and (out / "tpot_cdf.png").is_file()
    assert not (out / "jct_cdf.png").exists()


def test_compare_with_jobs_and_requests_shows_both(tmp_path: Path) -> None:
    config = tmp_path / "mixed.yaml"
    config.write_text(MIXED)
    out = tmp_path / "cmp"
    assert main(["compare", str(config), "-o", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert {"jobs.jct.mean", "jobs.queueing_delay.p95", "utilization.mean", *REQUEST_ROWS} <= set(table.index)
    assert table.notna().all().all(), table
    for png in ("jct_cdf.png", "utilization.png", "ttft_cdf.png"):
        assert (out / png).is_file(), png


def test_compare_takes_yaml_lists_of_policies(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny), "--set", "workload.training.limit=40", "--schedulers",
                 "[fifo, {name: las, thresholds: [600]}]", "--placers", "[consolidate, spread]", "-o", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert list(table.columns) == ["fifo+consolidate", "fifo+spread", "las(thresholds=[600])+consolidate",
                                   "las(thresholds=[600])+spread"]
    written = yaml.safe_load((out / "las_thresholds=_600+spread" / "config.yaml").read_text())
    assert written["policy"]["scheduler"] == {"name": "las", "thresholds": [600]}
    assert written["policy"]["placer"] == "spread"


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--schedulers", "fifo,fifo", "'fifo' is given twice"),
    ("--schedulers", "[fifo, {name: las, thresholds: [600]}, {name: las, thresholds: [600]}]", "given twice"),
    ("--schedulers", "[fifo, {name: las", "not valid YAML"),
    ("--placers", "[consolidate, {name: spread, tightness: 1}]", "no parameter 'tightness'"),
])
def test_compare_rejects_bad_policy_lists_before_running(option: str, value: str, expected: str, tiny: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tiny), option, value, "-o", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: ") and option in lines[0], err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "cmp").exists()


# ----------------------------------------------------------------------------- listings


def test_policies_lists_every_registered_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies"]) == 0
    printed = capsys.readouterr().out
    listed = {line.split()[0] for line in printed.splitlines() if line.startswith("  ") and line.strip()
              and not line.strip().startswith("parameters:")}
    for kind, names in ALL_POLICIES.items():
        assert set(registry.available(kind)) >= names, kind
        assert f"{kind}s:" in printed
    # every kind is listed: the names under each heading are that kind's
    sections = {}
    for line in printed.splitlines():
        if not line.startswith(" "):
            heading = line.rstrip(":")
            sections[heading] = set()
        elif not line.strip().startswith("parameters:"):
            sections[heading].add(line.split()[0])
    assert sections == {f"{kind}s": set(registry.available(kind)) for kind in ALL_POLICIES}
    registered = set().union(*(registry.available(kind) for kind in ALL_POLICIES))
    assert listed == registered
    assert "thresholds=" in printed and "per_replica=" in printed and "slots=" in printed  # parameters are shown


def test_config_prints_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    config_part, factors_part = out.split("\nstep_model factors by device", 1)
    keys = [line.split()[0] for line in config_part.splitlines() if line.strip()]
    assert keys == [key for key, _, _ in describe_config()]
    assert "workload.training.interarrival" in keys and "sim.preemption.checkpoint_s" in keys
    # then every step-time factor of every catalog device, assumed ones starred
    from sim.platform.hardware import DEVICES
    from sim.serving.step_factors import FACTORS, default_step_factors

    rows = {line.split()[0]: line.split()[1:] for line in factors_part.splitlines()[2:] if line.strip()}
    assert set(rows) == set(DEVICES)
    assert factors_part.splitlines()[1].split() == ["device", *FACTORS]
    h100 = default_step_factors("h100-sxm")
    assert rows["h100-sxm"][FACTORS.index("linear_compute")] == f"{h100.linear_compute:.4g}"
    assert rows["h100-sxm"][FACTORS.index("step_overhead")] == f"{h100.step_overhead:.4g}*"


# ----------------------------------------------------------------------------- errors


BAD_CONFIGS = {
    "unknown-key": "polcy: {scheduler: las}\n",
    "wrong-type": "seed: seven\n",
    "unknown-policy": TINY.replace("scheduler: las", "scheduler: lass"),
    "unknown-preset": TINY.replace("dgx-h100", "dgx-h200"),
    "bad-distribution": TINY.replace("dist: exponential", "dist: expo"),
    "not-yaml": "seed: [1,\n",
    "trace-and-jobs": TINY.replace("jobs: 200", "jobs: 200\n    trace: philly"),
    "missing-trace-file": "workload: {training: {trace: {path: does-not-exist.csv, format: philly}}}\n",
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_a_one_line_error(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(BAD_CONFIGS[case])
    code = main(["run", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: "), err
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("args", [
    ["run", "{missing}"],
    ["run", "{tiny}", "--set", "policy.scheduler"],
    ["run", "{tiny}", "--set", "policy.schedular=las"],
])
def test_bad_arguments_are_one_line_errors(args: list[str], tiny: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tiny=tiny, missing=tmp_path / "missing.yaml") for a in args] + ["-o", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: "), err


def test_compare_rejects_unknown_policy_before_running(tiny: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny), "--schedulers", "fifo,nope", "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("gpusim: error: ") and "'nope'" in lines[-1] and "fifo" in lines[-1]
    assert not any(line.startswith("running ") for line in lines), (
        "compare ran a policy before finding that another name is not a scheduler")
    assert not (out / "fifo+consolidate").exists()


@pytest.mark.parametrize("how", ["config", "--set"])
def test_negative_seed_is_a_one_line_error_naming_the_seed(how: str, tiny: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    if how == "config":
        config, extra = tmp_path / "seed.yaml", []
        config.write_text(TINY.replace("seed: 5", "seed: -1"))
    else:
        config, extra = tiny, ["--set", "seed=-1"]
    assert main(["run", str(config), *extra, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: "), err
    assert "'seed'" in lines[0] and "non-negative" in lines[0] and "-1" in lines[0], lines[0]


def test_negative_seed_in_python_names_the_seed() -> None:
    from sim.errors import ConfigError
    from sim.experiments.scenario import run_config
    from sim.random import RandomStreams

    with pytest.raises(ConfigError, match="seed must be a non-negative integer, got -1"):
        RandomStreams(-1)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        run_config(load_config(yaml.safe_load(TINY)), seed=-3)


OUTPUT_COMMANDS = {
    "run": ["run", "{tiny}"],
    "compare": ["compare", "{tiny}", "--schedulers", "fifo,sjf"],
    "plan": ["plan", "{tiny}"],
    "sweep": ["sweep", "{tiny}", "--executor", "serial"],
    "report": ["report", "{tmp}/some-sweep"],
}


@pytest.mark.parametrize("inside", [False, True], ids=["file", "inside-a-file"])
@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_output_that_is_a_file_is_a_one_line_error(command: str, inside: bool, tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    output = taken / "sub" if inside else taken
    argv = [a.format(tiny=tiny, tmp=tmp_path) for a in OUTPUT_COMMANDS[command]]
    assert main([*argv, "-o", str(output)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: "), err
    assert f"--output {str(output)!r}" in lines[0] and "is a file" in lines[0], lines[0]
    assert taken.read_text() == "not a directory\n"  # and nothing ran


def test_calibrate_output_that_is_a_directory_is_a_one_line_error(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "profile.csv"  # a small profile that calibrates (prefill: context = tokens)
    profile.write_text("phase,batch_size,tokens,context,ms\n" + "".join(
        [f"prefill,{b},{b * t},{b * t},{5 + 0.04 * b * t:.2f}\n" for b in (1, 2, 4) for t in (256, 1024)]
        + [f"decode,{b},{b},{b * c},{7 + 0.02 * b + 6.25e-6 * b * c:.2f}\n" for b in (8, 32, 64) for c in (512, 4096)]))
    argv = ["calibrate", str(profile), "--model", "llama-3.1-8b", "--device", "h100"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--output {str(tmp_path)!r} is a directory" in lines[0], lines


# ----------------------------------------------------------------------------- the installed command


def installed_gpusim() -> str:
    beside = Path(sys.executable).with_name("gpusim")
    found = str(beside) if beside.exists() else shutil.which("gpusim")
    assert found, "the gpusim console script is not installed (pip install -e .)"
    return found


def test_installed_command_runs_the_default_scenario(tmp_path: Path) -> None:
    """README's first command ends in ``.venv/bin/gpusim run``: no config, default output directory."""
    done = subprocess.run([installed_gpusim(), "run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = tmp_path / "gpusim-out" / "run"
    assert "gpusim-out/run" in done.stdout
    summary, jobs, _ = check_run_directory(out, devices=820)

    # the default scenario (issue 15): a third of the Philly cluster (820 devices), one week of its trace, VC quotas
    assert summary["run"]["cluster"] == "philly x0.33"
    assert summary["run"]["devices"] == 820
    assert summary["run"]["nodes"] == 182
    assert summary["run"]["scheduler"] == "las" and summary["run"]["placer"] == "consolidate"
    config = load_config(out / "config.yaml")
    assert config == load_config()
    assert config.cluster.quotas == "philly-vc" and summary["jobs"]["queueing_delay"]["mean"] > 0
    training = config.workload.training
    assert training.trace == "philly"
    assert training.window == {"start": "2017-10-23", "days": 7}
    span_days = (jobs["arrival"].max() - jobs["arrival"].min()) * training.load_scale / 86400
    assert 6 < span_days <= 7
    assert summary["jobs"]["count"] > 1000
    assert summary["jobs"]["completed"] + summary["jobs"]["unschedulable"] == summary["jobs"]["count"]
    assert set(jobs["device_type"].dropna()) == {"k80", "p40"}  # (unschedulable jobs: larger than their VC quota)
    assert math.isfinite(summary["utilization"]["mean"]) and 0 < summary["utilization"]["mean"] <= 1
