"""Fingerprints of the benchmark scenarios' event logs and tables, to show a refactor changes no answer.

Runs each scenario with the event log on and hashes every table a run produces (events, jobs, timeline,
requests, replicas, replica timeline and samples, links, accounting, services), leaving out only
wall-clock figures. Write the fingerprints on the old code, then compare on the new:

    git worktree add /tmp/old <old-commit>
    (cd /tmp/old && python benchmarks/event_logs.py --write /tmp/old.json)
    python benchmarks/event_logs.py --compare /tmp/old.json          # exit 1 and name each difference

``--tables DIR`` also writes each table as CSV, to diff a difference row by row. ``--only NAME`` runs
the named scenarios; ``--quick`` leaves out the two that take minutes (Philly las and srtf at scale 0.2). The
``scale-*`` scenarios run ``bench_scale``'s workload (20,000 jobs) on a large cluster; the ``failures-*`` ones,
exponential device or node failures with spot reclaims and checkpoints (their ``failures`` table hashed too); the
``azure*`` ones, ``bench_serving``'s Azure replays (colocated, prefix caching, disaggregated).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
WALL_CLOCK = {"wall_seconds", "recompute_ms"}
"""Figures that measure the machine, not the run: left out of the fingerprints."""
SLOW = {"philly-las-scale-0.2", "philly-srtf-scale-0.2"}
RENAMED = {"requests": {"kv_evictions": "preemptions"},
           "replica_samples": {"queued_requests": "queued", "running_requests": "running"}}
"""Columns renamed since fingerprints were first written (issue 14, item 8), hashed under their old names so
that fingerprints written before a rename still compare."""
ADDED = {"jobs": {"gpu_fraction": 1.0}}
"""Columns added since, with the value every row of a run without the feature holds: left out of the hash when
every row holds it (a run with no fractional job), so that fingerprints written before still compare."""


def _philly(scheduler: str, placer: str = "consolidate", scale: float | None = None,
            jobs: int | None = None, quotas: Any = None) -> Callable[[], Any]:
    def run() -> Any:
        from sim import Simulation, preset
        from workloads import load_philly_jobs

        trace = load_philly_jobs()
        specs = trace.jobs[:jobs] if jobs is not None else trace
        cluster = preset("philly", scale=scale)
        return Simulation(cluster, specs, scheduler=scheduler, placer=placer, seed=0, record_events=True,
                          quotas=quotas).run()
    return run


def _config(path: str) -> Callable[[], Any]:
    def run() -> Any:
        from sim import load_config, run_config

        config = load_config(ROOT / path)
        config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, record_events=True))
        return run_config(config)
    return run


def _default() -> Any:
    from sim import load_config, run_config

    config = load_config(None, overrides=["sim.record_events=true"])
    return run_config(config)


def _scale(nodes: int, placer: str, jobs: int = 20_000) -> Callable[[], Any]:
    """``bench_scale``'s workload (synthetic fifo at offered load 0.8 on 8-GPU H100 nodes), ``jobs`` jobs."""
    def run() -> Any:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_scale import scale_workload

        from sim import Simulation, preset

        return Simulation(preset("dgx-h100", nodes=nodes), scale_workload(jobs, nodes), scheduler="fifo",
                          placer=placer, seed=0, record_events=True).run()
    return run


def _failures(node_correlated: bool) -> Callable[[], Any]:
    """Exponential device (or node) failures, spot reclaims and Young/Daly checkpoints under 400 synthetic jobs."""
    def run() -> Any:
        from sim import CheckpointPolicy, FailureModel, Simulation, SpotPool, failures, preset
        from workloads.jobs import TrainingJob

        specs = [TrainingJob(job_id=i, arrival=i * 90.0, gpus=(1, 2, 4, 8, 16)[i % 5], duration=1800.0 + 37.0 * i)
                 for i in range(400)]
        model = FailureModel(mtbf_hours={"h100": 400.0}, mttr_hours=0.5, node_correlated=node_correlated,
                             restart_s=60.0, spot=(SpotPool("h100", mean_hours_between=4.0, notice_s=120.0),))
        return Simulation(preset("dgx-h100", nodes=8), specs, scheduler="fifo", seed=0, record_events=True,
                          subsystems=[failures(model, CheckpointPolicy(interval="young-daly", cost=30.0))]).run()
    return run


def _azure(case: str) -> Callable[[], Any]:
    """``bench_serving``'s Azure replay ``case`` (colocated, prefix caching or disaggregated) with its router."""
    def run() -> Any:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_serving import AZURE_ROUTERS, azure_service

        from sim import Simulation, preset

        return Simulation(preset("dgx-h100", nodes=1), [], services=[azure_service(case)],
                          router=AZURE_ROUTERS[case], seed=0, record_events=True).run()
    return run


