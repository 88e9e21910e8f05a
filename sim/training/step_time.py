"""Step time of a data, tensor and pipeline parallel training job from its model (docs/REFERENCE.md,
"Training step time"; DESIGN.md, "Training step time").

One step is one optimizer update over ``global_batch`` sequences of ``sequence`` tokens on
``n = data * tensor * pipeline`` devices, ``m = global_batch / (data * micro_batch)`` micro-batches per
pipeline, ``v`` virtual stages per device (interleaved 1F1B):

    total = compute + bubble + tp_comm + pp_comm + dp_comm_exposed

- ``compute = flops_per_token * tokens / (n * peak * efficiency)``: ``6 * params`` FLOPs per token; ``8 * params``
  with full activation recomputation; with selective recomputation ``6 * params`` plus the attention-core
  matmuls (``Q K^T`` and ``A V``, ``4 * n_layers * sequence * d_model`` per token) run again in backward
  (Korthikanti et al. 2022). ``efficiency`` is ``MATMUL_EFFICIENCY`` unless given.
- ``bubble = (p - 1) / (v * m) * (compute + tp_comm)``: idle pipeline slots, each as long as a slot of work.
- ``tp_comm``: Megatron-LM tensor parallelism, per layer and micro-batch 2 all-reduces forward and 2 backward of
  the activations, ``micro_batch * sequence * d_model * activation_bytes`` bytes; with sequence parallelism each
  all-reduce becomes a reduce-scatter plus an all-gather of the same buffer (same bytes, one more latency).
  Full recomputation repeats the forward ones (6 instead of 4). Not overlapped with compute (Megatron-LM 2022).
- ``pp_comm = 2 * (v * m + p - 1) * T_p2p``: a forward activation and a backward gradient cross each stage
  boundary in every slot of the schedule, blocking. Each tensor-parallel rank sends its ``1 / tensor`` slice
  (sequence parallelism, or Megatron's scatter-gather of the pipeline tensors).
- ``dp_comm_exposed = (1 - dp_overlap) * T_all_reduce(params / (tensor * pipeline) * grad_bytes)`` over the
  data-parallel group: the part of the gradient all-reduce that backward does not hide.

Layers are assumed split evenly over stages; embeddings, the LM head's logits and the optimizer step are not
modelled beyond their share of ``6 * params``. Collective costs come from :mod:`sim.platform.network.collectives`,
on the :class:`~sim.platform.network.collectives.GroupShape` of each parallel dimension (:class:`ParallelGroups`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim.errors import ConfigError
from sim.platform.hardware import DeviceSpec, get_device
from sim.platform.network.collectives import CollectiveCost, GroupShape, collective_cost
from workloads.models import FixedCostModelSpec, LLMSpec, ModelSpec, get_model

RECOMPUTATION: tuple[str, ...] = ("none", "selective", "full")

MATMUL_EFFICIENCY = 0.63
"""CALIBRATION: achieved fraction of peak FLOP/s of the training FLOPs. Fitted to GPT-3 175B on 64 A100 with
selective recomputation and sequence parallelism, 13.75 s per iteration (Korthikanti et al. 2022, Table 5);
the tests check the same paper's full-recomputation figure, 18.13 s, with this constant."""

DEFAULT_DP_OVERLAP = 0.5
"""ASSUMPTION (not fitted): fraction of the data-parallel gradient all-reduce hidden behind backward.
Megatron-LM without ``--overlap-grad-reduce`` hides none (0); bucketed DDP hides most when backward is long."""

DEFAULT_GRAD_BYTES = 4.0
"""Bytes per reduced gradient: fp32, as Megatron-LM's bf16 training and PyTorch autocast keep gradients."""


@dataclass(frozen=True)
class ModelShape:
    """What the step time needs of a model: parameters and, for tensor and pipeline parallelism and selective
    recomputation, its transformer layers and width."""

    params: float
    n_layers: int | None = None
    d_model: int | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        _check_number("model.params", self.params)
        for key in ("n_layers", "d_model"):
            value = getattr(self, key)
            if value is not None:
                _check_int(f"model.{key}", value)

    @classmethod
    def of(cls, model: str | ModelSpec | ModelShape | Mapping[str, Any]) -> ModelShape:
        """The shape of a catalog name, an ``LLMSpec``, a ``ModelShape`` or a mapping of its fields
        (``{params, n_layers, d_model, name}``, for a model that is not in the catalog)."""
        if isinstance(model, ModelShape):
            return model
        if isinstance(model, Mapping):
            unknown = set(model) - {"params", "n_layers", "d_model", "name"}
            if unknown or "params" not in model:
                raise ConfigError(f"model: a description needs params (and n_layers, d_model for tensor or "
                                  f"pipeline parallelism); unknown keys {sorted(unknown)}" if unknown else
                                  "model: a description needs params")
            return cls(**model)
        spec = get_model(model) if isinstance(model, str) else model
        if isinstance(spec, FixedCostModelSpec):
            raise ConfigError(f"model {spec.name!r} has no tokens or layers; training step times need an LLM "
                              "or a ModelShape(params, n_layers, d_model)")
        if not isinstance(spec, LLMSpec):
            raise ConfigError(f"model must be a name, an LLMSpec or a ModelShape, got {model!r}")
        return cls(params=spec.params, n_layers=spec.n_layers, d_model=spec.d_model, name=spec.name)


