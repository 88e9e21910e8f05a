"""Benchmark: replay the whole Philly trace (82,247 jobs) on the Philly cluster.

Prints wall seconds, engine events/s, jobs/s and peak memory (max RSS of a fresh process per case)
for each case (a scheduler with the consolidate placer), next to a bare simpy loop timed in the same run,
so the figures can be read as a ratio that survives a noisy machine. Targets on a 2-core machine (issue 14, printed
with a verdict under the table): fifo <= 2.5 s, las <= 3 s, trace load <= 0.3 s (issue 2's: fifo <= 10 s, las <= 30 s,
peak memory <= 1 GB).

The ``*-0.2`` cases run the preemptive schedulers on the cluster at scale 0.2 (heavy overload: long queues,
every pass looks for victims), on the whole trace and on its first 10,000 jobs. Target: srtf and las at
scale 0.2 <= 2 s each (the issue does not say on how many jobs: both are given a verdict).

The ``*-vc`` cases run fifo and las under hard quotas for Philly's virtual clusters (``quotas="philly-vc"``, each
VC scheduled by its own scheduler instance). Target (issue 15): within 1.5x of the pooled case's wall time.

    python benchmarks/bench_philly.py                          # all cases
    python benchmarks/bench_philly.py --only srtf-0.2 las-0.2  # some
    python benchmarks/bench_philly.py --case fifo              # one, in this process, as JSON
"""

from __future__ import annotations

import resource
import time

from _harness import bare_simpy, case_or_table

TARGET_VC_RATIO = 1.5  # issue 15: a quota case's wall time over its pooled case's
TARGET_WALL_S = {"fifo": 2.5, "las": 3.0, "srtf-0.2": 2.0, "las-0.2": 2.0, "srtf-0.2-10k": 2.0,
                 "las-0.2-10k": 2.0}  # issue 14, seconds on a 2-core machine
TARGET_LOAD_S = 0.3  # issue 14: loading the Philly trace

# name: (scheduler, placer, cluster scale or None for the full cluster, first jobs or None for all)
CASES: dict[str, tuple[str, str, float | None, int | None]] = {
    "fifo": ("fifo", "consolidate", None, None),
    "las": ("las", "consolidate", None, None),
    "fifo-vc": ("fifo", "consolidate", None, None),
    "las-vc": ("las", "consolidate", None, None),
    "srtf-0.2-10k": ("srtf", "consolidate", 0.2, 10_000),
    "las-0.2-10k": ("las", "consolidate", 0.2, 10_000),
    "srtf-0.2": ("srtf", "consolidate", 0.2, None),
    "las-0.2": ("las", "consolidate", 0.2, None),
}


def run_case(name: str) -> dict[str, float]:
    from sim import Simulation, preset
    from workloads import load_philly_jobs

    scheduler, placer, scale, first = CASES[name]
    start = time.perf_counter()
    trace = load_philly_jobs()
    jobs = trace if first is None else trace.jobs[:first]
    cluster = preset("philly", scale=scale)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    quotas = "philly-vc" if name.endswith("-vc") else None
    results = Simulation(cluster, jobs, scheduler=scheduler, placer=placer, seed=0, quotas=quotas).run()
    wall = time.perf_counter() - start
    summary = results.summary()
    return {
        "case": name,
        "load_seconds": load_seconds,
        "wall_seconds": wall,
        "events": summary["events"],
        "jobs": summary["jobs"]["count"],
        "completed": summary["jobs"]["completed"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    results = case_or_table(__doc__.splitlines()[0], CASES, run_case, __file__)
    if results is None:
        return
    reference = bare_simpy()
    print(f"bare simpy loop: {reference:,.0f} events/s")
    print(f"{'case':<18}{'trace load s':>13}{'wall s':>9}{'events':>10}{'events/s':>11}{'vs bare':>9}"
          f"{'jobs/s':>10}{'peak MB':>9}")
    wall, load = {}, {}
    for r in results:
        rate = r["events"] / r["wall_seconds"]
        wall[r["case"]], load[r["case"]] = r["wall_seconds"], r["load_seconds"]
        print(f"{r['case']:<18}{r['load_seconds']:>13.2f}{r['wall_seconds']:>9.2f}{r['events']:>10,}{rate:>11,.0f}"
              f"{rate / reference:>9.2f}{r['jobs'] / r['wall_seconds']:>10,.0f}{r['peak_rss_mb']:>9.0f}")
    for name in wall:  # the quota cases against their pooled case, when both ran
        pooled = name.removesuffix("-vc")
        if name.endswith("-vc") and pooled in wall:
            ratio = wall[name] / wall[pooled]
            print(f"{name} over {pooled}: {ratio:.2f}x the wall time (target {TARGET_VC_RATIO}x: "
                  f"{'ok' if ratio <= TARGET_VC_RATIO else 'MISS'}; one run each: noisy, compare several)")
    print("targets (issue 14, 2-core machine; one run each):")
    for name, target in TARGET_WALL_S.items():
        if name in wall:
            print(f"  {name:<14} wall {wall[name]:6.2f} s  <= {target:g} s  {'ok' if wall[name] <= target else 'MISS'}")
    if load:
        slowest = max(load.values())
        print(f"  {'trace load':<14} load {slowest:6.2f} s  <= {TARGET_LOAD_S:g} s  "
              f"{'ok' if slowest <= TARGET_LOAD_S else 'MISS'}  (the slowest case's)")


if __name__ == "__main__":
    main()
