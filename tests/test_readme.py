"""Executable documentation: the README's Python snippets run, its two commands are the ones CI and the
tests use, and the names and subcommands it lists exist."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sim import Simulation, preset, registry
from sim.cli import main
from workloads import TrainingJob

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gpusim run"
INSTALL_AND_TEST = 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest'


def fenced_blocks(text: str, language: str) -> list[str]:
    """Bodies of ```language blocks (indented ones too, e.g. inside a list item), dedented, in order."""
    pattern = rf"^([ \t]*)```{language}[ \t]*\n(.*?)^\1```[ \t]*$"
    return [textwrap.dedent(body) for _, body in re.findall(pattern, text, flags=re.M | re.S)]


def section(title: str) -> str:
    parts = re.split(rf"^## {re.escape(title)}[ \t]*$", README, maxsplit=1, flags=re.M)
    assert len(parts) == 2, f"README has no '## {title}' section"
    return re.split(r"^## ", parts[1], maxsplit=1, flags=re.M)[0]


def test_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = fenced_blocks(README, "python")
    assert len(blocks) >= 4, "expected the Python API, serving, sweep and custom-scheduler examples"
    monkeypatch.chdir(tmp_path)  # results.save("out/") writes relative to the working directory
    # run as a script would be (the sweep block is under the main guard); its workers import their own main
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)

    # what the first block's comments promise
    cluster, jobs, results = namespace["cluster"], namespace["jobs"], namespace["results"]
    assert (cluster.num_nodes, cluster.num_devices) == (552, 2490)
    assert set(results.summary()["jobs"]["queueing_delay"]) == {"mean", "p50", "p95", "p99"}
    assert isinstance(results.jobs, pd.DataFrame) and len(results.jobs) == len(jobs) > 0
    assert results.jobs["job_id"].is_unique
    assert {"allocated_devices", "queued_jobs", "running_jobs"} <= set(results.timeline.columns)
    for name in ("summary.json", "jobs.csv", "timeline.csv"):
        assert (tmp_path / "out" / name).is_file(), name
    assert results.run["scheduler"] == "las" and results.run["placer"] == "consolidate"

    # the timeline block: a trace file with one complete event per device a job started on
    import json

    trace = json.loads((tmp_path / "out" / "trace.json").read_text())
    starts = namespace["small"].events.query("event == 'start'")["devices"]
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == sum(len(d) for d in starts) > 0

    # the serving block: the topology, the default network and a served trace
    import networkx as nx

    from sim import NetworkSpec

    served, dgx = namespace["served"], namespace["dgx"]
    assert isinstance(dgx.topology.graph, nx.DiGraph) and dgx.topology.graph.number_of_nodes() > dgx.num_devices
    assert isinstance(namespace["default_network"](dgx), NetworkSpec)
    s = served.summary()["requests"]
    assert s["count"] == len(served.requests) == len(namespace["chat"].requests) > 100
    assert s["completed"] == s["count"] and 0 < s["slo_attainment"] <= 1

    # the sweep block ran (main guard) and wrote its points
    sweep = namespace["sweep"]
    assert sweep.counts().get("ok") == 2 * 2 * 3
    aggregate = sweep.aggregate(["jobs.jct.mean"])
    assert len(aggregate) == 4 and (aggregate["n"] == 3).all()
    assert (tmp_path / "out" / "sweep" / "manifest.json").is_file()

    # the second block's scheduler works when passed as an instance
    scheduler = namespace["BiggestFirst"]()
    assert scheduler.name == "biggest-first"
    workload = [TrainingJob(0, 0.0, 8, 100.0), TrainingJob(1, 1.0, 1, 100.0), TrainingJob(2, 2.0, 8, 100.0),
                TrainingJob(3, 3.0, 2, 100.0)]
    run = Simulation(preset("dgx-h100", nodes=1), workload, scheduler=scheduler, placer="first-fit").run()
    starts = run.jobs.set_index("job_id")["first_start"].to_dict()
    assert starts == {0: 0.0, 2: 100.0, 1: 200.0, 3: 200.0}  # the 8-GPU job goes before the earlier 1-GPU job
    assert run.run["scheduler"] == "biggest-first"


def test_two_commands_are_the_readme_sh_blocks() -> None:
    commands = [block.strip() for block in fenced_blocks(section("Two commands"), "sh")]
    assert commands == [INSTALL_AND_RUN, INSTALL_AND_TEST]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = fenced_blocks(section("Two commands"), "sh")[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run the README's test command verbatim, on its own line"


def test_cli_section_commands_exist(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = fenced_blocks(section("CLI"), "sh")
    assert len(blocks) == 1
    subcommands = [line.split()[1] for line in blocks[0].splitlines() if line.startswith("gpusim ")]
    assert subcommands == ["run", "compare", "policies", "config", "columns", "plan", "sweep", "report"]
    for sub in subcommands:
        with pytest.raises(SystemExit) as info:
            main([sub, "--help"])
        assert info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--set", "--schedulers", "--placers", "-o"):
        assert option in help_text


def test_policy_names_in_readme_are_the_registered_ones() -> None:
    bullet = README.split("**Policies**", 1)[1].split("Any scheduler works", 1)[0]
    schedulers_text, _, placers_text = bullet.partition("placers")
    assert set(re.findall(r"`([\w-]+)`", schedulers_text)) == set(registry.available("scheduler"))
    assert set(re.findall(r"`([\w-]+)`", placers_text)) == set(registry.available("placer"))


def test_classes_the_readme_names_import_from_sim_or_workloads() -> None:
    # every class the README calls (``Name(...)``) is importable from the package it belongs to, as a reader would
    # try: sim (engine, serving, network, accounting, sweeps) or workloads (jobs, requests, models)
    import sim
    import workloads

    elsewhere = {"BiggestFirst", "Client", "SLURMCluster", "SeedSequence"}  # defined in the README, dask, numpy
    called = set(re.findall(r"[`(\[= ]([A-Z][A-Za-z]+)\(", README)) - elsewhere
    assert {"ServiceSpec", "NetworkSpec", "TrainingJob", "Experiment", "ContinuousBatching"} <= called
    packages = [sim, workloads]
    try:  # the Gymnasium environment, an optional extra (rl; in the test extra too)
        import sim.gym

        packages.append(sim.gym)
    except ImportError:
        pass
    missing = sorted(name for name in called if not any(hasattr(package, name) for package in packages))
    assert not missing, f"README names {missing}, importable from neither sim nor workloads (nor sim.gym)"


def test_training_job_keywords_in_the_readme_exist() -> None:
    import dataclasses

    text = README.split("`TrainingJob(", 1)[1].split(")`", 1)[0]
    named = [part.split("=")[0].strip() for part in text.replace("\n", " ").split(",") if part.strip() != "..."]
    fields = {f.name for f in dataclasses.fields(TrainingJob)}
    assert named and set(named) <= fields, set(named) - fields


def test_lower_case_functions_in_the_readme_exist() -> None:
    # `name(...)` spans of the README's API bullets that name a function of sim or workloads
    import sim
    import workloads

    for name in ("preset", "default_network", "get_model", "compress",
                 "load_request_trace", "load_philly_jobs", "make_distribution", "generate_training_jobs"):
        assert f"{name}(" in README, name
        assert hasattr(sim, name) or hasattr(workloads, name), name


def test_the_default_scenarios_week_is_as_the_readme_says() -> None:
    # "the busiest calendar week ... 7,748 jobs asking for 124,066 GPU-hours, the most of any Monday-to-Sunday week;
    # among all 7-day windows it is fourth, the heaviest starting a day earlier with 135,895": GPU-hours are gpus x
    # recorded run time, each job counted on the day it was submitted
    from workloads import load_philly_jobs

    trace = load_philly_jobs()
    jobs = pd.DataFrame({"submitted": pd.Timestamp(trace.origin) + pd.to_timedelta([j.arrival for j in trace.jobs],
                                                                                 unit="s"),
                         "gpu_hours": [j.gpus * j.duration / 3600 for j in trace.jobs]})
    daily = jobs.groupby(jobs["submitted"].dt.normalize())["gpu_hours"].agg(["size", "sum"])
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max()), fill_value=0)
    weeks = daily.rolling(7).sum()
    weeks.index = weeks.index - pd.Timedelta(days=6)  # a window by its first day
    week = weeks.loc["2017-10-23"]
    assert (int(week["size"]), round(week["sum"])) == (7748, 124066)
    mondays = weeks[weeks.index.day_of_week == 0]["sum"]
    assert mondays.idxmax() == pd.Timestamp("2017-10-23")  # the busiest calendar week
    ranked = weeks["sum"].sort_values(ascending=False)
    assert list(ranked.index[:4]).index(pd.Timestamp("2017-10-23")) == 3
    assert ranked.index[0] == pd.Timestamp("2017-10-22") and round(ranked.iloc[0]) == 135895
    text = README.replace("\n", " ")
    assert "7,748 jobs asking for 124,066 GPU-hours, the most of any Monday-to-Sunday week" in text
    assert "among all 7-day windows it is fourth" in text
