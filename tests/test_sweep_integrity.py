"""Sweeps that look finished but are not: result files deleted, truncated or unreadable are reported by name
(with their path) and computed again on the next run; points whose workers died make ``run()`` raise; a
script without a main guard gets one clear error instead of every worker re-running the sweep."""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process
import functools
import importlib.util
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from helpers import tiny_training_config

from sim.cli import main
from sim.errors import GpusimError
from sim.experiments.sweep import Experiment, Sweep, SweepError, make_backend, run_point

ROOT = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = {**tiny_training_config(seed=8, jobs=40), "policy": {"scheduler": "fifo"}}
GRID = {"policy.scheduler": ["fifo", "las"]}
STORAGES = ["csv", pytest.param("parquet", marks=pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None,
                                                                   reason="needs pyarrow"))]


def make_sweep(out: Path, storage: str) -> Sweep:
    return Experiment(TINY, GRID, seeds=2).run(out, executor="serial", tables=("jobs",), storage=storage)


def shard(out: Path, table: str, point: str) -> Path:
    [path] = (out / "tables" / table).glob(f"{point}.*")
    return path


def assert_same(a: Sweep, b: Sweep) -> None:
    pd.testing.assert_frame_equal(a.summary(), b.summary(), check_exact=True)
    pd.testing.assert_frame_equal(a.table("jobs"), b.table("jobs"), check_exact=True)


# ---- damaged results ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
def test_deleted_shards_are_reported_left_out_and_recomputed(storage: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    original = make_sweep(out, storage)
    summary, jobs = shard(out, "summary", "g0001-r001"), shard(out, "jobs", "g0000-r000")
    summary.unlink()
    jobs.unlink()

    reader = Sweep.open(out)
    assert reader.counts() == {"ok": 2, "failed": 0, "died": 0, "damaged": 2, "missing": 0}
    assert not reader.complete
    assert reader.damaged() == {"g0000-r000": [f"{jobs}: missing"], "g0001-r001": [f"{summary}: missing"]}
    assert list(reader.summary()["point"]) == ["g0000-r001", "g0001-r000"]  # a damaged point is left out whole
    assert set(reader.table("jobs")["point"]) == {"g0000-r001", "g0001-r000"}
    errors = reader.errors().set_index("point")
    assert list(errors["status"]) == ["damaged", "damaged"] and str(summary) in errors.loc["g0001-r001", "error"]

    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 2 damaged" in printed and "damaged g0001-r001" in printed and str(summary) in printed
    assert str(jobs) in printed and "18 ok" not in printed
    text = (out / "report" / "report.md").read_text()
    assert "| g0001-r001 | damaged |" in text and str(summary) in text

    again = make_sweep(out, storage)
    assert again.last_run is not None and (again.last_run.ran, again.last_run.skipped) == (2, 2)
    assert again.last_run.damaged == (f"g0000-r000: {jobs}: missing", f"g0001-r001: {summary}: missing")
    assert again.complete and summary.is_file() and jobs.is_file()
    assert_same(original, again)


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_shards_are_reported_not_a_crash_and_recomputed(storage: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    original = Experiment(config, GRID, seeds=2).run(out, executor="serial", tables=("jobs",), storage=storage)
    original_summary, original_jobs = original.summary(), original.table("jobs")
    args = ["sweep", str(config), "--grid", "policy.scheduler=fifo,las", "--seeds", "2", "--tables", "jobs",
            "--executor", "serial", "-o", str(out)]  # the same sweep: resumed, in its storage
    for table, point in (("summary", "g0001-r000"), ("jobs", "g0000-r001")):
        path = shard(out, table, point)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    reader = Sweep.open(out)
    assert reader.counts()["damaged"] == 2 and len(reader.summary()) == 2 and len(reader.table("jobs")) == 2 * 40
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 2 damaged" in printed and "truncated" in printed
    assert str(shard(out, "summary", "g0001-r000")) in printed and str(shard(out, "jobs", "g0000-r001")) in printed

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 0 failed, 0 died, 2 skipped" in printed
    assert f"ran again, its results were damaged: g0001-r000: {shard(out, 'summary', 'g0001-r000')}" in printed
    resumed = Sweep.open(out)
    assert resumed.complete
    pd.testing.assert_frame_equal(resumed.summary(), original_summary, check_exact=True)
    pd.testing.assert_frame_equal(resumed.table("jobs"), original_jobs, check_exact=True)


@pytest.mark.parametrize("storage", STORAGES)
def test_shards_of_records_without_sizes_are_checked_whole(storage: str, tmp_path: Path) -> None:
    """Status records written before shard sizes were kept: a truncated shard is still found, a whole one
    is not flagged."""
    out = tmp_path / "out"
    original = make_sweep(out, storage)
    for record in (out / "points").glob("*.json"):
        data = json.loads(record.read_text())
        data.pop("shards", None)  # as written before sizes were kept
        record.write_text(json.dumps(data))
    path = shard(out, "summary", "g0001-r001")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])

    reader = Sweep.open(out)
    assert reader.counts()["ok"] == 3 and list(reader.damaged()) == ["g0001-r001"]
    assert reader.damaged()["g0001-r001"][0].startswith(f"{path}: truncated")
    again = make_sweep(out, storage)
    assert again.complete and again.last_run is not None and again.last_run.ran == 1
    assert_same(original, again)


