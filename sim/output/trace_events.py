"""A finished run's device timeline in the Chrome trace event format, for Perfetto (ui.perfetto.dev) or
chrome://tracing.

The format is the JSON object ``{"traceEvents": [...], "displayTimeUnit": "ms"}`` of Google's "Trace Event Format"
document (docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h9I0nSKTMghFUHQ), with times in microseconds
(simulated seconds times 1e6). What a run gives:

- one process (``pid``) per node and one thread (``tid``, the global device index + 1) per device, named by
  ``"M"`` metadata events (``process_name``, ``thread_name`` and their sort indexes), so a viewer shows one row per
  device, grouped by node;
- on each device's row, one ``"X"`` complete event per held interval: per training job, each run between a start
  and the preemption or finish that ended it (or the end of the run), on each of the devices it started on, from the
  event log; per inference replica, its life from ``created`` to ``retired`` (or the end), on each of its devices.
  ``device_intervals`` gives the same intervals as a table. Fractional jobs sharing a device overlap on its row,
  each with its ``gpu_fraction`` in its args, and so do the two jobs of a packed pair (``sim.training.packing``: a
  job packed onto another's devices holds them from its ``pack`` event);
- ``"i"`` instant events on the rows of the devices concerned: preemptions, phase changes, packings (``pack``: a job
  joins another on its devices) and unpackings (``unpack``: its partner left, the job runs alone) of jobs (from the
  event log) and, when the results carry a ``failures`` table, its rows (``time``, plus ``device`` or ``devices`` or
  ``node``; the other columns become the event's args);
- ``"C"`` counter events: the training side's queued and running jobs and allocated devices (the timeline table),
  each service's ready, provisioning and draining replicas (replica_timeline) and each replica's queued and running
  requests (replica_samples), one counter track per process.

Training intervals need the event log (``Simulation(record_events=True)``, ``sim.record_events: true``; ``gpusim
run --trace-events`` sets it): without it the results say how long each job held devices but not which ones, and
this module does not guess. A run in which no job ever held a device needs no log.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.errors import ConfigError


class TimelineSource(Protocol):
    """What the timeline reads of a finished run (``sim.output.results.Results`` is one): its record, the jobs,
    events, replicas and timeline tables, and optionally a ``failures`` table (read with ``getattr``)."""

    run: dict[str, Any]
    jobs: pd.DataFrame
    timeline: pd.DataFrame
    events: pd.DataFrame | None
    replicas: pd.DataFrame | None
    replica_timeline: pd.DataFrame | None
    replica_samples: pd.DataFrame | None


US = 1e6
"""Trace times are microseconds; simulated times are seconds."""
HOLDS = ("start", "pack")
"""Event-log kinds that begin a job's hold on its devices (alone, or packed with the job already on them)."""
RELEASES = ("preempt", "fail", "finish")
"""Event-log kinds that end a running job's hold on its devices."""
MARKS = ("preempt", "phase", "pack", "unpack")
"""Event-log kinds drawn as instant events on the devices the job holds (or held until that instant)."""
INTERVAL_COLUMNS = ("device", "start", "end", "kind", "label", "job_id", "service", "replica", "ended_by")


def device_layout(results: TimelineSource) -> pd.DataFrame:
    """One row per device of the run's cluster: ``device`` (global index), ``node``, ``pool`` and ``device_type``,
    from the run record's ``pools`` (devices are numbered pool by pool, node by node)."""
    pools = results.run.get("pools")
    if not pools:
        raise ConfigError("the results have no device layout (run record key 'pools'): they were not built by "
                          "sim.engine.Simulation.run(), so no device timeline can be drawn")
    rows: dict[str, list[Any]] = {"device": [], "node": [], "pool": [], "device_type": []}
    node = 0
    for pool in pools:
        for _ in range(int(pool["nodes"])):
            for _ in range(int(pool["devices_per_node"])):
                rows["device"].append(len(rows["device"]))
                rows["node"].append(node)
                rows["pool"].append(str(pool["name"]))
                rows["device_type"].append(str(pool["device"]))
            node += 1
    if not rows["device"]:
        raise ConfigError("the run's cluster has no devices: there is no device timeline to draw")
    return pd.DataFrame(rows)


