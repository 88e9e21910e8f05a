"""Hierarchical alpha-beta cost of NCCL-style collectives (docs/REFERENCE.md, "Collective communication").

A collective of ``size`` bytes over a group of ``n`` ranks takes

    time = latency + size * c(n) / B_bus

with ``c(n) = 2(n-1)/n`` for a ring all-reduce and ``(n-1)/n`` for reduce-scatter and all-gather: the factors
nccl-tests multiplies algorithm bandwidth by to report bus bandwidth, so ``B_bus`` is nccl-tests' busbw.
``B_bus`` (:func:`bus_bandwidth`) is set by the slowest tier the group crosses, described by a
:class:`GroupShape` that does not depend on any topology object:

- inside one scale-up domain, the NCCL-effective scale-up bandwidth per rank (:func:`nccl_scale_up_bandwidth`;
  ``links_used * link_bandwidth`` inside a TPU slice, :meth:`GroupShape.tpu_slice`);
- across nodes, ``min(scale_up, min(ranks_per_node, nics_per_node) * nic_bandwidth)``, divided by the
  oversubscription ratio when the group spans more than one leaf, and multiplied by ``network_share``: the
  fraction of its network bandwidth a contention solver grants the group (1 when it is alone).

Latency: NCCL's constants (src/graph/tuning.cc, Simple protocol), a base of 8.4 us plus per step 3.4 us on
NVLink, 5.7 us on PCIe, 14 us on the network. A ring all-reduce has ``2(n-1)`` steps, ``2(nodes-1)`` of them
on the network (NCCL's count); reduce-scatter and all-gather ``n-1``, ``nodes-1`` on the network. On one
node the ring is uniform and ``T = base + 2(n-1) alpha + 2(n-1)/n * S / B`` exactly.

Trees (``algorithm="tree"``): all-reduce is NCCL's double binary tree, latency
``base + 2 * ((ranks_per_node - 1) * alpha_intra + ceil(log2 nodes) * alpha_net)`` and transfer ``2 S / B_bus``
(NCCL converts a tree's bus bandwidth to algorithm bandwidth with a ratio of 1/2). NCCL runs reduce-scatter
and all-gather only as rings; for them "tree" is MPI's recursive halving / doubling: ``ceil(log2 n)`` steps,
the ring's transfer term.

All-to-all is not a ring: every rank sends ``S/n`` to every other rank at once, so the bytes that leave a node
share that node's NICs: ``T = latency + max((rpn-1)/n * S / B_scale_up, (n-rpn)/n * S / B_nic_per_rank)``,
with the latency of a reduce-scatter (one step per peer, one network step per other node). Point-to-point
sends ``S`` bytes between two ranks: ``T = base + one step + S / B`` with ``B`` the scale-up bandwidth on
one node and the sender's share of its node's NICs across nodes. Neither takes an ``algorithm``.

Units: bytes, seconds, bytes/s (per direction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sim.errors import ConfigError
from sim.platform.hardware import PCIE_GEN3_X16, DeviceSpec

COLLECTIVES: tuple[str, ...] = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "point-to-point")
ALGORITHMS: tuple[str, ...] = ("ring", "tree")
FABRICS: tuple[str, ...] = ("nvlink", "pcie", "ici")
"""Scale-up fabrics, for the per-step latency inside a domain."""

NCCL_NVLINK_BANDWIDTH: Mapping[str, float] = MappingProxyType({
    "nvlink1": 18.0e9, "nvlink2": 20.0e9, "nvlink3": 20.0e9, "nvlink4": 20.6e9, "nvlink5": 40.1e9,
})
"""NCCL's effective bandwidth per NVLink, bytes/s (src/graph/topo.h: SM60 18.0, SM70 20.0, SM80 20.0, SM90 20.6,
SM100 40.1 GB/s). REFERENCE.md lists A100, H100 and Blackwell; P100 and V100 are from the same header."""

NVLINK_DATASHEET_BANDWIDTH: Mapping[str, float] = MappingProxyType({
    "nvlink1": 40e9, "nvlink2": 50e9, "nvlink3": 50e9, "nvlink4": 50e9, "nvlink5": 100e9,
})
"""Datasheet bidirectional bandwidth of one NVLink, bytes/s: counts a device's links from its
``scale_up_bandwidth`` (A100 600 / 50 = 12 links, H100 900 / 50 = 18, B200 1800 / 100 = 18)."""

NCCL_PCIE_GEN3_X16_BANDWIDTH = 12e9
"""NCCL's effective PCIe Gen3 x16 bandwidth, bytes/s (topo.h PCI_BW); other PCIe links scale with their
datasheet bandwidth (a Gen4 x16 card gets 24 GB/s), as NCCL scales by link width and speed."""

ICI_LINKS_PER_CHIP: Mapping[str, int] = MappingProxyType({"ici-3d-torus": 6, "ici-2d-torus": 4})
"""Inter-chip links of a TPU chip: two per torus dimension."""

NIC_EFFICIENCY = 0.94
"""CALIBRATION: achieved fraction of a NIC's line rate. Fitted to one 400 Gb/s NDR NIC giving 47 GB/s (the middle
of 46-48 GB/s, nccl-tests issue 290); the tests check the other published figure, 12.2 GB/s for 100 Gb/s
(nccl-tests issue 29), which this gives as 11.75 GB/s."""


def _check_int(key: str, value: Any, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def _check_number(key: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "positive" if positive else "non-negative"
        raise ConfigError(f"{key} must be a finite {bound} number, got {value!r}")


@dataclass(frozen=True)
class LatencyModel:
    """Per-collective base latency and per-step latency of each tier, seconds."""

    base: float = 8.4e-6
    nvlink: float = 3.4e-6
    pcie: float = 5.7e-6
    ici: float = 3.4e-6
    network: float = 14e-6

    def __post_init__(self) -> None:
        for key in ("base", "nvlink", "pcie", "ici", "network"):
            _check_number(f"LatencyModel.{key}", getattr(self, key), positive=False)

    def step(self, fabric: str) -> float:
        """Latency of one step inside a scale-up domain of ``fabric``."""
        return float(getattr(self, fabric))


NCCL_LATENCY = LatencyModel()
"""NCCL's ring Simple-protocol constants (REFERENCE.md). ``ici`` is an ASSUMPTION: TPUs do not run NCCL, and
gpusim takes one ICI hop to cost what one NVLink step does."""


@dataclass(frozen=True)
class GroupShape:
    """Where the ranks of one communication group sit, as far as the cost model needs it.

    ``scale_up_bus_bandwidth`` is the effective per-rank bandwidth inside a scale-up domain (what nccl-tests
    reports as busbw on one node), ``nic_bandwidth`` the effective per-direction bandwidth of one NIC.
    ``ranks_per_node`` is the fewest ranks of the group on any of its nodes (default ``ranks / nodes``, which
    must then be whole). ``leaves`` counts the leaf switches the group's nodes hang off; across more than one,
    the network bandwidth is divided by ``oversubscription``. ``parallel_groups`` groups of the same job run
    the same collective at once on the same nodes (the data-parallel groups of a tensor-parallel job) and
    share each node's NICs evenly. ``fabric`` sets the per-step latency inside a node.
    """

    ranks: int
    scale_up_bus_bandwidth: float
    nodes: int = 1
    ranks_per_node: int | None = None
    nics_per_node: int = 0
    nic_bandwidth: float = 0.0
    oversubscription: float = 1.0
    leaves: int = 1
    parallel_groups: int = 1
    fabric: str = "nvlink"

    def __post_init__(self) -> None:
        _check_int("GroupShape.ranks", self.ranks)
        _check_number("GroupShape.scale_up_bus_bandwidth", self.scale_up_bus_bandwidth, positive=True)
        _check_int("GroupShape.nodes", self.nodes)
        if self.nodes > self.ranks:
            raise ConfigError(f"GroupShape.nodes ({self.nodes}) exceeds GroupShape.ranks ({self.ranks})")
        if self.ranks_per_node is None:
            if self.ranks % self.nodes:
                raise ConfigError(f"GroupShape.ranks_per_node: {self.ranks} ranks do not split evenly over "
                                  f"{self.nodes} nodes; give the fewest ranks on any node")
            object.__setattr__(self, "ranks_per_node", self.ranks // self.nodes)
        _check_int("GroupShape.ranks_per_node", self.ranks_per_node)
        if self.ranks_per_node * self.nodes > self.ranks or (self.nodes == 1 and self.ranks_per_node != self.ranks):
            raise ConfigError(f"GroupShape.ranks_per_node ({self.ranks_per_node}) is inconsistent with "
                              f"{self.ranks} ranks on {self.nodes} nodes")
        _check_int("GroupShape.nics_per_node", self.nics_per_node, minimum=0)
        _check_number("GroupShape.nic_bandwidth", self.nic_bandwidth, positive=False)
        if self.nodes > 1:
            if self.nics_per_node < 1:
                raise ConfigError(f"GroupShape.nics_per_node must be at least 1 for a group on {self.nodes} nodes")
            _check_number("GroupShape.nic_bandwidth", self.nic_bandwidth, positive=True)
        _check_number("GroupShape.oversubscription", self.oversubscription, positive=True)
        if self.oversubscription < 1:
            raise ConfigError(f"GroupShape.oversubscription must be >= 1 (a ratio such as 2 for 2:1), "
                              f"got {self.oversubscription!r}")
        _check_int("GroupShape.leaves", self.leaves)
        if self.leaves > self.nodes:
            raise ConfigError(f"GroupShape.leaves ({self.leaves}) exceeds GroupShape.nodes ({self.nodes})")
        _check_int("GroupShape.parallel_groups", self.parallel_groups)
        if self.fabric not in FABRICS:
            raise ConfigError(f"GroupShape.fabric must be one of {', '.join(FABRICS)}, got {self.fabric!r}")

    @classmethod
    def on_device(cls, device: DeviceSpec, ranks: int, *, nodes: int = 1, ranks_per_node: int | None = None,
                  nics_per_node: int = 0, nic_gbps: float = 0.0, oversubscription: float = 1.0, leaves: int = 1,
                  parallel_groups: int = 1) -> GroupShape:
        """A group of ``device``s: NCCL-effective scale-up bandwidth, NICs of ``nic_gbps`` Gb/s line rate."""
        return cls(ranks=ranks, scale_up_bus_bandwidth=nccl_scale_up_bandwidth(device), nodes=nodes,
                   ranks_per_node=ranks_per_node, nics_per_node=nics_per_node,
                   nic_bandwidth=nic_effective_bandwidth(nic_gbps) if nodes > 1 or nic_gbps else 0.0,
                   oversubscription=oversubscription, leaves=leaves, parallel_groups=parallel_groups,
                   fabric=fabric_of(device))

    @classmethod
    def tpu_slice(cls, ranks: int, links_used: int, link_bandwidth: float) -> GroupShape:
        """A group inside one TPU slice whose collective uses ``links_used`` ICI links per chip, each of
        ``link_bandwidth`` bytes/s per direction (:func:`ici_link_bandwidth`)."""
        _check_int("GroupShape.tpu_slice links_used", links_used)
        _check_number("GroupShape.tpu_slice link_bandwidth", link_bandwidth, positive=True)
        return cls(ranks=ranks, scale_up_bus_bandwidth=links_used * link_bandwidth, fabric="ici")


@dataclass(frozen=True)
class CollectiveCost:
    """One collective's time split into its latency and transfer terms (seconds).

    ``bus_bandwidth`` is the bandwidth the transfer term ran at, in nccl-tests' busbw convention (for
    all-to-all and point-to-point, the per-rank bandwidth that gives the same transfer time).
    ``network_bound`` is true when the network tier, not the scale-up domain, set it.
    """

    latency: float
    transfer: float
    bus_bandwidth: float
    network_bound: bool

    @property
    def time(self) -> float:
        """Latency plus transfer, seconds."""
        return self.latency + self.transfer


def fabric_of(device: DeviceSpec) -> str:
    """The latency class of a device's scale-up fabric: ``"nvlink"``, ``"pcie"`` or ``"ici"``."""
    if device.scale_up.startswith("nvlink"):
        return "nvlink"
    return "ici" if device.scale_up.startswith("ici") else "pcie"