@dataclass(frozen=True)
class Parallelism:
    """Degrees of parallelism and batch of one training job.

    ``global_batch`` sequences of ``sequence`` tokens per optimizer step, ``micro_batch`` sequences per
    micro-batch; ``virtual_stages`` model chunks per pipeline device (interleaved schedule).
    ``tensor_across_nodes`` allows a tensor-parallel group to span nodes (off: a config error).
    """

    data: int = 1
    tensor: int = 1
    pipeline: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    sequence: int = 2048
    virtual_stages: int = 1
    sequence_parallel: bool = False
    tensor_across_nodes: bool = False

    def __post_init__(self) -> None:
        for key in ("data", "tensor", "pipeline", "micro_batch", "global_batch", "sequence", "virtual_stages"):
            _check_int(f"parallelism.{key}", getattr(self, key))
        for key in ("sequence_parallel", "tensor_across_nodes"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"parallelism.{key} must be true or false, got {getattr(self, key)!r}")
        if self.global_batch % (self.data * self.micro_batch):
            raise ConfigError(f"parallelism.global_batch ({self.global_batch}) must be a multiple of data x "
                              f"micro_batch ({self.data} x {self.micro_batch})")
        if self.virtual_stages > 1 and self.pipeline == 1:
            raise ConfigError("parallelism.virtual_stages > 1 needs parallelism.pipeline > 1")

    @classmethod
    def for_devices(cls, devices: int, *, tensor: int = 1, pipeline: int = 1, **options: Any) -> Parallelism:
        """The parallelism on ``devices`` devices: data-parallel degree ``devices / (tensor * pipeline)``."""
        _check_int("devices", devices)
        _check_int("parallelism.tensor", tensor)
        _check_int("parallelism.pipeline", pipeline)
        for key, degree in (("tensor", tensor), ("pipeline", pipeline), ("tensor x pipeline", tensor * pipeline)):
            if devices % degree:
                raise ConfigError(f"parallelism.{key} ({degree}) does not divide the device count ({devices})")
        return cls(data=devices // (tensor * pipeline), tensor=tensor, pipeline=pipeline, **options)

    @property
    def devices(self) -> int:
        """``data * tensor * pipeline``."""
        return self.data * self.tensor * self.pipeline

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline and step, ``global_batch / (data * micro_batch)``."""
        return self.global_batch // (self.data * self.micro_batch)

    @property
    def bubble_fraction(self) -> float:
        """Pipeline bubble over ideal time, ``(p - 1) / (v * m)``."""
        return (self.pipeline - 1) / (self.virtual_stages * self.micro_batches)


@dataclass(frozen=True)
class ParallelGroups:
    """The shape of one group of each parallel dimension: ``tensor`` (``tensor`` ranks), ``pipeline`` (the two
    ranks of adjacent stages across the slowest boundary) and ``data`` (``data`` ranks). ``None`` where the
    degree is 1."""

    tensor: GroupShape | None = None
    pipeline: GroupShape | None = None
    data: GroupShape | None = None

    @classmethod
    def packed(cls, device: DeviceSpec | str, parallelism: Parallelism, *, devices_per_node: int,
               nics_per_node: int, nic_gbps: float, oversubscription: float = 1.0,
               nodes_per_leaf: int | None = None) -> ParallelGroups:
        """Groups of a job packed onto whole nodes in Megatron-LM's rank order (tensor fastest, then data, then
        pipeline), ``devices_per_node`` devices and ``nics_per_node`` NICs of ``nic_gbps`` Gb/s per node,
        ``nodes_per_leaf`` nodes under each leaf switch (``None``: one leaf)."""
        spec = get_device(device) if isinstance(device, str) else device
        _check_int("devices_per_node", devices_per_node)
        tp, dp, pp = parallelism.tensor, parallelism.data, parallelism.pipeline
        dpn = devices_per_node
        if nodes_per_leaf is not None:
            _check_int("nodes_per_leaf", nodes_per_leaf)
        job_nodes = math.ceil(parallelism.devices / dpn)
        if parallelism.devices > dpn and parallelism.devices % dpn:
            raise ConfigError(f"parallelism: {parallelism.devices} devices do not fill whole nodes of "
                              f"devices_per_node={dpn}")

        def leaves(nodes: int, span: int) -> int:
            return 1 if nodes_per_leaf is None else min(nodes, math.ceil(span / nodes_per_leaf))

        def shape(ranks: int, nodes: int = 1, span: int = 1, groups: int = 1) -> GroupShape:
            return GroupShape.on_device(spec, ranks, nodes=nodes, nics_per_node=nics_per_node if nodes > 1 else 0,
                                        nic_gbps=nic_gbps if nodes > 1 else 0.0, oversubscription=oversubscription,
                                        leaves=leaves(nodes, span) if nodes > 1 else 1, parallel_groups=groups)

        tensor = data = pipeline = None
        if tp > 1:
            if tp <= dpn:
                if parallelism.devices > dpn and dpn % tp:
                    raise ConfigError(f"parallelism.tensor ({tp}) does not divide devices_per_node ({dpn})")
                tensor = shape(tp)
            else:
                if not parallelism.tensor_across_nodes:
                    raise ConfigError(f"parallelism.tensor ({tp}) exceeds devices_per_node ({dpn}) and "
                                      "parallelism.tensor_across_nodes is off")
                if tp % dpn:
                    raise ConfigError(f"parallelism.tensor ({tp}) must be a multiple of devices_per_node ({dpn})")
                tensor = shape(tp, tp // dpn, tp // dpn)
        if dp > 1:
            per_node = max(1, min(dp, dpn // tp))
            nodes = dp // per_node
            span = (dp - 1) * tp // dpn + 1
            data = shape(dp, nodes, span, groups=min(tp, dpn)) if nodes > 1 else shape(dp)
        if pp > 1:
            stage = tp * dp
            pipeline = shape(2) if stage * pp <= dpn else shape(2, 2, job_nodes, groups=min(stage, dpn))
        return cls(tensor=tensor, pipeline=pipeline, data=data)


@dataclass(frozen=True)
class StepTime:
    """Seconds of one training step, by part (module docstring). ``network_comm`` is the bandwidth part of the
    exposed communication on groups that span nodes, bubble share included: what network contention
    stretches. ``model_flops`` is ``6 * params * tokens``, ``peak_flops`` the devices' summed peak."""

    compute: float
    bubble: float
    tp_comm: float
    pp_comm: float
    dp_comm_exposed: float
    network_comm: float
    model_flops: float
    peak_flops: float

    @property
    def total(self) -> float:
        """Seconds per step."""
        return self.compute + self.bubble + self.tp_comm + self.pp_comm + self.dp_comm_exposed

    @property
    def exposed_comm_fraction(self) -> float:
        """Share of the step spent in exposed communication, ``(tp + pp + dp exposed) / total``."""
        return (self.tp_comm + self.pp_comm + self.dp_comm_exposed) / self.total

    @property
    def network_fraction(self) -> float:
        """Share of the step that network contention stretches, ``network_comm / total``."""
        return self.network_comm / self.total

    @property
    def mfu(self) -> float:
        """Model FLOP utilization, ``6 * params * tokens / (peak_flops * total)``."""
        return self.model_flops / (self.peak_flops * self.total)

    def stretched(self, factor: float) -> float:
        """Seconds per step when network transfers take ``factor`` times as long (``factor = 1 / network_share``
        of a contention solver): ``total + (factor - 1) * network_comm``."""
        _check_number("factor", factor)
        return self.total + (factor - 1) * self.network_comm


