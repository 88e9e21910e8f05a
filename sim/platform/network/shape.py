"""What the network package reads of a cluster: its pools, devices and nodes (``sim.platform.cluster.Cluster`` has all
of it). The network depends on this shape, not on the cluster module, so that the cluster can build its topology
(``Cluster.topology``) without an import circle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sim.platform.hardware import DeviceSpec


@runtime_checkable
class PoolShape(Protocol):
    """One pool: ``nodes`` nodes of ``devices_per_node`` devices of type ``device``, racked ``nodes_per_rack``."""

    name: str
    device: str
    nodes: int
    devices_per_node: int
    nodes_per_rack: int


@runtime_checkable
class ClusterShape(Protocol):
    """Devices numbered 0..D-1 and nodes 0..N-1, pool by pool, with the maps between them."""

    name: str
    pools: Sequence[PoolShape]
    device_specs: Sequence[DeviceSpec]
    node_pool: Sequence[int]
    node_first_device: Sequence[int]
    node_rack: Sequence[int]
    device_node: Sequence[int]
    pool_nodes: Sequence[range]

    @property
    def num_devices(self) -> int: ...

    @property
    def num_nodes(self) -> int: ...

    def devices_of_node(self, node: int) -> range: ...
