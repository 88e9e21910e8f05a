"""Sweeps on every executor give bit-identical tables; worker deaths are retried in a fresh pool; a sweep
killed mid-way resumes without redoing, losing or duplicating a point; Dask's errors are clear and quick."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from helpers import tiny_training_config

from sim.cli import main
from sim.experiments.sweep import Experiment, PointsDiedError, Sweep, SweepError, run_point
from sim.experiments.sweep import executors as executors_module

ROOT = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = tiny_training_config(seed=21, jobs=120)
GRID = {"policy.scheduler": ["fifo", "las"], "workload.training.interarrival.mean": [20, 60]}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return Experiment(TINY, GRID, seeds=2).run(tmp_path_factory.mktemp("serial"), executor="serial",
                                               tables=("jobs",))


def assert_same_tables(a: Sweep, b: Sweep) -> None:
    pd.testing.assert_frame_equal(a.summary(), b.summary(), check_exact=True)
    pd.testing.assert_frame_equal(a.table("jobs"), b.table("jobs"), check_exact=True)


def test_process_pool_gives_identical_tables(serial: Sweep, tmp_path: Path) -> None:
    sweep = Experiment(TINY, GRID, seeds=2).run(tmp_path, executor="processes", workers=2, tables=("jobs",))
    assert sweep.last_run is not None and sweep.last_run.executor == "processes (2 workers)"
    assert_same_tables(serial, sweep)


def test_any_executor_instance_gives_identical_tables(serial: Sweep, tmp_path: Path) -> None:
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        sweep = Experiment(TINY, GRID, seeds=2).run(tmp_path, executor=pool, tables=("jobs",))
        assert pool.submit(int, "7").result() == 7  # the sweep does not shut down an executor it was given
    assert_same_tables(serial, sweep)


def test_dask_local_cluster_gives_identical_tables(serial: Sweep, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    sweep = Experiment(TINY, GRID, seeds=2).run(tmp_path, executor="dask", workers=2, tables=("jobs",))
    assert sweep.last_run is not None and sweep.last_run.executor == "dask (local cluster, 2 workers)"
    assert_same_tables(serial, sweep)


def test_dask_scheduler_address_and_client_give_identical_tables(serial: Sweep, tmp_path: Path) -> None:
    """A running scheduler reached by its address (``--scheduler``), and a ``Client`` passed as the executor
    (as with dask-jobqueue's ``Client(SLURMCluster(...))``), which the sweep leaves open."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        experiment = Experiment(TINY, GRID, seeds=2)
        by_address = experiment.run(tmp_path / "address", scheduler=cluster.scheduler_address, tables=("jobs",))
        assert by_address.last_run is not None and by_address.last_run.executor.startswith("dask at tcp://127.0.0.1")
        by_client = experiment.run(tmp_path / "client", executor=client, tables=("jobs",))
        assert client.submit(sum, [1, 2]).result() == 3  # still open
    assert_same_tables(serial, by_address)
    assert_same_tables(serial, by_client)


def test_unreachable_dask_scheduler_is_a_quick_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    with pytest.raises(SweepError) as info:
        Experiment(TINY).run(tmp_path, executor="dask", scheduler="tcp://127.0.0.1:9")
    assert "tcp://127.0.0.1:9" in str(info.value) and "cannot reach the Dask scheduler" in str(info.value)
    # quick: the connection gives up after DASK_CONNECT_TIMEOUT (checked on the call, not on a clock)
    calls: list[dict[str, object]] = []

    def unreachable(address: str, **kwargs: object) -> None:
        calls.append({"address": address, **kwargs})
        raise OSError("timed out")

    monkeypatch.setattr(distributed, "Client", unreachable)
    with pytest.raises(SweepError, match=rf"{executors_module.DASK_CONNECT_TIMEOUT:g} s"):
        Experiment(TINY).run(tmp_path / "again", executor="dask", scheduler="tcp://10.0.0.1:8786")
    assert calls == [{"address": "tcp://10.0.0.1:8786", "timeout": executors_module.DASK_CONNECT_TIMEOUT}]


def test_missing_dask_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(SweepError, match=r"pip install 'gpusim\[distributed\]'"):
        Experiment(TINY).run(tmp_path, executor="dask")
    assert main(["sweep", "--executor", "dask", "-o", str(tmp_path / "cli")]) == 2


# ---- worker deaths ----------------------------------------------------------------------------------------

def dying_point(config: dict[str, Any], entropy: int, spawn_key: tuple[int, ...], tables: tuple[str, ...], *,
                marker: str, always: bool = False) -> dict[str, Any]:
    """``run_point``, except that the worker running (las, replication 1) dies: once (a marker file records
    it), or every time."""
    chosen = config["policy"]["scheduler"] == "las" and tuple(spawn_key) == (1,)
    if chosen and (always or not os.path.exists(marker)):
        Path(marker).write_text(str(os.getpid()))
        os._exit(13)
    return run_point(config, entropy, spawn_key, tables)


def test_worker_death_is_retried_in_a_fresh_pool(serial: Sweep, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    sweep = Experiment(TINY, GRID, seeds=2).run(
        tmp_path / "out", executor="processes", workers=2, tables=("jobs",),
        point_function=functools.partial(dying_point, marker=str(marker)))
    assert marker.exists() and sweep.complete
    points = sweep.points().set_index("point")
    assert points.loc[["g0002-r001", "g0003-r001"], "attempts"].max() == 2  # the (las, 1) that died ran again
    assert (points["attempts"] <= 2).all() and set(points["status"]) == {"ok"}
    assert_same_tables(serial, sweep)


def test_a_point_that_always_kills_its_worker_is_reported_died(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    grid = {"policy.scheduler": ["fifo", "las"]}
    with pytest.raises(PointsDiedError) as info:
        Experiment(TINY, grid, seeds=2).run(
            tmp_path / "out", executor="processes", workers=2, retries=1,
            point_function=functools.partial(dying_point, marker=str(tmp_path / "m"), always=True))
    assert "1 of 4 points died" in str(info.value) and "g0001-r001" in str(info.value) and info.value.died == 1
    sweep = info.value.sweep
    points = sweep.points().set_index("point")
    assert points["status"].to_dict() == {"g0000-r000": "ok", "g0000-r001": "ok", "g0001-r000": "ok",
                                          "g0001-r001": "died"}
    assert points.loc["g0001-r001", "attempts"] == 2  # retries=1: the first attempt and one more
    assert "BrokenProcessPool" in points.loc["g0001-r001", "error"]
    assert (points.drop(index="g0001-r001")["attempts"] <= 2).all()
    assert sweep.last_run is not None and (sweep.last_run.ok, sweep.last_run.died) == (3, 1)


def test_broken_user_executor_stops_cleanly(tmp_path: Path) -> None:
    """An executor the sweep did not make cannot be restarted: the dead point is reported, the rest left to
    a later run, and nothing is lost."""
    # forkserver: earlier tests leave threads (Dask) in this process, and fork() from a threaded process may deadlock
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver")) as pool, \
            pytest.raises(PointsDiedError, match="cannot be restarted") as info:
        Experiment(TINY, {"policy.scheduler": ["las", "fifo"]}, seeds=2).run(
            tmp_path / "out", executor=pool, retries=2,
            point_function=functools.partial(dying_point, marker=str(tmp_path / "m"), always=True))
    run = info.value.sweep.last_run
    assert run is not None and run.died >= 1 and run.stopped and "cannot be restarted" in run.stopped
    assert run.ok + run.died + run.not_run == 4
    again = Experiment(TINY, {"policy.scheduler": ["las", "fifo"]}, seeds=2).run(tmp_path / "out",
                                                                                  executor="serial")
    assert again.complete and again.last_run is not None and again.last_run.skipped == run.ok


# ---- killed and resumed -------------------------------------------------------------------------------------

KILLED_SCRIPT = """
import os
import sys

from sim.experiments.sweep import Experiment
from sim.experiments.sweep.worker import run_point

started = 0


def dies_on_the_fourth_point(*args, **kwargs):
    global started
    started += 1
    if started == 4:
        os._exit(9)  # killed in the middle of a point: no cleanup, no record
    return run_point(*args, **kwargs)


if __name__ == "__main__":
    config, out = sys.argv[1], sys.argv[2]
    Experiment(config, {"policy.scheduler": ["fifo", "las"]}, seeds=6).run(
        out, executor="serial", tables=("jobs",), point_function=dies_on_the_fourth_point)
"""


def test_sweep_killed_mid_way_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    # The process dies abruptly in its fourth point (deterministic: no race between a kill and a finishing point);
    # the three points before it are whole, the fourth left nothing a reader or a rerun would take for a result.
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({**TINY, "workload": {"training": {**TINY["workload"]["training"],
                                                                        "jobs": 400}}}))
    out = tmp_path / "out"
    args = ["sweep", str(config), "--grid", "policy.scheduler=fifo,las", "--seeds", "6", "--tables", "jobs",
            "-o", str(out)]
    total = 12
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(config), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 9, proc.stderr
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "points").glob("*.json")}
    assert len(before) == 3, sorted(before)

    interrupted = Sweep.open(out)  # readers see only whole points
    assert len(interrupted.summary()) == len(before) == interrupted.counts()["ok"]

    assert main([*args, "--executor", "serial"]) == 0
    resumed = Sweep.open(out)
    assert resumed.complete and resumed.last_run is None
    for name, (mtime, text) in before.items():  # finished before the kill: skipped, not rerun
        path = out / "points" / name
        assert path.stat().st_mtime_ns == mtime and path.read_text() == text
        assert '"attempts": 1' in text
    summary, jobs = resumed.summary(), resumed.table("jobs")
    assert len(summary) == total and summary["point"].is_unique
    assert len(jobs) == total * 400 and not jobs.duplicated(["point", "job_id"]).any()
    assert not list(out.rglob(".*.tmp")) and not (out / ".lock").exists()
    fresh = Experiment(config, {"policy.scheduler": ["fifo", "las"]}, seeds=6).run(
        tmp_path / "fresh", executor="serial", tables=("jobs",))
    assert_same_tables(fresh, resumed)
