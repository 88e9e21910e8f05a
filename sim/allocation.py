"""Which devices are free: one bitmask and one count per node, copied cheaply for what-if placement."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np

from sim.cluster import Cluster


@lru_cache(maxsize=4096)
def _bits(mask: int) -> tuple[int, ...]:
    """Indices of the set bits of ``mask``, lowest first."""
    out = []
    i = 0
    while mask:
        if mask & 1:
            out.append(i)
        mask >>= 1
        i += 1
    return tuple(out)


class FreeDevices:
    """Free devices of a cluster, by node and by pool.

    Placers read it (``free_on``, ``nodes_with``, ``lowest_node_with``); the engine changes it only
    through ``take`` and ``give`` after validating a decision. ``copy`` gives an independent state for
    trial placements. Free counts live in a ``bytearray`` (nodes hold at most 64 devices) so that
    copying is a memcpy and "the first node of a pool with exactly k free" is a C-speed ``find``.
    """

    __slots__ = ("cluster", "count", "mask", "pool_free")

    def __init__(self, cluster: Cluster, _copy_of: FreeDevices | None = None) -> None:
        self.cluster = cluster
        if _copy_of is None:
            self.mask = [(1 << size) - 1 for size in cluster.node_size]
            self.count = bytearray(cluster.node_size)
            self.pool_free = list(cluster.pool_devices)
        else:
            self.mask = _copy_of.mask.copy()
            self.count = _copy_of.count.copy()
            self.pool_free = _copy_of.pool_free.copy()

    def copy(self) -> FreeDevices:
        return FreeDevices(self.cluster, self)

    @property
    def total(self) -> int:
        return sum(self.pool_free)

    def is_free(self, device: int) -> bool:
        node = self.cluster.device_node[device]
        return bool(self.mask[node] >> (device - self.cluster.node_first_device[node]) & 1)

    def free_on(self, node: int) -> tuple[int, ...]:
        """Free device ids on ``node``, lowest first."""
        first = self.cluster.node_first_device[node]
        return tuple(first + i for i in _bits(self.mask[node]))

    def nodes_with(self, pool: int, at_least: int = 1) -> Iterator[int]:
        """Nodes of ``pool`` with at least ``at_least`` free devices, in node order."""
        nodes = self.cluster.pool_nodes[pool]
        counts = np.frombuffer(self.count, dtype=np.uint8, count=len(nodes), offset=nodes.start)
        return iter((np.flatnonzero(counts >= at_least) + nodes.start).tolist())

    def lowest_node_with(self, pool: int, exactly: int) -> int:
        """The lowest-numbered node of ``pool`` with exactly ``exactly`` free devices, or -1."""
        nodes = self.cluster.pool_nodes[pool]
        return self.count.find(exactly, nodes.start, nodes.stop)

    def take(self, devices: Iterable[int]) -> None:
        """Mark ``devices`` used. They must be free (the engine validates before calling)."""
        c = self.cluster
        for d in devices:
            node = c.device_node[d]
            bit = 1 << (d - c.node_first_device[node])
            if not self.mask[node] & bit:
                raise ValueError(f"device {d} is not free")
            self.mask[node] ^= bit
            self.count[node] -= 1
            self.pool_free[c.node_pool[node]] -= 1

    def give(self, devices: Iterable[int]) -> None:
        """Mark ``devices`` free again."""
        c = self.cluster
        for d in devices:
            node = c.device_node[d]
            bit = 1 << (d - c.node_first_device[node])
            if self.mask[node] & bit:
                raise ValueError(f"device {d} is already free")
            self.mask[node] |= bit
            self.count[node] += 1
            self.pool_free[c.node_pool[node]] += 1
