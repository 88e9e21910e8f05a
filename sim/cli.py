"""The ``gpusim`` command: run a scenario, compare policies, list policies and config keys."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim import registry
from sim.errors import ConfigError, GpusimError
from sim.experiments.config import Config, config_to_dict, describe_config, load_config
from sim.experiments.scenario import run_config
from sim.output.results import Results, summary_value
from workloads.errors import WorkloadError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(warnings.showwarning)
            _check_output(args)
            return int(args.func(args) or 0)
    except (GpusimError, WorkloadError) as exc:
        print(f"gpusim: error: {exc}", file=sys.stderr)
        return 2


def _show_warning(show: Any) -> Any:
    """``warnings.showwarning`` that prints a plug-in warning as one ``gpusim: warning:`` line."""

    def showwarning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, registry.PluginWarning):
            print(f"gpusim: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


def _check_output(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written (a file where a directory goes, or a directory where
    ``calibrate`` writes its YAML file) before anything runs."""
    given = getattr(args, "output", None)
    text = given or getattr(args, "output_default", None)
    if not text:
        return
    option = f"--output {text!r}" if given else f"the default output directory {text!r} (-o/--output)"
    path = directory = Path(text)
    if args.func is _calibrate:
        if path.is_dir():
            raise ConfigError(f"{option} is a directory; give the YAML file to write, e.g. -o {path / 'step.yaml'}")
        directory = path.parent
    for part in (directory, *directory.parents):
        if part.exists() and not part.is_dir():
            where = "is a file" if part == path else f"is inside {str(part)!r}, which is a file"
            raise ConfigError(f"{option} {where}, not a directory"
                              + ("" if directory != path else "; give a directory for the results"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpusim", description="Discrete-event simulator of GPU/TPU clusters.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", help="YAML config (default: the embedded default scenario)")
        p.add_argument("-o", "--output", help="directory for the results")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set policy.scheduler=las (repeatable)")

    run = sub.add_parser("run", help="run one scenario and write summary.json, jobs.csv, timeline.csv, config.yaml")
    common(run)
    run.add_argument("--trace-events", metavar="PATH", default=None,
                     help="also write the device timeline as a Chrome trace event file (open it in Perfetto or "
                          "chrome://tracing; .gz compresses); keeps the event log (sim.record_events)")
    run.set_defaults(func=_run, output_default="gpusim-out/run")

    compare = sub.add_parser("compare", help="one workload under several policies, side by side")
    common(compare)
    compare.add_argument("--schedulers", default="", metavar="S1,S2",
                         help="comma-separated scheduler names (default: the config's); with parameters, a YAML "
                              "list as sweep --grid takes: --schedulers '[fifo, {name: las, thresholds: [3600]}]'")
    compare.add_argument("--placers", default="", metavar="P1,P2",
                         help="comma-separated placer names, or a YAML list (default: the config's)")
    compare.set_defaults(func=_compare, output_default="gpusim-out/compare")

    policies = sub.add_parser("policies", help="list the registered policies")
    policies.set_defaults(func=_policies)

    config = sub.add_parser("config", help="list every config key with its default and meaning")
    config.set_defaults(func=_config)

    columns = sub.add_parser("columns", help="list the columns of the output tables with their units and meaning")
    columns.add_argument("tables", nargs="*", metavar="TABLE", help="only these tables (default: all)")
    columns.add_argument("--markdown", action="store_true", help="print docs/TABLES.md (the same, as Markdown)")
    columns.set_defaults(func=_columns)

    planner = sub.add_parser("plan", help="fewest replicas per device type and model variant that meet the SLO")
    common(planner)
    planner.set_defaults(func=_plan, output_default="gpusim-out/plan")

    sweep = sub.add_parser("sweep", help="a grid of configs x seeds on processes or Dask; a stopped sweep resumes")
    common(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="swept config key and its values as YAML scalars, e.g. --grid policy.scheduler=fifo,las; "
                            "values holding commas: a YAML list, --grid 'policy.scheduler=[{name: las, thresholds: "
                            "[3600]}, fifo]' (repeatable: the grid is every combination)")
    sweep.add_argument("--seeds", type=int, default=1, metavar="N", help="replications of every grid point (default 1)")
    sweep.add_argument("--root-seed", type=int, default=None, metavar="N",
                       help="replication i runs with SeedSequence(N, spawn_key=(i,)) (default: the config's seed)")
    sweep.add_argument("--executor", choices=("processes", "serial", "dask"), default=None,
                       help="where the points run (default: processes, one per core; dask when --scheduler is given)")
    sweep.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask scheduler address, e.g. tcp://HOST:8786 (default: a local Dask cluster)")
    sweep.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: cores)")
    sweep.add_argument("--tables", default="", metavar="NAMES",
                       help="per-run tables to keep for every point, e.g. jobs,requests (the summary is always kept)")
    sweep.add_argument("--retries", type=int, default=2, metavar="N",
                       help="runs again of a point whose worker died (default 2)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="delete the results of a different sweep in the output directory and start over")
    sweep.set_defaults(func=_sweep, output_default="gpusim-out/sweep")

    report = sub.add_parser("report", help="plots and report.md of a sweep's results directory")
    report.add_argument("directory", help="the sweep's results directory (gpusim sweep -o DIR)")
    report.add_argument("-o", "--output", help="directory for the report (default: DIR/report)")
    report.set_defaults(func=_report)

    calibrate = sub.add_parser("calibrate", help="fit the serving step-time factors to a measured profile of steps")
    calibrate.add_argument("profile", help="CSV of measured steps: phase,batch_size,tokens,context,ms (see "
                                           "sim.serving.calibrate)")
    calibrate.add_argument("--model", required=True, help="the profiled model, e.g. llama-3.1-8b")
    calibrate.add_argument("--device", required=True, help="the profiled device type, e.g. h100")
    calibrate.add_argument("--devices", type=int, default=1, metavar="K",
                           help="devices per replica (tensor parallel, default 1)")
    calibrate.add_argument("--fit", default="", metavar="F1,F2",
                           help="comma-separated factors to fit (default: all); the others keep the device's defaults")
    calibrate.add_argument("-o", "--output", metavar="OUT.yaml",
                           help="write the step_model: YAML fragment here (default: print it)")
    calibrate.set_defaults(func=_calibrate)

    from sim.policy_checks import add_command

    add_command(sub)  # gpusim check-policy POLICY [--kind KIND] [--examples N] [--seed S] [--example K]
    return parser


def _columns(args: argparse.Namespace) -> int:
    from sim.errors import UnknownNameError
    from sim.output.schema import CONDITIONS, TABLES

    for name in args.tables:
        if name not in TABLES:
            raise UnknownNameError("table", name, TABLES)
    chosen = [TABLES[name] for name in args.tables] if args.tables else list(TABLES.values())
    if args.markdown:
        from sim.output.schema import markdown

        print(markdown(chosen), end="")
        return 0
    for table in chosen:
        print(f"{table.name}: {table.row}")
        width = max(len(c.name) for c in table.columns)
        for c in table.columns:
            when = f" [{CONDITIONS[c.when]}]" if c.when else ""
            print(f"  {c.name:<{width}}  {c.unit or '-':<9} {c.meaning}{when}")
        print()
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from sim.serving.calibrate import calibrate
    from sim.serving.step_factors import FACTORS, FRACTIONS

    fit = _names(args.fit) or None
    result = calibrate(args.profile, args.model, args.device, devices=args.devices, fit=fit)
    default = result.default or result.base

    def value(key: str, v: float) -> str:
        if key in FRACTIONS:
            return f"{v:.4g}"
        return f"{v * 1e3:.4g} ms" if v >= 1e-3 else f"{v * 1e6:.4g} us"

    print(f"{result.factors.source}: {args.model} on {args.devices} x {args.device}")
    print(f"  {'factor':<24}{'value':>12}{'default':>12}  source")
    for key in FACTORS:
        if key in result.fitted:
            spread = result.uncertainty.get(key, 0.0)
            source = f"fitted (+-{spread:.1%})" if spread < 10 else "fitted (uncertain)"
        elif key in result.unidentified:
            source = "not determined by the profile: default"
        else:
            source = "default (not fitted)"
        print(f"  {key:<24}{value(key, getattr(result.factors, key)):>12}{value(key, getattr(default, key)):>12}  "
              f"{source}")
    print()
    table = result.table
    print(f"  {'line':>5} {'phase':<8}{'batch':>6}{'tokens':>8}{'context':>9}{'measured ms':>13}{'predicted ms':>14}"
          f"{'error':>9}")
    for row in table.itertuples(index=False):
        print(f"  {row.line:>5} {row.phase:<8}{row.batch_size:>6}{row.tokens:>8g}{row.context:>9g}{row.ms:>13.4g}"
              f"{row.predicted_ms:>14.4g}{row.relative_error:>+9.1%}")
    print(f"relative error: max {result.max_error:.1%}, median {result.median_error:.1%} ({len(table)} rows)")
    if result.unidentified:
        print(f"not determined by this profile (left at the defaults): {', '.join(result.unidentified)}; profile "
              "both phases over a range of batch sizes and lengths to determine more")
    text = result.to_yaml()
    if args.output:
        out = Path(args.output)
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"step_model written to {out} (paste it into a service of the config)")
    else:
        print()
        print(text, end="")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from sim.errors import ConfigError
    from sim.experiments.sweep import Experiment, PointsDiedError, parse_grid_option

    grid: dict[str, list[object]] = {}
    for option in args.grid:
        key, values = parse_grid_option(option)
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        grid[key] = values
    experiment = Experiment(args.config, grid, seeds=args.seeds, root_seed=args.root_seed, overrides=args.overrides)
    out = Path(args.output or args.output_default)
    try:
        sweep = experiment.run(out, tables=args.tables, executor=args.executor, workers=args.workers,
                               scheduler=args.scheduler, retries=args.retries, overwrite=args.overwrite)
    except PointsDiedError as exc:  # the dead points are listed below, and the exit status is 1
        sweep = exc.sweep
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished points are kept in {out}/; run the same command again to resume",
              file=sys.stderr)
        return 130
    run, counts = sweep.last_run, sweep.counts()
    assert run is not None
    combos = len(experiment.points) // experiment.seeds
    print(f"sweep: {len(experiment.points)} points ({combos} grid point{'s' * (combos != 1)} x {experiment.seeds} "
          f"seed{'s' * (experiment.seeds != 1)}) on {run.executor} in {run.seconds:.1f} s: {run.ok} ok, "
          f"{run.failed} failed, {run.died} died, {run.skipped} skipped (finished before)"
          + (f", {run.not_run} not run" if run.not_run else ""))
    if run.stopped:
        print(f"  stopped: {run.stopped}")
    for problem in run.damaged:
        print(f"  ran again, its results were damaged: {problem}")
    errors = sweep.errors()
    for row in errors.head(10).to_dict("records"):
        where = ", ".join([*(f"{key}={row[key]}" for key in sweep.params), f"replication {row['replication']}"])
        message = row["error"].splitlines()[0] if row["error"] else ""
        print(f"  {row['status']} {row['point']} ({where}): {row['error_type'].rsplit('.', 1)[-1]}: {message}")
    if len(errors) > 10:
        print(f"  ... and {len(errors) - 10} more (Sweep.open({str(out)!r}).errors())")
    print(f"results in {out}/ (manifest.json, points/, tables/); plots and report.md: gpusim report {out}")
    return 0 if counts["ok"] == len(experiment.points) else 1


