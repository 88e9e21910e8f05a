"""Placers: which free devices a job gets.

Every placer but ``count`` honours the gang rule the engine checks: a gang that fits in one node of a pool
gets one node; a larger one spans nodes of one pool. They differ in which node(s) they pick. ``count``
declares ``splits_gangs`` (it counts devices and ignores nodes, as Tiresias' simulator does), and the engine
then checks only that the gang sits in one pool.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sim.platform.free_devices import FreeDevices
from sim.training.contracts import Placer
from sim.training.jobs import JobView

Devices = tuple[int, ...]


def _pools(job: JobView, free: FreeDevices) -> Iterator[tuple[int, int]]:
    """(pool, devices per node) of the allowed pools with enough free devices for the gang."""
    pools = free.cluster.pools
    for p in job.allowed_pools:
        if free.pool_free[p] >= job.gpus:
            yield p, pools[p].devices_per_node


def _single_node(job: JobView, free: FreeDevices, tightest: bool) -> Devices | None:
    """The node that holds the whole gang with the fewest free devices (``tightest``) or the most, lowest pool
    first on ties, then lowest node id. Counts no node of a pool has are skipped (``free.exact``)."""
    gpus = job.gpus
    cluster = free.cluster
    pools, pool_free, exact, count = cluster.pools, free.pool_free, free.exact, free.count
    best, best_rank = -1, 0
    for pool in job.allowed_pools:
        size = pools[pool].devices_per_node
        if gpus > size or pool_free[pool] < gpus:
            continue
        counts = exact[pool]
        for rank, k in enumerate(range(gpus, size + 1) if tightest else range(size, gpus - 1, -1)):
            if counts[k]:
                if best < 0 or rank < best_rank:
                    nodes = cluster.pool_nodes[pool]
                    best, best_rank = count.find(k, nodes.start, nodes.stop), rank
                elif rank == best_rank:
                    nodes = cluster.pool_nodes[pool]
                    best = min(best, count.find(k, nodes.start, nodes.stop))
                break
    return None if best < 0 else free.free_on(best)[:gpus]


def _fewest_nodes(free: FreeDevices, pool: int, gpus: int) -> list[int]:
    """Nodes of ``pool`` covering ``gpus`` free devices with as few nodes as possible, the last one the
    tightest fit."""
    count = free.count
    nodes = sorted(free.nodes_with(pool), key=lambda n: (-count[n], n))
    chosen, need = [], gpus
    for i, node in enumerate(nodes):
        if count[node] >= need:
            fitting = [m for m in nodes[i:] if count[m] >= need]
            chosen.append(min(fitting, key=lambda m: (count[m], m)))
            return chosen
        chosen.append(node)
        need -= count[node]
    return []


def _take(free: FreeDevices, nodes: list[int], gpus: int) -> Devices:
    devices: list[int] = []
    for node in nodes:
        devices.extend(free.free_on(node)[: gpus - len(devices)])
    return tuple(devices)


@dataclass
class FirstFit(Placer):
    """The first node (in cluster order) with room; a large gang takes free devices node by node."""

    name = "first-fit"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        gpus = job.gpus
        for pool, size in _pools(job, free):
            if gpus <= size:
                # the lowest node with room: the lowest with exactly k free, over k; each search stops at the best
                # node so far (on a large cluster a search to the pool's end is most of a placement's cost)
                exact, count, nodes = free.exact[pool], free.count, free.cluster.pool_nodes[pool]
                best = nodes.stop
                for k in range(gpus, size + 1):
                    if exact[k]:
                        node = count.find(k, nodes.start, best)
                        if node >= 0:
                            best = node
                if best < nodes.stop:
                    return free.free_on(best)[:gpus]
            else:
                return _take(free, list(free.nodes_with(pool)), gpus)
        return None


@dataclass
class Consolidate(Placer):
    """Fewest nodes, then tightest fit: a small gang goes to the node with the fewest free devices that
    still holds it; a large gang to the fewest nodes, in the pool where that leaves least waste."""

    name = "consolidate"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        count = free.count
        single = _single_node(job, free, tightest=True)
        if single is not None:
            return single
        best: tuple[int, int] | None = None
        best_nodes: list[int] = []
        for pool, size in _pools(job, free):
            if job.gpus <= size:
                continue
            nodes = _fewest_nodes(free, pool, job.gpus)
            if nodes:
                rank = (len(nodes), sum(count[n] for n in nodes) - job.gpus)
                if best is None or rank < best:
                    best, best_nodes = rank, nodes
        return _take(free, best_nodes, job.gpus) if best_nodes else None


@dataclass
class Count(Placer):
    """Resource counting, topology-agnostic: the lowest-numbered free devices of the first allowed pool with
    enough of them, whichever nodes they are on (a gang that would fit in one node may be split).

    Mirrors Tiresias' ``count`` placement scheme (SymbioticLab/Tiresias, simulator/cluster.py, ``none_placement``,
    lines 1373-1380: a job starts when the cluster's free-GPU count covers it, and no GPU is chosen). gpusim must
    name devices, so it takes the lowest free ones; with the default job model their position changes nothing.
    """

    name = "count"
    splits_gangs = True

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        for pool, _ in _pools(job, free):
            return _take(free, list(free.nodes_with(pool)), job.gpus)
        return None


@dataclass
class WholeNodes(Placer):
    """Tiresias' YARN placement: a gang larger than a node takes ``gpus // devices_per_node`` wholly free nodes
    (lowest first) and, for the remainder, the first other node with room; a gang that fits in a node goes to the
    first node with room (as ``first-fit``). Pools are tried in the job's order; the first that holds the gang wins.

    Mirrors SymbioticLab/Tiresias, simulator/switch.py: ``ms_yarn_alloc_res`` (lines 197-214) picks the rule,
    ``try_cross_node_alloc`` (lines 46-147) the whole nodes and the last node, ``try_single_node_alloc``
    (lines 150-175) the single node. Tiresias also checks each node's CPUs and memory, and keeps a gang under one
    switch (cluster.py ``ms_yarn_placement``, lines 894-904); gpusim has no CPUs or memory and this placer ignores
    racks, so GPUs alone decide (Tiresias' example specs have one switch; on its 16 x 4-GPU spec and a 4 x 4 one
    the CPU and memory checks never bind: every job starts when Tiresias starts it).
    """

    name = "whole-nodes"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        for pool, size in _pools(job, free):
            if job.gpus <= size:
                node = next(free.nodes_with(pool, job.gpus), -1)
                if node >= 0:
                    return free.free_on(node)[: job.gpus]
                continue
            whole, rest = divmod(job.gpus, size)
            chosen = list(itertools.islice(free.nodes_with(pool, size), whole))
            if len(chosen) < whole:
                continue
            if rest:
                last = next((n for n in free.nodes_with(pool, rest) if n not in chosen), -1)
                if last < 0:
                    continue
                chosen.append(last)
            return _take(free, chosen, job.gpus)
        return None


@dataclass
class Spread(Placer):
    """Load balancing: a small gang goes to the node with the most free devices; a large gang takes one
    device from each of the emptiest nodes in turn, spanning as many nodes as it can."""

    name = "spread"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        count = free.count
        single = _single_node(job, free, tightest=False)
        if single is not None:
            return single
        for pool, size in _pools(job, free):
            if job.gpus <= size:
                continue
            columns = [free.free_on(n) for n in sorted(free.nodes_with(pool), key=lambda n: (-count[n], n))]
            devices: list[int] = []
            depth = 0
            while len(devices) < job.gpus:
                for col in columns:
                    if depth < len(col) and len(devices) < job.gpus:
                        devices.append(col[depth])
                depth += 1
            return tuple(devices)
        return None


@dataclass
class RandomPlacer(Placer):
    """A node chosen uniformly among those that hold the gang (from the simulation's ``placement``
    stream); a large gang takes a uniform sample of the free devices of a random pool with room."""

    name = "random"

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> Devices | None:
        candidates = [n for pool, size in _pools(job, free) if job.gpus <= size
                      for n in free.nodes_with(pool, job.gpus)]
        if candidates:
            return free.free_on(candidates[int(rng.integers(len(candidates)))])[: job.gpus]
        pools = [pool for pool, size in _pools(job, free) if job.gpus > size]
        if not pools:
            return None
        pool = pools[int(rng.integers(len(pools)))]
        pool_devices = [d for n in free.nodes_with(pool) for d in free.free_on(n)]
        picked = rng.choice(len(pool_devices), size=job.gpus, replace=False)
        return tuple(sorted(pool_devices[i] for i in picked))
