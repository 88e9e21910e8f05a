"""A run written into a folder that holds an earlier run's files leaves none of them behind (issue 13, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import tiny_training_config

from sim import Simulation, preset
from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import run_config
from sim.output.results import RUN_FILES
from workloads import TrainingJob


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


def test_a_folder_without_an_earlier_run_keeps_its_files(tmp_path: Path) -> None:
    # a user's own files beside where results of a Python-built run go (no config of its own) are not an
    # earlier run's: kept, config.yaml included
    out = tmp_path / "study"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 3\n")
    (out / "requests.csv").write_text("mine\n")
    results = Simulation(preset("dgx-h100", nodes=1), [TrainingJob(0, 0.0, 8, 100.0)]).run()
    results.save(out)
    assert "config.yaml" not in results.written_files
    assert (out / "config.yaml").read_text() == "seed: 3\n" and (out / "requests.csv").read_text() == "mine\n"


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.write_text("not a folder")
    results = run_config(load_config(tiny_training_config(seed=1, jobs=5)))
    with pytest.raises(ConfigError, match=r"output folder .*taken.* is a file"):
        results.save(path)
    assert path.read_text() == "not a folder"


def test_skipped_trace_rows_are_written_with_file_line_and_field(tmp_path: Path) -> None:
    # issue 13, item 7: a skipped malformed row was counted, but which line it was was written nowhere
    trace = tmp_path / "jobs.csv"
    trace.write_text("job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n0,1,10,606,vgg19,164,30\n"
                     "1,0,30,133,vgg11,147,23\n2,2,5,157,inception4,-1,26\n3,1,40,10,vgg16,100,5\n")
    config = {"cluster": {"preset": "dgx-h100", "nodes": 1}, "sim": {"progress": False},
              "workload": {"training": {"trace": {"path": str(trace), "format": "tiresias"}, "errors": "skip"}}}
    with pytest.warns(UserWarning, match="skipped 2 malformed rows"):
        results = run_config(load_config(config))
    assert results.summary()["jobs"]["skipped_trace_rows"] == 2
    out = results.save(tmp_path / "out")
    assert "skipped.csv" in results.written_files
    table = pd.read_csv(out / "skipped.csv")
    assert table[["workload", "line", "field"]].values.tolist() == [["jobs", 3, "num_gpu"], ["jobs", 4, "duration"]]
    assert (table["path"] == str(trace)).all() and table["reason"].str.len().gt(0).all()


def test_a_second_compare_into_the_same_folder_leaves_no_policy_of_the_first(tmp_path: Path) -> None:
    # issue 13, item 4, for compare: a folder another comparison wrote keeps none of its runs or plots
    import yaml

    from sim.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_training_config(0, 20)))
    out = tmp_path / "cmp"
    assert main(["compare", str(config), "--schedulers", "fifo,las", "-o", str(out)]) == 0
    assert (out / "las+first-fit" / "summary.json").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("a\n1\n")
    (out / "las+first-fit" / "extra.txt").write_text("also mine")
    assert main(["compare", str(config), "--schedulers", "fifo", "-o", str(out)]) == 0
    assert list(pd.read_csv(out / "compare.csv", index_col=0).columns) == ["fifo+first-fit"]
    assert [p.name for p in (out / "las+first-fit").iterdir()] == ["extra.txt"]  # gpusim's files only
    assert (out / "fifo+first-fit" / "summary.json").is_file()
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "data.csv").is_file()
    assert main(["compare", str(config), "--schedulers", "sjf", "-o", str(out)]) == 0
    assert not (out / "fifo+first-fit").exists()  # emptied, then removed
