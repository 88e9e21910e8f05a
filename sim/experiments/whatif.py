"""Hardware what-ifs: clusters of equal device count, price or power built from other device types, and the
same workload run on each of them.

``equivalent_clusters(preset("dgx-h100", nodes=4), ["a100", "h200", "tpu-v5p"], basis="price")`` gives, per
device type, the cluster whose price per hour comes closest to the reference's from below in whole nodes;
``compare_hardware(config, clusters)`` runs one config's workload on each (same seed, so the same jobs and
requests: common random numbers) and returns one row per cluster.

**Rounding.** A cluster has ``floor(B / (b * n))`` nodes, at least one, where ``B`` is the reference's total
(devices, USD per hour or TDP watts), ``b`` one device's figure and ``n`` the devices per node. Rounding down
keeps every cluster within the budget unless even one node exceeds it; a relative tolerance of 1e-9 keeps
float error (``45 * 0.70 / 4.5 = 6.999...``) from dropping a node. Each cluster's name states the ratio
it reaches, e.g. ``"a100 x 6 nodes (equal price, 1.00x)"``.

**Node sizes.** GPUs: 8 per node (DGX/HGX servers). TPUs: chips per host from the Cloud TPU docs, v4 and v5p
4, v5e 8 (``TPU_HOST_SIZE``; the sizes ``sim.platform.network`` tests build TPU slices from).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from sim.errors import ConfigError, UnknownNameError, did_you_mean
from sim.experiments.config import ClusterConfig, Config, PoolConfig, ServiceConfig, config_to_dict, load_config
from sim.experiments.scenario import run_config
from sim.output.results import Results, summary_value
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.hardware import DeviceSpec, get_device
from sim.platform.network.specs import default_network

Basis = Literal["count", "price", "power"]

BASES: tuple[str, ...] = ("count", "price", "power")
"""What equivalent clusters hold equal: device count, price per hour (USD), or power budget (TDP watts)."""

GPU_NODE_SIZE = 8
"""Devices per GPU node (8-GPU DGX/HGX servers)."""

TPU_HOST_SIZE: Mapping[str, int] = MappingProxyType({"tpu-v4": 4, "tpu-v5p": 4, "tpu-v5e": 8})
"""Chips per TPU host (Cloud TPU v4, v5p and v5e docs)."""

_TOLERANCE = 1e-9


def node_size(device: str | DeviceSpec) -> int:
    """Devices per node the what-ifs build for ``device``: its TPU host size, or ``GPU_NODE_SIZE``."""
    spec = device if isinstance(device, DeviceSpec) else get_device(device)
    return TPU_HOST_SIZE.get(spec.name, GPU_NODE_SIZE)


def cluster_totals(cluster: Cluster) -> dict[str, Any]:
    """``device_type`` (comma-joined), ``nodes``, ``devices``, ``usd_per_hour``, ``tdp_w`` and ``peak_pflops``
    (bf16 with fallback) of every device of ``cluster``, busy or not."""
    pairs = list(zip(cluster.pools, cluster.device_specs, strict=True))
    return {
        "device_type": ", ".join(dict.fromkeys(p.device for p in cluster.pools)),
        "nodes": cluster.num_nodes,
        "devices": cluster.num_devices,
        "usd_per_hour": sum(_devices(p) * s.price_per_hour for p, s in pairs),
        "tdp_w": sum(_devices(p) * s.tdp_watts for p, s in pairs),
        "peak_pflops": sum(_devices(p) * s.training_peak for p, s in pairs) / 1e15,
    }


def _devices(pool: PoolSpec) -> int:
    return pool.nodes * pool.devices_per_node


def _per_device(spec: DeviceSpec, basis: str) -> float:
    return {"count": 1.0, "price": spec.price_per_hour, "power": spec.tdp_watts}[basis]


def _device(name: Any, where: str) -> DeviceSpec:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: expected a device type name, got {name!r}")
    try:
        return get_device(name)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _reference_total(reference: Cluster | tuple[str, int], basis: str) -> float:
    """The reference's total on ``basis``; a ``(device, count)`` pair is ``count`` devices of that type."""
    if isinstance(reference, Cluster):
        return sum(_devices(p) * _per_device(s, basis)
                   for p, s in zip(reference.pools, reference.device_specs, strict=True))
    if not (isinstance(reference, tuple) and len(reference) == 2):
        raise ConfigError(f"equivalent_clusters: reference must be a Cluster or a (device, count) pair, "
                          f"got {reference!r}")
    device, count = reference
    spec = _device(device, "equivalent_clusters: reference[0]")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(f"equivalent_clusters: reference[1] (device count) must be a positive integer, got {count!r}")
    return count * _per_device(spec, basis)