def _report(args: argparse.Namespace) -> int:
    from sim.experiments.sweep import Sweep

    sweep = Sweep.open(args.directory)
    out = sweep.report(args.output)
    counts = sweep.counts()
    print(f"{sweep.directory}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for point, problems in sweep.damaged().items():
        print(f"  damaged {point} (left out; the same gpusim sweep command computes it again): {'; '.join(problems)}")
    print(f"report written to {out}/ (report.md, {len(list(out.glob('*.png')))} plots)")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sim.experiments.planner import format_plan, plan

    config = load_config(args.config, args.overrides)
    result = plan(config, progress=lambda line: print(f"  {line}", flush=True))
    print(format_plan(result, config.plan.target))
    out = Path(args.output or args.output_default)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "plan.csv", index=False)
    result.trials.to_csv(out / "trials.csv", index=False)
    print(f"results written to {out}/ (plan.csv, trials.csv)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from sim.output.trace_events import check_trace_path

    trace = check_trace_path(args.trace_events) if args.trace_events else None
    overrides = [*args.overrides, *(["sim.record_events=true"] if trace is not None else [])]
    config = load_config(args.config, overrides)
    results = run_config(config)
    out = results.save(args.output or args.output_default)
    _print_summary(results)
    print(f"results written to {out}/ ({', '.join(results.written_files)})")
    if trace is not None:
        print(f"trace events written to {results.write_trace_events(trace)} (open it in https://ui.perfetto.dev)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    base = load_config(args.config, args.overrides)
    schedulers = _policy_list(args.schedulers, "--schedulers") or [base.policy.scheduler]
    placers = _policy_list(args.placers, "--placers") or [base.policy.placer]
    for option, kind, specs in (("--schedulers", "scheduler", schedulers), ("--placers", "placer", placers)):
        seen: set[str] = set()
        for i, spec in enumerate(specs):  # every policy checked before anything runs
            registry.create(kind, spec, where=f"{option}[{i}]")
            if _label(spec) in seen:
                raise ConfigError(f"{option}: {_label(spec)!r} is given twice")
            seen.add(_label(spec))
    out = Path(args.output or args.output_default)
    runs: dict[str, Results] = {}
    folders: set[str] = set()
    planned = []
    for scheduler in schedulers:
        for placer in placers:
            folder = f"{_folder(scheduler)}+{_folder(placer)}"
            while folder in folders:
                folder += "_"
            folders.add(folder)
            planned.append((scheduler, placer, folder))
    _clear_earlier_compare(out, folders)
    for scheduler, placer, folder in planned:
        print(f"running {_label(scheduler)} + {_label(placer)} ...", file=sys.stderr)
        results = run_config(_with_policy(base, scheduler, placer))
        results.save(out / folder)
        runs[f"{_label(scheduler)}+{_label(placer)}"] = results
    table = _compare_table(runs)
    table.to_csv(out / "compare.csv")
    with _pandas_display():
        print(table.to_string(float_format=lambda v: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"))
    if all(_nobody_waited(results.summary()) for results in runs.values()):
        print(NO_WAIT_HINT.strip().replace("no job waited", "in every run no job waited", 1))
    plots = _save_plots(runs, out)
    print(f"results written to {out}/ (compare.csv, one folder per policy, {', '.join(plots)})")
    return 0


_JOB_METRICS = ("jobs.completed", "jobs.jct.mean", "jobs.jct.p50", "jobs.jct.p95", "jobs.jct.p99",
                "jobs.queueing_delay.mean", "jobs.queueing_delay.p95", "jobs.queueing_delay.p99", "jobs.waiting.mean",
                "jobs.waiting.p95", "jobs.slowdown.mean", "jobs.fairness.jain_slowdown",
                "jobs.preemptions", "makespan", "utilization.mean")
_REQUEST_METRICS = ("requests.count", "requests.completed", "requests.rejected", "requests.ttft.mean",
                    "requests.ttft.p99", "requests.tpot.mean", "requests.tpot.p99", "requests.e2e.p99",
                    "requests.slo_attainment", "requests.goodput", "replicas.utilization.mean")
_ACCOUNTING_METRICS = ("energy.kwh", "cost.usd", "carbon.kg")
_PER_REQUEST_METRICS = ("inference.energy.kwh_per_1k_requests", "inference.cost.usd_per_1k_requests")


def _compare_table(runs: dict[str, Results]) -> Any:
    """Metrics (rows) by policy (columns): job figures when a run had training jobs, request and SLO figures
    when it served requests, energy and cost when accounted (NaN where a run lacks a figure)."""
    import pandas as pd

    summaries = {label: results.summary() for label, results in runs.items()}
    jobs = any(summary_value(s, "jobs.count") for s in summaries.values())
    requests = any("requests" in s for s in summaries.values())
    metrics = [*(_JOB_METRICS if jobs or not requests else ()), *(_REQUEST_METRICS if requests else ())]
    metrics += [m for m in _ACCOUNTING_METRICS if any(m.split(".")[0] in s for s in summaries.values())]
    metrics += [m for m in _PER_REQUEST_METRICS if requests and any("energy" in s for s in summaries.values())]
    return pd.DataFrame({label: {m: summary_value(s, m) for m in metrics} for label, s in summaries.items()},
                        index=metrics, dtype=float)


def _with_policy(base: Config, scheduler: object, placer: object) -> Config:
    """``base`` with its scheduler and placer replaced; its router, autoscaler and co-location stay."""
    data = config_to_dict(base)
    data["policy"] = {**data.get("policy", {}), "scheduler": scheduler, "placer": placer}
    return load_config(data)


COMPARE_PLOTS = ("jct_cdf.png", "queueing_delay_cdf.png", "utilization.png", "ttft_cdf.png", "tpot_cdf.png")
"""The plots ``gpusim compare`` may write."""


def _clear_earlier_compare(out: Path, keep: set[str]) -> None:
    """In a folder an earlier ``compare`` wrote (it holds compare.csv): remove that compare's plots and the run
    folders of policies not in this one (``keep``), so that no result of another comparison is left beside this
    one. Only what gpusim wrote goes: a run folder's own files (``RUN_FILES``), then the folder if empty."""
    from sim.output.results import RUN_FILES

    if not (out / "compare.csv").is_file():
        return
    for name in COMPARE_PLOTS:
        (out / name).unlink(missing_ok=True)
    for folder in out.iterdir():
        if folder.is_dir() and folder.name not in keep and (folder / "summary.json").is_file():
            for name in RUN_FILES:
                (folder / name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()


def _save_plots(runs: dict[str, Results], out: Path) -> list[str]:
    """CDFs (and the utilization timeline) of the runs, one line per policy; the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from sim.output.plots import plot_cdf, plot_latency_cdf, plot_utilization

    def tables(attr: str) -> pd.DataFrame:
        return pd.concat([getattr(r, attr).assign(policy=label) for label, r in runs.items()], ignore_index=True)

    plots: list[tuple[str, Any]] = []
    if any(len(r.jobs) for r in runs.values()):
        jobs = tables("jobs")
        plots += [(f"{column}_cdf.png", lambda ax, c=column: plot_cdf(jobs, c, by="policy", ax=ax))
                  for column in ("jct", "queueing_delay")]
        timeline = tables("timeline")
        plots.append(("utilization.png", lambda ax: plot_utilization(timeline, by="policy", ax=ax)))
    if all(r.requests is not None and len(r.requests) for r in runs.values()):
        requests = tables("requests")
        plots += [(f"{metric}_cdf.png", lambda ax, m=metric: plot_latency_cdf(requests, m, by="policy", ax=ax))
                  for metric in ("ttft", "tpot")]
    for name, draw in plots:
        fig, ax = plt.subplots(figsize=(9, 4) if name == "utilization.png" else (7, 4.5))
        draw(ax)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
    return [name for name, _ in plots]


def _policies(args: argparse.Namespace) -> int:
    import warnings

    with warnings.catch_warnings():  # the plug-in problems are listed below instead
        warnings.simplefilter("ignore", registry.PluginWarning)
        problems = registry.problems()
    broken = 0
    for kind in registry.KINDS:
        print(f"{kind}s:")
        for name in registry.available(kind):
            try:
                cls = registry.policy_class(kind, name)
            except GpusimError as exc:
                broken += 1
                print(f"  {name:<21} BROKEN: {exc}")
                continue
            params = ", ".join(f"{k}={_default(f)}" for k, f in cls.parameters().items())
            doc = ((cls.__doc__ or "").strip().splitlines() or ["(no docstring)"])[0]
            print(f"  {name:<21} {doc}" + (f"\n  {'':<21} parameters: {params}" if params else ""))
    if problems:
        print("plug-in problems:")
        for problem in problems:
            print(f"  {problem}")
    if broken:
        print(f"{broken} polic{'ies' if broken > 1 else 'y'} cannot be loaded (BROKEN above); the others work",
              file=sys.stderr)
    return 0


def _default(f: Any) -> str:
    """A policy parameter's default for the listing: ``repr`` of it, or ``(required)``."""
    from dataclasses import MISSING

    if f.default is not MISSING:
        return repr(f.default)
    return repr(f.default_factory()) if f.default_factory is not MISSING else "(required)"


def _config(args: argparse.Namespace) -> int:
    for key, default, help_text in describe_config():
        print(f"{key:<38} {json.dumps(default):<28} {help_text}")
    from sim.platform.hardware import DEVICES
    from sim.serving.step_factors import FACTORS, default_step_factors

    print("\nstep_model factors by device (a service's step_model: {...} replaces any of them; * = assumed):")
    print(f"{'device':<16}" + "".join(f"{name:>23}" for name in FACTORS))
    for device in DEVICES:
        factors = default_step_factors(device)
        cells = [f"{getattr(factors, name):.4g}{'*' if name in factors.assumed else ''}" for name in FACTORS]
        print(f"{device:<16}" + "".join(f"{cell:>23}" for cell in cells))
    return 0


def _print_summary(results: Results) -> None:
    s = results.summary()
    jobs = s["jobs"]
    print(f"{s['run']['cluster']} ({s['run']['devices']} devices)")
    if "requests" in s:
        r = s["requests"]
        slo_set = any(v is not None for slo in results.run.get("slo", {}).values() for v in slo.values())
        attainment = _f(r["slo_attainment"], ".1%") if slo_set else "n/a (no SLO set)"
        print(f"  requests ({results.run['router']}): {r['count']:,} ({r['completed']:,} completed, "
              f"{r['rejected']:,} rejected, {r['unfinished']:,} unfinished"
              + (f", {r['not_arrived']:,} not arrived by the horizon" if r["not_arrived"] else "")
              + f"); TTFT mean {_f(r['ttft']['mean'], '.3f')} s, p99 {_f(r['ttft']['p99'], '.3f')} s; TPOT mean "
              f"{_f(r['tpot']['mean'], '.1f', 1e3)} ms, p99 {_f(r['tpot']['p99'], '.1f', 1e3)} ms; SLO attainment "
              f"{attainment}; replicas busy {_f(s['replicas']['utilization']['mean'], '.1%')}")
        if not jobs["count"]:
            print(f"  {s['events']:,} events in {s['wall_seconds']:.2f} s")
            _print_energy(s)
            return
    print(f"  jobs ({s['run']['scheduler']} + {s['run']['placer']}): {jobs['count']:,} ({jobs['completed']:,} "
          f"completed, {jobs['unschedulable']:,} unschedulable, {jobs['unfinished']:,} unfinished"
          + (f", {jobs['not_arrived']:,} not arrived by the horizon" if jobs["not_arrived"] else "")
          + f"), preemptions {jobs['preemptions']:,}")
    print(f"  JCT mean {_f(jobs['jct']['mean'])} s, p95 {_f(jobs['jct']['p95'])} s; queueing delay mean "
          f"{_f(jobs['queueing_delay']['mean'])} s, p99 {_f(jobs['queueing_delay']['p99'])} s; waiting (every wait) "
          f"mean {_f(jobs['waiting']['mean'])} s")
    print(f"  utilization {_f(s['utilization']['mean'], '.1%')}, makespan {_f(s['makespan'])} s, "
          f"{s['events']:,} events in {s['wall_seconds']:.2f} s")
    if "network" in s:
        n = s["network"]
        levels = ", ".join(f"{level} {count}" for level, count in n["placement_levels"].items())
        print(f"  network: communication slowdown mean {_f(n['comm_slowdown']['mean'], '.3f')}, p95 "
              f"{_f(n['comm_slowdown']['p95'], '.3f')}; placements {levels}; busiest link "
              f"{_f(n['links']['mean_utilization']['max'], '.0%')} busy on average; fragmentation (8-GPU) "
              f"{_f(s['fragmentation']['mean'], '.1%')}")
    _print_energy(s)
    if jobs["skipped_trace_rows"]:
        print(f"  {jobs['skipped_trace_rows']} malformed trace rows were skipped (errors: skip); skipped.csv names "
              "each one's file, line, field and reason")
    if jobs["unschedulable"]:
        print(f"  {jobs['unschedulable']} jobs can never run on this cluster (see status/reason in jobs.csv)")
    if _nobody_waited(s):
        print(NO_WAIT_HINT)


NO_WAIT_HINT = ("  hint: no job waited for devices, so no training scheduler can do better or worse here; to "
                "compare them, raise the load (workload.training.load_scale, more jobs or a shorter interarrival) or "
                "shrink the cluster (cluster.scale, fewer nodes)")


def _nobody_waited(summary: Mapping[str, Any]) -> bool:
    """Whether a run had training jobs that ran and none of them ever waited (first queueing or after a
    preemption)."""
    jobs = summary.get("jobs", {})
    return bool(jobs.get("completed")) and jobs.get("waiting", {}).get("total", math.nan) == 0


def _f(value: Any, spec: str = ",.0f", scale: float = 1.0) -> str:
    """A summary figure for the terminal: ``n/a`` when missing or not finite, scientific when too long to read."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    scaled = value * scale
    if "%" not in spec and abs(scaled) >= 1e12:
        return f"{scaled:.3g}"
    return f"{scaled:{spec}}"


def _print_energy(s: dict[str, Any]) -> None:
    if "energy" not in s:
        return
    e, c = s["energy"], s["cost"]
    print(f"  energy {_f(e['kwh'], ',.1f')} kWh (training {_f(s['training']['energy']['kwh'], ',.1f')}, inference "
          f"{_f(s['inference']['energy']['kwh'], ',.1f')}, idle {_f(e['idle_kwh'], ',.1f')}); cost "
          f"${_f(c['usd'], ',.2f')} (idle ${_f(c['idle_usd'], ',.2f')})"
          + (f"; carbon {_f(s['carbon']['kg'], ',.1f')} kg CO2 at {s['carbon']['grid_g_per_kwh']:g} g/kWh"
             if "carbon" in s else ""))


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _policy_list(text: str, option: str) -> list[Any]:
    """``--schedulers``/``--placers``: comma-separated names, or a YAML list for policies with parameters,
    ``'[fifo, {name: las, thresholds: [3600]}]'``, read as ``sweep --grid`` reads its values."""

    from sim.experiments.config import load_yaml_list

    if not text.strip():
        return []
    return load_yaml_list(text, f"{option} {text!r}", f"give names separated by commas, or a YAML list: {option} "
                          "'[fifo, {name: las, thresholds: [3600]}]'")


def _label(policy: object) -> str:
    """A policy as given, for the table and messages: ``las``, or ``las(thresholds=[3600])`` with parameters."""
    from sim.experiments.sweep.grid import label

    if not isinstance(policy, dict):
        return str(policy)
    params = ", ".join(f"{k}={label(v)}" for k, v in policy.items() if k != "name")
    return f"{policy.get('name')}" + (f"({params})" if params else "")


def _folder(policy: object) -> str:
    """``_label`` as a folder name: ``las_thresholds=_3600``."""
    import re

    return re.sub(r"[^\w.=-]+", "_", _label(policy)).strip("_") or "policy"


class _pandas_display:
    def __enter__(self) -> None:
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 20)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


if __name__ == "__main__":
    sys.exit(main())
