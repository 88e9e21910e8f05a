"""Accounting of a finished run: device time, energy, cost and FLOPs, split into training, inference and free.

**Power model.** One device draws ``P(u) = idle_watts + (tdp_watts - idle_watts) * u`` at utilization ``u`` in
[0, 1]: linear between idle and TDP, the form Fan, Weber and Barroso measured for whole servers ("Power
provisioning for a warehouse-sized computer", ISCA 2007), applied here to one accelerator. ``idle_watts`` and
``tdp_watts`` come from the catalog (``sim.platform.hardware``; idle power is an assumption there) and
``PowerModel(overrides=...)`` replaces them per device type.

**Who draws what.** Over the run's span ``[0, end_time]`` every device of the cluster is in one state:

- held by a training job: while the job restores after a preemption (checkpoint + restore, the jobs table's
  ``overhead_seconds``) ``u = 0`` (allocated but idle); while it progresses ``u = training_utilization``;
- held by an inference replica (from ``created`` to ``retired``, or the end): ``u = inference_utilization``
  for its ``busy_seconds`` (the time its steps ran), ``u = 0`` the rest of its life (loading weights, waiting
  for requests, draining);
- free, ``u = 0``: not held by a job or a replica (devices a co-location policy keeps in reserve included).

**Cost.** ``price_per_hour`` per device-hour. A cluster is paid for whether it is used or not: ``cost.usd`` is
every device of the cluster over the span; ``training.`` and ``inference.`` are the device-hours they held;
``cost.idle_usd`` is the free rest (the three add up).

**FLOPs.** Inference: the replicas' model FLOPs (``mfu * peak * devices * life``, inverting the replicas table's
``mfu``; replicas with no FLOP model, fixed-service ones, count as unknown). Training: a job with a model
(``TrainingJob.model``) executed the jobs table's ``model_flops`` (steps completed times ``6 * params * tokens`` per
step). Of other jobs the results do not say how many steps of which model they ran, so their FLOPs are
``training_mfu`` (``TRAINING_MFU_ASSUMED``) times the bf16 peak times the progressing device-seconds, flagged
``compute.training.flops_assumed`` (true when any job's FLOPs are assumed). MFU is FLOPs over
peak FLOP/s times the device-seconds held (restores and idle replica time count against it).

Training device time is exact when the run recorded its event log (``Simulation(record_events=True)``): each
resumed run of a job restores for the run's per-resume cost (``run["restore_seconds"]``) or until it stops,
whichever comes first, on the device type it ran on. It is also exact when no job was preempted. Otherwise a job
restores for ``gpus * overhead_seconds`` (the restore time the engine counted as spent) on its last device type:
this puts the device time of a job that resumed on another device type on its last one (whose free time is
floored at zero if that overfills it). The table and the summary say which (``device_time_exact``). Each job of a
packed pair (``sim.training.packing``: ``pack`` and ``unpack`` events) holds half its devices while packed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from sim.errors import ConfigError, UnknownNameError
from sim.platform.hardware import DeviceSpec, get_device
from sim.random import seed_label
from sim.training.packing import PACKED_SHARE
from sim.units import parse_quantity

if TYPE_CHECKING:
    from sim.platform.cluster import Cluster


class RunTables(Protocol):
    """What accounting reads of a finished run (``sim.output.results.Results`` is one): its record and tables."""

    run: dict[str, Any]
    jobs: pd.DataFrame
    events: pd.DataFrame | None
    requests: pd.DataFrame | None
    replicas: pd.DataFrame | None

TRAINING_UTILIZATION = 1.0
"""ASSUMPTION: a progressing training job runs its devices at TDP (dense training keeps tensor cores and HBM
busy; exposed communication and data stalls, which draw less, are not separated). Lower it to model them."""

INFERENCE_UTILIZATION = 1.0
"""ASSUMPTION: a replica draws TDP while a step runs (an upper bound: memory-bound decode steps draw less)."""

TRAINING_MFU_ASSUMED = 0.4
"""ASSUMPTION, not a measurement: model FLOP utilization of a progressing training job, used for its FLOPs.
Below the published MFU of large tuned runs (46-55%, REFERENCE.md), for a mix of ordinary cluster jobs."""

SIDES: tuple[str, ...] = ("training", "inference", "free")
"""Rows of the accounting table per device type: device time held by training, by inference, and free."""

POWER_FIELDS: tuple[str, ...] = ("idle_watts", "tdp_watts")
"""Catalog fields ``PowerModel.overrides`` may replace (watts)."""

_JOULES_PER_KWH = 3.6e6

ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "jobs": ("restore_device_seconds", "busy_device_seconds", "cost_usd", "flops", "energy_kwh", "mfu",
             "flops_assumed", "carbon_kg"),
    "replicas": ("held_device_seconds", "busy_device_seconds", "energy_kwh", "cost_usd", "flops", "carbon_kg"),
    "requests": ("device_seconds", "busy_device_seconds", "flops", "energy_kwh", "cost_usd", "carbon_kg"),
}
"""The columns :func:`account` adds to the run's tables (declared in ``sim.output.schema``). Accounting a run that
already has them (another price, say) replaces them."""


def _base(table: pd.DataFrame | None, name: str) -> pd.DataFrame | None:
    """``table`` without the columns accounting adds to it (a table accounted before)."""
    if table is None:
        return None
    added = [c for c in ADDED_COLUMNS[name] if c in table.columns]
    return table.drop(columns=added) if added else table


@dataclass(frozen=True)
class PowerModel:
    """Utilization of busy devices and per-device-type power overrides, e.g.
    ``PowerModel(overrides={"h100": {"idle_watts": 90, "tdp_watts": 700}})`` (names as ``get_device`` takes them)."""

    training_utilization: float = TRAINING_UTILIZATION
    inference_utilization: float = INFERENCE_UTILIZATION
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for key in ("training_utilization", "inference_utilization"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ConfigError(f"power.{key} must be a number in [0, 1], got {value!r}")
        if not isinstance(self.overrides, Mapping):
            raise ConfigError(f"power.overrides must map device types to {{idle_watts, tdp_watts}}, "
                              f"got {self.overrides!r}")
        resolved: dict[str, Mapping[str, float]] = {}
        for name, values in self.overrides.items():
            spec = known_device("power.overrides", name)
            where = f"power.overrides.{name}"
            if spec.name in resolved:
                raise ConfigError(f"{where}: device type {spec.name!r} is overridden twice")
            if not isinstance(values, Mapping):
                raise ConfigError(f"{where} must map {' or '.join(POWER_FIELDS)} to watts, got {values!r}")
            watts = {}
            for key, value in values.items():
                if key not in POWER_FIELDS:
                    raise ConfigError(f"{where}.{key}: not a power field; valid: {', '.join(POWER_FIELDS)} "
                                      f"(a number of watts, or a string with its unit: '700 W', '0.7 kW')")
                watts[key] = parse_quantity(f"{where}.{key}", value, "power", positive=key == "tdp_watts")
            idle = watts.get("idle_watts", spec.idle_watts)
            tdp = watts.get("tdp_watts", spec.tdp_watts)
            if idle > tdp:
                raise ConfigError(f"{where}: idle_watts {idle} exceeds tdp_watts {tdp}")
            resolved[spec.name] = MappingProxyType(watts)
        object.__setattr__(self, "overrides", MappingProxyType(resolved))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # mappingproxy cannot be pickled (process-pool sweeps pickle their arguments): rebuild from plain dicts
        overrides = {name: dict(values) for name, values in self.overrides.items()}
        return (type(self), (self.training_utilization, self.inference_utilization, overrides))

    def idle_watts(self, device: DeviceSpec) -> float:
        """Watts of ``device`` at utilization 0 (allocated but idle, or free)."""
        return float(self.overrides.get(device.name, {}).get("idle_watts", device.idle_watts))

    def tdp_watts(self, device: DeviceSpec) -> float:
        """Watts of ``device`` at utilization 1."""
        return float(self.overrides.get(device.name, {}).get("tdp_watts", device.tdp_watts))

    def watts(self, device: DeviceSpec, utilization: float) -> float:
        """``idle + (tdp - idle) * utilization``."""
        if not _is_number(utilization) or not 0 <= utilization <= 1:
            raise ConfigError(f"utilization must be a number in [0, 1], got {utilization!r}")
        idle = self.idle_watts(device)
        return idle + (self.tdp_watts(device) - idle) * utilization


@dataclass(frozen=True, eq=False)
class Accounting:
    """A run's accounting. ``table``: one row per device type and side (``SIDES``); ``services``: one row per
    service, with energy and cost per 1,000 completed requests and per million generated tokens; ``columns``: the
    columns accounting adds to the run's ``jobs``, ``replicas`` and ``requests`` tables, row for row (declared in
    ``sim.output.schema``; ``Results.add_columns`` adds them). ``carbon_kg`` columns only with a grid intensity."""

    table: pd.DataFrame
    services: pd.DataFrame | None
    columns: Mapping[str, pd.DataFrame]
    run: RunTables = field(repr=False)

    @property
    def jobs(self) -> pd.DataFrame:
        """The run's jobs table with the accounting columns."""
        return self._with_columns("jobs")

    @property
    def replicas(self) -> pd.DataFrame | None:
        """The run's replicas table with the accounting columns (None without replicas)."""
        return self._with_columns("replicas")

    @property
    def requests(self) -> pd.DataFrame | None:
        """The run's requests table with the accounting columns (None without requests)."""
        return self._with_columns("requests")

    def _with_columns(self, name: str) -> Any:
        table = _base(getattr(self.run, name), name)
        if table is None or name not in self.columns:
            return table
        return pd.concat([table, self.columns[name]], axis=1)

    def summary(self) -> dict[str, Any]:
        """The summary keys :func:`summarize` gives (``energy.kwh``, ``training.cost.usd`` ...)."""
        return summarize(self.table, self.requests)