def equivalent_clusters(reference: Cluster | tuple[str, int], devices: Sequence[str], *, basis: Basis,
                        devices_per_node: int | None = None) -> dict[str, Cluster]:
    """For each device type in ``devices``, a one-pool cluster matching ``reference`` on ``basis``.

    ``reference`` is a cluster (mixed device types are fine: its totals add up over pools) or a
    ``(device, count)`` pair of ``count`` devices. ``basis``: ``count`` (total devices), ``price`` (total
    ``price_per_hour``) or ``power`` (total ``tdp_watts``). Nodes are rounded down, at least one (module
    docstring); ``devices_per_node`` replaces the default node size (``node_size``) for every type. A
    reference cluster's fabric (``Cluster.network``), if it has one, is kept. Keys are the names as given.
    """
    where = "equivalent_clusters"
    if basis not in BASES:
        raise ConfigError(f"{where}: unknown basis {basis!r}{did_you_mean(str(basis), BASES)}; "
                          f"valid: {', '.join(BASES)}")
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise ConfigError(f"{where}: devices must be a non-empty list of device types, e.g. ['a100', 'h100'], "
                          f"got {devices!r}")
    if devices_per_node is not None and (isinstance(devices_per_node, bool) or not isinstance(devices_per_node, int)
                                         or not 0 < devices_per_node <= 64):
        raise ConfigError(f"{where}: devices_per_node must be an integer in 1..64, got {devices_per_node!r}")
    total = _reference_total(reference, basis)
    if total <= 0:
        raise ConfigError(f"{where}: the reference's total {basis} is {total!r}; nothing to match")
    fabric = reference.network.fabric if isinstance(reference, Cluster) and reference.network is not None else None
    clusters: dict[str, Cluster] = {}
    seen: dict[str, int] = {}
    for i, name in enumerate(devices):
        spec = _device(name, f"{where}: devices[{i}]")
        if spec.name in seen:
            raise ConfigError(f"{where}: devices[{i}] {name!r} is {spec.name}, already given as "
                              f"devices[{seen[spec.name]}]")
        seen[spec.name] = i
        per_device = _per_device(spec, basis)
        if per_device <= 0:
            raise ConfigError(f"{where}: devices[{i}] {spec.name} has no {basis} figure ({per_device}); "
                              "cannot match a budget with it")
        size = devices_per_node or node_size(spec)
        nodes = max(1, math.floor(total / (per_device * size) * (1 + _TOLERANCE)))
        ratio = nodes * size * per_device / total
        label = f"{name.strip()} x {nodes} nodes (equal {basis}, {ratio:.2f}x)"
        cluster = Cluster([PoolSpec(spec.name, nodes, size)], name=label)
        if fabric is not None:
            cluster = Cluster(cluster.pools, name=label, network=default_network(cluster, fabric=fabric))
        clusters[name] = cluster
    return clusters


def config_for_cluster(config: Config, cluster: Cluster) -> Config:
    """``config`` with its cluster replaced by ``cluster`` (pools, names, racks and network as they are) and its
    device pins moved onto it.

    - ``workload.training.allowed_devices``: the types ``cluster`` lacks are dropped; if none is left, the pin is
      lifted (``None``: any device). ``reference_device`` stays: jobs speed up or slow down by peak FLOP/s in
      their precision (the engine's rule), so it must stay the device their run times were measured on.
    - a service's ``device`` that ``cluster`` lacks becomes the cluster's device type, or ``None`` (the first
      pool with room) when the cluster has several types.
    """
    types = list(dict.fromkeys(p.device for p in cluster.pools))
    training = config.workload.training
    if training.allowed_devices is not None:
        kept = tuple(d for i, d in enumerate(training.allowed_devices)
                     if _device(d, f"workload.training.allowed_devices[{i}]").name in types)
        training = dataclasses.replace(training, allowed_devices=kept or None)
    services = tuple(_service_on(s, i, types) for i, s in enumerate(config.workload.inference.services))
    workload = dataclasses.replace(config.workload, training=training,
                                   inference=dataclasses.replace(config.workload.inference, services=services))
    return dataclasses.replace(config, cluster=_cluster_config(cluster), workload=workload)


def _service_on(service: ServiceConfig, index: int, types: list[str]) -> ServiceConfig:
    if service.device is None:
        return service
    spec = _device(service.device, f"workload.inference.services[{index}].device")
    if spec.name in types:
        return service
    return dataclasses.replace(service, device=types[0] if len(types) == 1 else None)


def _cluster_config(cluster: Cluster) -> ClusterConfig:
    """The ``cluster:`` section that ``sim.experiments.scenario.build_cluster`` turns back into ``cluster``'s pools
    and network (the cluster's name is not part of it)."""
    nets = cluster.network.pools if cluster.network is not None else (None,) * len(cluster.pools)
    pools = tuple(PoolConfig(device=p.device, nodes=p.nodes, devices_per_node=p.devices_per_node, name=p.name,
                             nodes_per_rack=p.nodes_per_rack, network=None if n is None else dataclasses.asdict(n))
                  for p, n in zip(cluster.pools, nets, strict=True))
    fabric = None if cluster.network is None else dataclasses.asdict(cluster.network.fabric)
    return ClusterConfig(preset=None, nodes=None, scale=None, pools=pools, fabric=fabric)


