"""Clusters: pools of identical nodes, their devices and racks, as flat lists.

What the hot path needs (each device's node, each node's pool and rack) is precomputed into flat lists once, so
the engine and placers never walk a graph. The interconnect, with its networkx graph of NICs, switches and
links, is ``Cluster.topology`` (``sim.platform.network``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sim.errors import ConfigError, UnknownNameError
from sim.platform.hardware import DeviceSpec, get_device

if TYPE_CHECKING:
    from sim.platform.network.specs import NetworkSpec
    from sim.platform.network.topology import Topology


@dataclass(frozen=True)
class PoolSpec:
    """``nodes`` machines, each with ``devices_per_node`` devices of type ``device``."""

    device: str
    nodes: int
    devices_per_node: int
    name: str = ""
    nodes_per_rack: int = 32

    def __post_init__(self) -> None:
        for key in ("nodes", "devices_per_node", "nodes_per_rack"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"cluster pool {self.name or self.device!r}: {key} must be a positive integer, "
                                  f"got {value!r}")
        if self.devices_per_node > 64:
            raise ConfigError(f"cluster pool {self.name or self.device!r}: devices_per_node {self.devices_per_node}"
                              " is above the supported 64")


class Cluster:
    """The static shape of a cluster. Devices are numbered 0..D-1, nodes 0..N-1, pool by pool."""

    def __init__(self, pools: Sequence[PoolSpec], name: str = "custom", network: NetworkSpec | None = None) -> None:
        if not pools:
            raise ConfigError("cluster: at least one pool is required")
        self.name = name
        self.network = network
        resolved = []
        for i, pool in enumerate(pools):
            spec = get_device(pool.device)
            label = pool.name or (spec.name if sum(p.device == pool.device for p in pools) == 1 else f"{spec.name}-{i}")
            resolved.append(PoolSpec(spec.name, pool.nodes, pool.devices_per_node, label, pool.nodes_per_rack))
        names = [p.name for p in resolved]
        if len(set(names)) != len(names):
            raise ConfigError(f"cluster: pool names must be unique, got {names}")
        self.pools: tuple[PoolSpec, ...] = tuple(resolved)
        self.device_specs: tuple[DeviceSpec, ...] = tuple(get_device(p.device) for p in self.pools)

        self.node_pool: list[int] = []
        self.node_first_device: list[int] = []
        self.node_size: list[int] = []
        self.node_rack: list[int] = []
        self.device_node: list[int] = []
        self.pool_nodes: list[range] = []
        self.pool_devices: list[int] = []
        rack = 0
        for p, pool in enumerate(self.pools):
            first_node = len(self.node_pool)
            for k in range(pool.nodes):
                node = len(self.node_pool)
                self.node_pool.append(p)
                self.node_first_device.append(len(self.device_node))
                self.node_size.append(pool.devices_per_node)
                self.node_rack.append(rack + k // pool.nodes_per_rack)
                self.device_node.extend([node] * pool.devices_per_node)
            rack += -(-pool.nodes // pool.nodes_per_rack)
            self.pool_nodes.append(range(first_node, len(self.node_pool)))
            self.pool_devices.append(pool.nodes * pool.devices_per_node)
        self.num_racks = rack

    @property
    def num_devices(self) -> int:
        return len(self.device_node)

    @property
    def num_nodes(self) -> int:
        return len(self.node_pool)

    def pool_of_device(self, device: int) -> int:
        return self.node_pool[self.device_node[device]]

    def devices_of_node(self, node: int) -> range:
        first = self.node_first_device[node]
        return range(first, first + self.node_size[node])

    @cached_property
    def topology(self) -> Topology:
        """The interconnect (``sim.platform.network``): built on first use from ``network``, or from the defaults
        for these device types (``sim.platform.network.specs.default_network``)."""
        from sim.platform.network.builders import build_topology

        return build_topology(self, self.network)

    def describe(self) -> str:
        parts = [f"{p.nodes} x {p.devices_per_node} {p.device}" for p in self.pools]
        return f"{self.name}: {self.num_devices} devices on {self.num_nodes} nodes ({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"Cluster({self.describe()})"


# Philly's machine list gives only GPU memory; these are the device types gpusim assumes for it.
PHILLY_DEVICE_BY_MEMORY_GB = {12: "k80", 24: "p40"}


def philly_cluster(scale: float = 1.0) -> Cluster:
    """Microsoft Philly: 321 nodes of 2 x 12 GB GPUs and 231 nodes of 8 x 24 GB GPUs (2,490 GPUs).

    The machine list names only GPU memory: the 12 GB class is assumed to be K80 dies and the 24 GB
    class Tesla P40s (``PHILLY_DEVICE_BY_MEMORY_GB``). Trace jobs keep their recorded run time on
    either class, so this assumption matters only for energy and cost. ``scale`` keeps that fraction
    of each class's machines (rounded, at least one), for what-ifs on a smaller Philly.
    """
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise ConfigError(f"cluster.scale must be in (0, 1] for the philly preset, got {scale!r}")
    from workloads.traces import load_machine_list

    groups: dict[tuple[int, int], int] = {}
    for machine in load_machine_list():
        key = (machine.gpu_memory_gb, machine.gpus)
        groups[key] = groups.get(key, 0) + 1
    pools = []
    for (memory, gpus), count in sorted(groups.items()):
        if memory not in PHILLY_DEVICE_BY_MEMORY_GB:
            raise ConfigError(f"philly machine list: no assumed device type for {memory} GB GPUs")
        nodes = max(1, round(count * scale))
        pools.append(PoolSpec(PHILLY_DEVICE_BY_MEMORY_GB[memory], nodes, gpus, name=f"philly-{memory}gb"))
    return Cluster(pools, name="philly" if scale == 1 else f"philly x{scale:g}")


def dgx_cluster(device: str, nodes: int) -> Cluster:
    """``nodes`` DGX-style servers of 8 GPUs each."""
    return Cluster([PoolSpec(device, nodes, 8, name=f"dgx-{device.split('-')[0]}")], name=f"dgx-{device.split('-')[0]}")


def gavel_cluster(nodes: int = 9) -> Cluster:
    """The three GPU generations of Gavel's (OSDI'20) heterogeneous experiments: ``nodes`` servers of 4 GPUs each of
    V100, P100 and K80 (default 9: 36 of each, 108 GPUs). Gavel's own simulator counts workers, not servers; the
    servers here give the placer nodes to pack gangs into."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError(f"cluster.nodes must be a positive integer for the gavel preset, got {nodes!r}")
    return Cluster([PoolSpec(device, nodes, 4, name=device) for device in ("v100", "p100", "k80")],
                   name=f"gavel {nodes * 4}:{nodes * 4}:{nodes * 4}")


PRESETS: dict[str, Callable[..., Cluster]] = {
    "philly": philly_cluster,
    "gavel": gavel_cluster,
    "dgx-a100": lambda nodes=4: dgx_cluster("a100-sxm-80gb", nodes),
    "dgx-h100": lambda nodes=4: dgx_cluster("h100-sxm", nodes),
}


def preset(name: str, nodes: int | None = None, scale: float | None = None) -> Cluster:
    """A named cluster. ``philly`` takes an optional ``scale`` (fraction of its machines);
    ``dgx-a100`` and ``dgx-h100`` take a node count (default 4), ``gavel`` servers per GPU type (default 9)."""
    if name not in PRESETS:
        raise UnknownNameError("cluster preset", name, PRESETS)
    if name == "philly":
        if nodes is not None:
            raise ConfigError("cluster.nodes: the philly preset has a fixed machine list; use scale to shrink it")
        return philly_cluster() if scale is None else philly_cluster(scale)
    if scale is not None:
        raise ConfigError(f"cluster.scale applies to the philly preset only; use nodes for {name!r}")
    return PRESETS[name]() if nodes is None else PRESETS[name](nodes)
