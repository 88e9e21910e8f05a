"""Results of a run as tidy tables (one row per job, per time sample) plus a nested summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.errors import ConfigError
from sim.output.accounting import summarize
from sim.output.schema import TABLES
from sim.output.trace_events import write_trace_events

NOT_ARRIVED = "not_arrived"
"""The status of a job or request of the workload that had not arrived when the run stopped at its horizon."""
AFTER_HORIZON = "arrives after the horizon"

RUN_TABLES = tuple(TABLES)
"""The tables a run writes (``Results.save``), each as NAME.csv when the run has it; their columns are declared
in ``sim.output.schema``."""
RUN_FILES = ("summary.json", "config.yaml", *(f"{name}.csv" for name in RUN_TABLES))
"""Every file ``Results.save`` may write: what it removes from the folder before writing."""


@dataclass
class Results:
    """What a run produced. ``jobs`` and ``timeline`` carry the run's ``scheduler``, ``placer`` and
    ``seed`` as columns, so results of several runs concatenate into one tidy table."""

    jobs: pd.DataFrame
    timeline: pd.DataFrame
    run: dict[str, Any]
    events: pd.DataFrame | None = None
    skipped_rows: int = 0
    skipped: pd.DataFrame | None = None
    """Trace rows left out under ``errors: skip`` (training trace and request traces): workload (``jobs`` or the
    service), path, line, field and reason; written as ``skipped.csv``."""
    config: dict[str, Any] | None = None
    requests: pd.DataFrame | None = None
    replicas: pd.DataFrame | None = None
    replica_timeline: pd.DataFrame | None = None
    replica_samples: pd.DataFrame | None = None
    links: pd.DataFrame | None = None
    accounting: pd.DataFrame | None = None
    """Device-hours, energy, cost and FLOPs per device type and side (``sim.output.accounting``; the jobs, requests and
    replicas tables carry the same accounting per row)."""
    services: pd.DataFrame | None = None
    """One row per inference service: device time, energy, cost, FLOPs, MFU, per 1,000 requests and per million
    tokens, and the model variant with its quality cost."""
    failures: pd.DataFrame | None = None
    """One row per outage (a device or node failing, a trace outage, a spot pool's notice and reclaim) when the run
    has a failures subsystem (``sim.failures``)."""
    written_files: tuple[str, ...] = ()
    _summary: dict[str, Any] | None = field(default=None, repr=False)

    def add_columns(self, table: str, columns: pd.DataFrame) -> None:
        """Add ``columns`` (row for row, same index) to the run's table ``table``; each must be declared in
        ``sim.output.schema`` and new to the table. The table keeps its declared column order."""
        frame = getattr(self, table)
        if frame is None:
            raise ValueError(f"this run has no {table} table to add columns to")
        clash = sorted(set(frame.columns) & set(columns.columns))
        if clash:
            raise ValueError(f"the {table} table already has the column(s) {', '.join(clash)}")
        setattr(self, table, TABLES[table].conform(pd.concat([frame, columns], axis=1), complete=False))
        self._summary = None

    def conform(self) -> None:
        """Check every table against its declaration in ``sim.output.schema`` and put its columns in declared order
        (``SchemaError`` on a column that is not declared)."""
        for name in RUN_TABLES:
            frame = getattr(self, name)
            if frame is not None:
                setattr(self, name, TABLES[name].conform(frame))

    def summary(self) -> dict[str, Any]:
        """Nested figures of the run: ``jobs.jct.p95``, ``utilization.mean``, ``makespan`` ..."""
        if self._summary is None:
            self._summary = _summarize(self)
        return self._summary

    def save(self, directory: str | Path, config: Mapping[str, Any] | None = None) -> Path:
        """Write summary.json, jobs.csv, timeline.csv, the tables this run has (events, requests, replicas,
        replica timeline and samples, links, accounting, services) and the resolved config.yaml; ``written_files``
        names them. When ``directory`` holds an earlier run (its summary.json), that run's files (``RUN_FILES``) are
        removed first, so that no table of another run is left beside this one; other files stay."""
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output folder {str(out)!r} is a file; give a folder (it is created if missing)")
        out.mkdir(parents=True, exist_ok=True)
        if (out / "summary.json").is_file():  # an earlier run's folder: none of its files may stay beside ours
            for name in RUN_FILES:
                if (out / name).is_file():
                    (out / name).unlink()
        (out / "summary.json").write_text(json.dumps(_json_safe(self.summary()), indent=2) + "\n")
        written = ["summary.json"]
        tables = {name: getattr(self, name) for name in RUN_TABLES}
        for name, table in tables.items():
            if table is not None:
                table.to_csv(out / f"{name}.csv", index=False)
                written.append(f"{name}.csv")
        config = config if config is not None else self.config
        if config is not None:
            (out / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
            written.append("config.yaml")
        self.written_files = tuple(written)
        return out

    def write_trace_events(self, path: str | Path) -> Path:
        """Write the run's device timeline (one row per device, grouped by node: the jobs and replicas that held it,
        preemptions, phase changes, queue counters) as a Chrome trace event file for Perfetto or chrome://tracing;
        ``.gz`` compresses it. Training jobs need the event log (``record_events=True``). See
        ``sim.output.trace_events``."""
        return write_trace_events(self, path)


def _stats(values: np.ndarray, quantiles: tuple[int, ...]) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"mean": math.nan, **{f"p{q}": math.nan for q in quantiles}}
    out = {"mean": float(values.mean())}
    for q, v in zip(quantiles, np.percentile(values, quantiles), strict=True):
        out[f"p{q}"] = float(v)
    return out


def _summarize(results: Results) -> dict[str, Any]:
    jobs, run = results.jobs, results.run
    finished = jobs[jobs["status"] == "finished"]
    arrival = jobs["arrival"].to_numpy(dtype=float)
    start = float(arrival.min()) if arrival.size else 0.0
    span = run["end_time"] - start
    makespan = float(finished["finish"].max() - start) if len(finished) else math.nan
    allocated = float(jobs["device_seconds"].sum())
    q = (50, 95, 99)
    return {
        "run": {k: run[k] for k in ("scheduler", "placer", "seed", "cluster", "devices", "nodes")},
        "jobs": {
            **_job_counts(jobs),
            "jct": _stats(finished["jct"].to_numpy(dtype=float), q),
            "queueing_delay": _stats(jobs["queueing_delay"].to_numpy(dtype=float), q),
            "waiting": {**_stats(jobs["waiting_seconds"].to_numpy(dtype=float), q),
                        "total": float(np.nansum(jobs["waiting_seconds"].to_numpy(dtype=float)))},
            "slowdown": {"mean": float(finished["slowdown"].mean()) if len(finished) else math.nan},
            "preemptions": int(jobs["preemptions"].sum()),
            "overhead_device_hours": float((jobs["overhead_seconds"] * jobs["gpus"] * jobs["gpu_fraction"]).sum()
                                           / 3600),
            "skipped_trace_rows": results.skipped_rows,
            "by_tenant": {str(tenant): _tenant_figures(group, run.get("quotas"), span, run.get("quota_mode"))
                          for tenant, group in jobs.groupby("tenant", sort=True)},
            "fairness": _fairness(jobs),
        },
        "makespan": makespan,
        **({"policy": dict(run["policy_report"])} if run.get("policy_report") else {}),
        "utilization": {"mean": allocated / (run["devices"] * span) if span > 0 else math.nan},
        **({"fragmentation": {"mean": _time_mean(results.timeline, "fragmentation", run["end_time"])}}
           if "fragmentation" in results.timeline else {}),
        "allocated_device_seconds": allocated,
        "simulated_seconds": span,
        "events": run["events"],
        "wall_seconds": run["wall_seconds"],
        **(_summarize_requests(results) if results.requests is not None else {}),
        **(_summarize_network(results) if results.links is not None else {}),
        **(summarize(results.accounting, results.requests) if results.accounting is not None else {}),
        **({"failures": _summarize_failures(results)} if results.failures is not None else {}),
    }


def _summarize_failures(results: Results) -> dict[str, Any]:
    """Outages, job interruptions, device-hours lost to failures and the goodput: the work kept (reference
    device-seconds) over the device time held, over all jobs that held devices."""
    jobs, failures = results.jobs, results.failures
    assert failures is not None
    held = jobs["device_seconds"].to_numpy(dtype=float)
    goodput = jobs["goodput"].to_numpy(dtype=float)
    ran = held > 0
    outages = failures[failures["kind"] != "spot-notice"]
    record = results.run.get("failures", {})
    return {"outages": len(outages), "by_kind": {str(k): int(v) for k, v in outages["kind"].value_counts().items()},
            "interruptions": int(jobs["interruptions"].sum()),
            **{key: int(record.get(key, 0)) for key in ("replicas_lost", "requests_rerouted", "requests_rejected",
                                                             "requests_reprefilled")},
            "lost_device_hours": float(jobs["lost_device_seconds"].sum() / 3600),
            "goodput": float((goodput[ran] * held[ran]).sum() / held[ran].sum()) if ran.any() else math.nan}


UNFINISHED_JOB = ("queued", "running", "preempted")


def _job_counts(jobs: pd.DataFrame) -> dict[str, int]:
    """How the jobs ended: ``count`` = completed + unschedulable + unfinished + not_arrived."""
    status = jobs["status"]
    return {"count": len(jobs), "completed": int((status == "finished").sum()),
            "unschedulable": int((status == "unschedulable").sum()),
            "unfinished": int(status.isin(UNFINISHED_JOB).sum()), "not_arrived": int((status == NOT_ARRIVED).sum())}


def _tenant_figures(jobs: pd.DataFrame, quotas: Mapping[str, Mapping[str, int]] | None,
                    span: float, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One tenant's jobs: how they ended, their JCT and slowdown (finished jobs), their waiting (every wait,
    first queueing and after preemptions) and the device-hours they held; under quotas, its nominal quota in
    devices, the share of it its jobs held on average over the run (``quota.used``, above 1 when it borrowed),
    the device-hours held above it (``quota.borrowed_device_hours``) and its jobs' preemptions by other tenants
    reclaiming their quota (``quota.reclaimed``)."""
    finished = jobs[jobs["status"] == "finished"]
    quota: dict[str, Any] = {}
    if quotas is not None:
        tenant = str(jobs["tenant"].iloc[0])
        devices = sum(quotas.get(tenant, {}).values())
        held = float(jobs["device_seconds"].sum())
        quota = {"quota": {"devices": devices, "used": held / (devices * span) if devices and span > 0 else math.nan}}
        if record is not None:
            quota["quota"]["borrowed_device_hours"] = record["borrowed_device_seconds"].get(tenant, 0.0) / 3600
            quota["quota"]["reclaimed"] = int(record["reclaims"].get(tenant, 0))
    return {**_job_counts(jobs), **quota,
            "jct": _stats(finished["jct"].to_numpy(dtype=float), (50, 95)),
            "waiting": {"mean": _mean(jobs["waiting_seconds"]),
                        "total": float(np.nansum(jobs["waiting_seconds"].to_numpy(dtype=float)))},
            "slowdown": {"mean": _mean(finished["slowdown"])},
            "device_hours": float(jobs["device_seconds"].sum()) / 3600}


