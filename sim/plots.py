"""Plot helpers that take results tables: CDFs per policy, utilization over time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sim.results import Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _table(results: Results | Iterable[Results] | pd.DataFrame, attr: str) -> pd.DataFrame:
    if isinstance(results, pd.DataFrame):
        return results
    if isinstance(results, Results):
        return getattr(results, attr)
    return pd.concat([getattr(r, attr) for r in results], ignore_index=True)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))[1]


def plot_cdf(results: Results | Iterable[Results] | pd.DataFrame, column: str = "jct", *, by: str = "scheduler",
             ax: Axes | None = None, log: bool = True, finished_only: bool = True) -> Axes:
    """Empirical CDF of a jobs-table column (``jct``, ``queueing_delay``, ``slowdown``), one line per ``by``."""
    jobs = _table(results, "jobs")
    if finished_only and "status" in jobs:
        jobs = jobs[jobs["status"] == "finished"]
    ax = _axes(ax)
    for label, group in jobs.groupby(by, sort=False):
        values = np.sort(group[column].dropna().to_numpy(dtype=float))
        if values.size == 0:
            continue
        if log:
            values = np.maximum(values, 1.0)
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=str(label))
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(column.replace("_", " ") + " (s)" + (", values below 1 s shown at 1 s" if log else ""))
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(title=by)
    return ax


def plot_utilization(results: Results | Iterable[Results] | pd.DataFrame, *, by: str = "scheduler",
                     ax: Axes | None = None, hours: bool = True) -> Axes:
    """Allocated fraction of devices over time (a step function), one line per ``by``."""
    timeline = _table(results, "timeline")
    ax = _axes(ax)
    scale = 3600.0 if hours else 1.0
    for label, group in timeline.groupby(by, sort=False):
        ax.step(group["time"] / scale, group["utilization"], where="post", label=str(label), linewidth=0.8)
    ax.set_xlabel("time (h)" if hours else "time (s)")
    ax.set_ylabel("allocated devices (fraction)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(title=by)
    return ax


def compare_table(results: Iterable[Results], metrics: Iterable[str] = (
        "jobs.completed", "jobs.jct.mean", "jobs.jct.p50", "jobs.jct.p95", "jobs.jct.p99",
        "jobs.queueing_delay.mean", "jobs.queueing_delay.p95", "jobs.queueing_delay.p99", "jobs.slowdown.mean",
        "jobs.preemptions", "makespan", "utilization.mean")) -> pd.DataFrame:
    """Metrics (rows) by policy (columns) from several runs' summaries."""
    columns = {}
    for r in results:
        label = f"{r.run['scheduler']}+{r.run['placer']}"
        summary = r.summary()
        column = {}
        for metric in metrics:
            value: object = summary
            for part in metric.split("."):
                value = value[part]  # type: ignore[index]
            column[metric] = value
        columns[label] = column
    return pd.DataFrame(columns)