def device_intervals(results: TimelineSource) -> pd.DataFrame:
    """Who held which device when: one row per (holder, device, held interval), ordered by device and start.

    Columns: ``device``, ``start`` and ``end`` (s), ``kind`` (``job`` or ``replica``), ``label`` (``job 7``,
    ``chat/0``), ``job_id`` (-1 for replicas), ``service`` and ``replica`` (empty and -1 for jobs) and ``ended_by``
    (``preempt``, ``finish``, ``retired`` or ``end`` when still held at the end of the run). Per job the durations
    add up to the jobs table's ``device_seconds`` (plus, for a job that ran packed, the half of its devices' time its
    packed stretches were not charged: ``packed_seconds`` times its gang over 2), per replica to its
    ``held_device_seconds``."""
    end = float(results.run["end_time"])
    rows = list(_job_intervals(results, end)) + list(_replica_intervals(results, end))
    table = pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))
    return table.sort_values(["device", "start", "end"], kind="stable").reset_index(drop=True)


def _needs_log(results: TimelineSource) -> bool:
    return bool((results.jobs["device_seconds"].to_numpy(dtype=float) > 0).any())


def _job_intervals(results: TimelineSource, end: float) -> Iterator[tuple[Any, ...]]:
    events = results.events
    if events is None:
        if _needs_log(results):
            raise ConfigError("the device timeline needs the run's event log (which devices each job held): run with "
                              "Simulation(..., record_events=True), or sim.record_events: true in the config "
                              "(gpusim run --trace-events sets it)")
        return
    held: dict[int, tuple[float, tuple[int, ...]]] = {}
    for time, kind, job_id, devices in zip(events["time"], events["event"], events["job_id"], events["devices"],
                                           strict=True):
        job = int(job_id)
        if kind in HOLDS:
            if job in held:
                raise ConfigError(f"event log: job {job} starts at {time} while it still holds devices since "
                                  f"{held[job][0]} (does a log kind other than {', '.join(RELEASES)} release them?)")
            held[job] = (float(time), tuple(int(d) for d in devices))
        elif kind in RELEASES and job in held:
            since, on = held.pop(job)
            yield from _job_rows(job, since, float(time), on, str(kind))
    for job, (since, on) in held.items():
        yield from _job_rows(job, since, end, on, "end")


def _job_rows(job: int, start: float, end: float, devices: tuple[int, ...], ended_by: str) -> Iterator[tuple[Any, ...]]:
    for device in devices:
        yield device, start, end, "job", f"job {job}", job, "", -1, ended_by


def _replica_intervals(results: TimelineSource, end: float) -> Iterator[tuple[Any, ...]]:
    replicas = results.replicas
    if replicas is None or replicas.empty:
        return
    for service, replica, devices, created, retired in zip(_service_labels(replicas), replicas["replica"],
                                                          replicas["device_indexes"], replicas["created"],
                                                          replicas["retired"], strict=True):
        stop = end if math.isnan(retired) else float(retired)
        for device in devices:
            yield (int(device), float(created), stop, "replica", f"{service}/{replica}", -1, str(service), int(replica),
                   "end" if math.isnan(retired) else "retired")


def _service_labels(replicas: pd.DataFrame) -> list[str]:
    """Each replica's service, with its pool for a disaggregated service (``chat/prefill``, as the replica timeline
    and samples name it)."""
    if "role" not in replicas:
        return [str(s) for s in replicas["service"]]
    return [f"{s}/{r}" if r else str(s) for s, r in zip(replicas["service"], replicas["role"], strict=True)]


def trace_events(results: TimelineSource) -> dict[str, Any]:
    """The run as a Chrome trace (module docstring): ``{"traceEvents": [...], "displayTimeUnit": "ms",
    "otherData": {...}}``, ready for ``json.dump``."""
    layout = device_layout(results)
    intervals = device_intervals(results)
    known = set(layout["device"])
    strange = sorted(set(intervals["device"]) - known)
    if strange:
        raise ConfigError(f"the results name devices {strange[:5]} that the run's cluster of {len(known)} devices "
                          "does not have")
    nodes = int(layout["node"].max()) + 1
    events: list[dict[str, Any]] = []
    events += _metadata(layout)
    events += _complete_events(results, intervals, layout)
    events += _instants(results, layout)
    events += _counters(results, first_pid=nodes + 1)
    run = results.run
    other = {key: _plain(run[key]) for key in ("scheduler", "placer", "seed", "cluster", "devices", "nodes",
                                                "end_time") if key in run}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_trace_events(results: TimelineSource, path: str | Path) -> Path:
    """Write ``trace_events(results)`` as JSON to ``path`` (gzip-compressed when it ends in ``.gz``, which Perfetto
    opens as well), creating missing folders; returns the path. An unwritable path is a ``ConfigError`` naming it."""
    out = check_trace_path(path)
    text = json.dumps(trace_events(results), separators=(",", ":"), allow_nan=False)
    try:
        if out.suffix == ".gz":
            with gzip.open(out, "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the trace events file {str(out)!r}: {exc.strerror or exc}") from None
    return out


