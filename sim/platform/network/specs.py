"""What a cluster's network is made of: per-pool node networks, the fabric, and scale-up bandwidth figures.

Units are SI throughout: bandwidths in bytes/s **per direction**, latencies in seconds.

- :class:`NodeNetwork` (one per cluster pool): the scale-up fabric inside a node (NVSwitch, PCIe tree,
  NVLink hybrid cube-mesh, TPU torus slice) and the node's NICs.
- :class:`Fabric`: how nodes are wired together (leaf-spine fat-tree, rail-optimized fat-tree, one switch);
  for TPU pools this is the data-centre network (DCN) that joins slices.
- :func:`scale_up_link` / :func:`scale_up_bus_bandwidth`: the scale-up figures the collectives model reads.
- :func:`default_network`: sensible defaults per device type; every assumption is written in its docstring.

Validation happens at construction: a bad field raises :class:`~sim.errors.ConfigError` naming the
class and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sim.errors import ConfigError
from sim.platform.hardware import PCIE_GEN3_X16, DeviceSpec, get_device
from sim.platform.network.collectives import nccl_scale_up_bandwidth
from sim.platform.network.shape import ClusterShape

SCALE_UP_KINDS: tuple[str, ...] = ("nvswitch", "pcie", "cube-mesh", "tpu-torus")
"""Scale-up fabrics inside a node (``tpu-torus``: the node is a TPU host, its chips belong to a torus slice)."""

FABRIC_KINDS: tuple[str, ...] = ("fat-tree", "rail-optimized", "single-switch")
"""Ways nodes are wired together."""

# NCCL's effective bandwidth per NVLink (src/graph/topo.h, *_NVLINK_BW), bytes/s per direction, and the
# number of NVLinks per GPU. A100, H100 and Blackwell are REFERENCE.md figures; P100 (SM60_NVLINK_BW 18.0)
# and V100 (SM70_NVLINK_BW 20.0) come from the same NCCL header but are not in REFERENCE.md. Link counts:
# vendor datasheets (P100 4, V100 6, A100 12, H100/H200 18, B200 18).
NVLINK_EFFECTIVE: Mapping[str, tuple[int, float]] = MappingProxyType({
    "nvlink1": (4, 18.0e9),
    "nvlink2": (6, 20.0e9),
    "nvlink3": (12, 20.0e9),
    "nvlink4": (18, 20.6e9),
    "nvlink5": (18, 40.1e9),
})

PCIE_GEN3_EFFECTIVE = 12e9
"""NCCL's effective PCIe Gen3 x16 bandwidth (``PCI_BW``, REFERENCE.md), bytes/s per direction. Later
generations are assumed to double it per generation (Gen4 24e9, Gen5 48e9)."""

# PCIe generation of the host links of NVLink GPUs (vendor datasheets: A100 Gen4, H100/H200/B200 Gen5);
# 1 = Gen3, 2 = Gen4, 4 = Gen5 as a multiple of PCIE_GEN3_EFFECTIVE.
_HOST_PCIE_FACTOR: Mapping[str, int] = MappingProxyType({
    "nvlink1": 1, "nvlink2": 1, "nvlink3": 2, "nvlink4": 4, "nvlink5": 4, "ici-3d-torus": 2, "ici-2d-torus": 2,
})

# Latencies (seconds per link traversal). ASSUMPTIONS, not measurements: order-of-magnitude hardware hop
# latencies; NCCL's per-step software latencies (REFERENCE.md) belong to the collectives model, not here.
NVLINK_LATENCY = 0.5e-6
PCIE_LATENCY = 1.0e-6
ICI_LATENCY = 1.0e-6
NIC_LATENCY = 1.0e-6
"""InfiniBand/RoCE adapter plus cable to the first switch (assumed)."""
DCN_NIC_LATENCY = 5.0e-6
"""TPU host DCN NIC (Ethernet) plus cable to the first switch (assumed)."""
SWITCH_LATENCY = 0.5e-6
"""One switch-to-switch hop, switch and cable (assumed)."""

GBIT = 1e9 / 8
"""One Gb/s in bytes/s."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def check_number(where: str, key: str, value: Any, *, zero_ok: bool = False, unit: str = "") -> None:
    """Raise ConfigError unless ``value`` is a finite real number, positive (or >= 0 with ``zero_ok``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if zero_ok else value <= 0):
        bound = "non-negative" if zero_ok else "positive"
        raise ConfigError(f"{where}: {key} must be a finite {bound} number{unit}, got {value!r}")


def _check_int(where: str, key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")


def _as_shape(where: str, key: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{where}: {key} must be a sequence of positive integers such as (4, 4, 4), got {value!r}")
    shape = tuple(value)
    if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape):
        raise ConfigError(f"{where}: {key} must be a sequence of positive integers such as (4, 4, 4), got {value!r}")
    return shape


@dataclass(frozen=True)
class NodeNetwork:
    """The network inside one node type and its attachment to the fabric (one per cluster pool)."""

    scale_up: str = field(default="nvswitch", metadata=_help(
        "scale-up fabric: nvswitch, pcie (GPUs behind PCIe switches), cube-mesh (8-GPU NVLink hybrid cube-mesh), "
        "tpu-torus (TPU host whose chips belong to a torus slice)"))
    nics: int = field(default=8, metadata=_help(
        "NICs per node (TPU: DCN NICs per host); 0 only when no traffic has to leave the node or slice"))
    nic_bandwidth: float = field(default=50e9, metadata=_help(
        "line rate of one NIC, bytes/s per direction (400 Gb/s = 50e9); efficiency is the collectives model's"))
    nic_latency: float = field(default=NIC_LATENCY, metadata=_help("seconds from a NIC to its leaf switch"))
    rails: bool = field(default=True, metadata=_help(
        "True: NIC k serves the devices of local index k mod nics (GPUDirect rails); False: NICs hang off the host"))
    scale_up_bandwidth: float | None = field(default=None, metadata=_help(
        "bytes/s per direction one device has over all its scale-up links (NVLink, PCIe, ICI); "
        "None: scale_up_bus_bandwidth(device)"))
    scale_up_latency: float | None = field(default=None, metadata=_help(
        "seconds per scale-up link; None: NVLink 0.5 us, PCIe 1 us, ICI 1 us (assumed)"))
    pcie_bandwidth: float | None = field(default=None, metadata=_help(
        "bytes/s per direction of a device's or NIC's PCIe link to the host; None: by PCIe generation"))
    devices_per_pcie_switch: int = field(default=2, metadata=_help(
        "pcie scale-up: devices behind each PCIe switch (switches uplink to the host root complex)"))
    slice_shape: tuple[int, ...] | None = field(default=None, metadata=_help(
        "tpu-torus: chips per slice along each torus axis, e.g. (4, 4, 4); None: one balanced slice per pool"))
    wrap_axis: tuple[int, ...] | None = field(default=None, metadata=_help(
        "tpu-torus: an axis of the slice wraps around when its length is a whole multiple of this (and > 2); "
        "None: (4, 4, 4) for 3D tori (whole v4/v5p cubes), (16, 16) for 2D (a full v5e pod)"))

    def __post_init__(self) -> None:
        where = "NodeNetwork"
        if self.scale_up not in SCALE_UP_KINDS:
            raise ConfigError(f"{where}: scale_up must be one of {', '.join(SCALE_UP_KINDS)}, got {self.scale_up!r}")
        _check_int(where, "nics", self.nics, 0)
        check_number(where, "nic_bandwidth", self.nic_bandwidth, unit=" (bytes/s)")
        check_number(where, "nic_latency", self.nic_latency, zero_ok=True, unit=" (seconds)")
        if not isinstance(self.rails, bool):
            raise ConfigError(f"{where}: rails must be true or false, got {self.rails!r}")
        for key in ("scale_up_bandwidth", "pcie_bandwidth"):
            if getattr(self, key) is not None:
                check_number(where, key, getattr(self, key), unit=" (bytes/s)")
        if self.scale_up_latency is not None:
            check_number(where, "scale_up_latency", self.scale_up_latency, zero_ok=True, unit=" (seconds)")
        _check_int(where, "devices_per_pcie_switch", self.devices_per_pcie_switch, 1)
        object.__setattr__(self, "slice_shape", _as_shape(where, "slice_shape", self.slice_shape))
        object.__setattr__(self, "wrap_axis", _as_shape(where, "wrap_axis", self.wrap_axis))
        if self.scale_up != "tpu-torus" and (self.slice_shape is not None or self.wrap_axis is not None):
            raise ConfigError(f"{where}: slice_shape and wrap_axis apply to scale_up='tpu-torus' only, "
                              f"not {self.scale_up!r}")
        if self.slice_shape and self.wrap_axis and len(self.slice_shape) != len(self.wrap_axis):
            raise ConfigError(f"{where}: wrap_axis {self.wrap_axis} must have one entry per slice_shape axis "
                              f"{self.slice_shape}")


@dataclass(frozen=True)
class Fabric:
    """How nodes are wired together: the scale-out network (for TPU pools, the data-centre network)."""

    kind: str = field(default="fat-tree", metadata=_help(
        "fat-tree (all NICs of a node on its leaf), rail-optimized (NIC k of every node of a rail group on "
        "the group's leaf switch k), single-switch (every NIC on one switch)"))
    nodes_per_leaf: int | None = field(default=None, metadata=_help(
        "nodes under one leaf (rail-optimized: per rail group), counted within each pool; "
        "None: one leaf per rack of the cluster (PoolSpec.nodes_per_rack)"))
    leaves_per_pod: int = field(default=8, metadata=_help(
        "leaves (rail groups) sharing one spine layer; consecutive leaves form a pod, pods meet at a core layer"))
    oversubscription: float = field(default=1.0, metadata=_help(
        "leaf downlink capacity / uplink capacity (>= 1; 2.0 means a leaf's spine uplinks carry half its NICs)"))
    pod_oversubscription: float = field(default=1.0, metadata=_help(
        "spine-layer downlink capacity / core uplink capacity of a pod (>= 1; used when there are several pods)"))
    switch_latency: float = field(default=SWITCH_LATENCY, metadata=_help(
        "seconds per switch-to-switch link (leaf-spine, spine-core)"))

    def __post_init__(self) -> None:
        where = "Fabric"
        if self.kind not in FABRIC_KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(FABRIC_KINDS)}, got {self.kind!r}")
        if self.nodes_per_leaf is not None:
            _check_int(where, "nodes_per_leaf", self.nodes_per_leaf, 1)
        _check_int(where, "leaves_per_pod", self.leaves_per_pod, 1)
        for key in ("oversubscription", "pod_oversubscription"):
            value = getattr(self, key)
            check_number(where, key, value)
            if value < 1:
                raise ConfigError(f"{where}: {key} must be >= 1 (downlink / uplink capacity), got {value!r}")
        check_number(where, "switch_latency", self.switch_latency, zero_ok=True, unit=" (seconds)")


@dataclass(frozen=True)
class NetworkSpec:
    """A whole cluster's network: one :class:`NodeNetwork` per cluster pool (in pool order) and the fabric."""

    pools: tuple[NodeNetwork, ...] = field(metadata=_help("one NodeNetwork per cluster pool, in the pools' order"))
    fabric: Fabric = field(default_factory=Fabric, metadata=_help("the fabric joining all pools' nodes"))

    def __post_init__(self) -> None:
        pools = tuple(self.pools) if isinstance(self.pools, (list, tuple)) else self.pools
        if not isinstance(pools, tuple) or not pools or not all(isinstance(p, NodeNetwork) for p in pools):
            raise ConfigError(f"NetworkSpec: pools must be a non-empty sequence of NodeNetwork, got {self.pools!r}")
        object.__setattr__(self, "pools", pools)
        if not isinstance(self.fabric, Fabric):
            raise ConfigError(f"NetworkSpec: fabric must be a Fabric, got {self.fabric!r}")


