"""Plot helpers that take results tables: CDFs per policy, utilization over time, and for inference
serving latency CDFs, SLO attainment versus load, and queued/outstanding requests over time; ``plot_gantt`` draws
a small run's devices over time; ``label_points`` names the points of a scatter without the names overlapping.

Every helper draws on ``ax`` (a new figure when ``None``), returns the axes and never calls ``show``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sim.errors import ConfigError
from sim.output.results import Results
from sim.output.trace_events import device_intervals, device_layout

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation


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


LATENCY_LABELS = {"ttft": "time to first token", "tpot": "time per output token", "e2e": "end-to-end latency",
                  "queueing_delay": "queueing delay"}
#: Latencies at or below this (seconds) are drawn at it on a log axis.
LOG_FLOOR = 1e-4


def _requests(results: Results | Iterable[Results] | pd.DataFrame) -> pd.DataFrame:
    """The requests table of one run, of several runs concatenated, or the table itself."""
    if isinstance(results, pd.DataFrame):
        return results
    runs = [results] if isinstance(results, Results) else list(results)
    tables = [r.requests for r in runs if r.requests is not None]
    if len(tables) != len(runs) or not tables:
        raise ValueError("no requests table: plot a run with inference services (Simulation(..., services=[...]))")
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


def _groups(table: pd.DataFrame, by: str | None) -> Iterable[tuple[object, pd.DataFrame]]:
    if by is None:
        return [(None, table)]
    if by not in table.columns:
        raise KeyError(f"by={by!r} is not a column; columns: {', '.join(map(str, table.columns))}")
    return table.groupby(by, sort=False)


def plot_latency_cdf(results: Results | Iterable[Results] | pd.DataFrame, metric: str = "ttft", *,
                     by: str | None = "router", ax: Axes | None = None, log: bool = True) -> Axes:
    """Empirical CDF of a request latency (``ttft``, ``tpot``, ``e2e``) over finished requests, one line per ``by``.

    Takes a run's ``Results``, several (concatenated, e.g. one per router) or a requests table. Requests
    without the metric (TPOT of one-token outputs) are left out; on a log axis values below
    ``LOG_FLOOR`` are drawn at it.
    """
    requests = _requests(results)
    if metric not in requests.columns:
        raise KeyError(f"metric {metric!r} is not a requests column; try one of {', '.join(LATENCY_LABELS)}")
    if "status" in requests.columns:
        requests = requests[requests["status"] == "finished"]
    ax = _axes(ax)
    for label, group in _groups(requests, by):
        values = np.sort(group[metric].dropna().to_numpy(dtype=float))
        if values.size == 0:
            continue
        if log:
            values = np.maximum(values, LOG_FLOOR)
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                label=metric if label is None else str(label))
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"{LATENCY_LABELS.get(metric, metric.replace('_', ' '))} (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(title=by)
    return ax


def plot_slo_attainment(points: pd.DataFrame, x: str = "rate", *, y: str = "slo_attainment",
                        by: str | None = "router", ax: Axes | None = None) -> Axes:
    """SLO attainment (fraction of requests meeting their SLO) versus load, one line per ``by``.

    ``points`` has one row per run of the caller's sweep: the load (column ``x``, e.g. ``rate`` in req/s
    or ``load`` as a fraction), the attainment (column ``y``, from ``summary()["requests"]["slo_attainment"]``)
    and the grouping column ``by``.
    """
    for column in (x, y):
        if column not in points.columns:
            raise KeyError(f"{column!r} is not a column of points; columns: {', '.join(map(str, points.columns))}")
    ax = _axes(ax)
    for label, group in _groups(points, by):
        group = group.sort_values(x)
        ax.plot(group[x].to_numpy(dtype=float), group[y].to_numpy(dtype=float), marker="o",
                label=y.replace("_", " ") if label is None else str(label))
    ax.set_xlabel("arrival rate (req/s)" if x == "rate" else x.replace("_", " "))
    ax.set_ylabel("SLO attainment (fraction of requests)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(title=by)
    return ax


def step_counts(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(times, counts)``: how many intervals ``[start, end)`` are open, as a right-continuous step function.

    ``counts[i]`` holds from ``times[i]`` until ``times[i + 1]``; an ``end`` of NaN never closes. Events
    at the same instant are applied together, so an interval opening and closing at one time is not counted.
    """
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    closes = end[~np.isnan(end)]
    times = np.concatenate([start, closes])
    deltas = np.concatenate([np.ones(start.size, dtype=np.int64), -np.ones(closes.size, dtype=np.int64)])
    order = np.argsort(times, kind="stable")
    times, counts = times[order], np.cumsum(deltas[order])
    last = np.append(times[1:] != times[:-1], True) if times.size else np.zeros(0, dtype=bool)
    return times[last], counts[last]


