"""The device timeline as a Chrome trace event file (``sim.output.trace_events``) and the Gantt helper, on small
real runs: a training run with many preemptions, and a run where an inference service preempts training (with a
phased job and jobs still running at the horizon). Every check compares the file with the run's own tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import gzip
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sim import Cluster, PoolSpec, Results, Simulation
from sim.cli import main
from sim.errors import ConfigError
from sim.output.plots import plot_gantt
from sim.output.trace_events import device_intervals, trace_events
from sim.serving.contracts import Autoscaler, ServiceView
from sim.serving.service import ServiceSpec
from workloads import RequestTrace, TrainingJob, get_model
from workloads.jobs import Phase


@dataclass
class StepUp(Autoscaler):
    """One replica, two from t=100 to t=300."""

    name = "step-up"
    interval: float = 100.0

    def target(self, view: ServiceView) -> int:
        return 2 if 100 <= view.now < 300 else 1


def training_run() -> Results:
    """60 random jobs on 2 nodes x 4 under LAS with one short threshold: many preemptions and restarts."""
    rng = np.random.default_rng(11)
    arrivals = np.cumsum(rng.exponential(30.0, 60))
    jobs = [TrainingJob(i, float(t), int(rng.choice([1, 1, 2, 4])), float(rng.lognormal(5.0, 1.0)), tenant=f"t{i % 3}")
            for i, t in enumerate(arrivals)]
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4), PoolSpec("a100", nodes=1, devices_per_node=2)])
    return Simulation(cluster, jobs, scheduler={"name": "las", "thresholds": [60.0]}, placer="first-fit",
                      record_events=True, seed=3).run()


def mixed_run(record_events: bool = True) -> Results:
    """A chat service scaling up at t=100 under inference-priority co-location preempts a training job; a job with
    two phases; a 2-device job still running at the horizon (3,000 s)."""
    times = np.arange(0.0, 400.0, 5.0)
    requests = RequestTrace(arrival=times, prompt_tokens=np.full(times.size, 200),
                            output_tokens=np.full(times.size, 20))
    spec = ServiceSpec("chat", requests, replicas=1, model=get_model("llama-3.1-8b"), device="h100", max_replicas=2,
                       load_bandwidth=16.06e9)
    jobs = [TrainingJob(0, 0.0, 2, 10_000.0, tenant="a"),
            TrainingJob(1, 10.0, 1, 500.0, tenant="b", name="phased", phases=(Phase(200.0), Phase(300.0))),
            TrainingJob(2, 20.0, 1, 50.0)]
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=2)])
    return Simulation(cluster, jobs, services=[spec], autoscaler=StepUp(), colocation="inference-priority",
                      scheduler="las", placer="first-fit", record_events=record_events, horizon=3000.0,
                      sample_interval=20.0).run()


@pytest.fixture(scope="module")
def runs() -> list[Results]:
    return [training_run(), mixed_run()]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _strict(text: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def written(results: Results, path: Path) -> dict[str, Any]:
    results.write_trace_events(path)
    return _strict(path.read_text())


def of(trace: dict[str, Any], ph: str, cat: str | None = None) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == ph and (cat is None or e.get("cat") == cat)]


def held_from_log(results: Results) -> list[tuple[int, int, float, float]]:
    """(job, device, start, end) of every held interval, read off the event log independently: each start holds its
    devices until the job's next preempt or finish, or the end of the run."""
    ev = results.events.reset_index(drop=True)
    end_time = float(results.run["end_time"])
    out = []
    for job, group in ev.groupby("job_id", sort=False):
        stops = group[group["event"].isin(["preempt", "finish"])]
        for row, (time, devices) in group.loc[group["event"] == "start", ["time", "devices"]].iterrows():
            later = stops[stops.index > row]["time"]  # the first stop logged after this start
            end = float(later.iloc[0]) if len(later) else end_time
            out += [(int(job), int(d), float(time), end) for d in devices]
    return out


