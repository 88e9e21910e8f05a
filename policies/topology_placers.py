"""Topology-aware placers: ``topology``, ``buddy`` and ``fragmentation-aware``.

All three read the cluster's interconnect (``cluster.topology``: each node's scale-up domain, leaf and
pod) once per cluster into flat per-pool arrays, then place with numpy over node free counts; nothing
walks the graph. They honour the engine's gang rule (a gang that fits in one node of a pool gets one
node; a larger one spans nodes of one pool) and return ``None`` only when no valid placement exists in
the job's allowed pools. A gang that fits in one node of some allowed pool with room is always placed on
one node, before any multi-node option of another pool is considered.

Groups of a pool's nodes, from the lowest level up: ``slice`` (nodes of one multi-host scale-up domain,
TPU pools only), ``leaf``, ``pod`` and ``cross-pod`` (the whole pool). When a multi-node gang is filled
into a group, the fullest nodes go first (fewest nodes), and the last node is the tightest that holds
the remainder; in a ``pod`` group nodes of the leaf with more free devices go first among equal counts
(and in ``cross-pod`` those of the pod, then leaf, with more free devices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.training.contracts import Placer
from sim.training.jobs import JobView

Devices = tuple[int, ...]
Plan = tuple[list[tuple[int, int]], int, int]
GROUP_LEVELS = ("slice", "leaf", "pod", "cross-pod")
"""Levels of multi-node groups, lowest first (the names of ``sim.platform.network.topology.LEVELS``)."""

_NO_CELL = 1 << 14  # key of a node mask that cannot hold the gang (buddy tables)


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..G-1 in ascending label order."""
    return np.unique(labels, return_inverse=True)[1].astype(np.int64).reshape(-1)