def _mean(values: pd.Series) -> float:
    values = values.to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)`` of non-negative figures: 1 when all are equal, 1/n
    when one holds everything (Jain, Chiu and Hawe, DEC-TR-301, 1984); NaN for no figures or all zero."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    squares = float((values**2).sum())
    return float(values.sum()) ** 2 / (values.size * squares) if values.size and squares > 0 else math.nan


def _fairness(jobs: pd.DataFrame) -> dict[str, float]:
    """Fairness between tenants: Jain's index of their mean slowdowns (finished jobs; tenants with none left
    out), and how many tenants it covers."""
    finished = jobs[jobs["status"] == "finished"]
    slowdowns = finished.groupby("tenant", sort=True)["slowdown"].mean().to_numpy(dtype=float)
    return {"jain_slowdown": jain_index(slowdowns), "tenants": int(slowdowns.size)}


def _request_counts(requests: pd.DataFrame) -> dict[str, int]:
    """How the requests ended: ``count`` = completed + rejected + unfinished + not_arrived."""
    status = requests["status"]
    return {"count": len(requests), "completed": int((status == "finished").sum()),
            "rejected": int((status == "rejected").sum()), "unfinished": int((status == "waiting").sum()),
            "not_arrived": int((status == NOT_ARRIVED).sum())}


