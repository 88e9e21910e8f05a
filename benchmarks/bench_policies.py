"""Benchmark: the policy families on Gavel's per-VC Philly traces (15,264 jobs, bundled) on a heterogeneous cluster
of 300 V100, 300 P100 and 300 K80 GPUs (Gavel's ``cluster_specs_heterogeneous.json``; ``preset("gavel", nodes=75)``,
servers of 4).

Prints, for each policy, the wall seconds of the run (trace loading apart), jobs completed, mean JCT, the round-based
policies' rounds and allocation resets, and peak memory (max RSS of a fresh process per case), next to a bare simpy
loop timed in the same run. Target (issue 16): the linear-programming policies finish the whole trace on a 2-core
machine in minutes. How: an allocation is recomputed only when the set of jobs has changed and at least
``min_reset_s`` (Gavel's 1,920 s) have passed since the last one, and each program is sparse (one variable per job
and pool it may use) and solved by HiGHS; between resets a round only reorders jobs by priority.

    python benchmarks/bench_policies.py                                   # every policy (tens of minutes)
    python benchmarks/bench_policies.py --only fifo max-min-fairness      # some
    python benchmarks/bench_policies.py --case fifo                       # one, in this process, as JSON
"""

from __future__ import annotations

import resource
import time

from _harness import bare_simpy, case_or_table

CASES: dict[str, object] = {
    "fifo": "fifo",
    "las": "las",
    "max-min-fairness": "max-min-fairness",
    "max-min-fairness-plain": {"name": "max-min-fairness", "heterogeneity_aware": False},
    "finish-time-fairness": "finish-time-fairness",
    "max-sum-throughput": "max-sum-throughput",
    "min-total-duration": "min-total-duration",
    "allox": "allox",
    "pollux": "pollux",
    "gandiva": "gandiva",
}


def run_case(name: str) -> dict[str, object]:
    from sim import Simulation, preset
    from workloads import load_gavel_jobs

    trace = load_gavel_jobs()
    cluster = preset("gavel", nodes=75)
    start = time.perf_counter()
    results = Simulation(cluster, trace, scheduler=CASES[name], placer="consolidate", seed=0).run()
    wall = time.perf_counter() - start
    summary = results.summary()
    policy = summary.get("policy", {})
    return {"case": name, "wall_seconds": wall, "events": summary["events"], "completed": summary["jobs"]["completed"],
            "jct_mean_h": summary["jobs"]["jct"]["mean"] / 3600, "rounds": policy.get("rounds", 0),
            "resets": policy.get("resets", 0),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    results = case_or_table(__doc__.splitlines()[0], CASES, run_case, __file__)
    if results is None:
        return
    reference = bare_simpy()
    print(f"bare simpy loop: {reference:,.0f} events/s")
    print(f"{'case':<24}{'wall s':>9}{'events':>10}{'vs bare':>9}{'completed':>11}{'JCT h':>9}{'rounds':>9}"
          f"{'resets':>8}{'peak MB':>9}")
    for r in results:
        rate = r["events"] / r["wall_seconds"]
        print(f"{r['case']:<24}{r['wall_seconds']:>9.1f}{r['events']:>10,}{rate / reference:>9.3f}{r['completed']:>11,}"
              f"{r['jct_mean_h']:>9.2f}{r['rounds']:>9,}{r['resets']:>8,}{r['peak_rss_mb']:>9.0f}")


if __name__ == "__main__":
    main()