def check_trace_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` when a trace events file can be written there (its folder is created if missing);
    otherwise a ``ConfigError`` that names it and says why. ``gpusim run --trace-events`` checks before running."""
    out = Path(path)
    where = f"trace events file {str(out)!r}"
    if out.is_dir():
        raise ConfigError(f"{where} is a directory; give a file name such as {str(out / 'trace.json')!r}")
    for part in out.parents:
        if part.exists() and not part.is_dir():
            raise ConfigError(f"{where}: {str(part)!r} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create its folder: {exc.strerror or exc}") from None
    existed = out.exists()
    try:
        with open(out, "ab"):  # the one sure test (root passes os.access everywhere); appending changes nothing
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the {where}: {exc.strerror or exc}") from None
    if not existed:
        out.unlink()
    return out


def _pid(node: int) -> int:
    return node + 1


def _tid(device: int) -> int:
    return device + 1


def _metadata(layout: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node, group in layout.groupby("node", sort=True):
        pid = _pid(int(node))
        pool = str(group["pool"].iloc[0])
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"node {node} ({pool})"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": int(node)}})
        for device, device_type in zip(group["device"], group["device_type"], strict=True):
            tid = _tid(int(device))
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                        "args": {"name": f"device {device} ({device_type})"}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                        "args": {"sort_index": int(device)}})
    return out


def _complete_events(results: TimelineSource, intervals: pd.DataFrame, layout: pd.DataFrame) -> list[dict[str, Any]]:
    node_of = layout["node"].to_numpy()
    type_of = layout["device_type"].to_numpy()
    table = results.jobs
    fractions = table["gpu_fraction"] if "gpu_fraction" in table else [1.0] * len(table)
    jobs = {int(j): (str(name), str(tenant), int(gpus), float(share)) for j, name, tenant, gpus, share in zip(
        table["job_id"], table["name"], table["tenant"], table["gpus"], fractions, strict=True)}
    replicas: dict[tuple[str, int], tuple[int, str, Any]] = {}
    if results.replicas is not None:
        table = results.replicas
        replicas = {(s, int(r)): (int(n), str(m), _plain(ready)) for s, r, n, m, ready in zip(
            _service_labels(table), table["replica"], table["devices"], table["model"], table["ready"], strict=True)}
    phases = _phase_counts(results)
    args_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
    out = []
    for device, start, end, kind, label, job, service, replica, ended_by in intervals.itertuples(index=False):
        device_type = type_of[device]
        key = (kind, job, service, replica, start, ended_by, device_type)
        args = args_cache.get(key)
        if args is None:
            if kind == "job":
                name, tenant, gang, share = jobs[job]  # a fractional job shares its device's row with others
                args = {"job_id": job, **({"name": name} if name else {}), "tenant": tenant, "gang": gang,
                        **({"gpu_fraction": share} if share != 1.0 else {}),
                        "device_type": device_type, "ended_by": ended_by, **_phase_arg(phases, job, start, end)}
            else:
                devices, model, ready = replicas[(service, replica)]
                args = {"service": service, "replica": replica, "devices": devices, "model": model, "ready": ready,
                        "device_type": device_type, "ended_by": ended_by}
            args_cache[key] = args
        ts = start * US
        out.append({"ph": "X", "name": label, "cat": kind, "pid": _pid(int(node_of[device])), "tid": _tid(device),
                    "ts": ts, "dur": end * US - ts, "args": args})
    return out


def _phase_arg(phases: dict[int, list[float]] | None, job: int, start: float, end: float) -> dict[str, Any]:
    """``{"phase": k}`` (or ``"k-m"`` when it changed during the interval) for a job whose phase changed in the run;
    nothing for other jobs."""
    if phases is None or job not in phases:
        return {}
    first = sum(1 for t in phases[job] if t <= start)
    last = sum(1 for t in phases[job] if t <= end)
    return {"phase": first if first == last else f"{first}-{last}"}


def _phase_counts(results: TimelineSource) -> dict[int, list[float]] | None:
    """Per job with phase changes in the event log, the times of its changes (phase k starts at the k-th)."""
    events = results.events
    if events is None:
        return None
    changes = events[events["event"] == "phase"]
    out: dict[int, list[float]] = {}
    for time, job in zip(changes["time"], changes["job_id"], strict=True):
        out.setdefault(int(job), []).append(float(time))
    return out


def _instants(results: TimelineSource, layout: pd.DataFrame) -> list[dict[str, Any]]:
    node_of = layout["node"].to_numpy()
    out: list[dict[str, Any]] = []
    events = results.events
    if events is not None:
        held: dict[int, tuple[int, ...]] = {}
        phase: dict[int, int] = {}
        for time, kind, job_id, devices in zip(events["time"], events["event"], events["job_id"], events["devices"],
                                               strict=True):
            job = int(job_id)
            if kind in HOLDS:
                held[job] = tuple(int(d) for d in devices)
            if kind in MARKS:
                if kind == "phase":
                    phase[job] = phase.get(job, 0) + 1
                name = {"preempt": f"preempt job {job}", "pack": f"job {job} packed",
                        "unpack": f"job {job} alone"}.get(str(kind)) or f"job {job} phase {phase[job]}"
                args = {"job_id": job, **({"phase": phase[job]} if kind == "phase" else {})}
                for device in held.get(job, ()):
                    out.append({"ph": "i", "s": "t", "name": name, "cat": str(kind), "pid": _pid(int(node_of[device])),
                                "tid": _tid(device), "ts": float(time) * US, "args": args})
            if kind in RELEASES:
                held.pop(job, None)
    failures = getattr(results, "failures", None)
    if isinstance(failures, pd.DataFrame):
        out += _failure_instants(failures, layout)
    return out


def _failure_instants(failures: pd.DataFrame, layout: pd.DataFrame) -> list[dict[str, Any]]:
    """Instant events from a ``failures`` table: one per row and device named (``device`` or ``devices``), per node
    (``node``, process-wide) or, naming neither (a leaf's or pod's link: no devices, node -1), one global event."""
    if "time" not in failures:
        raise ConfigError("the failures table has no 'time' column: its rows cannot be placed on the timeline")
    node_of = layout["node"].to_numpy()
    out: list[dict[str, Any]] = []
    for row in failures.to_dict("records"):
        name = str(row.get("kind") or row.get("event") or "failure")
        args = {str(k): _plain(v) for k, v in row.items() if k != "time"}
        base = {"ph": "i", "name": name, "cat": "failure", "ts": float(row["time"]) * US, "args": args}
        devices: Any = row.get("devices", row.get("device"))
        if isinstance(devices, (tuple, list, np.ndarray)) and len(devices) == 0:
            devices = None  # a leaf's or pod's link: no device, no node (node -1)
        node = row.get("node")
        if node is not None and not (isinstance(node, float) and math.isnan(node)) and int(node) < 0:
            row["node"] = None
        if devices is not None and not (isinstance(devices, float) and math.isnan(devices)):
            for device in (devices if isinstance(devices, (tuple, list, np.ndarray)) else (devices,)):
                d = int(device)
                if not 0 <= d < node_of.size:
                    raise ConfigError(f"failures table: device {d} at time {row['time']} is not in the run's cluster "
                                      f"of {node_of.size} devices")
                out.append({**base, "s": "t", "pid": _pid(int(node_of[d])), "tid": _tid(d)})
        elif row.get("node") is not None and not (isinstance(row["node"], float) and math.isnan(row["node"])):
            out.append({**base, "s": "p", "pid": _pid(int(row["node"])), "tid": 0})
        else:
            out.append({**base, "s": "g", "pid": 0, "tid": 0})
    return out


def _counters(results: TimelineSource, first_pid: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pid = first_pid
    timeline = results.timeline
    out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "training"}})
    out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": -2}})
    for time, queued, running, allocated in zip(timeline["time"], timeline["queued_jobs"], timeline["running_jobs"],
                                                timeline["allocated_devices"], strict=True):
        ts = float(time) * US
        out.append({"ph": "C", "name": "jobs", "pid": pid, "tid": 0, "ts": ts,
                    "args": {"queued": int(queued), "running": int(running)}})
        out.append({"ph": "C", "name": "allocated devices", "pid": pid, "tid": 0, "ts": ts,
                    "args": {"devices": int(allocated)}})
    services = list(dict.fromkeys(_service_labels(results.replicas))) if results.replicas is not None else []
    for service in services:
        pid += 1
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"service {service}"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": -1}})
        counts = results.replica_timeline
        if counts is not None:
            mine = counts[counts["service"] == service]
            for time, ready, provisioning, draining in zip(mine["time"], mine["ready"], mine["provisioning"],
                                                           mine["draining"], strict=True):
                out.append({"ph": "C", "name": "replicas", "pid": pid, "tid": 0, "ts": float(time) * US,
                            "args": {"ready": int(ready), "provisioning": int(provisioning),
                                     "draining": int(draining)}})
        samples = results.replica_samples
        if samples is not None:
            mine = samples[samples["service"] == service]
            for time, replica, queued, running in zip(mine["time"], mine["replica"], mine["queued_requests"],
                                                      mine["running_requests"], strict=True):
                out.append({"ph": "C", "name": f"replica {replica} requests", "pid": pid, "tid": 0,
                            "ts": float(time) * US, "args": {"queued": int(queued), "running": int(running)}})
    return out


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy numbers as Python ones, NaN and infinities as None, other objects as text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