def _time_mean(timeline: pd.DataFrame, column: str, end: float) -> float:
    """Time-weighted mean of a piecewise-constant timeline column over [first record, end]."""
    times = timeline["time"].to_numpy(dtype=float)
    if times.size == 0 or not end > times[0]:
        return math.nan
    widths = np.diff(np.append(times, max(end, times[-1])))
    return float((timeline[column].to_numpy(dtype=float) * widths).sum() / widths.sum())


def _summarize_network(results: Results) -> dict[str, Any]:
    jobs, links = results.jobs, results.links
    assert links is not None
    ran = jobs[jobs["placement_level"] != ""]
    return {
        "network": {
            "comm_slowdown": _stats(ran["comm_slowdown"].to_numpy(dtype=float), (50, 95)),
            "placement_levels": {str(k): int(v) for k, v in ran["placement_level"].value_counts().items()},
            "links": {"mean_utilization": {"max": float(links["mean_utilization"].max()) if len(links) else 0.0},
                      "peak_utilization": {"max": float(links["peak_utilization"].max()) if len(links) else 0.0}},
            "recomputes": results.run["network"]["recomputes"],
            "recompute_ms": results.run["network"]["recompute_ms"],
        }
    }


def _summarize_requests(results: Results) -> dict[str, Any]:
    table, replicas = results.requests, results.replicas
    assert table is not None and replicas is not None
    req = table[table["status"] != NOT_ARRIVED]  # the latency and SLO figures are of the requests that arrived
    done = req[req["status"] == "finished"]
    rejected = req[req["status"] == "rejected"]
    q = (50, 90, 99)
    span = float(req["arrival"].max() - req["arrival"].min()) if len(req) > 1 else math.nan
    end = float(done["finish"].max()) if len(done) else math.nan
    window = end - float(req["arrival"].min()) if len(done) else math.nan
    return {
        "requests": {
            **_request_counts(table),
            "rejected_reasons": dict(sorted(Counter(str(r).partition(":")[0] for r in rejected["reason"]).items())),
            "by_service": {str(name): _request_counts(group) for name, group in table.groupby("service", sort=False)},
            "exceeds_max_context": int(results.run.get("exceeds_max_context", 0)),
            "ttft": _stats(done["ttft"].to_numpy(dtype=float), q),
            "tpot": _stats(done["tpot"].to_numpy(dtype=float), q),
            "e2e": _stats(done["e2e"].to_numpy(dtype=float), q),
            "queueing_delay": _stats(done["queueing_delay"].to_numpy(dtype=float), (99,)),
            "slo_attainment": float(req["slo_met"].mean()) if len(req) else math.nan,
            "goodput": float(req["slo_met"].sum()) / window if window and window > 0 else math.nan,
            "arrival_span": span,
            **({"prefix_cache": _prefix_cache(replicas, done)} if "prefix_hits" in replicas else {}),
        },
        "replicas": {"count": len(replicas), "utilization": {"mean": float(replicas["busy_fraction"].mean())},
                     "scale_ups_blocked": results.run.get("scale_ups_blocked", 0),
                     "training_preemptions_caused": results.run.get("training_preemptions_caused", 0)},
    }


