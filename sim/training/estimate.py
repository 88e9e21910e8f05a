"""What one training run of a model costs: FLOPs, wall time, energy and money on a given cluster.

Total training FLOPs are ``6 * params * tokens`` (REFERENCE.md; ``8 * params`` per token with full
recomputation is what the devices execute, not what the model needs). The wall time is the number of
optimizer steps, ``tokens / (global_batch * sequence)``, times the step time of the model on the job's
reference placement on the cluster (:mod:`sim.training.step_time`, packed into whole nodes under one leaf, with
the cluster's NICs). Energy takes every device of the job at its training power for the whole run
(``power_watts``, by default the device's TDP: a training job keeps its devices busy), and cost the
devices' price per device-hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim.errors import ConfigError
from sim.platform.cluster import Cluster
from sim.platform.hardware import DeviceSpec
from sim.training.step_time import ModelShape, ParallelGroups, Parallelism, StepTime, training_step_time
from workloads.models import ModelSpec


@dataclass(frozen=True)
class TrainingEstimate:
    """One training run: the model's FLOPs and what the run takes on the cluster."""

    model: str
    tokens: float
    flops: float
    """``6 * params * tokens``: the model's training FLOPs."""
    device: str
    devices: int
    steps: float
    step: StepTime
    seconds: float
    energy_kwh: float
    cost_usd: float

    @property
    def days(self) -> float:
        return self.seconds / 86_400

    @property
    def device_hours(self) -> float:
        return self.devices * self.seconds / 3600

    @property
    def mfu(self) -> float:
        """Model FLOP utilization over the run, ``flops / (devices * peak * seconds)``."""
        return self.step.mfu


def training_flops(model: str | ModelSpec | ModelShape | Mapping[str, Any], tokens: float) -> float:
    """``6 * params * tokens``: the FLOPs of training ``model`` on ``tokens`` tokens."""
    if not (isinstance(tokens, (int, float)) and tokens > 0):
        raise ConfigError(f"tokens must be a positive number, got {tokens!r}")
    return 6.0 * ModelShape.of(model).params * float(tokens)


def estimate_training(model: str | ModelSpec | ModelShape | Mapping[str, Any], tokens: float, cluster: Cluster, *,
                      tensor: int = 1, pipeline: int = 1, devices: int | None = None, pool: int = 0,
                      micro_batch: int = 1, global_batch: int | None = None, sequence: int = 2048,
                      power_watts: float | None = None, **step_options: Any) -> TrainingEstimate:
    """FLOPs, wall time, energy and cost of training ``model`` on ``tokens`` tokens with ``devices`` devices of
    ``pool`` (default: the whole pool) in data x ``tensor`` x ``pipeline`` parallelism. ``global_batch``
    defaults to one sequence per data-parallel rank and micro-batch; ``step_options`` go to
    :func:`sim.training.step_time.training_step_time` (``recomputation``, ``sequence_parallel`` is set in the
    parallelism, ``efficiency``, ``dp_overlap``, ``precision``)."""
    if not 0 <= pool < len(cluster.pools):
        raise ConfigError(f"pool {pool} is not a pool of cluster {cluster.name!r} (0..{len(cluster.pools) - 1})")
    device: DeviceSpec = cluster.device_specs[pool]
    n = cluster.pool_devices[pool] if devices is None else devices
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= cluster.pool_devices[pool]:
        raise ConfigError(f"devices must be a whole number in 1..{cluster.pool_devices[pool]} for pool "
                          f"{cluster.pools[pool].name!r}, got {devices!r}")
    parallel_options = {k: step_options.pop(k) for k in ("sequence_parallel", "virtual_stages", "tensor_across_nodes")
                        if k in step_options}
    data = n // (tensor * pipeline) if tensor * pipeline and n % (tensor * pipeline) == 0 else 0
    batch = global_batch if global_batch is not None else max(1, data) * micro_batch
    parallelism = Parallelism.for_devices(n, tensor=tensor, pipeline=pipeline, micro_batch=micro_batch,
                                          global_batch=batch, sequence=sequence, **parallel_options)
    topology = cluster.topology
    first = cluster.pool_nodes[pool][0]
    groups = ParallelGroups.packed(device, parallelism, devices_per_node=cluster.pools[pool].devices_per_node,
                                   nics_per_node=int(topology.node_nics[first]),
                                   nic_gbps=float(topology.node_nic_bandwidth[first]) * 8 / 1e9)
    step = training_step_time(model, parallelism, device, groups, **step_options)
    steps = float(tokens) / (parallelism.global_batch * parallelism.sequence)
    seconds = steps * step.total
    watts = device.tdp_watts if power_watts is None else power_watts
    if not (isinstance(watts, (int, float)) and watts >= 0):
        raise ConfigError(f"power_watts must be a non-negative number of watts per device, got {power_watts!r}")
    return TrainingEstimate(
        model=ModelShape.of(model).name, tokens=float(tokens), flops=training_flops(model, tokens), device=device.name,
        devices=n, steps=steps, step=step, seconds=seconds, energy_kwh=n * watts * seconds / 3.6e6,
        cost_usd=n * device.price_per_hour * seconds / 3600)
