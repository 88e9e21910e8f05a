"""Benchmark: one 40-point sweep run serially, on a process pool and on a Dask LocalCluster.

Each point is a synthetic training workload of about 2 s on this 2-core machine (LAS scheduling, 1,050 jobs on
8 DGX H100 nodes); the grid is 2 placers x 2 loads of similar cost, x 10 seeds. One point is first timed
in-process as the reference, then the same sweep runs into three fresh directories (serial; processes with
2 workers; a Dask LocalCluster on 127.0.0.1 with 2 single-threaded worker processes, no dashboard). Prints
the wall time of each, the speed-up over serial, the per-point time spread, whether the three summary tables
are identical, and the targets of the issue: processes >= 1.8x faster than serial; Dask within 15% of
processes (checked with and without the cluster's start-up, which is timed apart). Run it on an otherwise idle
machine: other load shows as per-point times (and their sum) growing from serial to the parallel runs.

    python benchmarks/bench_sweep.py            # 40 points, about 3 minutes
    python benchmarks/bench_sweep.py --quick    # 8 points, a smoke run (too few points for the targets)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from sim.experiments.config import config_to_dict
from sim.experiments.sweep import Experiment, run_point

WORKERS = 2
BASE = {
    "seed": 1,
    "cluster": {"preset": "dgx-h100", "nodes": 8},
    "workload": {"training": {
        "trace": None, "jobs": 1050, "interarrival": {"dist": "exponential", "mean": 30},
        "duration": {"dist": "lognormal", "median": 1144, "sigma": 2.0},
        "gpus": {"dist": "choice", "values": [1, 2, 4, 8], "weights": [0.7, 0.1, 0.15, 0.05]}}},
    "policy": {"scheduler": "las", "placer": "consolidate"},
    "sim": {"progress": False},
}
GRID = {"policy.placer": ["consolidate", "first-fit"], "workload.training.interarrival.mean": [25, 30]}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="replications per grid cell (4 cells; default 10)")
    parser.add_argument("--quick", action="store_true", help="2 seeds: 8 points")
    args = parser.parse_args()
    experiment = Experiment(BASE, GRID, seeds=2 if args.quick else args.seeds)
    points = len(experiment.points)

    times = []
    for _ in range(2):  # the first call also pays one-off imports and caches, as each worker process will
        start = time.perf_counter()
        run_point(config_to_dict(experiment.config(0)), experiment.root_seed, (0,))
        times.append(time.perf_counter() - start)
    print(f"one point: {times[1]:.2f} s (in-process, serial; first call {times[0]:.2f} s); {points} points to run")

    import distributed

    walls: dict[str, float] = {}
    summaries: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        def run(name: str, executor: object, workers: int | None = None) -> None:
            sweep = experiment.run(Path(tmp) / name, executor=executor, workers=workers, progress=False)
            report = sweep.last_run
            assert report is not None
            seconds = sweep.points()["wall_seconds"]
            walls[name], summaries[name] = report.seconds, sweep.summary()
            print(f"{name:<10} {report.ok} ok, {report.failed} failed; wall {report.seconds:.1f} s; per point "
                  f"min {seconds.min():.2f} / median {seconds.median():.2f} / max {seconds.max():.2f} s, "
                  f"sum {seconds.sum():.1f} s")

        run("serial", "serial")
        run("processes", "processes", WORKERS)
        start = time.perf_counter()
        with distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(WORKERS)
            startup = time.perf_counter() - start
            print(f"dask LocalCluster start-up: {startup:.1f} s (not in the dask wall below)")
            run("dask", client)

    for name in ("processes", "dask"):
        pd.testing.assert_frame_equal(summaries["serial"], summaries[name])
    print(f"summary tables identical (serial = processes = dask): {summaries['serial'].shape} each")

    serial = walls["serial"]
    rows = [("serial", serial), (f"processes ({WORKERS} workers)", walls["processes"]),
            (f"dask ({WORKERS} workers)", walls["dask"]), ("dask + cluster start-up", walls["dask"] + startup)]
    print(f"\n{'executor':<26}{'wall s':>8}{'vs serial':>11}")
    for name, wall in rows:
        print(f"{name:<26}{wall:>8.1f}{serial / wall:>10.2f}x")

    speedup = serial / walls["processes"]
    print(f"\ntarget processes >= 1.80x serial:             {speedup:.2f}x  {verdict(speedup >= 1.8)}")
    for label, wall in (("", walls["dask"]), (" + start-up", walls["dask"] + startup)):
        off = wall / walls["processes"] - 1
        print(f"target dask{label:<11} within 15% of processes: {off:+6.1%}  {verdict(abs(off) <= 0.15)}")


if __name__ == "__main__":
    main()
