"""Benchmark: engine cost per job as the cluster grows, synthetic fifo at offered load 0.8.

Each case runs in a fresh process: ``jobs`` synthetic training jobs (exponential inter-arrivals, log-normal
durations with mean 1 h, gangs of 1-8 GPUs) on ``nodes`` 8-GPU H100 nodes, the arrival rate set so that the
offered load (GPU-seconds asked per second over GPUs) is 0.8. Prints engine seconds (``Simulation`` built and
run, tables included), microseconds of engine per job, total seconds with the workload generation, peak memory,
next to a bare simpy loop timed in the same run. Issue 14's target: a cost per job that does not grow with the
cluster; 1M jobs on 12,500 nodes (100,000 GPUs) in at most 40 s of engine and 1.5 GB.

    python benchmarks/bench_scale.py                       # 100k jobs on 128 .. 12,500 nodes
    python benchmarks/bench_scale.py --jobs 1000000 --nodes 12500
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

LOAD = 0.8
TARGET_JOBS, TARGET_NODES, TARGET_ENGINE_S, TARGET_MB = 1_000_000, 12_500, 40.0, 1536.0  # issue 14
MEAN_DURATION = 3600.0
GANGS = ((1, 2, 4, 8), (0.4, 0.25, 0.2, 0.15))


def scale_workload(jobs: int, nodes: int) -> Any:
    """The benchmark's ``jobs`` synthetic jobs for ``nodes`` 8-GPU nodes (offered load ``LOAD``)."""
    import numpy as np

    from sim.random import RandomStreams
    from workloads import Choice, Exponential, LogNormal, generate_training_jobs

    gpus = nodes * 8
    mean_gang = float(np.dot(*GANGS))
    rate = LOAD * gpus / (MEAN_DURATION * mean_gang)  # jobs per second
    sigma = 1.0
    duration = LogNormal(median=float(MEAN_DURATION * np.exp(-sigma**2 / 2)), sigma=sigma)  # mean MEAN_DURATION
    return generate_training_jobs(jobs, Exponential(mean=1 / rate), duration, Choice(*GANGS), RandomStreams(1))


def run_case(jobs: int, nodes: int, scheduler: str, placer: str) -> dict[str, float]:
    from sim import Simulation, preset

    start = time.perf_counter()
    trace = scale_workload(jobs, nodes)
    generated = time.perf_counter() - start
    start = time.perf_counter()
    results = Simulation(preset("dgx-h100", nodes=nodes), trace, scheduler=scheduler, placer=placer, seed=0).run()
    engine = time.perf_counter() - start
    return {"jobs": jobs, "nodes": nodes, "gpus": nodes * 8, "generate_seconds": generated, "engine_seconds": engine,
            "us_per_job": engine / jobs * 1e6, "events": results.run["events"],
            "utilization": float(results.summary()["utilization"]["mean"]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[128, 512, 2048, 12_500])
    parser.add_argument("--scheduler", default="fifo")
    parser.add_argument("--placer", default="first-fit")
    parser.add_argument("--case", action="store_true", help="run one case in this process and print JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.jobs, args.nodes[0], args.scheduler, args.placer)))
        return
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _harness import bare_simpy

    reference = bare_simpy()
    print(f"bare simpy loop: {reference:,.0f} events/s ({1e6 / reference:.2f} us per event)")
    print(f"{args.scheduler}+{args.placer}, offered load {LOAD}")
    print(f"{'jobs':>9}{'GPUs':>9}{'engine s':>10}{'us/job':>8}{'events':>10}{'us/event':>9}{'vs bare':>8}"
          f"{'util':>6}{'total s':>9}{'peak MB':>9}")
    for nodes in args.nodes:
        out = subprocess.run([sys.executable, __file__, "--case", "--jobs", str(args.jobs), "--nodes", str(nodes),
                              "--scheduler", args.scheduler, "--placer", args.placer],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        per_event = r["engine_seconds"] / r["events"] * 1e6
        print(f"{r['jobs']:>9,}{r['gpus']:>9,}{r['engine_seconds']:>10.2f}{r['us_per_job']:>8.1f}{r['events']:>10,}"
              f"{per_event:>9.2f}{per_event * reference / 1e6:>8.1f}{r['utilization']:>6.2f}"
              f"{r['engine_seconds'] + r['generate_seconds']:>9.2f}{r['peak_rss_mb']:>9.0f}")
        if (r["jobs"], nodes) == (TARGET_JOBS, TARGET_NODES):
            print(f"  target (issue 14): engine {r['engine_seconds']:.2f} s <= {TARGET_ENGINE_S:g} s "
                  f"{'ok' if r['engine_seconds'] <= TARGET_ENGINE_S else 'MISS'}; peak {r['peak_rss_mb']:.0f} MB "
                  f"<= {TARGET_MB:g} MB {'ok' if r['peak_rss_mb'] <= TARGET_MB else 'MISS'}")


if __name__ == "__main__":
    main()
