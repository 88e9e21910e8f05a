"""A run written into a folder that holds an earlier run's files leaves none of them behind (issue 13, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_training_config

from sim.config import load_config
from sim.errors import ConfigError
from sim.results import RUN_FILES
from sim.scenario import run_config


def serving_and_training() -> dict:
    config = tiny_training_config(seed=1, jobs=20)
    config["workload"]["inference"] = {"services": [{"name": "chat", "requests": 50,
                                                      "arrivals": {"process": "poisson", "rate": 5.0}}]}
    return config


def test_a_second_run_into_the_same_folder_removes_the_first_runs_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_config(load_config(serving_and_training()))
    first.save(out)
    assert {"requests.csv", "replicas.csv", "services.csv"} <= set(first.written_files)
    (out / "notes.md").write_text("mine")  # not gpusim's: stays
    second = run_config(load_config(tiny_training_config(seed=1, jobs=20)))
    second.save(out)
    on_disk = {p.name for p in out.iterdir()}
    assert on_disk == set(second.written_files) | {"notes.md"}
    assert "requests.csv" not in on_disk and "replicas.csv" not in on_disk
    assert "requests" not in json.loads((out / "summary.json").read_text())
    assert set(second.written_files) <= set(RUN_FILES)


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.write_text("not a folder")
    results = run_config(load_config(tiny_training_config(seed=1, jobs=5)))
    with pytest.raises(ConfigError, match=r"output folder .*taken.* is a file"):
        results.save(path)
    assert path.read_text() == "not a folder"