def training_step_time(model: str | ModelSpec | ModelShape | Mapping[str, Any], parallelism: Parallelism,
                       device: DeviceSpec | str, groups: ParallelGroups, *, recomputation: str = "none",
                       efficiency: float = MATMUL_EFFICIENCY, dp_overlap: float = DEFAULT_DP_OVERLAP,
                       activation_bytes: float = 2.0,
                       grad_bytes: float = DEFAULT_GRAD_BYTES, precision: str = "bf16",
                       network_share: float = 1.0) -> StepTime:
    """Seconds of one training step of ``model`` with ``parallelism`` on ``device``s whose parallel groups have
    the shapes ``groups`` (module docstring). ``network_share`` in (0, 1] is passed to every collective."""
    shape = ModelShape.of(model)
    spec = get_device(device) if isinstance(device, str) else device
    par = parallelism
    if recomputation not in RECOMPUTATION:
        raise ConfigError(f"recomputation must be one of {', '.join(RECOMPUTATION)}, got {recomputation!r}")
    _check_number("efficiency", efficiency)
    if efficiency > 1:
        raise ConfigError(f"efficiency must be in (0, 1], got {efficiency!r}")
    _check_number("dp_overlap", dp_overlap, positive=False)
    if dp_overlap > 1:
        raise ConfigError(f"dp_overlap must be in [0, 1], got {dp_overlap!r}")
    _check_number("activation_bytes", activation_bytes)
    _check_number("grad_bytes", grad_bytes)
    _check_groups(par, groups)
    if (par.tensor > 1 or par.pipeline > 1 or recomputation == "selective") and (
            shape.n_layers is None or shape.d_model is None):
        raise ConfigError(f"model {shape.name!r}: tensor or pipeline parallelism and selective recomputation need "
                          "model.n_layers and model.d_model")
    if shape.n_layers is not None and shape.n_layers % (par.pipeline * par.virtual_stages):
        raise ConfigError(f"parallelism.pipeline x virtual_stages ({par.pipeline} x {par.virtual_stages}) must "
                          f"divide the model's {shape.n_layers} layers")

    layers, width = shape.n_layers or 0, shape.d_model or 0
    tokens = par.global_batch * par.sequence
    per_token = (8 if recomputation == "full" else 6) * shape.params
    if recomputation == "selective":
        per_token += 4 * layers * par.sequence * width
    peak = par.devices * spec.peak(precision)
    compute = per_token * tokens / (peak * efficiency)

    m, options = par.micro_batches, {"network_share": network_share}
    activations = par.micro_batch * par.sequence * width * activation_bytes
    tp_comm = tp_network = 0.0
    if groups.tensor is not None and par.tensor > 1:
        kinds = ("reduce-scatter", "all-gather") if par.sequence_parallel else ("all-reduce",)
        costs = [collective_cost(kind, groups.tensor, activations, **options) for kind in kinds]
        count = m * layers / par.pipeline * (6 if recomputation == "full" else 4)
        tp_comm = count * sum(cost.time for cost in costs)
        tp_network = count * _network(costs, groups.tensor)
    bubble = par.bubble_fraction * (compute + tp_comm)

    pp_comm = pp_network = 0.0
    if groups.pipeline is not None and par.pipeline > 1:
        cost = collective_cost("point-to-point", groups.pipeline, activations / par.tensor, **options)
        count = 2 * (par.virtual_stages * m + par.pipeline - 1)
        pp_comm, pp_network = count * cost.time, count * _network([cost], groups.pipeline)

    dp_comm = dp_network = 0.0
    if groups.data is not None and par.data > 1:
        gradients = shape.params / (par.tensor * par.pipeline) * grad_bytes
        cost = collective_cost("all-reduce", groups.data, gradients, **options)
        dp_comm, dp_network = (1 - dp_overlap) * cost.time, (1 - dp_overlap) * _network([cost], groups.data)

    network = tp_network * (1 + par.bubble_fraction) + pp_network + dp_network
    return StepTime(compute=compute, bubble=bubble, tp_comm=tp_comm, pp_comm=pp_comm, dp_comm_exposed=dp_comm,
                    network_comm=network, model_flops=6 * shape.params * tokens, peak_flops=peak)


def _network(costs: list[CollectiveCost], shape: GroupShape) -> float:
    return sum(cost.transfer for cost in costs) if shape.nodes > 1 else 0.0


def _check_groups(par: Parallelism, groups: ParallelGroups) -> None:
    for key, degree, ranks in (("tensor", par.tensor, par.tensor), ("pipeline", par.pipeline, 2),
                               ("data", par.data, par.data)):
        group = getattr(groups, key)
        if degree == 1:
            continue
        if group is None:
            raise ConfigError(f"groups.{key} is required when parallelism.{key} is {degree}")
        if group.ranks != ranks:
            raise ConfigError(f"groups.{key} has {group.ranks} ranks; parallelism.{key} = {degree} needs {ranks}")
    if par.tensor > 1 and groups.tensor is not None and groups.tensor.nodes > 1 and not par.tensor_across_nodes:
        raise ConfigError(f"parallelism.tensor: the tensor-parallel group spans {groups.tensor.nodes} nodes and "
                          "parallelism.tensor_across_nodes is off")


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _check_number(key: str, value: Any, *, positive: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "positive" if positive else "non-negative"
        raise ConfigError(f"{key} must be a finite {bound} number, got {value!r}")
