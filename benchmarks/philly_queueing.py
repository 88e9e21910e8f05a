"""Queueing on Philly: gpusim's replays next to the queueing that published trace summaries measured.

Not a speed benchmark: a fidelity comparison that takes about a minute. It prints, for the bundled Philly trace,

- the whole trace (82,247 jobs) on the whole Philly cluster (2,490 GPUs), pooled and under Philly's VC quotas,
  under fifo and las;
- the default scenario (the busiest week on a third of the cluster under VC quotas) under every scheduler;

the mean and median queueing delay (submit to first start) of the jobs that ran, and the share that waited at all,
next to the published figures:

- Philly, as the Acme artifact summarizes the raw trace (InternLM/AcmeTrace, NSDI'24; a copy is
  ../shared/traces/reference_stats/acme_cluster_summary.csv, row "Philly"): 112,956 GPU jobs of Aug-Dec 2017 whatever
  their end (60% completed, 9% cancelled, 31% failed), mean queueing 3,760.6 s, median 189 s; mean run time
  18,006 s, median 874 s.
- SenseTime's Helios clusters (SC'21 artifact, S-Lab-System-Group/HeliosArtifact, helios_cluster_summary.csv; the
  same file in reference_stats): mean GPU-job queueing 319 s (Earth) to 1,949 s (Uranus), 862 s over all 1,580,464
  GPU jobs, median 0 s on every cluster.

    python benchmarks/philly_queueing.py
"""

from __future__ import annotations

import time

import pandas as pd

PUBLISHED = pd.DataFrame(
    [("Philly (Acme summary of the raw trace)", 112_956, 3_760.6, 189.0, 18_006.1),
     ("Helios Earth (SenseTime)", 427_148, 319.5, 0.0, 5_130.6),
     ("Helios Saturn (SenseTime)", 698_896, 611.6, 0.0, 5_252.9),
     ("Helios Venus (SenseTime)", 125_303, 1_253.3, 0.0, 13_040.6),
     ("Helios Uranus (SenseTime)", 329_117, 1_949.2, 0.0, 9_163.7)],
    columns=["measured on", "GPU jobs", "mean queueing s", "median queueing s", "mean run s"])
"""Published per-cluster aggregates (module docstring): what real schedulers gave on real clusters."""


def replay(name: str, jobs: object, scale: float | None, quotas: str | None, scheduler: str) -> dict[str, object]:
    from sim import Simulation, preset

    started = time.perf_counter()
    results = Simulation(preset("philly", scale=scale), jobs, scheduler=scheduler, placer="consolidate", seed=7,
                         quotas=quotas).run()
    ran = results.jobs[results.jobs["status"] == "finished"]
    wait = ran["queueing_delay"]
    return {"replay": name, "scheduler": scheduler, "jobs run": len(ran), "mean queueing s": wait.mean(),
            "median queueing s": wait.median(), "waited at all": (wait > 0).mean(),
            "mean run s": ran["duration"].mean(), "wall s": time.perf_counter() - started}


def main() -> None:
    from workloads import load_philly_jobs

    trace = load_philly_jobs()
    week = load_philly_jobs(window={"start": "2017-10-23", "days": 7})
    rows = []
    for scheduler in ("fifo", "las"):
        rows.append(replay("whole trace, whole cluster, pooled", trace, None, None, scheduler))
        rows.append(replay("whole trace, whole cluster, VC quotas", trace, None, "philly-vc", scheduler))
    for scheduler in ("fifo", "sjf", "srtf", "las", "easy-backfill"):
        rows.append(replay("default scenario (busiest week, 1/3 cluster, VC quotas)", week, 0.33, "philly-vc",
                           scheduler))
    pd.set_option("display.width", 200)
    print("Published:")
    print(PUBLISHED.to_string(index=False, formatters={"GPU jobs": "{:,}".format}, float_format=lambda v: f"{v:,.0f}"))
    print("\ngpusim (bundled Pollux cut of Philly):")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, formatters={"waited at all": "{:.1%}".format},
                          float_format=lambda v: f"{v:,.0f}"))


if __name__ == "__main__":
    main()