# ----------------------------------------------------------------------------- scale-up figures


@dataclass(frozen=True)
class ScaleUpLink:
    """A device type's scale-up links: how many, and the effective bytes/s of each per direction."""

    kind: str = field(metadata=_help("nvlink, pcie or ici"))
    links: int = field(metadata=_help("links per device (NVLinks; 1 for PCIe; 6 or 4 ICI ports for 3D/2D tori)"))
    link_bandwidth: float = field(metadata=_help("effective bytes/s per link per direction"))
    source: str = field(metadata=_help("where the figure comes from"))

    @property
    def bus_bandwidth(self) -> float:
        """``links * link_bandwidth``: per device per direction over all its scale-up links."""
        return self.links * self.link_bandwidth


def _spec(device: DeviceSpec | str) -> DeviceSpec:
    return device if isinstance(device, DeviceSpec) else get_device(device)


def scale_up_link(device: DeviceSpec | str) -> ScaleUpLink:
    """Scale-up link figures of a device type.

    - NVLink GPUs: NCCL's effective per-link bandwidth (``NVLINK_EFFECTIVE``; A100 12 x 20.0 GB/s, H100/H200
      18 x 20.6, B200 18 x 40.1, V100 6 x 20.0, P100 4 x 18.0).
    - PCIe GPUs: one link of 12 GB/s (NCCL's Gen3 x16 figure), doubled for Gen4 cards (L4); the generation
      is read from the catalog's ``scale_up_bandwidth`` (32 GB/s bidirectional = Gen3).
    - TPUs: 6 ICI ports (3D torus) or 4 (2D), each ``scale_up_bandwidth / 2 / ports`` per direction from the
      catalog's bidirectional per-chip figure (v4 and v5e 50 GB/s per link, v5p 100 GB/s). Nominal, not a
      measured effective figure.
    """
    spec = _spec(device)
    if spec.scale_up in NVLINK_EFFECTIVE:
        links, per_link = NVLINK_EFFECTIVE[spec.scale_up]
        return ScaleUpLink("nvlink", links, per_link, f"NCCL topo.h effective per-NVLink bandwidth ({spec.scale_up})")
    if spec.scale_up == "pcie":
        factor = max(1.0, spec.scale_up_bandwidth / PCIE_GEN3_X16)
        return ScaleUpLink("pcie", 1, PCIE_GEN3_EFFECTIVE * factor,
                           "NCCL PCI_BW 12 GB/s (Gen3 x16), doubled per later generation (assumed)")
    ports = 6 if spec.scale_up == "ici-3d-torus" else 4
    return ScaleUpLink("ici", ports, spec.scale_up_bandwidth / 2 / ports,
                       "hardware catalog ICI bandwidth per chip (bidirectional) / 2 / ports")


