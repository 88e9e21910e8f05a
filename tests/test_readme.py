"""Executable documentation: the README's Python snippets run, its two commands are the ones CI and the
tests use, and the names and subcommands it lists exist."""

from __future__ import annotations

import re
import textwrap
import time
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
    assert len(blocks) >= 2, "expected the Python API example and the custom-scheduler example"
    monkeypatch.chdir(tmp_path)  # results.save("out/") writes relative to the working directory
    namespace: dict[str, Any] = {"__name__": "readme"}
    started = time.perf_counter()
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    elapsed = time.perf_counter() - started
    assert elapsed < 20, f"README snippets took {elapsed:.1f} s; keep them small enough to run in the tests"

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
    assert subcommands == ["run", "compare", "policies", "config", "plan", "sweep", "report"]
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