def nccl_scale_up_bandwidth(device: DeviceSpec) -> float:
    """Per-rank bus bandwidth NCCL reaches inside one scale-up domain of ``device``s, bytes/s.

    NVLink: links (``scale_up_bandwidth / NVLINK_DATASHEET_BANDWIDTH``) x NCCL's per-link figure: A100 12 x 20.0 =
    240 GB/s, H100 18 x 20.6 = 370.8 GB/s, B200 18 x 40.1 = 721.8 GB/s. PCIe: 12 GB/s for Gen3 x16, scaled by the
    card's link bandwidth. TPU (no NCCL): every ICI link of the chip, one direction (``scale_up_bandwidth / 2``),
    what a collective over all torus dimensions of a slice can use; see :meth:`GroupShape.tpu_slice` for fewer.
    """
    kind = device.scale_up
    if kind in NCCL_NVLINK_BANDWIDTH:
        links = round(device.scale_up_bandwidth / NVLINK_DATASHEET_BANDWIDTH[kind])
        if links < 1:
            raise ConfigError(f"device {device.name!r}: scale_up_bandwidth {device.scale_up_bandwidth!r} is less "
                              f"than one {kind} link ({NVLINK_DATASHEET_BANDWIDTH[kind]:.3g} bytes/s)")
        return links * NCCL_NVLINK_BANDWIDTH[kind]
    if device.scale_up_bandwidth <= 0:
        raise ConfigError(f"device {device.name!r}: scale_up_bandwidth must be positive to communicate, "
                          f"got {device.scale_up_bandwidth!r}")
    if kind == "pcie":
        return NCCL_PCIE_GEN3_X16_BANDWIDTH * device.scale_up_bandwidth / PCIE_GEN3_X16
    return device.scale_up_bandwidth / 2


