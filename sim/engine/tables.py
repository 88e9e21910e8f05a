"""A finished run as tables: ``build_results`` reads the simulation's subsystems once, at the end, and gives
``Results`` (which knows nothing of the engine) its jobs, timeline, events, requests, replicas and links tables
and its run record, then lets accounting add its columns."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from sim.output.accounting import account
from sim.output.results import AFTER_HORIZON, NOT_ARRIVED, Results
from sim.platform.hardware import get_device
from sim.platform.network.model import NetworkModel
from sim.random import seed_label
from sim.serving.profiled_step import ProfiledStepCost
from sim.serving.service import FixedService, ServiceRuntime
from sim.serving.speculative import REPLICA_COLUMNS, SpeculativeDecoding
from sim.training.jobs import JobRecord, JobStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.output.accounting import AccountingOptions
    from sim.platform.cluster import Cluster
    from sim.random import RandomStreams
    from sim.serving.contracts import Colocation, Router
    from sim.training.contracts import Placer, Scheduler
    from sim.training.packing import PackingBook
    from sim.training.subsystem import PreemptionCost
    from workloads.jobs import JobTrace, TrainingJob


class FinishedRun(Protocol):
    """What the tables are built from: a finished run (``sim.engine.Simulation`` after ``run``)."""

    cluster: Cluster
    scheduler: Scheduler
    placer: Placer
    router: Router
    colocation: Colocation
    streams: RandomStreams
    metadata: dict[str, Any]
    preemption: PreemptionCost
    accounting: AccountingOptions
    network: NetworkModel | None
    packing: PackingBook | None
    trace: JobTrace | None
    track_fragmentation: bool
    quota_devices: dict[str, dict[str, int]] | None
    @property
    def quota_record(self) -> dict[str, Any] | None: ...
    end_time: float
    events: int

    @property
    def event_log(self) -> list[tuple[float, str, int, tuple[int, ...]]] | None: ...
    @property
    def records(self) -> list[JobRecord]: ...
    @property
    def timeline(self) -> tuple[list[float], list[int], list[int], list[int]]: ...
    @property
    def timeline_idle_share(self) -> Sequence[float]: ...
    @property
    def fragmentation_samples(self) -> list[tuple[float, dict[int, int]]]: ...
    @property
    def not_arrived(self) -> Sequence[TrainingJob]: ...
    @property
    def services(self) -> list[ServiceRuntime]: ...
    @property
    def replica_timeline(self) -> list[tuple[float, str, int, int, int]]: ...
    @property
    def replica_samples(self) -> list[tuple[float, str, int, int, int, float]]: ...
    @property
    def training_preemptions_caused(self) -> int: ...
    @property
    def scheduler_report(self) -> dict[str, float]: ...
    @property
    def autoscaler(self) -> str: ...
    @property
    def scale_ups_blocked(self) -> int: ...


def build_results(sim: FinishedRun, *, wall_seconds: float) -> Results:
    """The tables and run record of a finished simulation, with accounting columns added (``sim.output.accounting``)."""
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
        "pools": [{"name": p.name, "device": p.device, "nodes": p.nodes, "devices_per_node": p.devices_per_node}
                  for p in cluster.pools],  # the device layout: devices numbered pool by pool, node by node
        "end_time": sim.end_time,
        "restore_seconds": sim.preemption.total,  # what each resume after a preemption costs (at most)
        "policy_report": sim.scheduler_report,
        "events": sim.events,
        "wall_seconds": wall_seconds,
        **({"quotas": sim.quota_devices, "quota_mode": sim.quota_record} if sim.quota_devices is not None else {}),
        **{k: v for k, v in sim.metadata.items() if k != "seed"},
    }
    jobs = _jobs_table(sim)
    times, allocated, queued, running = sim.timeline
    timeline = pd.DataFrame({
        "time": np.asarray(times, dtype=float),
        "allocated_devices": np.asarray(allocated, dtype=np.int64),
        # a shared device's share that no fractional job holds is allocated but not in use
        "utilization": (np.asarray(allocated, dtype=float) - np.asarray(sim.timeline_idle_share, dtype=float))
        / cluster.num_devices,
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
    skipped_rows += [(service.spec.name, row) for service in sim.services if service.role != "decode"
                     for row in service.spec.requests.skipped]
    skipped_table = pd.DataFrame(
        [(source, row.path, row.line, row.field, row.reason) for source, row in skipped_rows],
        columns=["workload", "path", "line", "field", "reason"]) if skipped_rows else None
    skipped = len(sim.trace.skipped) if sim.trace is not None else 0
    requests = replicas = None
    replica_timeline = replica_samples = None
    if sim.services:
        requests, replicas = _requests_table(sim), _replicas_table(sim)
        _add_speculation(sim, run, replicas)
        replica_timeline = pd.DataFrame(sim.replica_timeline,
                                        columns=["time", "service", "ready", "provisioning", "draining"])
        replica_samples = pd.DataFrame(sim.replica_samples, columns=["time", "service", "replica",
                                                                     "queued_requests", "running_requests",
                                                                     "kv_utilization"])
        for table in (requests, replicas):
            table["router"] = sim.router.name
            table["seed"] = seed
        run["router"] = sim.router.name
        run["autoscaler"] = sim.autoscaler
        run["colocation"] = sim.colocation.name
        run["scale_ups_blocked"] = sim.scale_ups_blocked
        run["training_preemptions_caused"] = sim.training_preemptions_caused
        run["exceeds_max_context"] = sum(service.log.over_context for service in sim.services
                                         if service.role != "decode")
        run["slo"] = {service.spec.name: {"ttft": service.spec.slo_ttft, "tpot": service.spec.slo_tpot}
                      for service in sim.services}
        run["step_factors"] = {service.label: _factors_record(service) for service in sim.services
                               if service.factors is not None}
    if sim.packing is not None:
        jobs["packed_seconds"] = [r.packed_seconds for r in sim.records] + [0.0] * len(sim.not_arrived)
    if sim.quota_devices is not None:
        later = [0] * len(sim.not_arrived)
        jobs["borrowing_starts"] = [r.borrowing_starts for r in sim.records] + later
        jobs["reclaims"] = [r.reclaims for r in sim.records] + later
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
    results = Results(jobs=jobs, timeline=timeline, run=run, events=events, skipped_rows=skipped, skipped=skipped_table,
                      requests=requests, replicas=replicas, replica_timeline=replica_timeline,
                      replica_samples=replica_samples, links=links)
    accounted = account(results, cluster, **sim.accounting.kwargs())
    results.accounting, results.services = accounted.table, accounted.services
    for table, columns in accounted.columns.items():
        results.add_columns(table, columns)
    for subsystem in getattr(sim, "subsystems", ()):  # plugged-in subsystems add their own tables and columns
        add_results = getattr(subsystem, "add_results", None)
        if add_results is not None:
            add_results(results, sim.end_time)
    results.conform()
    return results



def _jobs_table(sim: FinishedRun) -> pd.DataFrame:
    """One row per job of the workload: the run's records, then the jobs that arrive after the horizon. Columns
    of the engine's figures are read straight into arrays (``np.fromiter``), and each column is made once for
    all rows, so that building the table of a million jobs holds no per-row list beside it."""
    records = sim.records
    cluster = sim.cluster
    later = sim.not_arrived  # after the horizon: in the table, so that every job of the workload is accounted for
    n, m = len(records), len(later)
    total = n + m
    nan = math.nan

    def spec_column(field: str) -> list[Any]:  # as given (a list, so that pandas infers the type as before)
        values = [getattr(r.spec, field) for r in records]
        values.extend(getattr(j, field) for j in later)
        return values

    def column(values: Iterable[Any], after: Any, dtype: Any) -> np.ndarray:
        return np.fromiter(itertools.chain(values, itertools.repeat(after, m)), dtype=dtype, count=total)

    def strings(values: Iterable[str], after: str) -> list[str]:
        out = list(values)
        out.extend(itertools.repeat(after, m))
        return out

    pool_names = [pool.name for pool in cluster.pools] + [""]  # index -1 (never started): ""
    pool_devices = [pool.device for pool in cluster.pools] + [""]
    unschedulable = JobStatus.UNSCHEDULABLE
    rows: dict[str, Any] = {
        "job_id": spec_column("job_id"),
        "name": spec_column("name"),
        "tenant": spec_column("tenant"),
        "gpus": spec_column("gpus"),
        "gpu_fraction": spec_column("gpu_fraction"),
        "duration": spec_column("duration"),
        "arrival": spec_column("arrival"),
        "first_start": column((r.first_start for r in records), nan, float),
        "finish": column((r.finish for r in records), nan, float),
        "status": strings((r.status.value for r in records), NOT_ARRIVED),
        "reason": strings((r.reason for r in records), AFTER_HORIZON),
        "pool": strings((pool_names[r.pool] for r in records), ""),
        "device_type": strings((pool_devices[r.pool] for r in records), ""),
        "preemptions": column((r.preemptions for r in records), 0, np.int64),
        "waiting_seconds": column((nan if r.status is unschedulable else r.waited for r in records), nan, float),
        "overhead_seconds": column((r.overhead_total for r in records), 0.0, float),
        "device_seconds": column((r.device_seconds for r in records), 0.0, float),
    }
    ideal = column((r.ideal_seconds() for r in records), nan, float)
    flops = _model_flops(sim)
    if flops is not None and later:
        flops = np.concatenate([flops, np.full(len(later), math.nan)])
    df = pd.DataFrame(rows)
    del rows
    arrival = df["arrival"].to_numpy(dtype=float)
    df["queueing_delay"] = df["first_start"].to_numpy(dtype=float) - arrival
    df["jct"] = df["finish"].to_numpy(dtype=float) - arrival
    df["slowdown"] = df["jct"].to_numpy() / ideal
    if flops is not None:
        df["model_flops"] = flops
    return df


def _model_flops(sim: FinishedRun) -> np.ndarray | None:
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


def _requests_table(sim: FinishedRun) -> pd.DataFrame:
    """One row per request of the workload: times, latencies (TTFT, TPOT, end-to-end), replica, SLO met. Requests
    that had not arrived when the run stopped at its horizon have status ``not_arrived`` and no times."""
    parts = []
    for service in sim.services:
        if service.role == "decode":
            continue  # a disaggregated service's requests are in its prefill pool's log (shared by both pools)
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
            "replica": log.replica[:n], "kv_evictions": log.kv_evictions[:n], "status": status, "reason": reasons,
            "slo_met": met, **{column: values[:n] for column, values in log.extra.items()},
        }))
        later = len(trace) - n
        if later:
            parts.append(_not_arrived_requests(service, later))
    return pd.concat(parts, ignore_index=True)


def _add_speculation(sim: FinishedRun, run: dict[str, Any], replicas: pd.DataFrame) -> None:
    """With a speculative-decoding service: its option in the run record, and the replicas' draft counts and
    FLOPs as columns (NaN for the replicas of other services)."""
    options = {service.spec.name: service.spec.mode.speculative.describe() for service in sim.services
               if isinstance(getattr(service.spec.mode, "speculative", None), SpeculativeDecoding)}
    if not options:
        return
    run["speculative"] = options
    for column in REPLICA_COLUMNS:
        replicas[column] = [float(getattr(replica, column, math.nan)) for service in sim.services
                            for replica in service.replicas]


def _not_arrived_requests(service: ServiceRuntime, count: int) -> pd.DataFrame:
    """Rows for a service's last ``count`` requests, which arrive after the run's horizon."""
    trace, n = service.spec.requests, service.log.arrived
    nan = np.full(count, math.nan)
    return pd.DataFrame({
        "service": service.spec.name, "request_id": np.arange(n, n + count),
        "arrival": np.asarray(trace.arrival[n:], dtype=float), "admitted": nan, "first_token": nan, "finish": nan,
        "queueing_delay": nan, "ttft": nan, "tpot": nan, "e2e": nan,
        "prompt_tokens": np.asarray(trace.prompt_tokens[n:]), "output_tokens": np.asarray(trace.output_tokens[n:]),
        "replica": np.full(count, -1), "kv_evictions": np.zeros(count, dtype=np.int64), "status": NOT_ARRIVED,
        "reason": AFTER_HORIZON, "slo_met": False, **{column: nan for column in service.log.extra}})


def _replicas_table(sim: FinishedRun) -> pd.DataFrame:
    """One row per replica: devices, busy seconds and busy fraction over the run."""
    rows = []
    span = sim.end_time
    disaggregated = any(service.role for service in sim.services)
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
            role = {"role": service.role} if disaggregated else {}
            rows.append({"service": service.spec.name, "replica": replica.replica_id, **role, "device_type":
                         service.device.name, "model": model.label if model is not None else "",
                         "quality_cost": (model.quality_cost if model is not None and model.quality_cost is not None
                                          else math.nan),
                         "devices": devices, "device_indexes": tuple(service.devices[r]),
                         "created": service.created[r],
                         "ready": start, "retired": service.retired[r], "busy_seconds": replica.busy_seconds,
                         "busy_fraction": replica.busy_seconds / life if life > 0 else math.nan,
                         "mfu": flops / (peak * life) if life > 0 else math.nan,
                         "kv_utilization": kv / (capacity * life) if life > 0 else math.nan,
                         **_prefix_figures(replica)})
    return pd.DataFrame(rows)  # prefix-caching columns: NaN in the rows of replicas without a prefix cache


def _prefix_figures(replica: object) -> dict[str, float]:
    """A prefix-caching replica's lookups, hits, hit rate, tokens saved and evicted (nothing without one)."""
    cache = getattr(replica, "prefix", None)
    if cache is None:
        return {}
    return {"prefix_lookups": cache.lookups, "prefix_hits": cache.hits,
            "prefix_hit_rate": cache.hits / cache.lookups if cache.lookups else math.nan,
            "prefill_tokens_saved": cache.saved, "prefix_evicted_tokens": cache.evicted}