# ----------------------------------------------------------------------------- the file
def test_the_file_is_valid_trace_event_json(runs: list[Results], tmp_path: Path) -> None:
    for i, results in enumerate(runs):
        trace = written(results, tmp_path / f"run{i}.json")
        assert trace["displayTimeUnit"] == "ms" and isinstance(trace["traceEvents"], list)
        assert trace["otherData"]["devices"] == results.run["devices"]
        for event in trace["traceEvents"]:
            assert event["ph"] in {"X", "M", "i", "C"}, event
            assert isinstance(event["pid"], int) and isinstance(event["tid"], int), event
            if event["ph"] != "M":
                assert event["ts"] >= 0 and math.isfinite(event["ts"]), event
            if event["ph"] == "X":
                assert event["dur"] >= 0 and event["name"], event
            if event["ph"] == "i":
                assert event["s"] in {"t", "p", "g"}, event
            if event["ph"] == "C":
                assert all(isinstance(v, (int, float)) for v in event["args"].values()), event


def test_gzip_file_holds_the_same_trace(runs: list[Results], tmp_path: Path) -> None:
    path = runs[1].write_trace_events(tmp_path / "trace.json.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert _strict(fh.read()) == _strict(json.dumps(trace_events(runs[1])))


# ----------------------------------------------------------------------------- one event per held interval
def test_one_complete_event_per_job_device_and_held_interval(runs: list[Results]) -> None:
    for results in runs:
        trace = trace_events(results)
        jobs = of(trace, "X", "job")
        got = Counter((e["args"]["job_id"], e["tid"] - 1, e["ts"], e["ts"] + e["dur"]) for e in jobs)
        expected = Counter((job, device, start * 1e6, end * 1e6) for job, device, start, end in held_from_log(results))
        assert sum(got.values()) == sum(expected.values())
        assert set(got.values()) == {1}  # no interval twice
        for (job, device, ts, end), (j2, d2, ts2, end2) in zip(sorted(got), sorted(expected), strict=True):
            assert (job, device) == (j2, d2) and ts == ts2 and end == pytest.approx(end2, rel=1e-12, abs=1e-6)
        starts = results.events[results.events["event"] == "start"]
        assert len(jobs) == sum(len(d) for d in starts["devices"])
        for event in jobs:
            assert event["name"] == f"job {event['args']['job_id']}"
    assert sum(results.jobs["preemptions"].sum() for results in runs) >= 10  # the runs do restart jobs


def test_one_complete_event_per_replica_device(runs: list[Results]) -> None:
    results = runs[1]
    replicas = of(trace_events(results), "X", "replica")
    assert len(replicas) == int(results.replicas["devices"].sum()) >= 2
    for row in results.replicas.itertuples(index=False):
        mine = [e for e in replicas if e["name"] == f"{row.service}/{row.replica}"]
        assert sorted(e["tid"] - 1 for e in mine) == sorted(row.device_indexes)
        assert all(e["ts"] == row.created * 1e6 for e in mine)


def test_durations_add_up_to_the_device_seconds_of_the_tables(runs: list[Results]) -> None:
    for results in runs:
        trace = trace_events(results)
        per_job: Counter[int] = Counter()
        for event in of(trace, "X", "job"):
            per_job[event["args"]["job_id"]] += event["dur"] / 1e6
        for job, seconds in zip(results.jobs["job_id"], results.jobs["device_seconds"], strict=True):
            assert per_job[int(job)] == pytest.approx(seconds, rel=1e-9, abs=1e-6), job
        # per device type and side, the accounting table (exact with the event log)
        acc = results.accounting.set_index(["device_type", "side"])
        assert acc["device_time_exact"].all()
        layout = {m["tid"]: m["args"]["name"] for m in of(trace, "M") if m["name"] == "thread_name"}
        for cat, side in (("job", "training"), ("replica", "inference")):
            by_type: Counter[str] = Counter()
            for event in of(trace, "X", cat):
                by_type[layout[event["tid"]].split("(")[1].rstrip(")")] += event["dur"] / 3.6e9
            for (device_type, row_side), row in acc.iterrows():
                if row_side == side:
                    assert by_type[device_type] == pytest.approx(row["device_hours"], rel=1e-9, abs=1e-9)
        # the training timeline's allocated devices, integrated over the run, is the same device time
        timeline = results.timeline
        times = np.append(timeline["time"].to_numpy(dtype=float), float(results.run["end_time"]))
        integral = float((timeline["allocated_devices"].to_numpy(dtype=float) * np.diff(times)).sum())
        assert sum(e["dur"] for e in of(trace, "X", "job")) / 1e6 == pytest.approx(integral, rel=1e-9)
    replicas = runs[1].replicas.set_index(["service", "replica"])
    for event in of(trace_events(runs[1]), "X", "replica"):
        row = replicas.loc[(event["args"]["service"], event["args"]["replica"])]
        assert event["dur"] / 1e6 * row["devices"] == pytest.approx(row["held_device_seconds"], rel=1e-9)


def test_no_two_complete_events_overlap_on_a_device_row(runs: list[Results]) -> None:
    for results in runs:
        rows: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for event in of(trace_events(results), "X"):
            rows.setdefault((event["pid"], event["tid"]), []).append((event["ts"], event["ts"] + event["dur"]))
        end = float(results.run["end_time"]) * 1e6
        for spans in rows.values():
            spans.sort()
            for (_, first_end), (second_start, _) in itertools.pairwise(spans):
                assert second_start >= first_end - 1e-3  # microseconds: a nanosecond of rounding
            assert spans[-1][1] <= end * (1 + 1e-12)
        assert len({tid for _, tid in rows}) == len(rows)  # a device is on one node only


def test_metadata_names_every_device_row_grouped_by_node(runs: list[Results]) -> None:
    for results in runs:
        trace = trace_events(results)
        threads = {(m["pid"], m["tid"]): m["args"]["name"] for m in of(trace, "M") if m["name"] == "thread_name"}
        processes = {m["pid"]: m["args"]["name"] for m in of(trace, "M") if m["name"] == "process_name"}
        assert len(threads) == results.run["devices"]
        assert sum(name.startswith("node ") for name in processes.values()) == results.run["nodes"]
        for event in of(trace, "X") + [e for e in of(trace, "i") if e["s"] == "t"]:
            assert (event["pid"], event["tid"]) in threads, event
        # devices are numbered pool by pool, node by node: each node's devices are consecutive and share its pid
        devices_per_node = Counter(pid for pid, _ in threads)
        sizes = [p["devices_per_node"] for p in results.run["pools"] for _ in range(p["nodes"])]
        assert [devices_per_node[pid] for pid in sorted(devices_per_node)] == sizes
        for (pid, tid), name in threads.items():
            assert name.startswith(f"device {tid - 1} (") and pid in processes


def test_preemptions_and_phases_are_instant_events_on_the_devices_held(runs: list[Results]) -> None:
    for results in runs:
        trace = trace_events(results)
        held = held_from_log(results)
        preempts = of(trace, "i", "preempt")
        log = results.events[results.events["event"] == "preempt"]
        expected = Counter()
        for time, job in zip(log["time"], log["job_id"], strict=True):
            for j, device, _, end in held:
                if j == job and end == time:
                    expected[(int(job), device, time * 1e6)] += 1
        assert Counter((e["args"]["job_id"], e["tid"] - 1, e["ts"]) for e in preempts) == expected
        assert len(preempts) >= len(log) > 0
    phased = [e for e in of(trace_events(runs[1]), "X", "job") if e["args"]["job_id"] == 1]
    # preempted in phase 0, then ran through both
    assert [e["args"]["phase"] for e in sorted(phased, key=lambda e: e["ts"])] == [0, "0-1"]
    (change,) = of(trace_events(runs[1]), "i", "phase")
    assert change["args"] == {"job_id": 1, "phase": 1}
    assert change["ts"] == float(runs[1].events.query("event == 'phase'")["time"].iloc[0]) * 1e6
    # still running at the horizon: its interval ends at the end of the run
    (ended,) = {e["args"]["ended_by"] for e in of(trace_events(runs[1]), "X", "job") if e["args"]["job_id"] == 0}
    assert ended == "end"


def test_counters_come_from_the_timelines_and_replica_samples(runs: list[Results]) -> None:
    results = runs[1]
    trace = trace_events(results)
    counters = of(trace, "C")
    samples = [c for c in counters if c["name"].startswith("replica ")]
    assert len(samples) == len(results.replica_samples) > 0
    assert sum(c["args"]["queued"] for c in samples) == int(results.replica_samples["queued_requests"].sum())
    assert len([c for c in counters if c["name"] == "replicas"]) == len(results.replica_timeline)
    assert len([c for c in counters if c["name"] == "jobs"]) == len(results.timeline)


def test_a_failures_table_becomes_instant_events(runs: list[Results]) -> None:
    results = runs[0]
    results.failures = pd.DataFrame({"time": [5.0, 7.0, 9.0], "device": [9, np.nan, np.nan],  # type: ignore[attr-defined]
                                     "node": [np.nan, 1.0, np.nan], "kind": ["gpu-fault", "node-down", "link"]})
    try:
        marks = of(trace_events(results), "i", "failure")
        assert [(e["name"], e["s"], e["ts"]) for e in marks] == [("gpu-fault", "t", 5e6), ("node-down", "p", 7e6),
                                                                ("link", "g", 9e6)]
        assert (marks[0]["pid"], marks[0]["tid"]) == (3, 10) and marks[1]["pid"] == 2  # device 9: node 2 (a100)
        results.failures = pd.DataFrame({"time": [1.0], "device": [99]})  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"device 99 .* not in the run's cluster of 10 devices"):
            trace_events(results)
    finally:
        del results.failures  # type: ignore[attr-defined]
    assert not of(trace_events(results), "i", "failure")  # and none are invented without the table