def ici_link_bandwidth(device: DeviceSpec) -> float:
    """Bandwidth of one ICI link of a TPU chip, one direction, bytes/s (v4: 50 GB/s, v5p: 100 GB/s)."""
    if device.scale_up not in ICI_LINKS_PER_CHIP:
        raise ConfigError(f"device {device.name!r} has no ICI links (scale_up is {device.scale_up!r})")
    return device.scale_up_bandwidth / (2 * ICI_LINKS_PER_CHIP[device.scale_up])


def nic_effective_bandwidth(gbit_per_s: float) -> float:
    """Bytes/s one NIC of ``gbit_per_s`` Gb/s line rate achieves per direction: line rate x ``NIC_EFFICIENCY``."""
    _check_number("nic line rate (Gb/s)", gbit_per_s, positive=True)
    return gbit_per_s * 1e9 / 8 * NIC_EFFICIENCY


def bus_bandwidth_factor(collective: str, ranks: int) -> float:
    """nccl-tests' busbw / algbw factor: ``2(n-1)/n`` for all-reduce, ``(n-1)/n`` for reduce-scatter,
    all-gather and all-to-all, 1 for point-to-point."""
    _check_collective(collective)
    _check_int("ranks", ranks)
    if collective == "point-to-point":
        return 1.0
    factor = (ranks - 1) / ranks
    return 2 * factor if collective == "all-reduce" else factor


