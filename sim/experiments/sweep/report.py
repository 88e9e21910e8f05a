"""The standard report of a sweep: each headline metric against the first swept numeric parameter, with
confidence bands and one line per value of the other parameters, as PNG files, plus ``report.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from sim.experiments.sweep.grid import label
from sim.experiments.sweep.stats import ci_column

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class SweepTables(Protocol):
    """What the report reads of a sweep (``sim.experiments.sweep.Sweep`` has all of it; the report does not import
    it, so that ``Sweep.report()`` can call the report without an import circle)."""

    directory: Path

    @property
    def manifest(self) -> dict[str, Any]: ...

    @property
    def grid(self) -> dict[str, list[Any]]: ...

    @property
    def params(self) -> list[str]: ...

    @property
    def seeds(self) -> int: ...

    def counts(self) -> dict[str, int]: ...

    def errors(self) -> pd.DataFrame: ...

    def summary(self) -> pd.DataFrame: ...

    def aggregate(self, metrics: list[str] | None = None, confidence: float = 0.95) -> pd.DataFrame: ...

REPORT_METRICS = (
    "utilization.mean", "jobs.queueing_delay.mean", "jobs.queueing_delay.p99", "jobs.jct.mean",
    "jobs.slowdown.mean", "requests.ttft.p99", "requests.tpot.p99", "requests.slo_attainment", "energy.kwh",
    "cost.usd",
)
"""Metrics the report plots and tabulates, those the sweep has values for."""


def report_metrics(sweep: SweepTables) -> list[str]:
    """The ``REPORT_METRICS`` this sweep has at least one value of."""
    summary = sweep.summary()
    return [m for m in REPORT_METRICS if m in summary.columns and summary[m].notna().any()
            and pd.api.types.is_numeric_dtype(summary[m])]


def x_parameter(sweep: SweepTables) -> str | None:
    """The first grid key whose values are all numbers (not booleans), with at least two of them."""
    for key, values in sweep.grid.items():
        if len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return key
    return None


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Last segment of each key (``scheduler``), the whole key where two would read the same."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def plot_sweep(sweep: SweepTables, metric: str, *, x: str | None = None, confidence: float = 0.95,
               ax: Axes | None = None) -> Axes:
    """``metric``'s mean across replications against grid key ``x`` (default: the first numeric one) with
    its confidence band, one line per combination of the other grid values; categories with error bars when
    the grid has no numeric key."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.subplots(figsize=(6.5, 4))[1]
    table = sweep.aggregate([metric], confidence=confidence)
    half = ci_column(confidence)
    x = x if x is not None else x_parameter(sweep)
    others = [k for k in sweep.params if k != x]
    names = _short_names(sweep.params)
    if x is not None:
        groups = table.groupby(others, sort=False, dropna=False) if others else [((), table)]
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            group = group.sort_values(x)
            xs = group[x].to_numpy(dtype=float)
            mean, ci = group["mean"].to_numpy(dtype=float), group[half].to_numpy(dtype=float)
            name = ", ".join(f"{names[k]}={v}" for k, v in zip(others, values, strict=True)) or metric
            line = ax.plot(xs, mean, marker="o", label=name)[0]
            ax.fill_between(xs, mean - ci, mean + ci, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel(x)
    else:
        labels = [", ".join(f"{names[k]}={row[k]}" for k in sweep.params) or "base" for _, row in table.iterrows()]
        positions = range(len(table))
        ax.errorbar(positions, table["mean"], yerr=table[half].fillna(0.0), fmt="o", capsize=4)
        ax.set_xticks(list(positions), labels, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} (mean, {100 * confidence:g}% CI over {sweep.seeds} seed{'s' * (sweep.seeds > 1)})")
    ax.grid(True, alpha=0.3)
    if x is not None and others:
        ax.legend(fontsize=8)
    return ax


def write_report(sweep: SweepTables, out: str | Path | None = None, *, metrics: Sequence[str] | None = None,
                 confidence: float = 0.95) -> Path:
    """PNG plots of ``metrics`` (default: ``report_metrics``) and ``report.md`` in ``out`` (default
    ``DIR/report``); returns ``out``."""
    from matplotlib.figure import Figure

    folder = Path(out) if out is not None else sweep.directory / "report"
    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(metrics) if metrics is not None else report_metrics(sweep)
    images = []
    for metric in chosen:
        fig = Figure(figsize=(6.5, 4), layout="constrained")
        plot_sweep(sweep, metric, confidence=confidence, ax=fig.subplots())
        name = metric.replace(".", "_") + ".png"
        fig.savefig(folder / name, dpi=110)
        images.append((metric, name))
    (folder / "report.md").write_text(markdown(sweep, chosen, images, confidence), encoding="utf-8")
    return folder


def markdown(sweep: SweepTables, metrics: Sequence[str], images: Sequence[tuple[str, str]],
             confidence: float = 0.95) -> str:
    """The report's text: what was swept, how many points finished, mean +- CI half-width per grid point."""
    manifest, counts = sweep.manifest, sweep.counts()
    code = manifest.get("code") or {}
    commit = code.get("git_commit")
    version = f"gpusim {code.get('gpusim')}" + (f", git {commit[:12]}{' (modified)' * bool(code.get('git_dirty'))}"
                                                 if commit else "")
    combos = math.prod(len(v) for v in sweep.grid.values())
    lines = [
        f"# Sweep report: {sweep.directory.name}", "",
        f"- Points: {sum(counts.values())} ({combos} grid point{'s' * (combos != 1)} x {sweep.seeds} seed"
        f"{'s' * (sweep.seeds != 1)}): " + ", ".join(f"{v} {k}" for k, v in counts.items() if v),
        f"- Root seed {manifest['root_seed']}; replication i uses SeedSequence(root, spawn_key=(i,)), the same for "
        f"every grid point", f"- Code: {version}",
        *[f"- `{key}`: {', '.join(_cell(label(v)) for v in values)}" for key, values in sweep.grid.items()], "",
        f"Mean ± half-width of the {100 * confidence:g}% Student-t confidence interval across seeds; n: seeds "
        f"finished.", "",
    ]
    table = _wide(sweep, metrics, confidence)
    if table is not None:
        lines += _markdown_table(table), ""
    if images:
        lines += ["## Plots", ""] + [f"![{metric}]({name})" for metric, name in images] + [""]
    errors = sweep.errors()
    if len(errors):
        lines += ["## Failed, died and damaged points", ""]
        rows = pd.DataFrame({"point": errors["point"], "status": errors["status"], "attempts": errors["attempts"],
                             "error": [(f"{t.rsplit('.', 1)[-1]}: {m}" if t else m)[:300] for t, m in
                                       zip(errors["error_type"], errors["error"], strict=True)]})
        lines += [_markdown_table(rows), ""]
        if (errors["status"] == "damaged").any():
            lines += ["Damaged: finished, but a result file is missing or unreadable; running the sweep again "
                      "computes these points again.", ""]
    return "\n".join(lines)


def _wide(sweep: SweepTables, metrics: Sequence[str], confidence: float) -> pd.DataFrame | None:
    summary = sweep.summary()
    if summary.empty:
        return None
    table = sweep.aggregate(list(metrics), confidence=confidence)
    half = ci_column(confidence)
    params = sweep.params
    keys = params or None
    groups = summary.groupby(keys, sort=False, dropna=False) if keys else [((), summary)]
    rows = []
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = dict(zip(params, values, strict=True))
        row["n"] = len(group)
        match = table
        for key, value in zip(params, values, strict=True):
            match = match[(match[key] == value) | (match[key].isna() & pd.isna(value))]
        for metric in metrics:
            hit = match[match["metric"] == metric]
            row[metric] = (_pm(float(hit["mean"].iloc[0]), float(hit[half].iloc[0])) if len(hit) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4g}" if math.isnan(half) else f"{mean:.4g} ± {half:.2g}"


def _cell(value: Any) -> str:
    text = "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