def scale_up_bus_bandwidth(device: DeviceSpec | str) -> float:
    """Bytes/s a ring all-reduce inside one scale-up domain achieves per device (nccl-tests ``busbw``).

    NVSwitch GPUs: all NVLinks at NCCL's effective rate (H100 18 x 20.6 = 370.8 GB/s against a measured
    ~370; A100 240 GB/s against 232-240). PCIe GPUs: 12 GB/s (Gen3). TPUs: all ICI ports of a chip busy
    (v4 300 GB/s), an upper bound that a collectives model scales by the torus links a collective uses.
    """
    return nccl_scale_up_bandwidth(_spec(device))  # the collectives model is the one source of this figure


def host_pcie_bandwidth(device: DeviceSpec | str) -> float:
    """Effective bytes/s per direction of a device's PCIe link to its host (and of a NIC's)."""
    spec = _spec(device)
    if spec.scale_up == "pcie":
        return scale_up_link(spec).link_bandwidth
    return PCIE_GEN3_EFFECTIVE * _HOST_PCIE_FACTOR.get(spec.scale_up, 1)


def default_scale_up_latency(scale_up: str) -> float:
    """Assumed per-link latency of a scale-up fabric kind."""
    return {"pcie": PCIE_LATENCY, "tpu-torus": ICI_LATENCY}.get(scale_up, NVLINK_LATENCY)