def _prefix_cache(replicas: pd.DataFrame, done: pd.DataFrame) -> dict[str, float]:
    """Prefix caching over the replicas that have it: lookups, hits, hit rate (hits over lookups), prompt tokens
    read from the caches instead of prefilled, the share of the finished requests' prompt tokens read from a cache,
    and cached tokens evicted."""
    cached = replicas[replicas["prefix_hits"].notna()]
    lookups, hits = int(cached["prefix_lookups"].sum()), int(cached["prefix_hits"].sum())
    saved = int(cached["prefill_tokens_saved"].sum())
    served = done[done["cached_tokens"].notna()]  # finished on a prefix-caching service
    prompts = float(served["prompt_tokens"].sum())
    return {"lookups": lookups, "hits": hits, "hit_rate": hits / lookups if lookups else math.nan,
            "prefill_tokens_saved": saved,
            "saved_fraction": float(served["cached_tokens"].sum()) / prompts if prompts > 0 else math.nan,
            "evicted_tokens": int(cached["prefix_evicted_tokens"].sum())}


def summary_value(summary: Mapping[str, Any], dotted: str) -> Any:
    """The figure at ``dotted`` (``requests.ttft.p99``) of a run's summary; NaN when the run has no such figure."""
    node: Any = summary
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return math.nan
        node = node[part]
    return math.nan if node is None else node


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.integer, np.floating)):
        return _json_safe(value.item())
    return value