class _Pool:
    """One pool's nodes and their groups, built once per cluster (node indices are relative to ``start``)."""

    def __init__(self, cluster: Cluster, pool: int) -> None:
        topo = cluster.topology
        nodes = cluster.pool_nodes[pool]
        self.pool = pool
        self.start, self.stop, self.n = nodes.start, nodes.stop, len(nodes)
        self.size = cluster.pools[pool].devices_per_node
        part = slice(nodes.start, nodes.stop)
        domain = _dense(np.asarray(topo.node_domain[part]))
        self.leaf = _dense(np.asarray(topo.node_leaf[part]))
        self.pod = _dense(np.asarray(topo.node_pod[part]))
        self.num_leaves = int(self.leaf.max()) + 1
        self.num_pods = int(self.pod.max()) + 1
        groups = {"slice": domain, "leaf": self.leaf, "pod": self.pod, "cross-pod": np.zeros(self.n, np.int64)}
        multi_host = int(domain.max()) + 1 < self.n
        self.levels: dict[str, tuple[np.ndarray, int]] = {
            name: (groups[name], int(groups[name].max()) + 1)
            for name in GROUP_LEVELS if name != "slice" or multi_host}
        self.memo: dict[tuple[int, int], tuple[int, ...]] = {}
        """Fragmentation-aware: loss of taking ``g`` devices from a node with ``k`` free, by ``(k, g)``."""

    def counts(self, free: FreeDevices) -> np.ndarray:
        """Free devices of each node of the pool (a read-only view, no copy)."""
        return np.frombuffer(free.count, dtype=np.uint8, count=self.n, offset=self.start)

    def preference(self, level: str, members: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``members`` (relative node ids, ascending) in the order a group fill prefers among equal counts."""
        if level in ("slice", "leaf") or members.size < 2:
            return members
        weights = counts.astype(np.float64)
        leaf_free = np.bincount(self.leaf, weights=weights, minlength=self.num_leaves)
        keys: list[np.ndarray] = [members, self.leaf[members], -leaf_free[self.leaf[members]]]
        if level == "cross-pod":
            pod_free = np.bincount(self.pod, weights=weights, minlength=self.num_pods)
            keys += [self.pod[members], -pod_free[self.pod[members]]]
        return members[np.lexsort(keys)]

    # ------------------------------------------------------------------ buddy cells

    @cached_property
    def cells(self) -> _Cells:
        return _Cells(self)

    # ------------------------------------------------------------------ fragmentation score

    @cached_property
    def pod_of_leaf(self) -> list[int]:
        """Pod of each leaf of the pool (relative ids)."""
        out = [0] * self.num_leaves
        for leaf, pod in zip(self.leaf.tolist(), self.pod.tolist(), strict=True):
            out[leaf] = pod
        return out

    @cached_property
    def node_sizes(self) -> tuple[int, ...]:
        """Gang sizes scored inside one node: powers of two from 2 up to the node size, and the node size."""
        sizes = [1 << i for i in range(1, self.size.bit_length()) if 1 << i <= self.size]
        return tuple(sorted({*sizes, self.size} - {1}))

    @cached_property
    def group_sizes(self) -> tuple[tuple[int, str], ...]:
        """Multi-node gang sizes ``S * 2**j`` up to the pool, each with the level it is counted at: the leaf
        if some leaf has that many nodes, else the pod, else the pool."""
        leaf_nodes = int(np.bincount(self.leaf).max())
        pod_nodes = int(np.bincount(self.pod).max())
        out, nodes = [], 2
        while nodes <= self.n:
            level = "leaf" if nodes <= leaf_nodes else "pod" if nodes <= pod_nodes else "cross-pod"
            out.append((nodes * self.size, level))
            nodes *= 2
        return tuple(out)

    @cached_property
    def group_codes(self) -> tuple[tuple[int, int], ...]:
        """``group_sizes`` with level codes: 0 leaf, 1 pod, 2 cross-pod."""
        codes = {"leaf": 0, "pod": 1, "cross-pod": 2}
        return tuple((s, codes[level]) for s, level in self.group_sizes)

    @cached_property
    def group_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``group_codes`` as numpy: a column of sizes and a row of level codes."""
        return (np.array([s for s, _ in self.group_codes], np.int64)[:, None],
                np.array([code for _, code in self.group_codes], np.int64))


class _Tables:
    """Per-pool tables of one cluster, and the fragmentation score's sizes (``size_index``, largest first)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pools = [_Pool(cluster, p) for p in range(len(cluster.pools))]

    @cached_property
    def size_index(self) -> dict[int, int]:
        sizes = {s for t in self.pools for s in t.node_sizes} | {s for t in self.pools for s, _ in t.group_sizes}
        return {s: i for i, s in enumerate(sorted(sizes, reverse=True))}


# ---------------------------------------------------------------------------------------------- group fills


def _plan(hist: Sequence[int], gpus: int) -> Plan | None:
    """Fewest-nodes fill from a histogram of free counts (``hist[k]``: nodes with ``k`` free).

    Returns ``(takes, last, need)``: ``takes`` lists ``(k, m)``, ``m`` nodes with ``k`` free taken whole,
    fullest first; then ``need`` devices from one more node with ``last`` free, the tightest that holds
    them. ``None`` if the nodes hold fewer than ``gpus`` free devices.
    """
    need, takes = gpus, []
    for k in range(len(hist) - 1, 0, -1):
        have = hist[k]
        if not have:
            continue
        whole = min(have, (need - 1) // k)
        if whole:
            takes.append((k, whole))
            need -= whole * k
        if whole < have:  # a node of class k is left and now holds the remainder
            return takes, next((j for j in range(need, k) if hist[j]), k), need
    return None


def _fill(t: _Pool, members: np.ndarray, counts: np.ndarray, plan: Plan) -> list[tuple[int, int]]:
    """``(relative node, devices taken)`` for ``plan`` over ``members`` (in preference order)."""
    takes, last, need = plan
    of = counts[members]
    out: list[tuple[int, int]] = []
    skip = 0
    for k, m in takes:
        out.extend((int(n), k) for n in members[of == k][:m])
        if k == last:
            skip = m
    out.append((int(members[of == last][skip]), need))
    return out


def _devices(free: FreeDevices, t: _Pool, picks: list[tuple[int, int]]) -> Devices:
    devices: list[int] = []
    for node, taken in picks:
        devices.extend(free.free_on(t.start + node)[:taken])
    return tuple(devices)


def _group_fill(t: _Pool, level: str, group: int, counts: np.ndarray, gpus: int) -> list[tuple[int, int]]:
    gid = t.levels[level][0]
    members = np.flatnonzero(gid == group)
    plan = _plan(np.bincount(counts[members], minlength=t.size + 1).tolist(), gpus)
    assert plan is not None, "group chosen without room"
    return _fill(t, t.preference(level, members, counts), counts, plan)


@dataclass
class _TopologyBase(Placer):
    """Shared per-cluster table cache; a copy or a pickle starts with an empty cache."""

    _tables: _Tables | None = field(default=None, init=False, repr=False, compare=False)

    def tables(self, cluster: Cluster) -> _Tables:
        tables = self._tables
        if tables is None or tables.cluster is not cluster:
            tables = self._tables = _Tables(cluster)
        return tables

    def candidate_pools(self, job: JobView, free: FreeDevices) -> tuple[list[_Pool], list[_Pool]]:
        """Allowed pools with enough free devices: (those where the gang fits in a node, the others)."""
        pools = self.tables(free.cluster).pools
        ok = [pools[p] for p in job.allowed_pools if free.pool_free[p] >= job.gpus]
        return [t for t in ok if job.gpus <= t.size], [t for t in ok if job.gpus > t.size]

    def __deepcopy__(self, memo: dict[int, Any]) -> _TopologyBase:
        clone = object.__new__(type(self))
        clone.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_tables"}, _tables=None)
        return clone

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tables": None}


# ---------------------------------------------------------------------------------------------- topology


@dataclass
class TopologyAware(_TopologyBase):
    """Lowest common level of the hierarchy (node, slice, leaf, pod, cross-pod), best fit within it.

    - A gang that fits in a node goes to the node with the fewest free devices that holds it; among
      those, the one whose leaf has the fewest free devices, then the lowest node id (across pools too).
    - A larger gang goes to the lowest level with a group that holds it (a multi-host TPU slice, then a
      leaf, a pod, the whole pool): the group with the fewest free devices among those that hold it (then
      lowest pool, lowest group id), filled fullest nodes first (see the module docstring).
    """

    name = "topology"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        gpus = job.gpus
        single, multi = self.candidate_pools(job, free)
        best: tuple[int, float, int] | None = None
        for t in single:
            for k in range(gpus, t.size + 1):
                if free.count.find(k, t.start, t.stop) < 0:
                    continue
                counts = t.counts(free)
                nodes = np.flatnonzero(counts == k)
                leaf_free = np.bincount(t.leaf, weights=counts.astype(np.float64), minlength=t.num_leaves)
                node = int(nodes[np.argmin(leaf_free[t.leaf[nodes]])])
                key = (k, float(leaf_free[t.leaf[node]]), t.start + node)
                if best is None or key < best:
                    best = key
                break
        if best is not None:
            return free.free_on(best[2])[:gpus]
        for level in GROUP_LEVELS:
            chosen: tuple[float, int, int] | None = None
            pool: _Pool | None = None
            for t in multi:
                if level not in t.levels:
                    continue
                gid, groups = t.levels[level]
                totals = np.bincount(gid, weights=t.counts(free).astype(np.float64), minlength=groups)
                fits = np.flatnonzero(totals >= gpus)
                if fits.size:
                    g = int(fits[np.argmin(totals[fits])])
                    key = (float(totals[g]), t.pool, g)
                    if chosen is None or key < chosen:
                        chosen, pool = key, t
            if chosen is not None and pool is not None:
                counts = pool.counts(free)
                return _devices(free, pool, _group_fill(pool, level, chosen[2], counts, gpus))
        return None


# ---------------------------------------------------------------------------------------------- buddy


@lru_cache(maxsize=64)
def _node_cells(size: int) -> tuple[tuple[int, int], ...]:
    """Cells inside a node of ``size`` devices as ``(first, length)``: every aligned power-of-two block that
    lies inside the node, and the whole node (its own cell when ``size`` is not a power of two)."""
    cells = {(a, 1 << k) for k in range(size.bit_length()) for a in range(0, size - (1 << k) + 1, 1 << k)}
    return tuple(sorted(cells | {(0, size)}, key=lambda c: (c[1], c[0])))


@lru_cache(maxsize=1 << 16)
def _in_node(mask: int, size: int, gpus: int) -> tuple[int, int, Devices] | None:
    """Buddy choice of ``gpus`` free devices on one node: ``(block, tier, local indices)`` or ``None``.

    A free device's *block* is the length of the largest fully free in-node cell holding it; a choice's
    block is the largest block among its devices (the biggest free cell it breaks). The gang's cell size
    ``c`` is the smallest in-node cell length >= ``gpus``. Options: each cell of length ``c`` with room
    (tier 0; inside it the devices of smallest block, then lowest index), or the node's free devices of
    smallest block anywhere (tier 1, may straddle cells). Smallest (block, tier, free devices in the
    cell, first index) wins.
    """
    free_dev = [d for d in range(size) if mask >> d & 1]
    if len(free_dev) < gpus:
        return None
    cells = _node_cells(size)
    block = [0] * size
    for a, length in cells:
        if all(mask >> d & 1 for d in range(a, a + length)):
            for d in range(a, a + length):
                block[d] = length
    order = sorted(free_dev, key=lambda d: (block[d], d))
    pick = order[:gpus]
    key, best = (max(block[d] for d in pick), 1, 0, 0), pick
    cell = min(length for _, length in cells if length >= gpus)
    for a, length in cells:
        if length != cell:
            continue
        inside = [d for d in order if a <= d < a + length]
        if len(inside) >= gpus:
            option = (max(block[d] for d in inside[:gpus]), 0, len(inside), a)
            if option < key:
                key, best = option, inside[:gpus]
    return key[0], key[1], tuple(sorted(best))


@lru_cache(maxsize=64)
def _in_node_table(size: int, gpus: int) -> np.ndarray:
    """``_in_node`` keys ``block * 2 + tier`` for every mask of a node of ``size`` <= 10 devices."""
    table = np.full(1 << size, _NO_CELL, dtype=np.int64)
    for mask in range(1 << size):
        found = _in_node(mask, size, gpus)
        if found is not None:
            table[mask] = found[0] * 2 + found[1]
    table.flags.writeable = False
    return table


class _Cells:
    """Buddy cells above the node for one pool, as contiguous ranges of node positions.

    Positions order the pool's nodes by (pod, leaf, slice, node id). The tree: each node is a cell; the
    units of a group (nodes of a slice or leaf, slices of a leaf, leaves of a pod, pods of the pool) are
    combined into aligned power-of-two blocks of units, each block of 2**k > 1 units a cell whose children
    are its two halves; a group whose unit count is not a power of two is a cell whose children are its
    binary decomposition, largest block first (6 leaves: blocks of 4 and 2). A group of one unit is that
    unit's cell.
    """

    def __init__(self, t: _Pool) -> None:
        keys = [t.pod, t.leaf] + ([t.levels["slice"][0]] if "slice" in t.levels else [])
        perm = np.lexsort([np.arange(t.n), *reversed(keys)])
        self.perm = perm
        self.position = np.empty(t.n, np.int64)
        self.position[perm] = np.arange(t.n)
        keyed = [k[perm].tolist() for k in keys]
        lo: list[int] = []
        hi: list[int] = []
        parent: list[int] = []

        def new(a: int, b: int, children: Sequence[int]) -> int:
            lo.append(a)
            hi.append(b)
            parent.append(-1)
            for c in children:
                parent[c] = len(lo) - 1
            return len(lo) - 1

        node_cells = [new(i, i + 1, ()) for i in range(t.n)]

        def combine(units: list[int]) -> int:
            m = len(units)
            if m == 1:
                return units[0]
            if m & (m - 1) == 0:
                children: list[int] = [combine(units[: m // 2]), combine(units[m // 2:])]
            else:
                children, i = [], 0
                while i < m:
                    b = 1 << ((m - i).bit_length() - 1)
                    children.append(combine(units[i:i + b]))
                    i += b
            return new(lo[units[0]], hi[units[-1]], children)

        def build(a: int, b: int, level: int) -> int:
            if level == len(keyed):
                return combine(node_cells[a:b])
            units, i, key = [], a, keyed[level]
            while i < b:
                j = i
                while j < b and key[j] == key[i]:
                    j += 1
                units.append(build(i, j, level + 1))
                i = j
            return combine(units)

        build(0, t.n, 0)
        self.lo, self.hi = np.array(lo, np.int64), np.array(hi, np.int64)
        self.cap = (self.hi - self.lo) * t.size
        self.parent = np.array(parent, np.int64)
        self.parent[self.parent < 0] = len(lo)  # the root's parent: a sentinel that is never full

    def state(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(free devices of each cell, length in devices of the largest fully free cell holding each node
        position, 0 if none). Maximal free cells are disjoint, so each one's length is spread over its range."""
        prefix = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts[self.perm], out=prefix[1:])
        cell_free = prefix[self.hi] - prefix[self.lo]
        full = np.append(cell_free == self.cap, False)
        top = np.flatnonzero(full[:-1] & ~full[self.parent])
        edges = np.zeros(len(counts) + 1, np.int64)
        edges[self.lo[top]] += self.cap[top]
        edges[self.hi[top]] -= self.cap[top]
        return cell_free, np.cumsum(edges[:-1])


