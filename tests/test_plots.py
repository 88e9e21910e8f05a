"""Plot helpers on small real runs (Agg backend): what was drawn, not how it looks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import copy
import math
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sim import Cluster, PoolSpec, Results, Simulation
from sim.output.plots import (
    label_points,
    plot_cdf,
    plot_latency_cdf,
    plot_replicas_over_time,
    plot_slo_attainment,
    plot_utilization,
    step_counts,
)
from sim.random import RandomStreams
from sim.serving.service import ServiceSpec
from workloads import Poisson, TrainingJob, generate_requests, get_model
from workloads.distributions import LogNormal

ROUTERS = ("round-robin", "least-outstanding")


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def serve(router: str, rate: float = 4.0, n: int = 300) -> Results:
    """300 requests on a 2-replica Llama-3.1-8B service on H100."""
    requests = generate_requests(Poisson(rate), LogNormal(median=400, sigma=0.8), LogNormal(median=80, sigma=0.8),
                                 RandomStreams(3), count=n)
    spec = ServiceSpec("chat", requests, replicas=2, model=get_model("llama-3.1-8b"), device="h100", slo_ttft=0.2,
                       slo_tpot=0.02)
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)])
    return Simulation(cluster, [], services=[spec], router=router, seed=1).run()


@pytest.fixture(scope="module")
def served() -> list[Results]:
    return [serve(router) for router in ROUTERS]


def step_at(line: matplotlib.lines.Line2D, t: float) -> float:
    """Value of a ``where="post"`` step line at time ``t``."""
    xs, ys = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
    return float(ys[np.searchsorted(xs, t, side="right") - 1])


def labels(ax: plt.Axes) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


# ----------------------------------------------------------------------------- latency CDF
@pytest.mark.parametrize("metric", ["ttft", "tpot", "e2e"])
def test_latency_cdf_one_line_per_router(served: list[Results], metric: str) -> None:
    ax = plot_latency_cdf(served, metric)
    assert labels(ax) == list(ROUTERS)
    assert ax.get_xscale() == "log"
    assert ax.get_legend().get_title().get_text() == "router"
    for line, results in zip(ax.get_lines(), served, strict=True):
        x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        finished = results.requests[results.requests["status"] == "finished"]
        expected = np.sort(finished[metric].dropna().to_numpy(dtype=float))
        np.testing.assert_allclose(x, expected)
        assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) > 0)
        assert y[0] > 0 and y[-1] == 1.0 and np.all((y >= 0) & (y <= 1))


def test_latency_cdf_from_a_requests_table_without_grouping(served: list[Results]) -> None:
    requests = served[0].requests
    ax = plot_latency_cdf(requests, "e2e", by=None, log=False)
    (line,) = ax.get_lines()
    assert line.get_label() == "e2e" and ax.get_xscale() == "linear"
    assert len(line.get_xdata()) == int((requests["status"] == "finished").sum())
    assert "end-to-end" in ax.get_xlabel()


def test_latency_cdf_draws_on_given_axes_and_rejects_bad_input(served: list[Results]) -> None:
    _, ax = plt.subplots()
    assert plot_latency_cdf(served[0], ax=ax) is ax
    assert labels(ax) == ["round-robin"]
    with pytest.raises(KeyError, match="metric"):
        plot_latency_cdf(served, "latency")
    with pytest.raises(KeyError, match="scheduler"):
        plot_latency_cdf(served, by="scheduler")
    no_services = Simulation(Cluster([PoolSpec("h100", nodes=1, devices_per_node=1)]),
                             [TrainingJob(0, 0.0, 1, 10.0)]).run()
    with pytest.raises(ValueError, match="requests table"):
        plot_latency_cdf(no_services)


# ----------------------------------------------------------------------------- SLO attainment
def test_slo_attainment_versus_load() -> None:
    rows = []
    for router in ROUTERS:
        for rate in (12.0, 2.0, 6.0):  # out of order: the helper sorts by load
            summary = serve(router, rate=rate, n=150).summary()["requests"]
            rows.append({"router": router, "rate": rate, "slo_attainment": summary["slo_attainment"]})
    points = pd.DataFrame(rows)
    ax = plot_slo_attainment(points)
    assert labels(ax) == list(ROUTERS)
    for line, router in zip(ax.get_lines(), ROUTERS, strict=True):
        x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        assert list(x) == [2.0, 6.0, 12.0]
        expected = points[points["router"] == router].sort_values("rate")["slo_attainment"].to_numpy()
        np.testing.assert_allclose(y, expected)
        assert np.all((y >= 0) & (y <= 1))
        assert y[0] >= y[-1]  # more load, fewer requests within their SLO
    assert ax.get_xlabel() == "arrival rate (req/s)" and ax.get_ylim() == (0, 1.05)


def test_slo_attainment_with_load_column_and_no_grouping() -> None:
    points = pd.DataFrame({"load": [0.9, 0.5], "slo_attainment": [0.4, 0.95]})
    ax = plot_slo_attainment(points, x="load", by=None)
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0.5, 0.9] and list(line.get_ydata()) == [0.95, 0.4]
    with pytest.raises(KeyError, match="rate"):
        plot_slo_attainment(points)


# ----------------------------------------------------------------------------- queue over time
def hand_made_requests() -> pd.DataFrame:
    nan = math.nan
    return pd.DataFrame({
        "service": ["a", "a", "a", "a", "a", "b"],
        "arrival": [0.0, 1.0, 2.0, 2.0, 2.5, 1.0],
        "admitted": [0.5, 3.0, 2.0, nan, nan, 1.0],
        "finish": [4.0, 5.0, 2.5, nan, nan, 1.5],
        "status": ["finished", "finished", "finished", "waiting", "rejected", "finished"],
    })


def test_step_counts_by_hand() -> None:
    times, counts = step_counts(np.array([0.0, 1.0, 2.0, 2.0]), np.array([0.5, 3.0, 2.0, math.nan]))
    assert list(times) == [0.0, 0.5, 1.0, 2.0, 3.0]
    assert list(counts) == [1, 0, 1, 2, 1]
    empty = step_counts(np.array([]), np.array([]))
    assert empty[0].size == 0 and empty[1].size == 0


def test_queue_over_time_on_a_hand_made_table() -> None:
    ax = plot_replicas_over_time(hand_made_requests())
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["a: queued", "a: outstanding", "b: queued", "b: outstanding"]
    # service a: request 2 is admitted the instant it arrives, request 3 never is, request 4 is rejected
    queued = {0.0: 1, 0.25: 1, 0.5: 0, 0.9: 0, 1.0: 1, 2.0: 2, 2.7: 2, 3.0: 1, 10.0: 1}
    outstanding = {0.0: 1, 0.5: 1, 1.0: 2, 2.0: 4, 2.5: 3, 3.0: 3, 4.0: 2, 5.0: 1, 10.0: 1}
    for t, value in queued.items():
        assert step_at(lines["a: queued"], t) == value, t
    for t, value in outstanding.items():
        assert step_at(lines["a: outstanding"], t) == value, t
    assert step_at(lines["b: queued"], 1.2) == 0  # admitted on arrival
    assert step_at(lines["b: outstanding"], 1.2) == 1 and step_at(lines["b: outstanding"], 1.5) == 0
    assert lines["a: queued"].get_drawstyle() == "steps-post"


def test_replicas_over_time_on_a_run(served: list[Results]) -> None:
    results = served[1]
    ax = plot_replicas_over_time(results)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["chat: queued", "chat: outstanding", "chat: replicas"]
    queued = np.asarray(lines["chat: queued"].get_ydata())
    outstanding = np.asarray(lines["chat: outstanding"].get_ydata())
    assert queued.min() >= 0 and outstanding.min() >= 0
    assert outstanding[-1] == 0 and queued[-1] == 0  # every request finished
    assert outstanding.max() >= queued.max()
    replicas = np.asarray(lines["chat: replicas"].get_ydata())
    assert set(replicas[:-1]) == {2} and replicas[-1] == 0  # two replicas until the service ends
    requests = results.requests
    t = float(requests["arrival"].median())
    expected = int(((requests["arrival"] <= t) & ~(requests["finish"] <= t)).sum())
    assert step_at(lines["chat: outstanding"], t) == expected
    hours = plot_replicas_over_time(results, hours=True)
    assert hours.get_xlabel() == "time (h)"
    np.testing.assert_allclose(hours.get_lines()[0].get_xdata(), lines["chat: queued"].get_xdata() / 3600)


def test_replica_line_static_or_from_a_replica_timeline(served: list[Results]) -> None:
    results = copy.copy(served[0])
    requests = results.requests
    first, last = float(requests["arrival"].min()), float(requests["finish"].max())
    results.replica_timeline = None  # static replicas: the count of the replicas table
    (line,) = [x for x in plot_replicas_over_time(results).get_lines() if x.get_label() == "chat: replicas"]
    assert list(line.get_xdata()) == [first, last] and list(line.get_ydata()) == [2, 2]
    results.replica_timeline = pd.DataFrame({"time": [0.0, 10.0, 10.0], "service": ["chat"] * 3, "ready": [1, 1, 2],
                                             "provisioning": [1, 1, 0], "draining": [0, 0, 0]})
    (line,) = [x for x in plot_replicas_over_time(results).get_lines() if x.get_label() == "chat: replicas"]
    assert step_at(line, 5.0) == 1 and step_at(line, 10.0) == 2 and step_at(line, last) == 2
    assert line.get_xdata()[-1] == last


# ----------------------------------------------------------------------------- training helpers
@pytest.fixture(scope="module")
def trained() -> list[Results]:
    jobs = [TrainingJob(i, arrival=10.0 * i, gpus=gpus, duration=duration)
            for i, (gpus, duration) in enumerate([(2, 300.0), (1, 50.0), (2, 120.0), (1, 30.0), (1, 600.0)])]
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)])
    return [Simulation(cluster, jobs, scheduler=s, seed=0).run() for s in ("fifo", "sjf")]


def test_plot_cdf_on_a_tiny_run(trained: list[Results]) -> None:
    ax = plot_cdf(trained, "jct")
    assert labels(ax) == ["fifo", "sjf"]
    for line, results in zip(ax.get_lines(), trained, strict=True):
        y = np.asarray(line.get_ydata(), dtype=float)
        assert len(y) == 5 and y[-1] == 1.0 and np.all((y > 0) & (y <= 1))
        np.testing.assert_allclose(line.get_xdata(), np.sort(np.maximum(results.jobs["jct"].to_numpy(), 1.0)))


def test_plot_utilization_on_a_tiny_run(trained: list[Results]) -> None:
    ax = plot_utilization(trained, hours=False)
    assert labels(ax) == ["fifo", "sjf"]
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        assert np.all((y >= 0) & (y <= 1)) and y.max() == 1.0


# ----------------------------------------------------------------------------- scatter labels
def boxes(ax: plt.Axes, annotations: list) -> list:
    renderer = ax.figure.canvas.get_renderer()
    return [matplotlib.text.Text.get_window_extent(a, renderer) for a in annotations]


def test_label_points_keep_names_apart_from_each_other_the_points_and_the_frame() -> None:
    # five co-location policies as in notebook 02: two coincide, two sit close together, one at the right edge
    x = [0.62, 0.62, 0.64, 0.97, 0.35]
    y = [5.0, 5.0, 5.1, 6.0, 3.0]
    names = ["partitioned", "inference-priority", "scheduler-aware", "headroom", "shared"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x, y, s=60)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 7)
    fig.tight_layout()
    annotations = label_points(ax, x, y, names, marker_size=math.sqrt(60))
    fig.canvas.draw()
    assert [a.get_text() for a in annotations] == names
    placed = boxes(ax, annotations)
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            assert not a.overlaps(b), (a, b)
    frame = ax.get_window_extent()
    centers = ax.transData.transform(np.column_stack([x, y]))
    half = math.sqrt(60) / 2 * fig.dpi / 72
    for box in placed:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box
        for cx, cy in centers:  # no name covers a marker
            marker = matplotlib.transforms.Bbox([[cx - half, cy - half], [cx + half, cy + half]])
            assert not box.overlaps(marker), (box, marker)
    # a lone point keeps its name on its right; the two coinciding points have theirs stacked at their left
    assert annotations[4].get_ha() == "left" and annotations[4].xyann[1] == 0 and annotations[4].arrow_patch is None
    assert annotations[1].xy == annotations[0].xy and {a.get_ha() for a in annotations[:2]} == {"right"}


def test_label_points_in_a_crowd_move_out_with_leader_lines() -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([0.5] * 12, [0.5] * 12)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    annotations = label_points(ax, [0.5] * 12, [0.5] * 12, [f"policy {i}" for i in range(12)])
    fig.canvas.draw()
    placed = boxes(ax, annotations)
    assert not any(a.overlaps(b) for i, a in enumerate(placed) for b in placed[i + 1:])
    near = [a for a in annotations if a.arrow_patch is None]
    assert 0 < len(near) <= 8 and all(math.hypot(*a.xyann) <= 8 * math.sqrt(2) for a in near)
    assert all(math.hypot(*a.xyann) > 8 for a in annotations if a.arrow_patch is not None)


def test_label_points_alone_sits_next_to_its_point_and_checks_lengths() -> None:
    _, ax = plt.subplots()
    ax.scatter([1.0], [1.0])
    (annotation,) = label_points(ax, [1.0], [1.0], ["only"], fontsize=8)
    assert annotation.xy == (1.0, 1.0) and annotation.get_fontsize() == 8
    assert annotation.xyann == (7.0, 0.0) and annotation.arrow_patch is None  # marker_size / 2 + gap to the right
    assert label_points(ax, [], [], []) == []
    with pytest.raises(ValueError, match="one of each"):
        label_points(ax, [1.0, 2.0], [1.0], ["a", "b"])
