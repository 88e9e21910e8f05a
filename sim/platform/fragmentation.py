"""Fragmentation of the free devices: which gang sizes they can still host.

Both functions read only the per-node free counts of a :class:`~sim.platform.free_devices.FreeDevices`, pool by pool
(one numpy pass over each pool's nodes, no graph walking), so the engine can call them at every timeline
record. A gang of ``s`` devices on a pool whose nodes hold ``S`` devices each is placed the way the
engine's gang rule allows:

- ``s <= S``: inside one node, so node ``n`` with ``f`` free devices hosts ``f // s`` such gangs at once;
- ``s > S``: over several nodes of the pool, counted on **whole free nodes only** (a node with all ``S``
  devices free): ``W`` whole free nodes host ``W * S // s`` gangs. Scraps of partly used nodes are left
  out on purpose: a large gang spread over the leftovers of many nodes is valid for the engine but is
  the fragmentation this metric measures. The topology (leaves, pods) is not consulted.

Pools are counted separately (a gang sits in one pool) and the per-pool figures are added.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from sim.platform.free_devices import FreeDevices

DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
"""Gang sizes :func:`gang_capacity` reports by default."""


def _pools(free: FreeDevices) -> Iterator[tuple[int, np.ndarray]]:
    """(devices per node, free count of each node) for each pool of the cluster."""
    cluster = free.cluster
    for pool, nodes in zip(cluster.pools, cluster.pool_nodes, strict=True):
        yield pool.devices_per_node, np.frombuffer(free.count, dtype=np.uint8, count=len(nodes), offset=nodes.start)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"gang size must be a positive integer, got {size!r}")
    return int(size)


def fragmentation(free: FreeDevices, size: int = 8) -> float:
    """Share of the free devices that cannot be part of any gang of ``size`` devices (0.0 when none is free).

    A free device is *usable* for ``size`` if it sits in a node with at least ``size`` free devices
    (``size`` up to the node's device count), or, for ``size`` above it, in a whole free node of a pool
    whose whole free nodes together hold at least ``size`` devices. Every other free device counts as
    fragmented. Example: two 8-device nodes with 5 and 3 free devices: ``fragmentation(free, 4) == 3 / 8``,
    ``fragmentation(free, 8) == 1.0``.
    """
    size = _check_size(size)
    total = usable = 0
    for per_node, counts in _pools(free):
        counts = counts.astype(np.int64)
        total += int(counts.sum())
        if size <= per_node:
            usable += int(counts[counts >= size].sum())
        else:
            whole = int(np.count_nonzero(counts == per_node)) * per_node
            usable += whole if whole >= size else 0
    return 0.0 if total == 0 else (total - usable) / total


def gang_capacity(free: FreeDevices, sizes: Iterable[int] = DEFAULT_SIZES) -> dict[int, int]:
    """How many gangs of each size the free devices could host at once, each size on its own.

    ``{s: sum over nodes of free // s}`` for sizes up to a pool's node size, ``{s: W * S // s}`` (``W``
    whole free nodes of ``S`` devices) above it; summed over pools. Example: two 8-device nodes, one
    whole and one with 3 free: ``{1: 11, 2: 5, 4: 2, 8: 1, 16: 0}``.
    """
    checked = [_check_size(s) for s in sizes]
    out = dict.fromkeys(checked, 0)
    for per_node, counts in _pools(free):
        counts = counts.astype(np.int64)
        whole = int(np.count_nonzero(counts == per_node)) * per_node
        for s in out:
            out[s] += int((counts // s).sum()) if s <= per_node else whole // s
    return out