@dataclass
class Buddy(_TopologyBase):
    """HiveD-style buddy cells: a gang takes the smallest aligned power-of-two cell that holds it.

    Cells: inside a node, aligned blocks of 1, 2, 4, ... devices and the node itself; above it, aligned
    power-of-two groups of nodes within a leaf (and within a TPU slice), the leaf, aligned groups of
    leaves within a pod, the pod, aligned groups of pods, the pool (see ``_Cells``). A node whose size is
    not a power of two is a cell of its own above its aligned blocks (6 devices: blocks of 4, 2, 1 and the
    node). Cells are derived from the free devices alone (a cell is *free* when all its devices are).

    - **Gang that fits in a node** (``g <= node size``): its cell size is the smallest in-node cell length
      >= ``g``: ``next_pow2(g)``, or the node when that exceeds the node. On each node with room, the
      devices chosen are those that break the smallest free cell (``_in_node``: a free cell of length
      ``next_pow2(g)`` inside a partly used one first, and a non-power-of-two gang uses the first ``g``
      devices of its cell, leaving the rest of the cell to small gangs); when no aligned cell has room
      but the node does, the gang straddles cells using already broken ones. Across nodes the smallest
      (broken block, not straddling, node free devices, node id) wins, where the block of a whole free
      node is the largest fully free cell above it, so partly used nodes go first and a whole node is
      taken from the smallest free group of nodes.
    - **Larger gang**: the smallest cell (in devices) with at least ``g`` free devices; among equal sizes a
      partly used cell first (fewest free devices), then a fully free one whose largest free ancestor is
      smallest (split the smallest free block), then the lowest position, lowest pool first. A gang of
      ``g`` devices that is not a whole power-of-two number of nodes takes a cell of
      ``next_pow2(ceil(g / node size))`` nodes and leaves the rest free. Inside the cell, fullest nodes
      first (nodes in the smallest free blocks first among equals), the last node tightest, its devices
      chosen as for a single-node gang. If no smaller cell has room, the pool cell does: the answer is
      ``None`` only when no allowed pool holds the gang at all.
    """

    name = "buddy"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        gpus = job.gpus
        single, multi = self.candidate_pools(job, free)
        best: tuple[int, int, int, int] | None = None
        for t in single:
            counts = t.counts(free)
            part = np.flatnonzero((counts >= gpus) & (counts < t.size))
            key: tuple[int, int, int, int] | None = None
            if part.size:
                masks = [free.mask[t.start + i] for i in part.tolist()]
                if t.size <= 10:
                    found = _in_node_table(t.size, gpus)[masks]
                else:
                    found = np.array([_NO_CELL if (r := _in_node(m, t.size, gpus)) is None else r[0] * 2 + r[1]
                                      for m in masks], np.int64)
                i = int(np.argmin(found * 128 + counts[part]))
                if found[i] < _NO_CELL:
                    key = (int(found[i]) // 2, int(found[i]) % 2, int(counts[part[i]]), t.start + int(part[i]))
            if key is None:
                whole = np.flatnonzero(counts == t.size)
                if whole.size:
                    top = t.cells.state(counts)[1][t.cells.position[whole]]
                    i = int(np.argmin(top))
                    key = (int(top[i]), 0, t.size, t.start + int(whole[i]))
            if key is not None and (best is None or key < best):
                best = key
        if best is not None:
            node = best[3]
            size = free.cluster.node_size[node]
            found_node = _in_node(free.mask[node], size, gpus)
            assert found_node is not None
            first = free.cluster.node_first_device[node]
            return tuple(first + d for d in found_node[2])
        chosen: tuple[int, int, int, int, int] | None = None
        pool: _Pool | None = None
        chosen_top = np.zeros(0, np.int64)
        for t in multi:
            cells = t.cells
            counts = t.counts(free)
            cell_free, top = cells.state(counts)
            fits = np.flatnonzero(cell_free >= gpus)
            sub = np.where(cell_free[fits] == cells.cap[fits], top[cells.lo[fits]], 0)
            i = int(np.lexsort((cells.lo[fits], cell_free[fits], sub, cells.cap[fits]))[0])
            c = int(fits[i])
            key = (int(cells.cap[c]), int(sub[i]), int(cell_free[c]), t.pool, c)
            if chosen is None or key < chosen:
                chosen, pool, chosen_top = key, t, top
        if chosen is None or pool is None:
            return None
        t, c = pool, chosen[4]
        cells = t.cells
        counts = t.counts(free)
        members = cells.perm[cells.lo[c]:cells.hi[c]]
        node_top = chosen_top[cells.lo[c]:cells.hi[c]]  # 0 for nodes not whole
        ordered = members[np.lexsort((cells.position[members], node_top))]
        plan = _plan(np.bincount(counts[members], minlength=t.size + 1).tolist(), gpus)
        assert plan is not None, "cell chosen without room"
        picks = _fill(t, ordered, counts, plan)
        devices: list[int] = []
        for node, taken in picks:
            node += t.start
            if taken == free.count[node]:
                devices.extend(free.free_on(node))
            else:
                local = _in_node(free.mask[node], t.size, taken)
                assert local is not None
                first = free.cluster.node_first_device[node]
                devices.extend(first + d for d in local[2])
        return tuple(devices)


# ---------------------------------------------------------------------------------------------- fragmentation


@dataclass
class FragmentationAware(_TopologyBase):
    """The placement that least reduces how many large gangs the free devices can still hold.

    **Score.** For a pool of ``S``-device nodes, the gang sizes scored are the powers of two from 2 to
    ``S`` and ``S`` itself (hosted inside one node: node ``n`` with ``f`` free devices holds ``f // s``),
    and ``S * 2**j`` for ``j >= 1`` up to the pool (hosted on whole free nodes of one group: a group with
    ``W`` whole free nodes holds ``W * S // s``; the group is the leaf if some leaf of the pool has
    ``s / S`` nodes, else the pod, else the pool). A placement's *loss* is, for each size, how many such
    gangs fewer the pool can host after it; losses are compared lexicographically from the largest size
    down (losing one 64-GPU gang weighs more than any number of smaller ones). Only the nodes and groups a
    placement touches are scored.

    **Candidates.** A gang that fits in a node: for each free count ``k`` that holds it, the lowest node
    with ``k`` free, and for whole free nodes the lowest one in the leaf where taking it loses least.
    A larger gang: at the lowest level where some group holds it (slice, leaf, pod, cross-pod), each
    group's fullest-nodes-first fill. Ties: fewer free devices in the node (or group), then lowest pool
    and id. The placer never trades a lower level for a better score.
    """

    name = "fragmentation-aware"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        gpus = job.gpus
        index = self.tables(free.cluster).size_index
        single, multi = self.candidate_pools(job, free)
        best: tuple[tuple[int, ...], int, int, int] | None = None
        for t in single:
            key = None
            for k in range(gpus, t.size):  # partly used nodes: the loss depends on k only
                node = free.count.find(k, t.start, t.stop)
                if node >= 0:
                    loss = t.memo.get((k, gpus))
                    if loss is None:
                        loss = t.memo[(k, gpus)] = _loss(index, t, [(k, k - gpus)], None, None)
                    key = min(key or (loss, k, t.pool, node), (loss, k, t.pool, node))
            if key is None:  # a whole node loses a gang of the node's size, so it only comes last
                counts = t.counts(free)
                whole = counts == t.size
                if whole.any():
                    wn = _Whole(t, whole)
                    leaf = _best_leaf(t, wn)
                    node = t.start + int(np.flatnonzero(whole & (t.leaf == leaf))[0])
                    key = (_loss(index, t, [(t.size, t.size - gpus)], {leaf: 1}, wn), t.size, t.pool, node)
            if key is not None and (best is None or key < best):
                best = key
        if best is not None:
            return free.free_on(best[3])[:gpus]
        for level in GROUP_LEVELS:
            chosen: tuple[tuple[int, ...], float, int, int] | None = None
            chosen_picks: list[tuple[int, int]] = []
            pool: _Pool | None = None
            for t in multi:
                if level not in t.levels:
                    continue
                counts = t.counts(free)
                gid, groups = t.levels[level]
                totals = np.bincount(gid, weights=counts.astype(np.float64), minlength=groups)
                fits = np.flatnonzero(totals >= gpus)
                if not fits.size:
                    continue
                wn = _Whole(t, counts == t.size)
                if level == "leaf":
                    hist = np.bincount(gid * (t.size + 1) + counts, minlength=groups * (t.size + 1))
                    rows = hist.reshape(groups, t.size + 1)[fits].tolist()
                    seen: dict[tuple[Any, ...], tuple[int, ...]] = {}
                for i, g in enumerate(fits.tolist()):
                    picks: list[tuple[int, int]] = []
                    if level == "leaf":  # leaves with the same free counts and whole-node context score alike
                        memo = (*rows[i], wn.leaf[g], wn.pod[t.pod_of_leaf[g]])
                        loss = seen.get(memo)
                        if loss is None:
                            plan = _plan(rows[i], gpus)
                            assert plan is not None
                            touched, whole_taken = _plan_touch(t, plan, g)
                            loss = seen[memo] = _loss(index, t, touched, whole_taken, wn)
                    else:
                        picks = _group_fill(t, level, g, counts, gpus)
                        touched = [(int(counts[n]), int(counts[n]) - k) for n, k in picks]
                        whole_taken = {}
                        for n, _ in picks:
                            if counts[n] == t.size:
                                whole_taken[int(t.leaf[n])] = whole_taken.get(int(t.leaf[n]), 0) + 1
                        loss = _loss(index, t, touched, whole_taken, wn)
                    key = (loss, float(totals[g]), t.pool, g)
                    if chosen is None or key < chosen:
                        chosen, pool, chosen_picks = key, t, picks
            if chosen is not None and pool is not None:
                if not chosen_picks:
                    chosen_picks = _group_fill(pool, level, chosen[3], pool.counts(free), gpus)
                return _devices(free, pool, chosen_picks)
        return None


class _Whole:
    """Whole free nodes of one pool, per leaf, per pod and in all (Python lists: they are read one by one)."""

    __slots__ = ("leaf", "per_leaf", "pod", "total")

    def __init__(self, t: _Pool, whole: np.ndarray) -> None:
        self.per_leaf = np.bincount(t.leaf[whole], minlength=t.num_leaves)
        self.leaf: list[int] = self.per_leaf.tolist()
        self.pod: list[int] = np.bincount(t.pod_of_leaf, weights=self.per_leaf, minlength=t.num_pods).astype(
            np.int64).tolist()
        self.total = int(self.per_leaf.sum())


def _plan_touch(t: _Pool, plan: Plan, leaf: int) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """(free count before and after of each node ``plan`` touches, whole nodes it takes) inside ``leaf``."""
    takes, last, need = plan
    touched = [(k, 0) for k, m in takes for _ in range(m)] + [(last, last - need)]
    whole = sum(m for k, m in takes if k == t.size) + (last == t.size)
    return touched, {leaf: whole} if whole else {}


def _loss(index: dict[int, int], t: _Pool, touched: list[tuple[int, int]], whole_taken: dict[int, int] | None,
          wn: _Whole | None) -> tuple[int, ...]:
    """Gangs lost per scored size (``index``: position of each size, largest first) when the ``touched``
    nodes go from ``k`` to ``k2`` free devices and ``whole_taken[leaf]`` whole free nodes of each leaf stop
    being whole."""
    loss = [0] * len(index)
    for s in t.node_sizes:
        loss[index[s]] = sum([k // s - k2 // s for k, k2 in touched])
    if whole_taken and wn is not None:
        pods: dict[int, int] = {}
        for leaf, m in whole_taken.items():
            pods[t.pod_of_leaf[leaf]] = pods.get(t.pod_of_leaf[leaf], 0) + m
        size = t.size
        groups = ([(wn.leaf[leaf] * size, (wn.leaf[leaf] - m) * size) for leaf, m in whole_taken.items()],
                  [(wn.pod[pod] * size, (wn.pod[pod] - m) * size) for pod, m in pods.items()],
                  [(wn.total * size, (wn.total - sum(whole_taken.values())) * size)])
        for s, code in t.group_codes:
            loss[index[s]] = sum([before // s - now // s for before, now in groups[code]])
    return tuple(loss)


def _best_leaf(t: _Pool, wn: _Whole) -> int:
    """The leaf (lowest id among equals) where taking one whole free node loses the fewest large gangs."""
    leaves = np.flatnonzero(wn.per_leaf)
    if leaves.size == 1 or not t.group_sizes:
        return int(leaves[0])
    sizes, levels = t.group_arrays
    whole = np.stack([wn.per_leaf[leaves], np.asarray(wn.pod)[np.asarray(t.pod_of_leaf)[leaves]],
                      np.full(leaves.size, wn.total)])[levels]  # one row per size, ascending
    loss = (whole * t.size) // sizes - ((whole - 1) * t.size) // sizes
    return int(leaves[np.lexsort(np.vstack([leaves, loss]))[0]])  # lexsort: the last row (largest size) leads
