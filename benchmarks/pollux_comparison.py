"""gpusim next to Pollux's own simulator on Pollux's eight workloads (issue 16, items 2 and 5). A fidelity
comparison, not a speed benchmark; a few minutes.

The workloads are the artifact's (``load_pollux_workload(n)``, 160 jobs each over 8 busy hours of Philly); the
cluster its default, 16 nodes of 4 T4 GPUs; a job that changes allocation restarts in 30 s (the artifact's
``rescale_time``, charged here as restore time); Pollux re-optimizes every 60 s. ``ARTIFACT`` holds the average JCTs
the artifact recorded for each workload (petuum/adaptdl, branch osdi21-artifact, ``simulator/results-jobload/
{pollux,tiresias,optimus}-1.0/summary.json``, key ``avgs``): Pollux, Tiresias+TunedJobs (2D-LAS on the recorded,
tuned gangs and batches) and Optimus+Oracle. gpusim runs its ``pollux`` on the elastic jobs (``workloads.elastic``'s
goodput curves), ``las`` on the same jobs at their recorded gangs (a rigid scheduler runs an elastic job on
``gpus``), and ``fifo`` for scale.

Where gpusim differs by construction (module docstrings of ``policies.schedulers.pollux`` and
``workloads.elastic``): a greedy allocation instead of Pollux's genetic algorithm, each job's statistical efficiency
fixed at its measured average instead of re-fitted as it trains, the throughput model fitted once offline, and
placement by gpusim's ``consolidate`` placer.

    python benchmarks/pollux_comparison.py            # all 8 workloads
    python benchmarks/pollux_comparison.py --only 6   # the testbed workload
"""

from __future__ import annotations

import argparse
import time

# avgs of summary.json per workload (seconds): Pollux, Tiresias+TunedJobs, Optimus+Oracle
ARTIFACT = {
    1: (2088.8, 2474.0, 4087.0), 2: (3322.9, 5145.0, 6914.0), 3: (2188.5, 3876.0, 3944.0),
    4: (2721.0, 3280.0, 5968.0), 5: (2673.7, 3501.0, 5656.0), 6: (2446.1, 3470.0, 5302.0),
    7: (3616.1, 5480.0, 7291.0), 8: (2951.9, 5080.0, 6294.0),
}
POLICIES = {"pollux": "pollux", "las": "las", "fifo": "fifo"}


def run(workload: int) -> dict[str, float]:
    from sim import Cluster, PoolSpec, PreemptionCost, Simulation
    from workloads import load_pollux_workload

    trace = load_pollux_workload(workload)
    cluster = Cluster([PoolSpec("t4", nodes=16, devices_per_node=4)])
    out = {}
    for label, scheduler in POLICIES.items():
        results = Simulation(cluster, trace, scheduler=scheduler, placer="consolidate",
                             preemption=PreemptionCost(checkpoint_s=0.0, restore_s=30.0)).run()
        out[label] = float(results.jobs["jct"].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="+", default=sorted(ARTIFACT))
    args = parser.parse_args()
    print(f"{'workload':>8} | {'gpusim pollux':>13} {'artifact':>9} | {'gpusim las':>10} {'artifact tiresias':>17} | "
          f"{'gpusim fifo':>11} {'artifact optimus':>16} | {'pollux/las gpusim':>17} {'artifact':>8} | {'s':>5}")
    ratios = []
    for n in args.only:
        started = time.perf_counter()
        ours = run(n)
        pollux, tiresias, optimus = ARTIFACT[n]
        ratios.append((ours["pollux"] / ours["las"], pollux / tiresias))
        print(f"{n:>8} | {ours['pollux']:>13,.0f} {pollux:>9,.0f} | {ours['las']:>10,.0f} {tiresias:>17,.0f} | "
              f"{ours['fifo']:>11,.0f} {optimus:>16,.0f} | {ratios[-1][0]:>17.2f} {ratios[-1][1]:>8.2f} | "
              f"{time.perf_counter() - started:>5.0f}")
    ours_mean = sum(r[0] for r in ratios) / len(ratios)
    theirs_mean = sum(r[1] for r in ratios) / len(ratios)
    print(f"mean ratio of Pollux's average JCT to Tiresias' (LAS): gpusim {ours_mean:.2f}, artifact {theirs_mean:.2f}")


if __name__ == "__main__":
    main()
