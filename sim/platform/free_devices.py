"""Which devices are free: one bitmask and one count per node, and per pool how many nodes have each free
count, so that "the lowest node with exactly k free" costs nothing when there is none, however large the
cluster. Trial placements work on a scratch copy whose cost does not grow with the cluster either."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np

from sim.platform.cluster import Cluster


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


class _MaskOverlay(dict):  # type: ignore[type-arg]
    """The node masks of a scratch copy, over the masks of the free devices it copies: a dict by node of the masks
    it has read or changed. A node's mask is copied in the first time it is read, so the rest of a placement's
    reads and writes of it (the placer's, the engine's check, ``take``) are dict operations in C rather than a
    Python call each. Reads as the list of every node's mask (``len``, iteration)."""

    __slots__ = ("base",)

    def __init__(self, base: list[int] | _MaskOverlay) -> None:
        if isinstance(base, _MaskOverlay):
            super().__init__(dict.items(base))
            self.base: list[int] = base.base
        else:
            super().__init__()
            self.base = base

    def __missing__(self, node: int) -> int:
        mask = self[node] = self.base[node]  # the base does not change while the scratch copy is in use
        return mask

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        return (self[n] for n in range(len(self.base)))


class FreeDevices:
    """Free devices of a cluster, by node and by pool.

    Placers read it (``free_on``, ``nodes_with``, ``lowest_node_with``, ``count``, ``pool_free``); the engine
    changes it only through ``take`` and ``give`` after validating a decision. ``copy`` gives an independent
    state; ``scratch`` a cheaper one for trial placements within one scheduling pass (it shares the unchanged
    node masks with this state, which must not change while the scratch copy is in use). Free counts live in a
    ``bytearray`` (nodes hold at most 64 devices) so that copying is a memcpy and "the first node of a pool with
    exactly k free" is a C-speed ``find``, skipped when ``exact`` says no node of the pool has k free.
    """

    __slots__ = ("_base", "_base_version", "_node_ids", "cluster", "count", "exact", "mask", "pool_free", "version")

    def __init__(self, cluster: Cluster, _copy_of: FreeDevices | None = None, _scratch: bool = False) -> None:
        self.cluster = cluster
        self.version = 0
        self._base: FreeDevices | None = None
        self._base_version = 0
        if _copy_of is None:
            # each node's device ids, made once and shared by copies: the devices placements hand out are these int
            # objects rather than a new int per device per placement (28 bytes each a job holds, past id 256)
            self._node_ids: list[tuple[int, ...]] = [tuple(cluster.devices_of_node(n))
                                                     for n in range(cluster.num_nodes)]
            self.mask: list[int] | _MaskOverlay = [(1 << size) - 1 for size in cluster.node_size]
            self.count = bytearray(cluster.node_size)
            self.pool_free = list(cluster.pool_devices)
            self.exact = [[0] * (pool.devices_per_node + 1) for pool in cluster.pools]
            for p, pool in enumerate(cluster.pools):
                self.exact[p][pool.devices_per_node] = pool.nodes
        else:
            self._node_ids = _copy_of._node_ids
            if _scratch:
                self.mask = _MaskOverlay(_copy_of.mask)
                self._base = _copy_of if _copy_of._base is None else _copy_of._base
                self._base_version = self._base.version
            else:
                self.mask = [_copy_of.mask[n] for n in range(len(_copy_of.mask))] if isinstance(
                    _copy_of.mask, _MaskOverlay) else _copy_of.mask.copy()
            self.count = _copy_of.count.copy()
            self.pool_free = _copy_of.pool_free.copy()
            self.exact = [counts.copy() for counts in _copy_of.exact]

    def copy(self) -> FreeDevices:
        """An independent copy."""
        return FreeDevices(self.cluster, self)

    def scratch(self) -> FreeDevices:
        """A copy for trial placements, valid while this state does not change (one scheduling pass)."""
        return FreeDevices(self.cluster, self, _scratch=True)

    @property
    def total(self) -> int:
        return sum(self.pool_free)

    def is_free(self, device: int) -> bool:
        node = self.cluster.device_node[device]
        return bool(self.mask[node] >> (device - self.cluster.node_first_device[node]) & 1)

    def free_on(self, node: int) -> tuple[int, ...]:
        """Free device ids on ``node``, lowest first."""
        return tuple(map(self._node_ids[node].__getitem__, _bits(self.mask[node])))

    def nodes_with(self, pool: int, at_least: int = 1) -> Iterator[int]:
        """Nodes of ``pool`` with at least ``at_least`` free devices, in node order."""
        nodes = self.cluster.pool_nodes[pool]
        counts = np.frombuffer(self.count, dtype=np.uint8, count=len(nodes), offset=nodes.start)
        return iter((np.flatnonzero(counts >= at_least) + nodes.start).tolist())

    def lowest_node_with(self, pool: int, exactly: int) -> int:
        """The lowest-numbered node of ``pool`` with exactly ``exactly`` free devices, or -1."""
        exact = self.exact[pool]
        if exactly >= len(exact) or not exact[exactly]:
            return -1
        nodes = self.cluster.pool_nodes[pool]
        return self.count.find(exactly, nodes.start, nodes.stop)

    def take(self, devices: Iterable[int]) -> None:
        """Mark ``devices`` used. They must be free (the engine validates before calling)."""
        self._change(devices, True)

    def give(self, devices: Iterable[int]) -> None:
        """Mark ``devices`` free again."""
        self._change(devices, False)

    def _change(self, devices: Iterable[int], taking: bool) -> None:
        """``take`` (``taking``) or ``give``: the devices of one node at a time (a gang's devices come node by node)
        change that node's mask, count and the pool's histogram once, whatever the node's size or the cluster's."""
        base = self._base
        if base is not None and base.version != self._base_version:  # _check_base(), inline: three calls a job
            self._check_base()
        c = self.cluster
        device_node, first_device = c.device_node, c.node_first_device
        mask = self.mask
        node, bits, n = -1, 0, 0
        for d in devices:
            at = device_node[d]
            if at != node:
                if n:
                    self._apply(node, bits, n, taking)
                node, bits, n = at, 0, 0
            bit = 1 << (d - first_device[at])
            if bits & bit or bool(mask[at] & bit) is not taking:
                if n:
                    self._apply(node, bits, n, taking)  # the devices before it changed, as one by one would have
                raise ValueError(f"device {d} is {'not free' if taking else 'already free'}")
            bits |= bit
            n += 1
        if n:
            self._apply(node, bits, n, taking)
        self.version += 1

    def _apply(self, node: int, bits: int, n: int, taking: bool) -> None:
        """``n`` devices of ``node`` (the set bits of ``bits``) taken or given."""
        pool = self.cluster.node_pool[node]
        self.mask[node] ^= bits
        k = self.count[node]
        exact = self.exact[pool]
        exact[k] -= 1
        if taking:
            exact[k - n] += 1
            self.count[node] = k - n
            self.pool_free[pool] -= n
        else:
            exact[k + n] += 1
            self.count[node] = k + n
            self.pool_free[pool] += n

    def _check_base(self) -> None:
        base = self._base
        if base is not None and base.version != self._base_version:
            raise RuntimeError("a scratch copy of the free devices was used after they changed; take a new one "
                               "(view.trial()) in each scheduling pass")