def bus_bandwidth(shape: GroupShape, *, network_share: float = 1.0) -> float:
    """Ring bus bandwidth of ``shape``, bytes/s: the slowest tier the group crosses (module docstring)."""
    _check_share(network_share)
    if shape.nodes == 1:
        return shape.scale_up_bus_bandwidth
    return min(shape.scale_up_bus_bandwidth, _node_network_bandwidth(shape, network_share))


def collective_cost(collective: str, shape: GroupShape, size: float, *, algorithm: str = "ring",
                    network_share: float = 1.0, latency: LatencyModel = NCCL_LATENCY) -> CollectiveCost:
    """Latency and transfer time of one ``collective`` of ``size`` bytes (nccl-tests' S: the whole buffer) on
    ``shape``. ``network_share`` in (0, 1] scales the network tier's bandwidth (contention)."""
    _check_collective(collective)
    _check_number("size", size, positive=True)
    _check_share(network_share)
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    n = shape.ranks
    if n == 1:
        return CollectiveCost(0.0, 0.0, shape.scale_up_bus_bandwidth, False)
    if collective == "all-to-all":
        return _all_to_all(shape, size, network_share, latency)
    if collective == "point-to-point":
        return _point_to_point(shape, size, network_share, latency)
    bandwidth = bus_bandwidth(shape, network_share=network_share)
    network_bound = shape.nodes > 1 and bandwidth < shape.scale_up_bus_bandwidth
    intra, net = latency.step(shape.fabric), latency.network
    nodes, rpn = shape.nodes, _rpn(shape)
    if collective == "all-reduce" and algorithm == "ring":
        steps, net_steps = 2 * (n - 1), 2 * (nodes - 1)
        alpha = latency.base + (steps - net_steps) * intra + net_steps * net
        transfer = 2 * (n - 1) / n * size / bandwidth
    elif collective == "all-reduce":
        alpha = latency.base + 2 * ((rpn - 1) * intra + _log2_ceil(nodes) * net)
        transfer = 2 * size / bandwidth
    elif algorithm == "ring":
        steps, net_steps = n - 1, nodes - 1
        alpha = latency.base + (steps - net_steps) * intra + net_steps * net
        transfer = (n - 1) / n * size / bandwidth
    else:
        alpha = latency.base + _log2_ceil(rpn) * intra + _log2_ceil(nodes) * net
        transfer = (n - 1) / n * size / bandwidth
    return CollectiveCost(alpha, transfer, bandwidth, network_bound)


