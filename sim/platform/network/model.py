"""How placement and network contention stretch running training jobs (the engine's network model).

A job that gives only a run time (a trace job) keeps it on its *reference placement*: the same gang on
the same pool packed as tightly as the topology allows (one node, else the fewest whole nodes under one
leaf). A share ``f`` of its step is exposed communication (``TrainingJob.comm_fraction``, else the model's
``comm_fraction``). On its actual placement the communication share runs at the ring bus bandwidth of that
placement (``sim.platform.network.collectives.bus_bandwidth``), and contention on shared links (NIC uplinks,
leaf and pod uplink bundles) gives it a rate factor ``x`` in (0, 1] (``ContentionSolver``). Its step
then takes, relative to the reference,

    slowdown = (1 - f) + f * (B_ref / B_placed) / x

and the job progresses at ``speed / slowdown``. Jobs inside one scale-up domain use no shared link and
keep slowdown 1.

While it communicates a job pushes ``B_placed`` bytes/s over every shared link its ring crosses (times
the number of crossings); its weight in the max-min sharing is ``f``. ``demand`` says how phases meet:
``peak`` (default) assumes the communication phases of jobs that share a link overlap, so each asks for
``crossings * B_placed`` and ``x`` is the share it gets while communicating (an upper bound on the
slowdown); ``average`` assumes they interleave perfectly, so each asks for ``f * crossings * B_placed``
(time-averaged traffic, a lower bound: links rarely saturate). Either way it is first order: a stretched
job communicates for a larger share of its longer step, which ``f`` does not follow. With contention off,
a cross-leaf ring instead gets the static bound (its network bandwidth divided by the fabric's
oversubscription ratio, as ``GroupShape`` does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.platform.cluster import Cluster
from sim.platform.hardware import DeviceSpec
from sim.platform.network.collectives import GroupShape, bus_bandwidth, nccl_scale_up_bandwidth, nic_effective_bandwidth
from sim.platform.network.contention import ContentionSolver
from sim.platform.network.topology import Placement, Topology
from sim.training.step_time import ParallelGroups, Parallelism, StepTime, training_step_time
from workloads.jobs import TrainingJob

DEFAULT_COMM_FRACTION = 0.1
"""Exposed communication share of a trace job's step on its reference placement when neither the job nor
the config gives one. An assumption: data-parallel jobs on one NVSwitch node of the Philly/Helios era spend
roughly 5-20% of a step in exposed all-reduce; 0.1 sits in that range. Set it per trace or per job."""


@dataclass(frozen=True)
class NetworkOptions:
    """The engine's network model settings (``sim.platform.network`` in a config)."""

    comm_fraction: float = DEFAULT_COMM_FRACTION
    """Default share of a job's step spent in exposed communication on its reference placement."""
    contention: bool = True
    """Share contended links between jobs (weighted max-min); false: each job alone, static oversubscription."""
    demand: str = "peak"
    """Traffic a job offers a shared link: ``peak`` (phases of jobs overlap) or ``average`` (they interleave)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.comm_fraction, (int, float)) and 0 <= self.comm_fraction < 1):
            raise ConfigError(f"sim.network.comm_fraction must be in [0, 1), got {self.comm_fraction!r}")
        if not isinstance(self.contention, bool):
            raise ConfigError(f"sim.network.contention must be true or false, got {self.contention!r}")
        if self.demand not in ("peak", "average"):
            raise ConfigError(f"sim.network.demand must be peak or average, got {self.demand!r}")


class _Running:
    """What the model keeps for one running job."""

    __slots__ = ("fraction", "level", "ratio", "reference", "slowdown", "step")

    def __init__(self, fraction: float, level: str, ratio: float) -> None:
        self.fraction = fraction
        self.level = level
        self.ratio = ratio  # B_ref / B_placed, before contention
        self.slowdown = 1.0
        self.step: StepTime | None = None  # model jobs: the step on this placement, and on the reference one
        self.reference = 1.0

    def stretched(self, x: float) -> float:
        """Slowdown when the job gets a share ``x`` of its uncontended network speed."""
        if self.step is not None:
            return self.step.stretched(1 / x) / self.reference
        return (1 - self.fraction) + self.fraction * self.ratio / x


_STEP_OPTIONS = ("recomputation", "dp_overlap")


def job_parallelism(job: TrainingJob) -> tuple[Parallelism, dict[str, Any]]:
    """A model job's ``Parallelism`` (data degree from its gang size) and step-time options, with errors
    naming the job."""
    options = dict(job.parallelism or {})
    step = {key: options.pop(key) for key in _STEP_OPTIONS if key in options}
    if job.precision is not None:
        step["precision"] = job.precision
    try:
        return Parallelism.for_devices(job.gpus, **options), step
    except TypeError as exc:
        raise ConfigError(f"job {job.job_id}: parallelism: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"job {job.job_id}: {exc}") from None


def placed_groups(topology: Topology, device: DeviceSpec, parallelism: Parallelism, devices: Sequence[int], *,
                  static: bool) -> ParallelGroups:
    """The worst group of each parallel dimension on an actual placement, in Megatron-LM's rank order (rank
    ``t + tensor * (d + data * p)`` on the ``r``-th device in id order, i.e. node by node). ``static``: cross-leaf
    groups pay the fabric's oversubscription (no contention model)."""
    ordered = sorted(devices)
    tp, dp, pp = parallelism.tensor, parallelism.data, parallelism.pipeline
    node_of, leaf_of = topology.device_node, topology.node_leaf
    per_node_job: dict[int, int] = {}
    for d in ordered:
        per_node_job[int(node_of[d])] = per_node_job.get(int(node_of[d]), 0) + 1

    def shape(members: list[int], groups: int = 1) -> GroupShape:
        counts: dict[int, int] = {}
        for d in members:
            counts[int(node_of[d])] = counts.get(int(node_of[d]), 0) + 1
        if len(counts) == 1:
            return GroupShape.on_device(device, len(members))
        first = next(iter(counts))
        leaves = len({int(leaf_of[n]) for n in counts})
        return GroupShape.on_device(
            device, len(members), nodes=len(counts), ranks_per_node=min(counts.values()),
            nics_per_node=int(topology.node_nics[first]), nic_gbps=float(topology.node_nic_bandwidth[first]) * 8 / 1e9,
            oversubscription=float(topology.fabric.oversubscription) if static else 1.0,
            leaves=leaves if static else 1,
            parallel_groups=max(1, min(per_node_job[n] // counts[n] for n in counts)))

    def worst(groups: list[list[int]]) -> GroupShape:
        return min((shape(g) for g in groups), key=bus_bandwidth)

    rank = [[[ordered[t + tp * (d + dp * p)] for t in range(tp)] for d in range(dp)] for p in range(pp)]
    tensor = worst([rank[p][d] for p in range(pp) for d in range(dp)]) if tp > 1 else None
    data = worst([[rank[p][d][t] for d in range(dp)] for p in range(pp) for t in range(tp)]) if dp > 1 else None
    pipeline = worst([[rank[p][d][t], rank[p + 1][d][t]] for p in range(pp - 1) for d in range(dp)
                      for t in range(tp)]) if pp > 1 else None
    return ParallelGroups(tensor=tensor, pipeline=pipeline, data=data)


def tensor_split(topology: Topology, parallelism: Parallelism, devices: Sequence[int]) -> bool:
    """Whether some tensor-parallel group of this placement spans nodes."""
    ordered = sorted(devices)
    tp = parallelism.tensor
    node_of = topology.device_node
    return any(len({int(node_of[d]) for d in ordered[i:i + tp]}) > 1 for i in range(0, len(ordered), tp))


class NetworkModel:
    """Slowdowns of running jobs from their placement and from contention; see the module docstring."""

    def __init__(self, cluster: Cluster, options: NetworkOptions | None = None) -> None:
        self.options = options or NetworkOptions()
        self.topology: Topology = cluster.topology
        self.cluster = cluster
        topo = self.topology
        self._scale_up = [nccl_scale_up_bandwidth(spec) for spec in cluster.device_specs]
        self._nic_bw = [float(nic_effective_bandwidth(b * 8 / 1e9)) for b in topo.node_nic_bandwidth]
        self._solver = ContentionSolver(topo.link_capacity) if self.options.contention else None
        self._running: dict[Hashable, _Running] = {}
        self._reference: dict[tuple[int, int], float] = {}
        self._reference_steps: dict[tuple[int, int], StepTime] = {}
        self.recomputes: list[float] = []  # seconds of each contention update (benchmarks read it)
        # time integral of each link's load (bytes), for mean link utilization
        self._load_seconds = np.zeros(len(topo.link_capacity))
        self._load = np.zeros(len(topo.link_capacity))
        self._since = 0.0
        self.peak_load = np.zeros(len(topo.link_capacity))
        self._flows: set[Hashable] = set()
        self.flow_listener: Callable[[dict[Hashable, float], float], None] | None = None
        """Called by :meth:`update` with the flows (:meth:`start_flow`) whose rate factor changed, and the time."""

    @property
    def contended(self) -> bool:
        """Whether jobs and flows share link capacity (``NetworkOptions.contention``)."""
        return self._solver is not None

    # ------------------------------------------------------------------ bandwidths
    def _shape(self, pool: int, gpus: int, nodes: Sequence[int], per_node: Sequence[int], leaves: int) -> GroupShape:
        first = nodes[0]
        static = not self.options.contention
        fabric = self.topology.pool_networks[pool]
        return GroupShape(
            ranks=gpus, scale_up_bus_bandwidth=self._scale_up[pool], nodes=len(nodes),
            ranks_per_node=min(per_node), nics_per_node=int(self.topology.node_nics[first]),
            nic_bandwidth=self._nic_bw[first] if len(nodes) > 1 else 0.0,
            oversubscription=self._oversubscription() if static else 1.0,
            leaves=leaves if static else 1, fabric="pcie" if fabric.scale_up == "pcie" else "nvlink")

    def _oversubscription(self) -> float:
        return float(self.topology.fabric.oversubscription)

    def reference_bandwidth(self, pool: int, gpus: int) -> float:
        """Bus bandwidth of the reference placement: one node, else the fewest whole nodes on one leaf."""
        key = (pool, gpus)
        if key not in self._reference:
            size = self.cluster.pools[pool].devices_per_node
            nodes = -(-gpus // size)
            per_node = [size] * (nodes - 1) + [gpus - size * (nodes - 1)]
            first = self.cluster.pool_nodes[pool][0]
            shape = self._shape(pool, gpus, [first] * nodes, per_node, 1)
            self._reference[key] = bus_bandwidth(shape)
        return self._reference[key]

    # ------------------------------------------------------------------ job life
    def reference_step(self, job: TrainingJob, pool: int) -> StepTime:
        """A model job's step on its reference placement: packed into whole nodes of ``pool`` under one leaf."""
        key = (job.job_id, pool)
        if key not in self._reference_steps:
            parallelism, options = job_parallelism(job)
            first = self.cluster.pool_nodes[pool][0]
            device = self.cluster.device_specs[pool]
            try:
                groups = ParallelGroups.packed(
                    device, parallelism, devices_per_node=self.cluster.pools[pool].devices_per_node,
                    nics_per_node=int(self.topology.node_nics[first]),
                    nic_gbps=float(self.topology.node_nic_bandwidth[first]) * 8 / 1e9)
                self._reference_steps[key] = training_step_time(job.model, parallelism, device, groups, **options)
            except ConfigError as exc:
                raise ConfigError(f"job {job.job_id} ({job.model} on {device.name}): {exc}") from None
        return self._reference_steps[key]

    def fits(self, job: TrainingJob, devices: Sequence[int]) -> bool:
        """False when the placement splits a tensor-parallel group across nodes and the job forbids it."""
        if job.model is None:
            return True
        parallelism, _ = job_parallelism(job)
        return parallelism.tensor_across_nodes or parallelism.tensor == 1 or not tensor_split(
            self.topology, parallelism, devices)

    def start(self, job: TrainingJob, devices: Sequence[int], pool: int, now: float) -> float:
        """Register a job that starts on ``devices``; returns its slowdown before contention is solved."""
        job_id = job.job_id
        placement = self.topology.placement(devices, checked=True)
        gpus = len(devices)
        if job.model is not None:
            return self._start_model_job(job, devices, pool, placement, now)
        f = self.options.comm_fraction if job.comm_fraction is None else job.comm_fraction
        if len(placement.nodes) == 1 or f == 0:
            self._running[job_id] = _Running(f, placement.level, 1.0)
            return 1.0
        node_of = self.topology.device_node
        counts: dict[int, int] = {}
        for d in devices:
            counts[int(node_of[d])] = counts.get(int(node_of[d]), 0) + 1
        shape = self._shape(pool, gpus, list(counts), list(counts.values()), len(placement.leaves))
        placed = bus_bandwidth(shape)
        ratio = self.reference_bandwidth(pool, gpus) / placed
        running = _Running(f, placement.level, ratio)
        running.slowdown = (1 - f) + f * ratio
        self._running[job_id] = running
        if self._solver is not None and placement.ring_links:
            self._advance(now)
            share = f if self.options.demand == "average" else 1.0
            demands = [share * c * placed for c in placement.link_crossings]
            self._solver.add(job_id, placement.ring_links, demands, f)
        return running.slowdown

    def _start_model_job(self, job: TrainingJob, devices: Sequence[int], pool: int, placement: Placement,
                         now: float) -> float:
        reference = self.reference_step(job, pool)
        parallelism, options = job_parallelism(job)
        device = self.cluster.device_specs[pool]
        groups = placed_groups(self.topology, device, parallelism, devices, static=not self.options.contention)
        step = training_step_time(job.model, parallelism, device, groups, **options)  # type: ignore[arg-type]
        running = _Running(step.network_fraction, placement.level, 1.0)
        running.step, running.reference = step, reference.total
        running.slowdown = step.total / reference.total
        self._running[job.job_id] = running
        if self._solver is not None and placement.ring_links and step.network_comm > 0:
            network = [g for g in (groups.data, groups.pipeline, groups.tensor) if g is not None and g.nodes > 1]
            placed = min(bus_bandwidth(g) for g in network)
            self._advance(now)
            share = step.network_fraction if self.options.demand == "average" else 1.0
            self._solver.add(job.job_id, placement.ring_links, [share * c * placed for c in placement.link_crossings],
                             step.network_fraction)
        return running.slowdown

    def stop(self, job_id: Hashable, now: float) -> None:
        """A job stops (finish or preemption): it leaves the links it shared."""
        self._running.pop(job_id)
        if self._solver is not None and job_id in self._solver:
            self._advance(now)
            self._solver.remove(job_id)

    def start_flow(self, key: Hashable, links: Sequence[int], demand: float, now: float) -> None:
        """Register a data transfer (a KV cache moving between replicas) pushing ``demand`` bytes/s over each of
        ``links`` at full speed, of weight 1: it shares capacity with jobs and other flows from the next :meth:`update`,
        which reports its rate factor to ``flow_listener``."""
        assert self._solver is not None, "flows share links only with contention on"
        self._advance(now)
        self._solver.add(key, links, demand, 1.0)
        self._flows.add(key)

    def stop_flow(self, key: Hashable, now: float) -> None:
        """A transfer is done: it leaves its links."""
        assert self._solver is not None
        self._advance(now)
        self._solver.remove(key)
        self._flows.discard(key)

    def set_link_capacity(self, link: int, capacity: float, now: float) -> None:
        """A shared link's capacity changes (some of its physical links failed, or were repaired): the jobs and flows
        on it are re-solved at the next :meth:`update`. Needs contention on (``NetworkOptions.contention``)."""
        if self._solver is None:
            raise ConfigError("sim.network.contention is false: link capacities cannot change without the "
                              "contention model")
        self._advance(now)
        self._solver.set_capacity(link, capacity)

    @property
    def link_capacity(self) -> np.ndarray:
        """Every shared link's capacity now (bytes/s): the topology's, less what has failed (read-only)."""
        return self.topology.link_capacity if self._solver is None else self._solver.link_capacity

    def update(self, now: float) -> dict[Hashable, float]:
        """Re-solve contention for what changed; the jobs whose slowdown changed, with the new slowdown."""
        if self._solver is None or not self._solver.pending:
            return {}
        started = time.perf_counter()
        rates = self._solver.update()
        self._load = self._solver.link_load()
        np.maximum(self.peak_load, self._load, out=self.peak_load)
        changed = {}
        flows = {}
        for job_id, x in rates.items():
            running = self._running.get(job_id)
            if running is None:
                if job_id in self._flows:
                    flows[job_id] = x
                continue
            slowdown = running.stretched(x)
            if slowdown != running.slowdown:
                running.slowdown = slowdown
                changed[job_id] = slowdown
        self.recomputes.append(time.perf_counter() - started)  # the whole recompute: rates, link loads, slowdowns
        if flows and self.flow_listener is not None:
            self.flow_listener(flows, now)
        return changed

    def level(self, job_id: Hashable) -> str:
        """The placement level of a running job (node, slice, leaf, pod, cross-pod)."""
        return self._running[job_id].level

    # ------------------------------------------------------------------ link accounting
    def _advance(self, now: float) -> None:
        if now > self._since:
            self._load_seconds += self._load * (now - self._since)
            self._since = now

    def link_utilization(self, end: float) -> np.ndarray:
        """Mean load / capacity of every shared link over [0, end]."""
        self._advance(end)
        return self._load_seconds / (self.topology.link_capacity * end) if end > 0 else self._load_seconds * 0


def model_job(cluster: Cluster, job_id: int, arrival: float, model: str | Mapping[str, Any], gpus: int, iterations: int,
              parallelism: Mapping[str, Any], *, pool: int = 0, **fields: Any) -> TrainingJob:
    """A training job of ``iterations`` steps of ``model``: its ``duration`` is ``iterations`` times the step time
    on the reference placement (``gpus`` packed into whole nodes of ``pool`` under one leaf)."""
    job = TrainingJob(job_id, arrival, gpus, 1.0, model=model, parallelism=dict(parallelism),
                      reference_device=cluster.pools[pool].device, **fields)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
        raise ConfigError(f"job {job_id}: iterations must be a positive integer, got {iterations!r}")
    step = NetworkModel(cluster).reference_step(job, pool)
    return dataclasses.replace(job, duration=iterations * step.total)
