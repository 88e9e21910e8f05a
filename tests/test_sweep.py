"""Sweeps in one process: the grid and its errors, seeds, the results directory (resume, overwrite, failed
points, atomic shards), the tables, the report and the ``gpusim sweep`` / ``gpusim report`` commands."""

from __future__ import annotations

import io
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import tiny_training_config

from sim.cli import main
from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import run_config
from sim.experiments.sweep import Experiment, Sweep, SweepError, parse_grid_option, replication_seed
from sim.experiments.sweep.progress import SweepProgress
from sim.experiments.sweep.store import Store, atomic_write, default_format, read_csv, write_csv

TINY: dict[str, Any] = {**tiny_training_config(seed=5, jobs=150), "policy": {"scheduler": "fifo"}}
GRID = {"policy.scheduler": ["fifo", "las"], "workload.training.interarrival.mean": [20, 60]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return Experiment(TINY, GRID, seeds=2).run(tmp_path_factory.mktemp("sweep") / "out", executor="serial",
                                               tables=("jobs",))


# ---- tables ---------------------------------------------------------------------------------------------

def test_summary_is_tidy_with_parameter_and_seed_columns(sweep: Sweep) -> None:
    summary = sweep.summary()
    assert list(summary.columns[:4]) == ["point", "policy.scheduler", "workload.training.interarrival.mean",
                                         "replication"]
    assert len(summary) == 8 and summary["point"].is_unique
    assert summary["workload.training.interarrival.mean"].dtype == np.int64
    assert summary["replication"].tolist() == [0, 1] * 4
    assert summary["policy.scheduler"].tolist() == ["fifo"] * 4 + ["las"] * 4
    for column in ("jobs.jct.mean", "jobs.queueing_delay.p99", "utilization.mean", "jobs.count"):
        assert pd.api.types.is_numeric_dtype(summary[column]), column
    assert "wall_seconds" not in summary.columns and not any(c.startswith("network.recompute") for c in summary)
    assert (summary["jobs.count"] == 150).all()
    assert set(sweep.points()["status"]) == {"ok"} and (sweep.points()["wall_seconds"] > 0).all()


def test_summary_matches_a_direct_run(sweep: Sweep) -> None:
    """A point's row is what ``run_config`` gives with that point's config and seed."""
    config = load_config(TINY, ["policy.scheduler=las", "workload.training.interarrival.mean=60"])
    direct = run_config(config, seed=replication_seed(TINY["seed"], 1)).summary()
    row = sweep.summary().set_index("point").loc["g0003-r001"]
    assert row["jobs.jct.mean"] == direct["jobs"]["jct"]["mean"]
    assert row["utilization.mean"] == direct["utilization"]["mean"]
    assert row["run.scheduler"] == "las"


def test_jobs_table_on_demand_with_parameter_columns(sweep: Sweep) -> None:
    jobs = sweep.table("jobs")
    assert len(jobs) == 8 * 150
    assert not jobs.duplicated(["point", "job_id"]).any()
    assert list(jobs.columns[:4]) == ["point", "policy.scheduler", "workload.training.interarrival.mean",
                                      "replication"]
    np.testing.assert_allclose(jobs.groupby("point")["jct"].mean(), sweep.summary()["jobs.jct.mean"], rtol=1e-12)
    with pytest.raises(KeyError, match="requests"):
        sweep.table("requests")


def test_aggregate_has_mean_and_ci_per_grid_point_and_metric(sweep: Sweep) -> None:
    agg = sweep.aggregate()
    assert list(agg.columns) == ["policy.scheduler", "workload.training.interarrival.mean", "metric", "n", "mean",
                                 "std", "ci95"]
    assert set(agg["metric"]) == set(sweep.metrics()) and "replication" not in set(agg["metric"])
    row = agg[(agg["policy.scheduler"] == "las") & (agg["workload.training.interarrival.mean"] == 20)
              & (agg["metric"] == "jobs.jct.mean")].iloc[0]
    values = sweep.summary().query("point in ['g0002-r000', 'g0002-r001']")["jobs.jct.mean"].to_numpy()
    assert row["n"] == 2 and row["mean"] == pytest.approx(values.mean(), rel=1e-15)
    assert row["ci95"] == pytest.approx(12.706205 * values.std(ddof=1) / math.sqrt(2), rel=1e-6)


def test_reopened_sweep_reads_the_same_tables(sweep: Sweep) -> None:
    again = Sweep.open(sweep.directory)
    pd.testing.assert_frame_equal(again.summary(), sweep.summary(), check_exact=True)
    pd.testing.assert_frame_equal(again.table("jobs"), sweep.table("jobs"), check_exact=True)
    assert again.last_run is None and again.complete


# ---- seeds ----------------------------------------------------------------------------------------------

def test_seeds_common_across_policies_different_across_replications(sweep: Sweep) -> None:
    jobs = sweep.table("jobs")
    workload = ["job_id", "arrival", "duration", "gpus"]

    def arrivals(point: str) -> pd.DataFrame:
        return jobs[jobs["point"] == point][workload].reset_index(drop=True)

    pd.testing.assert_frame_equal(arrivals("g0000-r001"), arrivals("g0002-r001"), check_exact=True)  # fifo/las
    assert not arrivals("g0000-r000")["arrival"].equals(arrivals("g0000-r001")["arrival"])
    assert not arrivals("g0000-r000")["duration"].equals(arrivals("g0000-r001")["duration"])
    summary = sweep.summary().set_index("point")
    assert summary.loc["g0002-r000", "jobs.jct.mean"] != summary.loc["g0002-r001", "jobs.jct.mean"]
    assert summary.loc["g0000-r000", "jobs.jct.mean"] != summary.loc["g0002-r000", "jobs.jct.mean"]


def test_point_result_is_reproducible_and_independent_of_order(sweep: Sweep, tmp_path: Path) -> None:
    """The same point in a smaller sweep, at another position and run in another order, gives the same row."""
    alone = Experiment(TINY, {"workload.training.interarrival.mean": [60], "policy.scheduler": ["las"]},
                       seeds=2).run(tmp_path / "alone", executor="serial")
    mine = alone.summary().drop(columns=["point"]).set_index("replication")
    theirs = sweep.summary().query("`policy.scheduler` == 'las' and `workload.training.interarrival.mean` == 60")
    theirs = theirs.drop(columns=["point"]).set_index("replication")[mine.columns]
    pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    assert Experiment(TINY, seeds=3).seed(2).spawn_key == (2,) and Experiment(TINY, root_seed=9).seed(0).entropy == 9


def test_root_seed_changes_every_replication(tmp_path: Path) -> None:
    a = Experiment(TINY, seeds=1).run(tmp_path / "a", executor="serial").summary()
    b = Experiment(TINY, seeds=1, root_seed=6).run(tmp_path / "b", executor="serial").summary()
    assert a["jobs.jct.mean"].iloc[0] != b["jobs.jct.mean"].iloc[0]
    assert b["run.seed.entropy"].iloc[0] == 6


# ---- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "closest"), [
    ("policy.schedulr", "policy.scheduler"),
    ("workload.trainig.interarrival.mean", "workload.training.interarrival.mean"),
    ("cluster.node", "cluster.nodes"),
])
def test_unknown_grid_key_names_it_and_the_closest_valid_key(key: str, closest: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Experiment(TINY, {"policy.placer": ["first-fit"], key: [1, 2]}).run(tmp_path / "never")
    assert repr(key) in str(info.value) and repr(closest) in str(info.value)
    assert not (tmp_path / "never").exists()


def test_every_point_is_checked_before_any_runs(tmp_path: Path) -> None:
    """The bad value is the last of the grid: nothing has run, no directory was made."""
    out = tmp_path / "never"
    with pytest.raises(ConfigError) as info:
        Experiment(TINY, {"policy.scheduler": ["fifo", "las"], "workload.training.jobs": [100, "many"]}).run(out)
    message = str(info.value)
    assert "workload.training.jobs" in message and "'many'" in message and "integer" in message
    with pytest.raises(ConfigError, match=r"lass.*did you mean 'las'"):
        Experiment(TINY, {"policy.scheduler": ["fifo", "lass"]})
    with pytest.raises(ConfigError, match=r"cluster.nodes.*must be an integer.*'two'"):
        Experiment(TINY, {"cluster.nodes": [2, "two"]})
    code = main(["sweep", str(_write_config(tmp_path)), "--grid", "sim.horizon=10,ten", "-o", str(out)])
    assert code == 2 and not out.exists()


@pytest.mark.parametrize(("grid", "match"), [
    ({"seed": [1, 2]}, "seeds=N"),
    ({"policy.scheduler": "fifo"}, "give a list"),
    ({"policy.scheduler": []}, "empty"),
    ({"policy.scheduler": ["fifo", "fifo"]}, "twice"),
    ({"policy": [{"scheduler": "las"}], "policy.scheduler": ["fifo"]}, "overlap"),
    ({"cluster.nodes.count": [1]}, "single value"),
    ({"workload.inference.services.3.arrivals.rate": [1]}, "no index 3"),
    ({"policy.scheduler": [object()]}, "plain data"),
])
def test_malformed_grids_are_config_errors(grid: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Experiment(TINY, grid)


def test_bad_run_options_are_errors(tmp_path: Path) -> None:
    experiment = Experiment(TINY)
    with pytest.raises(ConfigError, match="did you mean 'jobs'"):
        experiment.run(tmp_path / "x", tables=("jbos",))
    with pytest.raises(SweepError, match="unknown executor 'threads'"):
        experiment.run(tmp_path / "x", executor="threads")
    with pytest.raises(SweepError, match="goes with executor='dask'"):
        experiment.run(tmp_path / "x", executor="serial", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="seeds must be a positive integer"):
        Experiment(TINY, seeds=0)
    if default_format() == "csv":
        with pytest.raises(ConfigError, match="needs pyarrow"):
            experiment.run(tmp_path / "x", storage="parquet")


def test_directory_of_another_sweep_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    Experiment(TINY, {"policy.scheduler": ["fifo"]}).run(out, executor="serial")
    other = Experiment(TINY, {"policy.scheduler": ["las"]})
    with pytest.raises(SweepError) as info:
        other.run(out, executor="serial")
    assert str(out) in str(info.value) and "grid" in str(info.value) and "--overwrite" in str(info.value)
    with pytest.raises(SweepError, match="base_config"):
        Experiment({**TINY, "seed": 6}, {"policy.scheduler": ["fifo"]}, root_seed=5).run(out, executor="serial")
    done = other.run(out, executor="serial", overwrite=True)
    assert done.summary()["policy.scheduler"].tolist() == ["las"] and len(list((out / "points").iterdir())) == 1
    code = main(["sweep", str(_write_config(tmp_path)), "--grid", "policy.scheduler=fifo", "-o", str(out),
                 "--executor", "serial"])
    assert code == 2
    assert main(["sweep", str(_write_config(tmp_path)), "--grid", "policy.scheduler=fifo", "-o", str(out),
                 "--executor", "serial", "--overwrite"]) == 0


def test_directory_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(SweepError, match="not empty and holds no sweep"):
        Experiment(TINY).run(tmp_path, executor="serial", overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


# ---- failures, resume ------------------------------------------------------------------------------------

def test_failing_point_is_recorded_and_the_others_go_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``jobs: -5`` is an integer (it passes the config check) but the generator refuses it at run time."""
    out = tmp_path / "out"
    config = _write_config(tmp_path)
    code = main(["sweep", str(config), "--grid", "workload.training.jobs=-5,40", "--grid", "policy.scheduler=fifo,las",
                 "--seeds", "2", "--executor", "serial", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "4 ok, 4 failed" in printed and "jobs must be a positive integer" in printed and str(out) in printed
    sweep = Sweep.open(out)
    assert sweep.counts() == {"ok": 4, "failed": 4, "died": 0, "damaged": 0, "missing": 0}
    errors = sweep.errors()
    assert set(errors["workload.training.jobs"]) == {-5} and (errors["attempts"] == 1).all()
    assert (errors["error_type"] == "sim.errors.ConfigError").all()
    assert errors["traceback"].str.contains("Traceback").all() and errors["traceback"].str.contains("build").all()
    assert len(sweep.summary()) == 4 and set(sweep.summary()["workload.training.jobs"]) == {40}
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert main(["sweep", str(config), "--grid", "workload.training.jobs=-5,40", "--grid",
                 "policy.scheduler=fifo,las", "--seeds", "2", "--executor", "serial", "-o", str(out)]) == 1
    assert "0 ok, 4 failed, 0 died, 4 skipped" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    ok = set(Sweep.open(out).points().query("status == 'ok'")["point"])
    assert all(after[f"{p}.json"] == before[f"{p}.json"] for p in ok)
    assert (Sweep.open(out).errors()["attempts"] == 2).all()  # failed points ran again, and count it


def test_more_seeds_reuse_the_finished_replications(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = Experiment(TINY, {"policy.scheduler": ["fifo", "las"]}, seeds=2).run(out, executor="serial")
    more = Experiment(TINY, {"policy.scheduler": ["fifo", "las"]}, seeds=3).run(out, executor="serial")
    assert more.last_run is not None and (more.last_run.skipped, more.last_run.ran) == (4, 2)
    assert len(more.summary()) == 6 and more.summary()["point"].is_unique
    pd.testing.assert_frame_equal(more.summary().query("replication < 2").reset_index(drop=True),
                                  first.summary(), check_exact=True)


def test_stale_temporary_files_and_locks_are_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    experiment = Experiment(TINY, {"policy.scheduler": ["fifo"]}, seeds=2)
    experiment.run(out, executor="serial", tables=("jobs",))
    torn = out / "tables" / "summary" / ".g0000-r000.csv.x1y2.tmp"
    torn.write_text("#gpusim-dtypes {\"a\": \"float64\"}\na\n0.12")
    (out / "points" / "g0000-r001.json").unlink()  # as if killed before its record
    (out / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))
    reader = Sweep.open(out)
    assert not torn.exists() and reader.counts()["missing"] == 1 and len(reader.summary()) == 1
    again = experiment.run(out, executor="serial", tables=("jobs",))
    assert again.last_run is not None and (again.last_run.ran, again.last_run.skipped) == (1, 1)
    assert not (out / ".lock").exists() and not list(out.rglob(".*.tmp"))
    assert len(again.table("jobs")) == 2 * 150 and not again.table("jobs").duplicated(["point", "job_id"]).any()


def test_a_live_writer_lock_is_respected(tmp_path: Path) -> None:
    out = tmp_path / "out"
    Experiment(TINY).run(out, executor="serial")
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(SweepError, match=r"another sweep \(pid"):
        Experiment(TINY).run(out, executor="serial")


# ---- storage --------------------------------------------------------------------------------------------

def test_csv_shards_round_trip_floats_and_dtypes_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-300, 300, 500),
                        [math.nan, math.inf, -math.inf, 0.1 + 0.2, 5e-324, -0.0, 1.7976931348623157e308]])
    table = pd.DataFrame({"x": x, "i": np.arange(x.size, dtype=np.int64), "flag": np.arange(x.size) % 3 == 0,
                          "text": [f'a,"b\n{i}' if i % 4 else "" for i in range(x.size)]})
    path = tmp_path / "t.csv"
    atomic_write(path, lambda fh: write_csv(table, fh))
    back = read_csv(path)
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    assert (back["x"].to_numpy().view(np.int64) == x.view(np.int64)).all()  # bit for bit, -0.0 included
    assert not list(tmp_path.glob(".*"))


def test_parquet_and_csv_sweeps_agree(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    grid = {"policy.scheduler": ["fifo", "las"]}
    a = Experiment(TINY, grid).run(tmp_path / "p", executor="serial", storage="parquet", tables=("jobs",))
    b = Experiment(TINY, grid).run(tmp_path / "c", executor="serial", storage="csv", tables=("jobs",))
    assert list((tmp_path / "p" / "tables" / "jobs").glob("*.parquet"))
    pd.testing.assert_frame_equal(a.summary(), b.summary(), check_exact=True)
    pd.testing.assert_frame_equal(a.table("jobs"), b.table("jobs"), check_exact=True)


def test_manifest_records_the_sweep(sweep: Sweep) -> None:
    manifest = json.loads((sweep.directory / "manifest.json").read_text())
    assert manifest["grid"] == GRID and manifest["seeds"] == 2 and manifest["root_seed"] == 5
    assert manifest["tables"] == ["jobs"] and manifest["base_config"]["cluster"]["nodes"] == 2
    assert manifest["code"]["gpusim"] and "git_commit" in manifest["code"]
    assert Store.open(sweep.directory).format in ("csv", "parquet")


# ---- grid values and the CLI ----------------------------------------------------------------------------

def test_grid_option_values_are_yaml() -> None:
    assert parse_grid_option("workload.training.interarrival.mean=20,30,60") == (
        "workload.training.interarrival.mean", [20, 30, 60])
    assert parse_grid_option("x=0.5,1e-3,true,null,fifo") == ("x", [0.5, 0.001, True, None, "fifo"])
    assert parse_grid_option("policy.scheduler=[{name: las, thresholds: [3600]}, fifo]") == (
        "policy.scheduler", [{"name": "las", "thresholds": [3600]}, "fifo"])
    assert parse_grid_option('x="a,b",c') == ("x", ["a,b", "c"])
    for bad in ("x", "x=", "=1,2", "x=1,,2", "x=[1, 2"):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid_option(bad)


def test_cli_sweep_with_mapping_values_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["sweep", str(_write_config(tmp_path)), "--grid",
                 "policy.scheduler=[{name: las, thresholds: [3600]}, fifo]", "--grid",
                 "workload.training.interarrival.mean=20,60", "--seeds", "2", "--executor", "serial",
                 "--tables", "jobs", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "8 ok, 0 failed, 0 died, 0 skipped" in printed
    sweep = Sweep.open(out)
    assert set(sweep.summary()["policy.scheduler"]) == {"{name: las, thresholds: [3600]}", "fifo"}
    assert set(sweep.summary()["run.scheduler"]) == {"las", "fifo"}
    assert main(["report", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    report = out / "report"
    for metric in ("utilization_mean", "jobs_queueing_delay_mean", "jobs_queueing_delay_p99", "jobs_jct_mean"):
        assert (report / f"{metric}.png").stat().st_size > 1000, metric
    text = (report / "report.md").read_text()
    assert "| policy.scheduler | workload.training.interarrival.mean | n | utilization.mean |" in text
    assert "{name: las, thresholds: [3600]}" in text and " ± " in text and "![jobs.jct.mean](jobs_jct_mean.png)" in text
    assert text.count("\n| ") == 1 + 4  # header and one row per grid point


def test_report_of_an_inference_sweep_plots_ttft_and_attainment(tmp_path: Path) -> None:
    config = {"seed": 1, "cluster": {"preset": "dgx-h100", "nodes": 1},
              "workload": {"inference": {"services": [{
                  "name": "chat", "model": "llama-3.1-8b", "replicas": 1, "requests": 200,
                  "arrivals": {"process": "poisson", "rate": 2.0}, "slo": {"ttft": 0.5}}]}},
              "sim": {"progress": False}}
    sweep = Experiment(config, {"workload.inference.services.0.arrivals.rate": [2.0, 8.0]}, seeds=2).run(
        tmp_path / "out", executor="serial", tables=("requests",))
    assert len(sweep.table("requests")) == 4 * 200
    assert sweep.summary()["workload.inference.services.0.arrivals.rate"].tolist() == [2.0, 2.0, 8.0, 8.0]
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = sweep.plot("requests.ttft.p99")
    assert len(ax.lines) == 1 and ax.get_xlabel() == "workload.inference.services.0.arrivals.rate"
    plt.close(ax.figure)
    folder = sweep.report()
    assert (folder / "requests_ttft_p99.png").is_file() and (folder / "requests_slo_attainment.png").is_file()
    assert "requests.slo_attainment" in (folder / "report.md").read_text()


def test_progress_bar_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    bar = SweepProgress(10, stream=quiet)
    bar.update(3, 1, force=True)
    bar.close()
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    loud = Terminal()
    bar = SweepProgress(10, stream=loud)
    bar.update(5, 1, force=True)
    bar.close()
    assert "5/10 points, 1 failed" in loud.getvalue() and "eta" in loud.getvalue()
    assert loud.getvalue().endswith("\n")


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    config = {**TINY, "workload": {"training": {**TINY["workload"]["training"], "jobs": 40}}}
    path.write_text(yaml.safe_dump(config))
    return path
