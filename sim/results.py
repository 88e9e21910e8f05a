"""Results of a run as tidy tables (one row per job, per time sample) plus a nested summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from sim.accounting import account, summarize
from sim.errors import ConfigError
from sim.hardware import get_device
from sim.network.model import NetworkModel
from sim.random import seed_label
from sim.serving.profiled_step import ProfiledStepCost
from sim.serving.service import FixedService, ServiceRuntime

if TYPE_CHECKING:
    from sim.engine import Simulation

NOT_ARRIVED = "not_arrived"
"""The status of a job or request of the workload that had not arrived when the run stopped at its horizon."""
AFTER_HORIZON = "arrives after the horizon"

RUN_TABLES = ("jobs", "timeline", "events", "requests", "replicas", "replica_timeline", "replica_samples", "links",
              "accounting", "services", "skipped")
"""The tables a run writes (``Results.save``), each as NAME.csv when the run has it."""
RUN_FILES = ("summary.json", "config.yaml", *(f"{name}.csv" for name in RUN_TABLES))
"""Every file ``Results.save`` may write: what it removes from the folder before writing."""

JOB_COLUMNS = (
    "job_id", "name", "tenant", "gpus", "duration", "arrival", "first_start", "finish", "queueing_delay",
    "jct", "slowdown", "status", "reason", "device_type", "pool", "preemptions", "overhead_seconds", "device_seconds",
)


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
    """Device-hours, energy, cost and FLOPs per device type and side (``sim.accounting``; the jobs, requests and
    replicas tables carry the same accounting per row)."""
    services: pd.DataFrame | None = None
    """One row per inference service: device time, energy, cost, FLOPs, MFU, per 1,000 requests and per million
    tokens, and the model variant with its quality cost."""
    written_files: tuple[str, ...] = ()
    _summary: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_simulation(cls, sim: Simulation, *, wall_seconds: float) -> Results:
        cluster = sim.cluster
        run = {
            "scheduler": sim.scheduler.name,
            "placer": sim.placer.name,
            "scheduler_params": sim.scheduler.describe(),
            "placer_params": sim.placer.describe(),
            "seed": sim.metadata.get("seed", int(sim.streams.root.entropy) if isinstance(
                sim.streams.root.entropy, int) else str(sim.streams.root.entropy)),
            "cluster": cluster.name,
            "devices": cluster.num_devices,
            "nodes": cluster.num_nodes,
            "end_time": sim.end_time,
            "restore_seconds": sim.preemption.total,  # what each resume after a preemption costs (at most)
            "events": sim.events,
            "wall_seconds": wall_seconds,
            **{k: v for k, v in sim.metadata.items() if k != "seed"},
        }
        jobs = _jobs_table(sim)
        times, allocated, queued, running = sim.timeline
        timeline = pd.DataFrame({
            "time": np.asarray(times, dtype=float),
            "allocated_devices": np.asarray(allocated, dtype=np.int64),
            "utilization": np.asarray(allocated, dtype=float) / cluster.num_devices,
            "queued_jobs": np.asarray(queued, dtype=np.int64),
            "running_jobs": np.asarray(running, dtype=np.int64),
        })
        if sim.track_fragmentation:
            timeline["fragmentation"] = [share for share, _ in sim.fragmentation_samples]
            for size in (sim.fragmentation_samples[0][1] if sim.fragmentation_samples else {}):
                timeline[f"gangs_{size}"] = [gangs[size] for _, gangs in sim.fragmentation_samples]
        events = None
        if sim.event_log is not None:
            events = pd.DataFrame(sim.event_log, columns=["time", "event", "job_id", "devices"])
        seed = seed_label(run["seed"])  # an int, or {entropy, spawn_key} of a SeedSequence
        for table in (jobs, timeline):
            table["scheduler"] = run["scheduler"]
            table["placer"] = run["placer"]
            table["seed"] = seed
        skipped_rows = [("jobs", row) for row in (sim.trace.skipped if sim.trace is not None else ())]
        skipped_rows += [(service.spec.name, row) for service in sim.services for row in service.spec.requests.skipped]
        skipped_table = pd.DataFrame(
            [(source, row.path, row.line, row.field, row.reason) for source, row in skipped_rows],
            columns=["workload", "path", "line", "field", "reason"]) if skipped_rows else None
        skipped = len(sim.trace.skipped) if sim.trace is not None else 0
        requests = replicas = None
        replica_timeline = replica_samples = None
        if sim.services:
            requests, replicas = _requests_table(sim), _replicas_table(sim)
            replica_timeline = pd.DataFrame(sim.replica_timeline,
                                            columns=["time", "service", "ready", "provisioning", "draining"])
            replica_samples = pd.DataFrame(sim.replica_samples, columns=["time", "service", "replica", "queued",
                                                                         "running", "kv_utilization"])
            for table in (requests, replicas):
                table["router"] = sim.router.name
                table["seed"] = seed
            run["router"] = sim.router.name
            run["autoscaler"] = sim._autoscalers[0].name if sim._autoscalers else "static"
            run["colocation"] = sim.colocation.name
            run["scale_ups_blocked"] = sum(state.blocked for state in sim._scaling)
            run["preempted_for_inference"] = sim.preempted_for_inference
            run["exceeds_max_context"] = sum(service.log.over_context for service in sim.services)
            run["slo"] = {service.spec.name: {"ttft": service.spec.slo_ttft, "tpot": service.spec.slo_tpot}
                          for service in sim.services}
            run["step_factors"] = {service.spec.name: _factors_record(service) for service in sim.services
                                   if service.factors is not None}
        links = None
        if sim.network is not None:
            network = sim.network
            jobs["placement_level"] = [r.network_level for r in sim.records]
            jobs["comm_slowdown"] = [r.slowdown_seconds / r.network_seconds if r.network_seconds > 0 else math.nan
                                     for r in sim.records]
            links = network.topology.links_table()
            links["mean_utilization"] = network.link_utilization(sim.end_time)
            links["peak_utilization"] = network.peak_load / network.topology.link_capacity
            recompute = np.asarray(network.recomputes, dtype=float) * 1e3
            run["network"] = {"contention": network.options.contention, "demand": network.options.demand,
                              "comm_fraction": network.options.comm_fraction, "recomputes": int(recompute.size),
                              "recompute_ms": {"p50": float(np.median(recompute)) if recompute.size else math.nan,
                                               "p99": float(np.percentile(recompute, 99)) if recompute.size
                                               else math.nan}}
        results = cls(jobs=jobs, timeline=timeline, run=run, events=events, skipped_rows=skipped, skipped=skipped_table,
                      requests=requests,
                      replicas=replicas, replica_timeline=replica_timeline, replica_samples=replica_samples,
                      links=links)
        accounted = account(results, cluster, **sim.accounting.kwargs())
        results.accounting, results.jobs = accounted.table, accounted.jobs
        results.replicas, results.requests, results.services = (accounted.replicas, accounted.requests,
                                                                accounted.services)
        return results

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


def _jobs_table(sim: Simulation) -> pd.DataFrame:
    records = sim.records
    cluster = sim.cluster
    rows = {
        "job_id": [r.spec.job_id for r in records],
        "name": [r.spec.name for r in records],
        "tenant": [r.spec.tenant for r in records],
        "gpus": [r.spec.gpus for r in records],
        "duration": [r.spec.duration for r in records],
        "arrival": [r.spec.arrival for r in records],
        "first_start": [r.first_start for r in records],
        "finish": [r.finish for r in records],
        "status": [r.status.value for r in records],
        "reason": [r.reason for r in records],
        "pool": [cluster.pools[r.pool].name if r.pool >= 0 else "" for r in records],
        "device_type": [cluster.pools[r.pool].device if r.pool >= 0 else "" for r in records],
        "preemptions": [r.preemptions for r in records],
        "overhead_seconds": [r.overhead_total for r in records],
        "device_seconds": [r.device_seconds for r in records],
    }
    later = sim.not_arrived  # after the horizon: in the table, so that every job of the workload is accounted for
    if later:
        filled: dict[str, list[Any]] = {
            "job_id": [j.job_id for j in later], "name": [j.name for j in later],
            "tenant": [j.tenant for j in later], "gpus": [j.gpus for j in later],
            "duration": [j.duration for j in later], "arrival": [j.arrival for j in later],
            "first_start": [math.nan] * len(later), "finish": [math.nan] * len(later),
            "status": [NOT_ARRIVED] * len(later), "reason": [AFTER_HORIZON] * len(later),
            "pool": [""] * len(later), "device_type": [""] * len(later), "preemptions": [0] * len(later),
            "overhead_seconds": [0.0] * len(later), "device_seconds": [0.0] * len(later)}
        rows = {key: values + filled[key] for key, values in rows.items()}
    best = np.array([max(r.speeds.values()) if r.speeds else math.nan for r in records] + [math.nan] * len(later),
                    dtype=float)
    flops = _model_flops(sim)
    if flops is not None and later:
        flops = np.concatenate([flops, np.full(len(later), math.nan)])
    df = pd.DataFrame(rows)
    arrival = df["arrival"].to_numpy(dtype=float)
    df["queueing_delay"] = df["first_start"].to_numpy(dtype=float) - arrival
    df["jct"] = df["finish"].to_numpy(dtype=float) - arrival
    df["slowdown"] = df["jct"].to_numpy() / (df["duration"].to_numpy(dtype=float) / best)
    df = df[list(JOB_COLUMNS)]
    if flops is not None:
        df["model_flops"] = flops
    return df


def _model_flops(sim: Simulation) -> np.ndarray | None:
    """FLOPs each job with a model (``TrainingJob.model``) executed: the steps it completed (its progress in
    seconds on its reference device, over the model's step time on its reference placement there) times the
    step's ``6 * params * tokens``; NaN for jobs without a model. None when no job has one."""
    records = sim.records
    if not any(r.spec.model is not None for r in records):
        return None
    cluster = sim.cluster
    network = sim.network if sim.network is not None else NetworkModel(cluster)
    out = np.full(len(records), math.nan)
    for i, r in enumerate(records):
        spec = r.spec
        if spec.model is None or (r.pool < 0 and spec.reference_device is None):
            continue
        pool = r.pool
        if spec.reference_device is not None:
            reference = get_device(spec.reference_device).name
            pool = next((p for p, device in enumerate(cluster.device_specs) if device.name == reference), pool)
        if pool < 0:
            continue
        step = network.reference_step(spec, pool)
        done = spec.duration - r.remaining_at(sim.end_time)
        out[i] = done / step.total * step.model_flops
    return out


def _factors_record(service: ServiceRuntime) -> dict[str, Any]:
    """A service's step-time factors, where they come from and which are assumptions (for the summary)."""
    factors = service.factors
    assert factors is not None
    record = {"device": service.device.name, **factors.as_dict(), "source": factors.source,
              "assumed": list(factors.assumed)}
    if isinstance(service.cost, ProfiledStepCost):
        record["profile"] = service.cost.source
    return record


REQUEST_STATUS = np.array(["waiting", "finished", "rejected"], dtype=object)


def _requests_table(sim: Simulation) -> pd.DataFrame:
    """One row per request of the workload: times, latencies (TTFT, TPOT, end-to-end), replica, SLO met. Requests
    that had not arrived when the run stopped at its horizon have status ``not_arrived`` and no times."""
    parts = []
    for service in sim.services:
        spec, log = service.spec, service.log
        n = log.arrived
        trace = spec.requests
        arrival = np.asarray(trace.arrival[:n], dtype=float)
        prompt = np.asarray(trace.prompt_tokens[:n])
        output = np.asarray(trace.output_tokens[:n])
        reasons = np.array([log.reasons.get(i, "") for i in range(n)], dtype=object) if log.reasons else ""
        if log.served:  # truncated to the model's context: the table shows what was served
            prompt, output = prompt.copy(), output.copy()
            reasons = reasons if isinstance(reasons, np.ndarray) else np.full(n, "", dtype=object)
            for i, (p, o) in log.served.items():
                if i < n:
                    prompt[i], output[i], reasons[i] = p, o, "truncated_to_max_context"
        first, finish = log.first_token[:n], log.finish[:n]
        ttft = first - arrival
        tpot = np.where(output > 1, (finish - first) / np.maximum(output - 1, 1), np.nan)
        if isinstance(spec.mode, FixedService):
            tpot = np.full(n, np.nan)  # the whole response arrives at once
        status = REQUEST_STATUS[log.status[:n]]
        met = status == "finished"
        if spec.slo_ttft is not None:
            met &= ttft <= spec.slo_ttft
        if spec.slo_tpot is not None:
            met &= ~(tpot > spec.slo_tpot)
        parts.append(pd.DataFrame({
            "service": spec.name, "request_id": np.arange(n), "arrival": arrival, "admitted": log.admitted[:n],
            "first_token": first, "finish": finish, "queueing_delay": log.admitted[:n] - arrival, "ttft": ttft,
            "tpot": tpot, "e2e": finish - arrival, "prompt_tokens": prompt, "output_tokens": output,
            "replica": log.replica[:n], "preemptions": log.preemptions[:n], "status": status, "reason": reasons,
            "slo_met": met,
        }))
        later = len(trace) - n
        if later:
            parts.append(_not_arrived_requests(service, later))
    return pd.concat(parts, ignore_index=True)


def _not_arrived_requests(service: ServiceRuntime, count: int) -> pd.DataFrame:
    """Rows for a service's last ``count`` requests, which arrive after the run's horizon."""
    trace, n = service.spec.requests, service.log.arrived
    nan = np.full(count, math.nan)
    return pd.DataFrame({
        "service": service.spec.name, "request_id": np.arange(n, n + count),
        "arrival": np.asarray(trace.arrival[n:], dtype=float), "admitted": nan, "first_token": nan, "finish": nan,
        "queueing_delay": nan, "ttft": nan, "tpot": nan, "e2e": nan,
        "prompt_tokens": np.asarray(trace.prompt_tokens[n:]), "output_tokens": np.asarray(trace.output_tokens[n:]),
        "replica": np.full(count, -1), "preemptions": np.zeros(count, dtype=np.int64), "status": NOT_ARRIVED,
        "reason": AFTER_HORIZON, "slo_met": False})


def _replicas_table(sim: Simulation) -> pd.DataFrame:
    """One row per replica: devices, busy seconds and busy fraction over the run."""
    rows = []
    span = sim.end_time
    for service in sim.services:
        for r, replica in enumerate(service.replicas):
            start = service.ready[r]
            stop = service.retired[r] if not math.isnan(service.retired[r]) else span
            life = stop - start
            devices = len(service.devices[r])
            peak = service.device.peak("bf16") * devices
            flops = getattr(replica, "flops", math.nan)
            kv = getattr(replica, "kv_token_seconds", math.nan)
            capacity = getattr(replica, "kv_capacity", math.nan)
            model = service.spec.model
            rows.append({"service": service.spec.name, "replica": replica.replica_id, "device_type":
                         service.device.name, "model": model.label if model is not None else "",
                         "quality_cost": (model.quality_cost if model is not None and model.quality_cost is not None
                                          else math.nan),
                         "devices": devices, "created": service.created[r],
                         "ready": start, "retired": service.retired[r], "busy_seconds": replica.busy_seconds,
                         "busy_fraction": replica.busy_seconds / life if life > 0 else math.nan,
                         "mfu": flops / (peak * life) if life > 0 else math.nan,
                         "kv_utilization": kv / (capacity * life) if life > 0 else math.nan})
    return pd.DataFrame(rows)


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
            "slowdown": {"mean": float(finished["slowdown"].mean()) if len(finished) else math.nan},
            "preemptions": int(jobs["preemptions"].sum()),
            "overhead_device_hours": float((jobs["overhead_seconds"] * jobs["gpus"]).sum() / 3600),
            "skipped_trace_rows": results.skipped_rows,
            "by_tenant": {str(tenant): _job_counts(group) for tenant, group in jobs.groupby("tenant", sort=True)},
        },
        "makespan": makespan,
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
    }


UNFINISHED_JOB = ("queued", "running", "preempted")


def _job_counts(jobs: pd.DataFrame) -> dict[str, int]:
    """How the jobs ended: ``count`` = completed + unschedulable + unfinished + not_arrived."""
    status = jobs["status"]
    return {"count": len(jobs), "completed": int((status == "finished").sum()),
            "unschedulable": int((status == "unschedulable").sum()),
            "unfinished": int(status.isin(UNFINISHED_JOB).sum()), "not_arrived": int((status == NOT_ARRIVED).sum())}


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
        },
        "replicas": {"count": len(replicas), "utilization": {"mean": float(replicas["busy_fraction"].mean())},
                     "scale_ups_blocked": results.run.get("scale_ups_blocked", 0),
                     "training_preemptions_caused": results.run.get("preempted_for_inference", 0)},
    }


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