@dataclass(frozen=True)
class AccountingOptions:
    """What :func:`account` is asked for every run (``Simulation(accounting=...)``, config ``accounting:``):
    the power model, prices (USD per device-hour), a grid intensity (gCO2 per kWh, optional) and the assumed
    training MFU. Amounts may be strings with units (``"4.5 USD/h"``, ``"400 gCO2/kWh"``)."""

    power: PowerModel = field(default_factory=PowerModel)
    prices: Mapping[str, float | str] | None = None
    grid_intensity: float | str | None = None
    training_mfu: float = TRAINING_MFU_ASSUMED

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`account`."""
        return {"power": self.power, "prices": self.prices, "grid_intensity": self.grid_intensity,
                "training_mfu": self.training_mfu}


@dataclass
class _Type:
    """Effective figures of one device type of the cluster."""

    count: int
    idle: float
    tdp: float
    price: float
    peak: float


def account(results: RunTables, cluster: Cluster, *, power: PowerModel | None = None,
            prices: Mapping[str, float] | None = None, training_mfu: float = TRAINING_MFU_ASSUMED,
            grid_intensity: float | None = None) -> Accounting:
    """Accounting of ``results``, a finished run on ``cluster`` (module docstring for the model).

    ``prices`` replaces ``price_per_hour`` (USD per device-hour) per device type; ``grid_intensity`` (gCO2 per
    kWh) adds carbon. Bad values raise ``ConfigError`` naming the key.
    """
    power = power if power is not None else PowerModel()
    if not isinstance(power, PowerModel):
        raise ConfigError(f"power must be a PowerModel, got {type(power).__name__}")
    price_of = _prices(prices)
    if not _is_number(training_mfu) or not 0 < training_mfu <= 1:
        raise ConfigError(f"training_mfu must be a number in (0, 1], got {training_mfu!r}")
    if grid_intensity is not None:
        grid_intensity = parse_quantity("grid_intensity", grid_intensity, "intensity")
    if results.run.get("devices") != cluster.num_devices:
        raise ConfigError(f"cluster {cluster.name!r} has {cluster.num_devices} devices; the run had "
                          f"{results.run.get('devices')}: pass the cluster the run used")
    end = float(results.run["end_time"])
    types: dict[str, _Type] = {}
    for p, spec in enumerate(cluster.device_specs):
        if spec.name not in types:
            types[spec.name] = _Type(0, power.idle_watts(spec), power.tdp_watts(spec),
                                     price_of.get(spec.name, float(spec.price_per_hour)), spec.peak("bf16"))
        types[spec.name].count += cluster.pool_devices[p]

    # training: per (job, device type) device-seconds held and restoring
    seg, exact = _training_segments(results, cluster, end)
    idle, tdp, price, peak = (seg["device_type"].map({name: getattr(t, k) for name, t in types.items()})
                              .to_numpy(dtype=float) for k in ("idle", "tdp", "price", "peak"))
    held, restore = seg["held"].to_numpy(dtype=float), seg["restore"].to_numpy(dtype=float)
    busy = held - restore
    seg["busy"] = busy
    seg["joules"] = idle * held + (tdp - idle) * power.training_utilization * busy
    seg["usd"] = price * held / 3600
    seg["flops"] = training_mfu * peak * busy
    seg["assumed"] = True
    if "model_flops" in results.jobs:  # jobs with a model: what their steps executed, spread over their busy time
        model_flops = seg["job_id"].map(results.jobs.set_index("job_id")["model_flops"]).to_numpy(dtype=float)
        job_busy = seg.groupby("job_id")["busy"].transform("sum").to_numpy(dtype=float)
        known = ~np.isnan(model_flops)
        share = np.divide(busy, job_busy, out=np.zeros_like(busy), where=job_busy > 0)
        seg.loc[known, "flops"] = (model_flops * share)[known]
        seg.loc[known, "assumed"] = False
    seg["at_peak"] = peak * held

    job_ids = results.jobs["job_id"]
    per_job = seg.groupby("job_id")[["restore", "busy", "joules", "usd", "flops", "at_peak"]].sum()

    def per_job_sum(column: str) -> np.ndarray:
        return job_ids.map(per_job[column]).fillna(0.0).to_numpy(dtype=float)

    job_flops, at_peak = per_job_sum("flops"), per_job_sum("at_peak")
    modelled = seg.loc[~seg["assumed"].astype(bool), "job_id"]
    jobs = pd.DataFrame({
        "restore_device_seconds": per_job_sum("restore"), "busy_device_seconds": per_job_sum("busy"),
        "cost_usd": per_job_sum("usd"), "flops": job_flops, "energy_kwh": per_job_sum("joules") / _JOULES_PER_KWH,
        "mfu": np.divide(job_flops, at_peak, out=np.full(len(job_ids), math.nan), where=at_peak > 0),
        "flops_assumed": ~job_ids.isin(modelled).to_numpy(),
    }, index=results.jobs.index)

    replica_table, request_table = _base(results.replicas, "replicas"), _base(results.requests, "requests")
    replicas = None if replica_table is None else _replica_accounting(replica_table, types, power, end)

    rows = []
    for name, t in types.items():
        train = seg[seg["device_type"] == name]
        train_held = float(train["held"].sum())
        rows.append(_row(name, "training", t, train_held, train["busy"].sum(), train["joules"].sum(),
                         train["usd"].sum(), _known_sum(train["flops"]), train["at_peak"].sum(),
                         assumed=bool(train["assumed"].any()), exact=exact))
        inf = replicas[replica_table["device_type"] == name] if replica_table is not None else None
        inf_held = 0.0 if inf is None else float(inf["held_device_seconds"].sum())
        if inf is None or not len(inf):
            rows.append(_row(name, "inference", t, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, assumed=False, exact=True))
        else:
            rows.append(_row(name, "inference", t, inf_held, inf["busy_device_seconds"].sum(),
                             inf["energy_kwh"].sum() * _JOULES_PER_KWH, inf["cost_usd"].sum(),
                             _known_sum(inf["flops"]), float(np.nansum(inf["_at_peak"].to_numpy(dtype=float))),
                             assumed=False, exact=True))
        free = t.count * end - train_held - inf_held
        if exact and free < -1e-9 * max(1.0, t.count * end):
            raise ConfigError(f"{name}: jobs and replicas held {-free:.6g} device-seconds more than the cluster has "
                             f"over [0, {end}]: the results do not belong to this cluster")
        free = max(free, 0.0)
        rows.append(_row(name, "free", t, free, 0.0, t.idle * free, t.price * free / 3600, 0.0, 0.0, assumed=False,
                         exact=exact))
    table = pd.DataFrame(rows)
    for key in ("scheduler", "placer", "seed"):
        if key in results.run:
            table[key] = seed_label(results.run[key]) if key == "seed" else results.run[key]

    services = requests = None
    if replicas is not None and replica_table is not None:
        services = _services(pd.concat([replica_table, replicas], axis=1), request_table)
        replicas = replicas.drop(columns="_at_peak")
        if request_table is not None:
            requests = _request_shares(request_table, pd.concat([replica_table, replicas], axis=1))
    if grid_intensity is not None:
        for frame in (table, jobs, replicas, services, requests):
            if frame is not None:
                frame["carbon_kg"] = frame["energy_kwh"] * grid_intensity / 1000
        table["grid_g_per_kwh"] = float(grid_intensity)
    added = {name: frame for name, frame in (("jobs", jobs), ("replicas", replicas), ("requests", requests))
             if frame is not None}
    return Accounting(table=table, services=services, columns=added, run=results)


def _row(device_type: str, side: str, t: _Type, device_seconds: float, busy: float, joules: float, usd: float,
         flops: float, at_peak: float, *, assumed: bool, exact: bool) -> dict[str, Any]:
    return {"device_type": device_type, "side": side, "devices": t.count, "device_hours": device_seconds / 3600,
            "busy_device_hours": busy / 3600, "idle_watts": t.idle, "tdp_watts": t.tdp, "usd_per_hour": t.price,
            "energy_kwh": joules / _JOULES_PER_KWH, "cost_usd": usd, "flops": flops, "flops_at_peak": at_peak,
            "mfu": flops / at_peak if at_peak > 0 else math.nan, "flops_assumed": assumed, "device_time_exact": exact}


def _training_segments(results: RunTables, cluster: Cluster, end: float) -> tuple[pd.DataFrame, bool]:
    """Device-seconds each job held and spent restoring, per device type, and whether that is exact (module
    docstring)."""
    jobs = results.jobs
    columns = ["job_id", "device_type", "held", "restore"]
    if results.events is None:
        held = jobs["device_seconds"].to_numpy(dtype=float)
        share = jobs["gpus"].to_numpy(dtype=float) * jobs["gpu_fraction"].to_numpy(dtype=float)
        restore = np.minimum(held, share * jobs["overhead_seconds"].to_numpy(dtype=float))
        frame = pd.DataFrame({"job_id": jobs["job_id"].to_numpy(), "device_type": jobs["device_type"].to_numpy(),
                              "held": held, "restore": restore})
        return frame[held > 0].reset_index(drop=True), not jobs["preemptions"].any()
    events = results.events
    starts = Counter(int(j) for j in events.loc[events["event"] == "start", "job_id"])
    overhead = dict(zip(jobs["job_id"].astype(int), jobs["overhead_seconds"].astype(float), strict=True))
    fraction = dict(zip(jobs["job_id"].astype(int), jobs["gpu_fraction"].astype(float), strict=True))
    cost = results.run.get("restore_seconds")  # each resume restores for this long, or until it stops
    per_restart = {j: cost if cost is not None else overhead[j] / (n - 1) for j, n in starts.items() if n > 1}
    seen: Counter[int] = Counter()
    running: dict[int, tuple[float, float, float, str]] = {}
    totals: dict[tuple[int, str], list[float]] = {}

    def stop(job_id: int, time: float) -> None:
        since, gpus, restoring, device_type = running.pop(job_id)
        entry = totals.setdefault((job_id, device_type), [0.0, 0.0])
        entry[0] += (time - since) * gpus
        entry[1] += min(restoring, time - since) * gpus

    def reshare(job_id: int, time: float, share: float) -> None:  # a packed pair formed or ended: a new stretch
        since, _, restoring, device_type = running[job_id]
        stop(job_id, time)
        running[job_id] = (time, len(held[job_id]) * share, max(0.0, restoring - (time - since)), device_type)

    held: dict[int, tuple[int, ...]] = {}  # running job -> its devices (to find a packed job's partner)
    for time, kind, job_id, devices in zip(events["time"], events["event"], events["job_id"], events["devices"],
                                           strict=True):
        job_id = int(job_id)
        if kind in ("start", "pack"):
            restoring = per_restart.get(job_id, 0.0) if seen[job_id] else 0.0
            seen[job_id] += 1
            pool = cluster.pool_of_device(int(devices[0]))
            share = fraction[job_id] if kind == "start" else PACKED_SHARE  # a fractional or packed job: its share
            running[job_id] = (float(time), len(devices) * share, restoring, cluster.device_specs[pool].name)
            if kind == "pack":
                partner = next(j for j, on in held.items() if tuple(on) == tuple(devices))
                reshare(partner, float(time), PACKED_SHARE)
            held[job_id] = tuple(devices)
        elif kind == "unpack" and job_id in running:  # its partner left: the devices are its alone again
            reshare(job_id, float(time), 1.0)
        elif kind in ("preempt", "fail", "finish") and job_id in running:
            stop(job_id, float(time))
            del held[job_id]
    for job_id in list(running):
        stop(job_id, end)
    return pd.DataFrame([(j, t, held, restore) for (j, t), (held, restore) in totals.items()], columns=columns), True


def _replica_accounting(table: pd.DataFrame, types: Mapping[str, _Type], power: PowerModel,
                        end: float) -> pd.DataFrame:
    """Device-seconds held and busy, energy, cost and FLOPs of each replica of ``table`` (plus ``_at_peak``, for
    the services' MFU), row for row."""
    out = pd.DataFrame(index=table.index)
    t = [types[name] for name in table["device_type"]]
    idle, tdp = np.array([x.idle for x in t]), np.array([x.tdp for x in t])
    price, peak = np.array([x.price for x in t]), np.array([x.peak for x in t])
    devices = table["devices"].to_numpy(dtype=float)
    retired = table["retired"].to_numpy(dtype=float)
    stop = np.where(np.isnan(retired), end, np.minimum(retired, end))
    life = np.maximum(stop - np.maximum(table["created"].to_numpy(dtype=float), 0.0), 0.0)
    busy = np.minimum(table["busy_seconds"].to_numpy(dtype=float), life)
    held_ds, busy_ds = devices * life, devices * busy
    # results define mfu = flops / (peak * devices * (retired or end - ready)); invert it
    ready_life = np.where(np.isnan(retired), end, retired) - table["ready"].to_numpy(dtype=float)
    mfu = table["mfu"].to_numpy(dtype=float)
    flops = np.where(ready_life > 0, mfu * peak * devices * np.maximum(ready_life, 0.0), 0.0)
    out["held_device_seconds"] = held_ds
    out["busy_device_seconds"] = busy_ds
    out["energy_kwh"] = (idle * held_ds + (tdp - idle) * power.inference_utilization * busy_ds) / _JOULES_PER_KWH
    out["cost_usd"] = price * held_ds / 3600
    out["flops"] = flops
    out["_at_peak"] = np.where(np.isnan(flops), np.nan, peak * held_ds)
    return out


def _request_shares(requests: pd.DataFrame, replicas: pd.DataFrame) -> pd.DataFrame:
    """Each request's share of its replica's device-seconds (held and busy), FLOPs, energy and cost, row for row
    with ``requests`` (``replicas``: the replicas table with its accounting columns).

    Attribution rule (a convention, not a measurement): a replica's whole energy and cost over its life, idle
    time included, is split among the requests routed to it in proportion to their tokens (prompt plus
    output). Requests never routed to a replica (rejected) get zero; the shares of a replica add up to it. A request
    of a disaggregated service has two replicas: it takes its share of its prefill replica's figures in proportion to
    its prompt tokens, and of its decode replica's in proportion to its prompt plus output tokens.
    """
    out = pd.DataFrame(index=requests.index)
    prompt = requests["prompt_tokens"].to_numpy(dtype=float)
    tokens = prompt + requests["output_tokens"].to_numpy(dtype=float)
    shared = {"held_device_seconds": "device_seconds", "busy_device_seconds": "busy_device_seconds",
              "flops": "flops", "energy_kwh": "energy_kwh", "cost_usd": "cost_usd"}
    if "role" in replicas:  # some service is disaggregated: a replica is (service, role, replica)
        prefill = requests["prefill_replica"].to_numpy(dtype=float)
        roles = np.where(np.isnan(prefill), "", "decode")
        routes = [(pd.MultiIndex.from_arrays([requests["service"], roles, requests["replica"]]), tokens),
                  (pd.MultiIndex.from_arrays([requests["service"], np.full(len(requests), "prefill"),
                                              np.nan_to_num(prefill, nan=-1).astype(np.int64)]), prompt)]
        totals = replicas.set_index(["service", "role", "replica"])[list(shared)]
    else:
        routes = [(pd.MultiIndex.from_arrays([requests["service"], requests["replica"]]), tokens)]
        totals = replicas.set_index(["service", "replica"])[list(shared)]
    sums = {name: np.zeros(len(out)) for name in shared.values()}
    for key, weight in routes:
        routed = pd.Series(weight, index=key).groupby(level=list(range(key.nlevels))).sum()
        share = np.zeros(len(out))
        known = key.isin(totals.index) & key.isin(routed.index)
        share[known] = weight[known] / routed.reindex(key[known]).to_numpy(dtype=float)
        for column, name in shared.items():
            per_replica = np.zeros(len(out))
            per_replica[known] = totals[column].reindex(key[known]).to_numpy(dtype=float)
            sums[name] += np.nan_to_num(share * per_replica)
    for name, values in sums.items():
        out[name] = values
    return out


def _services(replicas: pd.DataFrame, requests: pd.DataFrame | None) -> pd.DataFrame:
    """One row per service: device time, energy, cost, FLOPs and MFU, and per 1,000 requests / million tokens."""
    rows = []
    for name, group in replicas.groupby("service", sort=False):
        done = None if requests is None else requests[(requests["service"] == name)
                                                      & (requests["status"] == "finished")]
        completed = 0 if done is None else len(done)
        tokens = 0 if done is None else int(done["output_tokens"].sum())
        energy, cost = float(group["energy_kwh"].sum()), float(group["cost_usd"].sum())
        flops, at_peak = _known_sum(group["flops"]), float(np.nansum(group["_at_peak"].to_numpy(dtype=float)))
        rows.append({
            "service": name, "device_type": "+".join(dict.fromkeys(group["device_type"])),
            **{key: group[key].iloc[0] for key in ("model", "quality_cost") if key in group},
            "replicas": len(group),
            "device_hours": group["held_device_seconds"].sum() / 3600,
            "busy_device_hours": group["busy_device_seconds"].sum() / 3600, "energy_kwh": energy, "cost_usd": cost,
            "flops": flops, "mfu": flops / at_peak if at_peak > 0 else math.nan, "completed": completed,
            "output_tokens": tokens,
            "kwh_per_1k_requests": _per(energy, completed, 1e3), "usd_per_1k_requests": _per(cost, completed, 1e3),
            "kwh_per_million_tokens": _per(energy, tokens, 1e6), "usd_per_million_tokens": _per(cost, tokens, 1e6),
            **_speculation(group),
        })
    return pd.DataFrame(rows)


def _speculation(replicas: pd.DataFrame) -> dict[str, float]:
    """A speculative service's draft figures summed over its replicas (none for a run without speculation; NaN for
    a service that does not speculate): FLOPs of the draft and of rejected verify positions, the share of proposed
    draft tokens accepted, and the share of its FLOPs those two are."""
    if "draft_flops" not in replicas:
        return {}
    proposed, accepted = _known_sum(replicas["draft_tokens"]), _known_sum(replicas["draft_accepted"])
    draft, rejected = _known_sum(replicas["draft_flops"]), _known_sum(replicas["rejected_flops"])
    flops = _known_sum(replicas["flops"])
    return {"draft_flops": draft, "rejected_flops": rejected,
            "draft_acceptance": accepted / proposed if proposed > 0 else math.nan,
            "speculation_flops_share": (draft + rejected) / flops if flops > 0 else math.nan}


def summarize(table: pd.DataFrame, requests: pd.DataFrame | None) -> dict[str, Any]:
    """Summary keys from an accounting ``table`` and the run's ``requests`` (or None): ``energy.kwh``,
    ``energy.idle_kwh``, ``cost.usd``, ``compute.flops``, ``compute.mfu``, each (but the idle ones) also under
    ``training.`` and ``inference.``; inference figures per 1,000 completed requests and per million generated
    tokens; ``carbon.kg`` and its splits when the table has carbon."""
    carbon = "carbon_kg" in table
    done = requests[requests["status"] == "finished"] if requests is not None else None
    completed = len(done) if done is not None else 0
    tokens = int(done["output_tokens"].sum()) if done is not None else 0
    sides = {side: table[table["side"] == side] for side in SIDES}
    out: dict[str, Any] = {}
    for side in ("training", "inference"):
        rows = sides[side]
        energy, cost = float(rows["energy_kwh"].sum()), float(rows["cost_usd"].sum())
        flops, at_peak = _known_sum(rows["flops"]), float(rows["flops_at_peak"].sum())
        part: dict[str, Any] = {
            "device_hours": {"allocated": float(rows["device_hours"].sum()),
                             "busy": float(rows["busy_device_hours"].sum())},
            "energy": {"kwh": energy}, "cost": {"usd": cost},
            "compute": {"flops": flops, "mfu": flops / at_peak if at_peak > 0 else math.nan},
        }
        if carbon:
            part["carbon"] = {"kg": float(rows["carbon_kg"].sum())}
        if side == "training":
            part["compute"]["flops_assumed"] = bool(rows["flops_assumed"].any())
            part["device_time_exact"] = bool(rows["device_time_exact"].all())
        else:
            figures = (("energy", "kwh", energy), ("cost", "usd", cost))
            if carbon:
                figures += (("carbon", "kg", part["carbon"]["kg"]),)
            for key, unit, value in figures:
                part[key][f"{unit}_per_1k_requests"] = _per(value, completed, 1e3)
                part[key][f"{unit}_per_million_tokens"] = _per(value, tokens, 1e6)
        out[side] = part
    free = sides["free"]
    held = table[table["side"] != "free"]
    flops = _known_sum(pd.Series([out["training"]["compute"]["flops"], out["inference"]["compute"]["flops"]]))
    at_peak = float(held["flops_at_peak"].sum())
    top: dict[str, Any] = {
        "energy": {"kwh": float(table["energy_kwh"].sum()), "idle_kwh": float(free["energy_kwh"].sum())},
        "cost": {"usd": float(table["cost_usd"].sum()), "idle_usd": float(free["cost_usd"].sum())},
        "compute": {"flops": flops, "mfu": flops / at_peak if at_peak > 0 else math.nan},
    }
    if carbon:
        top["carbon"] = {"kg": float(table["carbon_kg"].sum()), "idle_kg": float(free["carbon_kg"].sum()),
                         "grid_g_per_kwh": float(table["grid_g_per_kwh"].iloc[0])}
    return {**top, **out}


def _known_sum(values: pd.Series) -> float:
    """Sum of the known values; NaN only when there are values and none is known."""
    array = np.asarray(values, dtype=float)
    known = array[~np.isnan(array)]
    return float(known.sum()) if known.size or not array.size else math.nan


def _per(value: float, count: float, scale: float) -> float:
    return value / count * scale if count > 0 else math.nan


def _prices(prices: Mapping[str, float] | None) -> dict[str, float]:
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise ConfigError(f"prices must map device types to USD per device-hour, got {prices!r}")
    out = {}
    for name, value in prices.items():
        spec = known_device("prices", name)
        out[spec.name] = parse_quantity(f"prices.{name}", value, "price")
    return out


def known_device(where: str, name: Any) -> DeviceSpec:
    """The catalog device ``name``; an unknown one is a ``ConfigError`` naming ``where.name``."""
    try:
        return get_device(name)
    except (UnknownNameError, TypeError) as exc:
        raise ConfigError(f"{where}.{name}: {exc}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