def _replica_steps(results: Results | pd.DataFrame, replicas: pd.DataFrame, service: str, first: float,
                   last: float) -> tuple[np.ndarray, np.ndarray]:
    """Ready replicas of ``service`` over ``[first, last]`` as step points."""
    timeline = getattr(results, "replica_timeline", None)
    if isinstance(timeline, pd.DataFrame) and {"time", "service", "ready"} <= set(timeline.columns):
        rows = timeline[timeline["service"] == service]
        if len(rows):
            times = rows["time"].to_numpy(dtype=float)
            counts = rows["ready"].to_numpy(dtype=float)
            if last > times[-1]:
                times, counts = np.append(times, last), np.append(counts, counts[-1])
            return times, counts
    count = float((replicas["service"] == service).sum())
    return np.array([first, last]), np.array([count, count])


def plot_replicas_over_time(results: Results | pd.DataFrame, *, ax: Axes | None = None, hours: bool = False) -> Axes:
    """Queued and outstanding requests over time per service, and each service's ready replicas.

    Computed from one run's requests table: *queued* counts requests that arrived and were not yet
    admitted to a batch (``arrival`` to ``admitted``; a preempted request that waits again is not
    counted twice), *outstanding* those that arrived and have not finished (``arrival`` to ``finish``).
    Rejected requests are left out. With ``Results``, each service's ready replicas are drawn dashed
    (from ``replica_timeline`` when the run has one, else the static count of the ``replicas`` table).
    """
    requests = _requests(results)
    replicas = results.replicas if isinstance(results, Results) else None
    if "status" in requests.columns:
        requests = requests[requests["status"] != "rejected"]
    ax = _axes(ax)
    scale = 3600.0 if hours else 1.0
    groups = requests.groupby("service", sort=False) if "service" in requests.columns else [("requests", requests)]
    for service, group in groups:
        arrival = group["arrival"].to_numpy(dtype=float)
        for what, column in (("queued", "admitted"), ("outstanding", "finish")):
            times, counts = step_counts(arrival, group[column].to_numpy(dtype=float))
            ax.step(times / scale, counts, where="post", label=f"{service}: {what}", linewidth=0.8)
        if replicas is not None and "service" in replicas.columns and arrival.size:
            ends = group[["admitted", "finish"]].to_numpy(dtype=float)
            last = float(np.nanmax(np.append(ends.ravel(), arrival.max())))
            times, counts = _replica_steps(results, replicas, str(service), float(arrival.min()), last)
            ax.step(times / scale, counts, where="post", linestyle="--", label=f"{service}: replicas")
    ax.set_xlabel("time (h)" if hours else "time (s)")
    ax.set_ylabel("requests (replicas)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


GANTT_MAX_BARS = 2000
"""Above this many bars ``plot_gantt`` refuses: open the run's trace-events file in Perfetto instead."""


def plot_gantt(results: Results, *, ax: Axes | None = None, max_bars: int = GANTT_MAX_BARS, hours: bool = False,
               legend: bool | None = None) -> Axes:
    """One row per device (device 0 at the top; a line between nodes), one bar per held interval of a training
    job or inference replica (``sim.output.trace_events.device_intervals``), coloured by job or replica; replicas
    hatched. For small runs: more than ``max_bars`` bars is a ``ConfigError`` that points at the trace-events file
    (``Results.write_trace_events``, ``gpusim run --trace-events``). Training jobs need the event log
    (``record_events=True``). The legend names the holders when there are at most 20 (``legend`` forces it)."""
    intervals = device_intervals(results)
    if len(intervals) > max_bars:
        raise ConfigError(f"plot_gantt: the run has {len(intervals):,} device intervals, more than max_bars="
                          f"{max_bars:,}; open its timeline in Perfetto instead: results.write_trace_events("
                          "'trace.json') or gpusim run --trace-events trace.json")
    layout = device_layout(results)
    ax = _axes(ax)
    scale = 3600.0 if hours else 1.0
    import matplotlib

    colours = matplotlib.colormaps["tab20"]
    holders = list(dict.fromkeys(intervals["label"]))
    colour_of = {label: colours(i % colours.N) for i, label in enumerate(holders)}
    for kind, hatch in (("job", None), ("replica", "//")):
        mine = intervals[intervals["kind"] == kind]
        if mine.empty:
            continue
        start = mine["start"].to_numpy(dtype=float) / scale
        width = mine["end"].to_numpy(dtype=float) / scale - start
        ax.barh(mine["device"].to_numpy(), width, left=start, height=0.8, hatch=hatch, edgecolor="black",
                linewidth=0.3, color=[colour_of[label] for label in mine["label"]])
    devices = len(layout)
    ax.set_ylim(devices - 0.5, -0.5)
    for first in layout.groupby("node", sort=True)["device"].min().to_numpy()[1:]:
        ax.axhline(first - 0.5, color="grey", linewidth=0.6)
    if devices <= 64:
        ax.set_yticks(layout["device"].to_numpy(),
                      [f"n{node} d{device}" for node, device in zip(layout["node"], layout["device"], strict=True)])
    ax.set_ylabel("device (node, index)")
    ax.set_xlabel("time (h)" if hours else "time (s)")
    ax.set_xlim(0, float(results.run["end_time"]) / scale or 1.0)
    if legend if legend is not None else len(holders) <= 20:
        from matplotlib.patches import Patch

        kinds = dict(zip(intervals["label"], intervals["kind"], strict=True))
        ax.legend(handles=[Patch(facecolor=colour_of[label], hatch="//" if kinds[label] == "replica" else None,
                                 label=label) for label in holders], fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    return ax


# Where a label may go around its point, nearest first: right, above-right, above, ..., below-right.
_DIRECTIONS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))
_ALIGN = {1: ("left", "bottom"), 0: ("center", "center"), -1: ("right", "top")}


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two boxes ``(x0, y0, x1, y1)``."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_points(ax: Axes, x: Iterable[float], y: Iterable[float], labels: Iterable[object], *,
                 marker_size: float = 8.0, gap: float = 3.0, rings: int = 6, **text: object) -> list[Annotation]:
    """Names each point ``(x[i], y[i])`` with ``labels[i]``, placed where the name overlaps no other name and no
    point, and stays inside the axes when it can.

    Each name tries eight positions around its point (right first, then counter-clockwise), on rings at growing
    distances; it takes the first free one, else the one overlapping least. A name moved past the first ring is
    tied to its point by a thin line, so coinciding points each keep a readable name. ``marker_size`` is the
    markers' width in points (``scatter(s=...)`` is an area: width ``sqrt(s)``), ``gap`` the space between marker and
    name in points; ``text`` goes to ``ax.annotate`` (``fontsize``, ``color`` ...).

    Positions are worked out on the figure as it is: set the limits and the layout (``tight_layout``) first.
    """
    from matplotlib.text import Text

    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    labels = [str(label) for label in labels]
    if not len(x) == len(y) == len(labels):
        raise ValueError(f"{len(x)} x, {len(y)} y and {len(labels)} labels: one of each per point")
    fig = ax.figure
    ax.get_xlim(), ax.get_ylim()  # applies pending autoscaling before reading the data transform
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    pixels = fig.dpi / 72.0  # pixels per point
    centers = ax.transData.transform(np.column_stack([x, y])) if len(x) else np.zeros((0, 2))
    half = marker_size / 2 * pixels
    taken = [(cx - half, cy - half, cx + half, cy + half) for cx, cy in centers]  # the markers, then the names
    frame = ax.get_window_extent(renderer)
    frame_box = (frame.x0, frame.y0, frame.x1, frame.y1)
    annotations = []
    for (cx, cy), xi, yi, label in zip(centers, x, y, labels, strict=True):
        probe = ax.annotate(label, (xi, yi), **text)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        width, height = extent.width, extent.height
        step = max(height / pixels, marker_size)  # ring spacing, points
        best: tuple[float, int, int, int, float] | None = None
        for ring in range(rings):
            distance = marker_size / 2 + gap + ring * step
            for dx, dy in _DIRECTIONS:
                left = cx + dx * distance * pixels - {1: 0.0, 0: width / 2, -1: width}[dx]
                bottom = cy + dy * distance * pixels - {1: 0.0, 0: height / 2, -1: height}[dy]
                box = (left, bottom, left + width, bottom + height)
                cost = sum(_overlap(box, other) for other in taken)
                cost += width * height - _overlap(box, frame_box)  # the part outside the axes
                if best is None or cost < best[0]:
                    best = (cost, ring, dx, dy, distance)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        _, ring, dx, dy, distance = best
        leader = {"arrowprops": {"arrowstyle": "-", "color": "0.5", "linewidth": 0.6, "shrinkA": 1,
                                 "shrinkB": marker_size / 2}} if ring else {}
        annotation = ax.annotate(label, (xi, yi), xytext=(dx * distance, dy * distance), textcoords="offset points",
                                 ha=_ALIGN[dx][0], va=_ALIGN[dy][1], **leader, **text)
        annotation.update_positions(renderer)
        box = Text.get_window_extent(annotation, renderer)  # the name alone, without its leader line
        margin = pixels  # a point of space around each name
        taken.append((box.x0 - margin, box.y0 - margin, box.x1 + margin, box.y1 + margin))
        annotations.append(annotation)
    return annotations