def _load(config: Config | str | Path | Mapping[str, Any], overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        return load_config(config_to_dict(config), overrides) if overrides else config
    return load_config(config, overrides)


def run_on_clusters(config: Config | str | Path | Mapping[str, Any], clusters: Mapping[str, Cluster], *,
                    overrides: Sequence[str] = ()) -> dict[str, Results]:
    """The results of ``config``'s workload (after ``key=value`` ``overrides``) on each cluster, by the same keys.

    Every run uses the config's seed, policies and engine settings (``sim.experiments.scenario.run_config``), so all
    see the same jobs and requests; only the cluster and the device pins (``config_for_cluster``) change. Each run's
    ``run["cluster"]`` is the cluster's name. Trace jobs have no reference device, so their run times do not
    depend on the device type (a warning says so when the clusters' types differ); synthetic jobs with
    ``workload.training.reference_device`` scale by peak FLOP/s.
    """
    base = _load(config, overrides)
    if not isinstance(clusters, Mapping) or not clusters:
        raise ConfigError(f"compare_hardware: clusters must be a non-empty mapping of name to Cluster, "
                          f"got {clusters!r}")
    for label, cluster in clusters.items():
        if not isinstance(cluster, Cluster):
            raise ConfigError(f"compare_hardware: clusters[{label!r}] must be a Cluster, got {type(cluster).__name__}")
    training = base.workload.training
    types = {p.device for c in clusters.values() for p in c.pools}
    if (training.trace is not None or training.jobs) and training.reference_device is None and len(types) > 1:
        warnings.warn("compare_hardware: the training jobs have no reference_device, so their run times are the "
                      "same on every device type; set workload.training.reference_device (synthetic jobs) to "
                      "scale them by peak FLOP/s", UserWarning, stacklevel=2)
    results = {}
    for label, cluster in clusters.items():
        try:
            results[label] = run_config(config_for_cluster(base, cluster),
                                        metadata={"seed": base.seed, "cluster": cluster.name})
        except ConfigError as exc:
            raise ConfigError(f"compare_hardware: cluster {label!r} ({cluster.name}): {exc}") from exc
    return results


_TRAINING = {"jobs": "jobs.count", "jobs_completed": "jobs.completed", "jct_mean": "jobs.jct.mean",
             "jct_p95": "jobs.jct.p95", "queueing_delay_mean": "jobs.queueing_delay.mean",
             "queueing_delay_p95": "jobs.queueing_delay.p95", "utilization": "utilization.mean",
             "makespan": "makespan"}
_INFERENCE = {"requests": "requests.count", "slo_attainment": "requests.slo_attainment",
              "ttft_p99": "requests.ttft.p99", "tpot_p99": "requests.tpot.p99", "goodput": "requests.goodput"}
_ACCOUNTING = {"energy_kwh": "energy.kwh", "cost_usd": "cost.usd", "flops": "compute.flops", "mfu": "compute.mfu"}


def hardware_table(results: Mapping[str, Results], clusters: Mapping[str, Cluster]) -> pd.DataFrame:
    """One row per cluster: ``cluster`` (the key), ``name``, ``cluster_totals``, ``scheduler``, ``placer``,
    ``seed``, then headline figures of ``Results.summary()``: training (``jct_mean``, ``jct_p95``,
    ``queueing_delay_mean``/``_p95``, ``utilization``, ``makespan``) when any run had jobs; inference
    (``slo_attainment``, ``ttft_p99``, ``tpot_p99``, ``goodput`` in requests/s) when any had requests;
    ``energy_kwh``, ``cost_usd``, ``flops``, ``mfu`` when the summaries carry them. Times in seconds."""
    if set(results) != set(clusters):
        raise ConfigError(f"hardware_table: results and clusters must have the same keys, got {sorted(results)} "
                          f"and {sorted(clusters)}")
    summaries = {label: results[label].summary() for label in clusters}
    columns: dict[str, str] = {}
    if any(summary_value(s, "jobs.count") for s in summaries.values()):
        columns.update(_TRAINING)
    if any("requests" in s for s in summaries.values()):
        columns.update(_INFERENCE)
    columns.update({k: v for k, v in _ACCOUNTING.items() if any(v.split(".")[0] in s for s in summaries.values())})
    rows = []
    for label, cluster in clusters.items():
        summary = summaries[label]
        rows.append({"cluster": label, "name": cluster.name, **cluster_totals(cluster),
                     **{k: summary["run"][k] for k in ("scheduler", "placer", "seed")},
                     **{column: summary_value(summary, key) for column, key in columns.items()}})
    return pd.DataFrame(rows)


def compare_hardware(config: Config | str | Path | Mapping[str, Any], clusters: Mapping[str, Cluster], *,
                     overrides: Sequence[str] = ()) -> pd.DataFrame:
    """Run ``config``'s workload on each cluster (``run_on_clusters``) and tabulate them (``hardware_table``)."""
    return hardware_table(run_on_clusters(config, clusters, overrides=overrides), clusters)