@pytest.mark.parametrize("storage", STORAGES)
def test_unreadable_shard_of_the_recorded_size_is_an_error_naming_the_file(storage: str, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    original = make_sweep(out, storage)
    path = shard(out, "summary", "g0000-r001")
    path.write_bytes(b"\x00" * path.stat().st_size)
    with pytest.raises(SweepError) as info:
        Sweep.open(out).summary()
    assert str(path) in str(info.value) and "g0000-r001" in str(info.value) and "delete the file" in str(info.value)
    assert main(["report", str(out)]) == 2
    assert str(path) in capsys.readouterr().err
    path.unlink()  # as the message says
    again = make_sweep(out, storage)
    assert again.complete and again.last_run is not None and again.last_run.ran == 1
    assert_same(original, again)


def test_unreadable_status_record_is_damaged_and_recomputed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    original = make_sweep(out, "csv")
    record = out / "points" / "g0000-r000.json"
    record.write_text('{"point": "g0000-r000", "status": "o')
    reader = Sweep.open(out)
    assert reader.counts()["damaged"] == 1 and str(record) in reader.damaged()["g0000-r000"][0]
    again = make_sweep(out, "csv")
    assert again.complete and again.last_run is not None and again.last_run.ran == 1
    assert_same(original, again)


# ---- dead points ---------------------------------------------------------------------------------------------

def killed_las(config: dict[str, Any], entropy: int, spawn_key: tuple[int, ...], tables: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    """``run_point``, except that a LAS point's worker 'dies' (what a process pool raises when one does)."""
    if config["policy"]["scheduler"] == "las":
        raise concurrent.futures.process.BrokenProcessPool("a worker was killed")
    return run_point(config, entropy, spawn_key, tables)


def test_died_points_make_run_raise_naming_how_many_and_the_first_cause(tmp_path: Path) -> None:
    from sim.experiments.sweep import PointsDiedError

    out = tmp_path / "out"
    with pytest.raises(PointsDiedError) as info:
        Experiment(TINY, GRID, seeds=2).run(out, executor="serial", retries=1, point_function=killed_las)
    message = str(info.value)
    assert isinstance(info.value, (SweepError, GpusimError)) and info.value.died == 2
    assert "2 of 4 points died" in message and "g0001-r000 (policy.scheduler='las', replication 0)" in message
    assert "each of its 2 attempts" in message and "BrokenProcessPool: a worker was killed" in message
    assert str(out) in message
    sweep = info.value.sweep
    assert sweep.counts() == {"ok": 2, "failed": 0, "died": 2, "damaged": 0, "missing": 0}
    assert sweep.last_run is not None and (sweep.last_run.ok, sweep.last_run.died) == (2, 2)
    again = Experiment(TINY, GRID, seeds=2).run(out, executor="serial")  # the dead points run again
    assert again.complete and again.last_run is not None and again.last_run.ran == 2


def test_cli_sweep_lists_the_dead_points_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(Experiment, "run", functools.partialmethod(Experiment.run, point_function=killed_las))
    code = main(["sweep", str(config), "--grid", "policy.scheduler=fifo,las", "--executor", "serial",
                 "--retries", "0", "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "1 ok, 0 failed, 1 died" in captured.out and "died g0001-r000" in captured.out
    assert "gpusim: error" not in captured.err


# ---- the main guard ------------------------------------------------------------------------------------------

SCRIPT = """\
from sim.experiments.sweep import Experiment

{indent}sweep = Experiment({config!r}, {{"policy.scheduler": ["fifo", "las"]}}, seeds=1).run(
{indent}    {out!r}, workers=1)
{indent}print(sweep.counts())
"""


def run_script(tmp_path: Path, guard: bool) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    text = SCRIPT.format(indent="    " if guard else "", config=str(config), out=str(tmp_path / "out"))
    if guard:
        text = text.replace("\n    sweep", '\nif __name__ == "__main__":\n    sweep', 1)
    script = tmp_path / "my_sweep.py"
    script.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_script_without_main_guard_stops_with_one_clear_error(tmp_path: Path) -> None:
    """The README snippet pasted into a plain script: one error naming the script and the guard to add,
    before any worker starts (not a traceback per worker and a normal return with an empty summary)."""
    done = run_script(tmp_path, guard=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("Traceback") == 1 and "SweepError" in done.stderr, done.stderr
    assert f"{tmp_path / 'my_sweep.py'}, line 3" in done.stderr and 'if __name__ == "__main__":' in done.stderr
    assert not (tmp_path / "out").exists() and "forkserver" not in done.stderr


def test_script_with_main_guard_runs_on_worker_processes(tmp_path: Path) -> None:
    done = run_script(tmp_path, guard=True)
    assert done.returncode == 0 and "'ok': 2" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_worker_importing_the_script_again_stops_quietly_with_the_advice(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """What a spawn or forkserver worker does with an unguarded script (imports it as ``__mp_main__``), should
    the check before starting the workers not catch it: stop at once, with the advice, and run nothing."""
    script = tmp_path / "my_sweep.py"
    script.write_text(f"from sim.experiments.sweep import Experiment\n\n"
                      f"Experiment({TINY!r}).run({str(tmp_path / 'out')!r}, executor='serial')\n")
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(script), run_name="__mp_main__")
    assert info.value.code == 1
    assert 'if __name__ == "__main__":' in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("source", "line", "expected"), [
    ("run()\n", 1, False),
    ('if __name__ == "__main__":\n    run()\n', 2, True),
    ("if __name__ == '__main__':\n    with open('x'):\n        run()\n", 3, True),
    ("if multiprocessing.parent_process() is None:\n    run()\n", 2, True),
    ("if True:\n    run()\n", 2, False),
    ("if len(sys.argv) > 1:\n    run()\n", 2, False),
    ("sweep = run(\n    1,\n    2)\n", 2, False),
    ("for seed in (1, 2):\n    run(seed)\n", 2, False),
    ("try:\n    run()\nexcept KeyError:\n    pass\n", 2, False),
    ("def main():\n    run()\n\n\nmain()\n", 5, False),
    ("def main():\n    run()\n\n\nif __name__ == '__main__':\n    main()\n", 6, True),
])
def test_main_guard_is_recognised(source: str, line: int, expected: bool) -> None:
    import ast

    from sim.experiments.sweep.guard import guarded

    assert guarded(ast.parse(source), line) is expected


def test_backends_know_whether_their_workers_import_the_main_script() -> None:
    assert make_backend("processes").reimports_main and not make_backend("serial").reimports_main
    with cf.ThreadPoolExecutor(1) as threads:
        assert not make_backend(threads).reimports_main
    for method in multiprocessing.get_all_start_methods():
        with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
            assert make_backend(pool).reimports_main is (method != "fork")