# ----------------------------------------------------------------------------- defaults


# NIC line rates of DGX-class servers, per NIC (vendor DGX datasheets; REFERENCE.md for A100 and H100).
DGX_NIC_BANDWIDTH: Mapping[str, float] = MappingProxyType({
    "nvlink1": 100 * GBIT,  # DGX-1 (P100): 4 x 100 Gb/s EDR InfiniBand
    "nvlink2": 100 * GBIT,  # DGX-1 (V100): 4 x 100 Gb/s EDR InfiniBand
    "nvlink3": 200 * GBIT,  # DGX A100: 8 x 200 Gb/s HDR InfiniBand (compute rails)
    "nvlink4": 400 * GBIT,  # DGX H100/H200: 8 x 400 Gb/s NDR (ConnectX-7)
    "nvlink5": 400 * GBIT,  # DGX B200: 8 x 400 Gb/s (ConnectX-7)
})

PCIE_NODE_NIC_BANDWIDTH = 100 * GBIT
"""One 100 Gb/s InfiniBand NIC per PCIe server (Philly, Jeon et al. ATC'19: servers in a rack are linked by
100 Gb/s InfiniBand; one NIC per server is gpusim's assumption)."""

# TPU host DCN NICs: (NICs per host, bytes/s per NIC, or None for "50 Gb/s per chip on one NIC").
TPU_DCN: Mapping[str, tuple[int, float | None]] = MappingProxyType({
    "ici-2d-torus": (2, 100 * GBIT),  # v5e: 2 x 100 Gb/s NICs per host (Cloud TPU v5e docs)
    "ici-3d-torus": (1, None),  # v5p: 50 Gb/s DCN per chip (Cloud TPU v5p docs); v4 assumed the same
})
TPU_DCN_PER_CHIP = 50 * GBIT