# ----------------------------------------------------------------------------- CLI and bad input
def test_cli_flag_writes_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 5\ncluster: {preset: dgx-h100, nodes: 2}\nworkload:\n  training:\n    jobs: 60\n"
                      "    interarrival: {dist: exponential, mean: 60}\n"
                      "policy: {scheduler: las, placer: consolidate}\n")
    path = tmp_path / "traces" / "run.json"
    assert main(["run", str(config), "-o", str(tmp_path / "out"), "--trace-events", str(path)]) == 0
    assert f"trace events written to {path}" in capsys.readouterr().out
    trace = _strict(path.read_text())
    events = pd.read_csv(tmp_path / "out" / "events.csv")  # the flag keeps the event log
    starts = events[events["event"] == "start"]
    assert len(of(trace, "X", "job")) == sum(len(d.strip("()").rstrip(",").split(",")) for d in starts["devices"]) > 0


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_unwritable_paths_are_refused_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     where: str, runs: list[Results]) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path if where == "directory" else tmp_path / "file.txt" / "trace.json"
    with pytest.raises(ConfigError, match=r"trace events file .*(is a directory|is a file, not a folder)"):
        runs[1].write_trace_events(path)
    assert main(["run", "--trace-events", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trace events file" in err
    assert not (tmp_path / "out").exists()  # refused before the (default scenario's) run


def test_runs_without_the_device_record_are_refused(runs: list[Results]) -> None:
    with pytest.raises(ConfigError, match="record_events=True"):
        trace_events(mixed_run(record_events=False))
    serving_only = Simulation(Cluster([PoolSpec("h100", nodes=1, devices_per_node=2)]), [],
                              services=[ServiceSpec("chat", RequestTrace(arrival=np.array([0.0, 1.0]),
                                                                         prompt_tokens=np.array([10, 10]),
                                                                         output_tokens=np.array([5, 5])),
                                                    replicas=2, model=get_model("llama-3.1-8b"), device="h100")]).run()
    assert len(of(trace_events(serving_only), "X", "replica")) == 2  # no job held a device: no log needed
    results = runs[1]
    pools = results.run.pop("pools")
    try:
        with pytest.raises(ConfigError, match="no device layout"):
            trace_events(results)
        results.run["pools"] = []
        with pytest.raises(ConfigError, match="no device layout"):
            trace_events(results)
    finally:
        results.run["pools"] = pools


# ----------------------------------------------------------------------------- Gantt
def test_gantt_draws_one_bar_per_held_interval(runs: list[Results]) -> None:
    for results in runs:
        intervals = device_intervals(results)
        ax = plot_gantt(results)
        bars = ax.patches
        assert len(bars) == len(intervals) == len(of(trace_events(results), "X"))
        assert sorted((round(b.get_x(), 6), round(b.get_y() + b.get_height() / 2)) for b in bars) == sorted(
            (round(s, 6), d) for s, d in zip(intervals["start"], intervals["device"], strict=True))
        assert ax.get_ylim() == (results.run["devices"] - 0.5, -0.5)
        assert ax.figure is not None
    hatched = [b for b in plot_gantt(runs[1]).patches if b.get_hatch()]
    assert len(hatched) == int(runs[1].replicas["devices"].sum())


def test_gantt_refuses_a_large_run_and_points_at_the_trace_file(runs: list[Results]) -> None:
    count = len(device_intervals(runs[0]))
    with pytest.raises(ConfigError, match=f"{count:,} device intervals, more than max_bars=10.*--trace-events"):
        plot_gantt(runs[0], max_bars=10)
    assert len(plot_gantt(runs[0], max_bars=count).patches) == count