SCENARIOS: dict[str, Callable[[], Any]] = {
    "default": _default,
    "philly-fifo": _philly("fifo"),
    "philly-las": _philly("las"),
    "philly-sjf-first-fit": _philly("sjf", "first-fit"),
    "philly-backfill-10k-scale-0.2": _philly("easy-backfill", scale=0.2, jobs=10_000),
    "philly-srtf-10k-scale-0.2": _philly("srtf", scale=0.2, jobs=10_000),
    "philly-las-10k-scale-0.2": _philly("las", scale=0.2, jobs=10_000),
    "philly-las-scale-0.2": _philly("las", scale=0.2),
    "philly-fifo-vc": _philly("fifo", quotas="philly-vc"),
    "philly-las-vc": _philly("las", quotas="philly-vc"),
    "philly-las-vc-scale-0.33": _philly("las", scale=0.33, quotas="philly-vc"),
    "philly-backfill-vc-scale-0.33": _philly("easy-backfill", scale=0.33, jobs=20_000, quotas="philly-vc"),
    "philly-sjf-borrow-scale-0.33": _philly("sjf", scale=0.33, jobs=20_000,
                                            quotas={"nominal": "philly-vc", "mode": "borrow"}),
    "philly-srtf-reclaim-scale-0.33": _philly("srtf", scale=0.33, jobs=20_000,
                                              quotas={"nominal": "philly-vc", "mode": "reclaim"}),
    "philly-srtf-scale-0.2": _philly("srtf", scale=0.2),
    "scale-fifo-first-fit-2048-nodes": _scale(2048, "first-fit"),
    "scale-fifo-consolidate-512-nodes": _scale(512, "consolidate"),
    "failures-devices": _failures(False),
    "failures-nodes": _failures(True),
    **{case: _azure(case) for case in ("azure", "azure-prefix", "azure-disagg")},
    **{f"example-{path.stem}": _config(f"examples/{path.name}") for path in sorted((ROOT / "examples").glob("*.yaml"))
       if path.stem != "plan"},
}


def _tables(results: Any) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("events", "jobs", "timeline", "requests", "replicas", "replica_timeline", "replica_samples", "links",
                 "accounting", "services", "failures"):
        table = getattr(results, name, None)
        if table is not None:
            added = [c for c, default in ADDED.get(name, {}).items() if c in table and (table[c] == default).all()]
            out[name] = table.drop(columns=[c for c in table.columns if c in WALL_CLOCK] + added).rename(
                columns=RENAMED.get(name, {}))
    return out


def _without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    return value


def _digest(table: pd.DataFrame) -> str:
    text = table.to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(name: str, tables_dir: Path | None = None) -> dict[str, Any]:
    """Run one scenario; the hash and row count of each table, and the run's summary without wall clock."""
    start = time.perf_counter()
    results = SCENARIOS[name]()
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {}
    for table_name, table in _tables(results).items():
        out[table_name] = {"rows": len(table), "sha256": _digest(table)}
        if tables_dir is not None:
            folder = tables_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            table.to_csv(folder / f"{table_name}.csv", index=False, float_format="%.17g")
    summary = _without_wall_clock(results.summary())
    out["summary"] = {"sha256": hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()}
    print(f"{name:<34}{seconds:>8.1f} s  {out.get('events', {}).get('rows', 0):>9,} events", file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, help="write the fingerprints to this JSON file")
    action.add_argument("--compare", type=Path, help="compare with fingerprints written earlier")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run these scenarios only")
    parser.add_argument("--quick", action="store_true", help="leave out the scenarios that take minutes")
    parser.add_argument("--tables", type=Path, help="also write every table as CSV under this folder")
    args = parser.parse_args()
    names = args.only or [n for n in SCENARIOS if not (args.quick and n in SLOW)]
    if args.compare:
        before = json.loads(args.compare.read_text())
        names = [n for n in names if n in before]
    now = {name: fingerprint(name, args.tables) for name in names}
    if args.write:
        args.write.write_text(json.dumps(now, indent=1, sort_keys=True))
        print(f"wrote {len(now)} scenarios to {args.write}")
        return 0
    differences = [f"{name}: {table} {before[name].get(table)} -> {now[name].get(table)}"
                   for name in names for table in sorted(set(before[name]) | set(now[name]))
                   if before[name].get(table) != now[name].get(table)]
    for line in differences:
        print(line)
    print(f"{len(names)} scenarios compared: {'identical' if not differences else f'{len(differences)} differences'}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
