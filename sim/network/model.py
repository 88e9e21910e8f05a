"""How placement and network contention stretch running training jobs (the engine's network model).

A job that gives only a run time (a trace job) keeps it on its *reference placement*: the same gang on
the same pool packed as tightly as the topology allows (one node, else the fewest whole nodes under one
leaf). A share ``f`` of its step is exposed communication (``TrainingJob.comm_fraction``, else the model's
``comm_fraction``). On its actual placement the communication share runs at the ring bus bandwidth of that
placement (``sim.network.collectives.bus_bandwidth``), and contention on shared links (NIC uplinks,
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

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from sim.cluster import Cluster
from sim.errors import ConfigError
from sim.network.collectives import GroupShape, bus_bandwidth, nccl_scale_up_bandwidth, nic_effective_bandwidth
from sim.network.contention import ContentionSolver
from sim.network.topology import Topology

DEFAULT_COMM_FRACTION = 0.1
"""Exposed communication share of a trace job's step on its reference placement when neither the job nor
the config gives one. An assumption: data-parallel jobs on one NVSwitch node of the Philly/Helios era spend
roughly 5-20% of a step in exposed all-reduce; 0.1 sits in that range. Set it per trace or per job."""


@dataclass(frozen=True)
class NetworkOptions:
    """The engine's network model settings (``sim.network`` in a config)."""

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

    __slots__ = ("fraction", "level", "ratio", "slowdown")

    def __init__(self, fraction: float, level: str, ratio: float) -> None:
        self.fraction = fraction
        self.level = level
        self.ratio = ratio  # B_ref / B_placed, before contention
        self.slowdown = 1.0


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
        self.recomputes: list[float] = []  # seconds of each contention update (benchmarks read it)
        # time integral of each link's load (bytes), for mean link utilization
        self._load_seconds = np.zeros(len(topo.link_capacity))
        self._load = np.zeros(len(topo.link_capacity))
        self._since = 0.0
        self.peak_load = np.zeros(len(topo.link_capacity))

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
    def start(self, job_id: Hashable, devices: Sequence[int], pool: int, fraction: float | None,
              now: float) -> float:
        """Register a job that starts on ``devices``; returns its slowdown before contention is solved."""
        f = self.options.comm_fraction if fraction is None else fraction
        placement = self.topology.placement(devices)
        gpus = len(devices)
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

    def stop(self, job_id: Hashable, now: float) -> None:
        """A job stops (finish or preemption): it leaves the links it shared."""
        self._running.pop(job_id)
        if self._solver is not None and job_id in self._solver:
            self._advance(now)
            self._solver.remove(job_id)

    def update(self, now: float) -> dict[Hashable, float]:
        """Re-solve contention for what changed; the jobs whose slowdown changed, with the new slowdown."""
        if self._solver is None or not self._solver.pending:
            return {}
        started = time.perf_counter()
        rates = self._solver.update()
        self.recomputes.append(time.perf_counter() - started)
        self._load = self._solver.link_load()
        np.maximum(self.peak_load, self._load, out=self.peak_load)
        changed = {}
        for job_id, x in rates.items():
            running = self._running.get(job_id)
            if running is None:
                continue
            slowdown = (1 - running.fraction) + running.fraction * running.ratio / x
            if slowdown != running.slowdown:
                running.slowdown = slowdown
                changed[job_id] = slowdown
        return changed

    def level(self, job_id: Hashable) -> str:
        return self._running[job_id].level

    def slowdown(self, job_id: Hashable) -> float:
        return self._running[job_id].slowdown

    # ------------------------------------------------------------------ link accounting
    def _advance(self, now: float) -> None:
        if now > self._since:
            self._load_seconds += self._load * (now - self._since)
            self._since = now

    def link_utilization(self, end: float) -> np.ndarray:
        """Mean load / capacity of every shared link over [0, end]."""
        self._advance(end)
        return self._load_seconds / (self.topology.link_capacity * end) if end > 0 else self._load_seconds * 0