def collective_time(collective: str, shape: GroupShape, size: float, *, algorithm: str = "ring",
                    network_share: float = 1.0, latency: LatencyModel = NCCL_LATENCY) -> float:
    """Seconds of one ``collective`` of ``size`` bytes on ``shape`` (:func:`collective_cost`)."""
    return collective_cost(collective, shape, size, algorithm=algorithm, network_share=network_share,
                           latency=latency).time


def all_reduce_time(shape: GroupShape, size: float, **options: Any) -> float:
    """Seconds of an all-reduce of ``size`` bytes (options as :func:`collective_cost`)."""
    return collective_time("all-reduce", shape, size, **options)


def reduce_scatter_time(shape: GroupShape, size: float, **options: Any) -> float:
    """Seconds of a reduce-scatter of a ``size``-byte buffer."""
    return collective_time("reduce-scatter", shape, size, **options)


def all_gather_time(shape: GroupShape, size: float, **options: Any) -> float:
    """Seconds of an all-gather into a ``size``-byte buffer."""
    return collective_time("all-gather", shape, size, **options)


def all_to_all_time(shape: GroupShape, size: float, **options: Any) -> float:
    """Seconds of an all-to-all of a ``size``-byte buffer per rank."""
    return collective_time("all-to-all", shape, size, **options)


def point_to_point_time(shape: GroupShape, size: float, **options: Any) -> float:
    """Seconds to send ``size`` bytes between two ranks of ``shape`` (on different nodes if it spans nodes)."""
    return collective_time("point-to-point", shape, size, **options)


def algorithm_bandwidth(collective: str, shape: GroupShape, size: float, **options: Any) -> float:
    """nccl-tests' algbw, ``size / time``, bytes/s; multiply by :func:`bus_bandwidth_factor` for busbw."""
    return size / collective_time(collective, shape, size, **options)


def _node_network_bandwidth(shape: GroupShape, network_share: float) -> float:
    """Network bandwidth the group's ranks on one node have together, per direction."""
    nics = shape.nics_per_node / shape.parallel_groups
    bandwidth = min(_rpn(shape), nics) * shape.nic_bandwidth * network_share
    return bandwidth / shape.oversubscription if shape.leaves > 1 else bandwidth


def _all_to_all(shape: GroupShape, size: float, network_share: float, latency: LatencyModel) -> CollectiveCost:
    n, nodes, rpn = shape.ranks, shape.nodes, _rpn(shape)
    alpha = latency.base + (n - nodes) * latency.step(shape.fabric) + (nodes - 1) * latency.network
    intra = (rpn - 1) / n * size / shape.scale_up_bus_bandwidth
    inter = 0.0
    if nodes > 1:
        inter = (n - rpn) / n * size / (_node_network_bandwidth(shape, network_share) / rpn)
    transfer = max(intra, inter)
    return CollectiveCost(alpha, transfer, (n - 1) / n * size / transfer, inter > intra)


def _point_to_point(shape: GroupShape, size: float, network_share: float, latency: LatencyModel) -> CollectiveCost:
    if shape.nodes == 1:
        bandwidth = shape.scale_up_bus_bandwidth
        return CollectiveCost(latency.base + latency.step(shape.fabric), size / bandwidth, bandwidth, False)
    network = _node_network_bandwidth(shape, network_share) / _rpn(shape)
    bandwidth = min(shape.scale_up_bus_bandwidth, network)
    return CollectiveCost(latency.base + latency.network, size / bandwidth, bandwidth,
                          network < shape.scale_up_bus_bandwidth)


def _rpn(shape: GroupShape) -> int:
    return shape.ranks // shape.nodes if shape.ranks_per_node is None else shape.ranks_per_node


def _log2_ceil(value: int) -> int:
    return (value - 1).bit_length()


def _check_collective(collective: str) -> None:
    if collective not in COLLECTIVES:
        raise ConfigError(f"collective must be one of {', '.join(COLLECTIVES)}, got {collective!r}")


def _check_share(network_share: float) -> None:
    _check_number("network_share", network_share, positive=True)
    if network_share > 1:
        raise ConfigError(f"network_share must be in (0, 1], got {network_share!r}")