SUPERPOD_LEAVES_PER_POD = 4
"""Rail groups (32-node scalable units) per spine layer in NVIDIA's DGX SuperPOD reference design (assumed)."""


def balanced_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The most cube-like ``dims``-axis shape (ascending) holding exactly ``chips`` chips: 64 -> (4, 4, 4)."""
    best: tuple[int, ...] | None = None
    best_key: tuple[float, tuple[int, ...]] | None = None

    def search(prefix: tuple[int, ...], rest: int, left: int) -> None:
        nonlocal best, best_key
        if left == 1:
            if not prefix or rest >= prefix[-1]:
                shape = (*prefix, rest)
                key = (shape[-1] / shape[0], shape)
                if best_key is None or key < best_key:
                    best, best_key = shape, key
            return
        low = prefix[-1] if prefix else 1
        for a in range(low, rest + 1):
            if a ** left > rest:
                break
            if rest % a == 0:
                search((*prefix, a), rest // a, left - 1)

    search((), chips, dims)
    assert best is not None
    return best


def default_node_network(spec: DeviceSpec, devices_per_node: int, pool_devices: int) -> NodeNetwork:
    """Default :class:`NodeNetwork` for one pool; see :func:`default_network` for the assumptions."""
    if spec.scale_up in NVLINK_EFFECTIVE:
        if spec.scale_up in ("nvlink1", "nvlink2"):
            nics = 4 if devices_per_node == 8 else max(1, devices_per_node // 2)
            kind = "cube-mesh" if devices_per_node == 8 else "nvswitch"
        else:
            nics, kind = devices_per_node, "nvswitch"
        return NodeNetwork(scale_up=kind, nics=nics, nic_bandwidth=DGX_NIC_BANDWIDTH[spec.scale_up], rails=True)
    if spec.scale_up == "pcie":
        return NodeNetwork(scale_up="pcie", nics=1, nic_bandwidth=PCIE_NODE_NIC_BANDWIDTH, rails=False)
    nics, per_nic = TPU_DCN[spec.scale_up]
    dims = 3 if spec.scale_up == "ici-3d-torus" else 2
    return NodeNetwork(scale_up="tpu-torus", nics=nics,
                       nic_bandwidth=per_nic if per_nic is not None else TPU_DCN_PER_CHIP * devices_per_node,
                       nic_latency=DCN_NIC_LATENCY, rails=False, slice_shape=balanced_shape(pool_devices, dims))


def default_network(cluster: ClusterShape, fabric: Fabric | None = None) -> NetworkSpec:
    """Sensible defaults per device type. Each assumption, with its source:

    - **DGX A100** (A100 pools): 8 GPUs on NVSwitch, 240 GB/s ring bus bandwidth (12 NVLinks x NCCL's
      20.0 GB/s); 8 x 200 Gb/s HDR InfiniBand compute NICs, one per GPU (rails). REFERENCE.md.
    - **DGX H100 / H200**: NVSwitch, 18 x 20.6 GB/s = 370.8 GB/s; 8 x 400 Gb/s NDR NICs, one per GPU.
      REFERENCE.md. **DGX B200**: NVSwitch 18 x 40.1 GB/s; 8 x 400 Gb/s NICs (vendor datasheet).
      Non-8-GPU nodes of these types keep one NIC per GPU.
    - **P100 / V100 SXM2**: 8-GPU nodes are DGX-1 hybrid cube-meshes with 4 x 100 Gb/s EDR NICs; other
      node sizes are treated as fully NVLink-connected (nvswitch) with one NIC per two GPUs.
    - **PCIe GPUs** (K80, P40, T4, L4; Philly): GPUs in pairs behind PCIe switches under the host root
      complex, 12 GB/s effective per PCIe Gen3 link (NCCL); one 100 Gb/s InfiniBand NIC per node on the
      host. Philly's paper (Jeon et al., ATC'19) says machines in a rack are linked by 100 Gb/s InfiniBand;
      the NIC count per machine and everything above the rack are gpusim's assumptions.
    - **TPUs**: each pool is one torus slice of the most cube-like shape for its chip count (3D for v4/v5p,
      2D for v5e; wrap-around rule in :class:`NodeNetwork`), ICI links at the catalog's bandwidth; DCN NICs
      per host: v5e 2 x 100 Gb/s (Cloud TPU v5e docs), v5p 50 Gb/s per chip on one NIC (Cloud TPU v5p
      docs), v4 assumed like v5p.
    - **Fabric** (unless given): one leaf per rack of the cluster (``PoolSpec.nodes_per_rack``, 32 by
      default), non-blocking (1:1). Clusters made only of NVSwitch DGX pools (A100 and newer) get a
      rail-optimized fat-tree with 4 rail groups per spine layer, after NVIDIA's DGX SuperPOD design (32-node
      scalable units); all others a plain fat-tree with 8 leaves per pod. Philly's cross-rack capacity is
      not published: 1:1 is an assumption, set ``Fabric(oversubscription=...)`` to study others.
    """
    pools = tuple(default_node_network(spec, pool.devices_per_node, pool.nodes * pool.devices_per_node)
                  for pool, spec in zip(cluster.pools, cluster.device_specs, strict=True))
    if fabric is None:
        dgx = all(spec.scale_up in ("nvlink3", "nvlink4", "nvlink5") for spec in cluster.device_specs)
        fabric = (Fabric(kind="rail-optimized", leaves_per_pod=SUPERPOD_LEAVES_PER_POD) if dgx
                  else Fabric(kind="fat-tree"))
    return NetworkSpec(pools, fabric)
