"""Topology-aware placers (topology, buddy, fragmentation-aware) and the fragmentation metric.

Hand-checked cases on small fat-trees (the state of every case is drawn in a comment), a brute-force
check of validity and of ``None`` exactly when nothing valid exists (hypothesis), and whole simulations.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.placers import Consolidate, FirstFit
from policies.topology_placers import Buddy, FragmentationAware, TopologyAware
from sim import Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.fragmentation import fragmentation, gang_capacity
from sim.platform.free_devices import FreeDevices
from sim.platform.network.specs import Fabric, default_network
from sim.training.contracts import Placer
from sim.training.jobs import JobRecord, JobView
from workloads import TrainingJob

PLACERS = (TopologyAware, Buddy, FragmentationAware)
RNG = np.random.default_rng(0)


def fat_tree(pools: list[PoolSpec], nodes_per_leaf: int, leaves_per_pod: int = 8) -> Cluster:
    fabric = Fabric(kind="fat-tree", nodes_per_leaf=nodes_per_leaf, leaves_per_pod=leaves_per_pod)
    return Cluster(pools, network=default_network(Cluster(pools), fabric=fabric))


def h100(nodes: int = 8, nodes_per_leaf: int = 4, devices_per_node: int = 8, leaves_per_pod: int = 8) -> Cluster:
    return fat_tree([PoolSpec("h100", nodes, devices_per_node)], nodes_per_leaf, leaves_per_pod)


def job(gpus: int, pools: tuple[int, ...] = (0,)) -> JobView:
    return JobRecord(TrainingJob(0, 0.0, gpus, 10.0), allowed_pools=pools, speeds=dict.fromkeys(pools, 1.0)).view


def free_with(cluster: Cluster, free_per_node: dict[int, object]) -> FreeDevices:
    """Free devices: node -> count (its lowest devices free) or an explicit list of local indices."""
    free = FreeDevices(cluster)
    for node, spec in free_per_node.items():
        local = range(spec) if isinstance(spec, int) else spec
        keep = {cluster.node_first_device[node] + i for i in local}
        free.take([d for d in cluster.devices_of_node(node) if d not in keep])
    return free


def nodes_of(cluster: Cluster, devices: tuple[int, ...] | None) -> list[int]:
    assert devices is not None
    return sorted({cluster.device_node[d] for d in devices})


def after(free: FreeDevices, devices: tuple[int, ...] | None) -> FreeDevices:
    assert devices is not None
    out = free.copy()
    out.take(devices)
    return out


# ----------------------------------------------------------------------------- topology

# 8 nodes x 8 GPUs, 4 nodes per leaf: leaf 0 = nodes 0-3, leaf 1 = nodes 4-7, one pod.
#   leaf 0: node 0: 8, node 1: 8, node 2: 8, node 3: 4 free (28)    leaf 1: node 4: 8, node 5: 4, node 6: 4, 7: 0 (16)
TWO_LEAVES = h100()
STATE = {0: 8, 1: 8, 2: 8, 3: 4, 4: 8, 5: 4, 6: 4, 7: 0}


def test_topology_keeps_a_16_gpu_gang_in_the_tightest_leaf() -> None:
    free = free_with(TWO_LEAVES, STATE)
    devices = TopologyAware().place(job(16), free, RNG)
    # Both leaves hold 16; leaf 1 has fewer free (16 < 28). Fullest first: node 4 (8), then 8 more from
    # nodes of 4: node 5 whole, and node 6 is the tightest holding the last 4.
    assert nodes_of(TWO_LEAVES, devices) == [4, 5, 6]
    assert TWO_LEAVES.topology.placement_level(devices) == "leaf"
    # first-fit and consolidate take nodes 0 and 1 (fewest nodes, lowest ids): also one leaf, but afterwards no
    # leaf holds a 24-GPU gang (leaf 0 keeps 12, leaf 1 16), while after topology leaf 0 still has 28.
    level = TWO_LEAVES.topology.placement_level
    for other in (FirstFit(), Consolidate()):
        taken = other.place(job(16), free, RNG)
        assert nodes_of(TWO_LEAVES, taken) == [0, 1]
        assert level(TopologyAware().place(job(24), after(free, taken), RNG)) == "pod"
    assert level(TopologyAware().place(job(24), after(free, devices), RNG)) == "leaf"


def test_topology_spans_leaves_only_when_no_leaf_holds_the_gang() -> None:
    free = free_with(TWO_LEAVES, STATE)
    devices = TopologyAware().place(job(32), free, RNG)  # 28 and 16 free: no leaf holds 32
    # Fullest nodes first, nodes of the leaf with more free devices first among equals: 0, 1, 2, then 4.
    assert nodes_of(TWO_LEAVES, devices) == [0, 1, 2, 4]
    assert TWO_LEAVES.topology.placement_level(devices) == "pod"
    assert TopologyAware().place(job(45), free, RNG) is None  # 44 free


def test_topology_best_fits_single_node_gangs() -> None:
    free = free_with(TWO_LEAVES, STATE)
    placer = TopologyAware()
    # 4 GPUs: nodes 3, 5, 6 have exactly 4 free; node 5's leaf has fewer free (16 < 28), lowest id there.
    assert placer.place(job(4), free, RNG) == tuple(range(40, 44))
    assert FirstFit().place(job(4), free, RNG) == (0, 1, 2, 3)
    assert placer.place(job(1), free, RNG) == (40,)
    # 8 GPUs: nodes 0, 1, 2 (leaf 0, 28 free) or 4 (leaf 1, 16 free): node 4.
    assert nodes_of(TWO_LEAVES, placer.place(job(8), free, RNG)) == [4]
    assert placer.place(job(5), free_with(TWO_LEAVES, {n: 4 for n in range(8)}), RNG) is None  # never split


def test_topology_prefers_the_lowest_level_across_pools() -> None:
    # h100 pool: node 0 has 4 free, node 1 none. a100 pool of 2-GPU nodes 2-5, all free; leaves {2, 3}, {4, 5}.
    cluster = fat_tree([PoolSpec("h100", 2, 8), PoolSpec("a100", 4, 2)], nodes_per_leaf=2)
    free = free_with(cluster, {0: 4, 1: 0, 2: 2, 3: 2, 4: 2, 5: 2})
    place = TopologyAware().place
    assert nodes_of(cluster, place(job(2, pools=(0, 1)), free, RNG)) == [2]  # best fit: a whole a100 node
    assert nodes_of(cluster, place(job(4, pools=(0, 1)), free, RNG)) == [0]  # one node beats two a100 nodes
    assert nodes_of(cluster, place(job(4, pools=(1,)), free, RNG)) == [2, 3]  # one leaf
    assert nodes_of(cluster, place(job(6, pools=(0, 1)), free, RNG)) == [2, 3, 4]  # the pod: no leaf holds 6


def test_topology_keeps_tpu_gangs_inside_one_slice() -> None:
    # Two v5p pools of 4 hosts x 4 chips, each one 16-chip slice; 2 hosts per leaf (leaves 0-3).
    cluster = fat_tree([PoolSpec("v5p", 4, 4), PoolSpec("v5p", 4, 4, name="v5p-b")], nodes_per_leaf=2)
    topo = cluster.topology
    assert topo.num_domains == 2 and len(set(topo.node_leaf.tolist())) == 4
    free = free_with(cluster, {0: 4, 1: 0, 2: 4, 3: 4, 4: 4, 5: 4, 6: 0, 7: 0})
    devices = TopologyAware().place(job(12, pools=(0, 1)), free, RNG)
    # Slice 0 has 12 free, slice 1 has 8; no leaf holds 12 (they hold 4, 8, 8, 0): the slice level wins.
    assert nodes_of(cluster, devices) == [0, 2, 3] and topo.placement_level(devices) == "slice"


# ----------------------------------------------------------------------------- buddy


def test_buddy_keeps_an_aligned_8_block_whole_inside_a_node() -> None:
    # One 16-GPU node: devices 0-7 free (an aligned 8-cell), and 9, 10, 11, 12 (no aligned 4-cell).
    cluster = h100(nodes=1, nodes_per_leaf=1, devices_per_node=16)
    free = free_with(cluster, {0: [*range(8), 9, 10, 11, 12]})
    assert FirstFit().place(job(4), free, RNG) == (0, 1, 2, 3)  # breaks the 8-cell
    devices = Buddy().place(job(4), free, RNG)
    assert devices == (9, 10, 11, 12)  # only already broken cells
    assert Buddy().place(job(8), after(free, devices), RNG) == tuple(range(8))
    # Non-power-of-two gangs take the first devices of their cell: 3 of the aligned 4-cell 0-3.
    assert Buddy().place(job(3), free_with(cluster, {0: 16}), RNG) == (0, 1, 2)
    # A 2-gang straddles the isolated 9 and 12 (free cells of 1) and keeps the free 2-cell 10-11 whole;
    # when it can do no better than break a 2-cell, an aligned one wins over a straddle (8-9, not 7-8).
    assert Buddy().place(job(2), free, RNG) == (9, 12)
    assert Buddy().place(job(2), free_with(cluster, {0: [7, 8, 9, 14, 15]}), RNG) == (8, 9)


def test_buddy_takes_the_whole_node_whose_buddy_is_busy() -> None:
    # One leaf of 4 nodes: node 2 busy, nodes 0, 1, 3 whole. Cells: [0, 1] free (16), [2, 3] broken.
    cluster = h100(nodes=4, nodes_per_leaf=4)
    free = free_with(cluster, {0: 8, 1: 8, 2: 0, 3: 8})
    assert nodes_of(cluster, FirstFit().place(job(8), free, RNG)) == [0]
    devices = Buddy().place(job(8), free, RNG)
    assert nodes_of(cluster, devices) == [3]
    assert nodes_of(cluster, Buddy().place(job(16), after(free, devices), RNG)) == [0, 1]
    # A partly used node comes before any whole node, the fewest broken cells first.
    free = free_with(cluster, {0: 8, 1: 8, 2: [0, 1, 2, 3, 4, 6], 3: 8})
    assert Buddy().place(job(4), free, RNG) == (16, 17, 18, 19)


def test_buddy_multi_node_gangs_take_the_smallest_free_cell() -> None:
    # 8 nodes in one leaf; nodes 0 and 5 busy. Free 2-node cells: [2, 3] and [6, 7] (both in broken 4-cells).
    cluster = h100(nodes=8, nodes_per_leaf=8)
    free = free_with(cluster, {n: 0 if n in (0, 5) else 8 for n in range(8)})
    assert nodes_of(cluster, Buddy().place(job(16), free, RNG)) == [2, 3]
    assert nodes_of(cluster, Consolidate().place(job(16), free, RNG)) == [1, 2]  # breaks the [2, 3] cell
    # 24 GPUs = 3 nodes: the 4-node cells are [0-3] (24 free, partly used) and [4-7] (24 free): the lower.
    assert nodes_of(cluster, Buddy().place(job(24), free, RNG)) == [1, 2, 3]
    # Nothing but the pool cell holds 48: all six free nodes.
    assert nodes_of(cluster, Buddy().place(job(48), free, RNG)) == [1, 2, 3, 4, 6, 7]
    assert Buddy().place(job(49), free, RNG) is None


def test_buddy_non_power_of_two_nodes() -> None:
    # 6-GPU nodes: cells 0-3, 4-5 and the node. A 5-gang needs the node cell; a 4-gang the aligned 4-cell.
    cluster = h100(nodes=2, nodes_per_leaf=2, devices_per_node=6)
    free = free_with(cluster, {0: [0, 1, 2, 3, 4], 1: 6})
    assert Buddy().place(job(5), free, RNG) == (0, 1, 2, 3, 4)
    assert Buddy().place(job(4), free, RNG) == (0, 1, 2, 3)
    assert Buddy().place(job(6), free, RNG) == tuple(range(6, 12))


# ----------------------------------------------------------------------------- fragmentation-aware


def test_fragmentation_aware_keeps_more_8_gpu_gangs_than_first_fit() -> None:
    # 4 nodes: 8, 8, 5, 6 free. A 4-gang on node 0 (first-fit) leaves one whole node; on node 2 or 3, two.
    cluster = h100(nodes=4, nodes_per_leaf=4)
    free = free_with(cluster, {0: 8, 1: 8, 2: 5, 3: 6})
    ff = after(free, FirstFit().place(job(4), free, RNG))
    devices = FragmentationAware().place(job(4), free, RNG)
    fa = after(free, devices)
    assert gang_capacity(ff)[8] == 1 and gang_capacity(fa)[8] == 2
    # Node 2 (5 -> 1) loses one 4-gang, two 2-gangs; node 3 (6 -> 2) the same 4-gang but only two 2-gangs
    # of three: losses (8, 4, 2) = (0, 1, 2) against (0, 1, 2); equal, so the tighter node 2 wins.
    assert nodes_of(cluster, devices) == [2]


def test_fragmentation_aware_fills_odd_scraps_before_consolidating() -> None:
    # A 1-gang: node 0 has 2 free (taking one loses a 2-gang), node 1 has 3 (3 -> 2 loses nothing).
    cluster = h100(nodes=2, nodes_per_leaf=2)
    free = free_with(cluster, {0: 2, 1: 3})
    assert Consolidate().place(job(1), free, RNG) == (0,)
    assert FragmentationAware().place(job(1), free, RNG) == (8,)


def test_fragmentation_aware_chooses_the_leaf_that_keeps_large_gangs() -> None:
    # Two leaves of 4 nodes. Leaf 0: four whole nodes (a 32-GPU gang fits on whole nodes). Leaf 1: two whole
    # nodes (4, 5) and two nodes with 4 free. A 16-gang in leaf 0 loses its 32-gang; in leaf 1 nothing of 32.
    cluster = h100()
    free = free_with(cluster, {0: 8, 1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 4, 7: 4})
    devices = FragmentationAware().place(job(16), free, RNG)
    assert nodes_of(cluster, devices) == [4, 5]
    ff = FirstFit().place(job(16), free, RNG)
    assert nodes_of(cluster, ff) == [0, 1]
    # Afterwards a 32-GPU gang still fits in one leaf (on whole nodes) only after fragmentation-aware.
    level = cluster.topology.placement_level
    assert level(TopologyAware().place(job(32), after(free, devices), RNG)) == "leaf"
    assert level(TopologyAware().place(job(32), after(free, ff), RNG)) == "pod"


def test_fragmentation_aware_takes_a_whole_node_from_the_leaf_where_it_hurts_least() -> None:
    # Leaves of 4: leaf 0 has 2 whole nodes (one 16-gang), leaf 1 has 3 (one 16-gang, one spare node).
    cluster = h100()
    free = free_with(cluster, {0: 8, 1: 8, 2: 0, 3: 0, 4: 8, 5: 8, 6: 8, 7: 0})
    assert nodes_of(cluster, FragmentationAware().place(job(8), free, RNG)) == [4]
    assert nodes_of(cluster, TopologyAware().place(job(8), free, RNG)) == [0]  # leaf 0 has fewer free


# ----------------------------------------------------------------------------- validity (hypothesis)


def valid(cluster: Cluster, view: JobView, free: FreeDevices, devices: tuple[int, ...]) -> bool:
    """The engine's rules: gang size, distinct free devices, one allowed pool, no needless split."""
    if len(devices) != view.gpus or len(set(devices)) != len(devices) or not all(free.is_free(d) for d in devices):
        return False
    pools = {cluster.pool_of_device(d) for d in devices}
    if len(pools) != 1 or not pools <= set(view.allowed_pools):
        return False
    pool = pools.pop()
    return view.gpus > cluster.pools[pool].devices_per_node or len({cluster.device_node[d] for d in devices}) == 1


def brute_force_exists(cluster: Cluster, view: JobView, free: FreeDevices) -> bool:
    devices = [d for d in range(cluster.num_devices) if free.is_free(d)]
    return any(valid(cluster, view, free, combo) for combo in itertools.combinations(devices, view.gpus))


def exists(cluster: Cluster, view: JobView, free: FreeDevices) -> bool:
    """Closed form of ``brute_force_exists`` (checked against it on tiny clusters)."""
    for p in view.allowed_pools:
        size = cluster.pools[p].devices_per_node
        nodes = cluster.pool_nodes[p]
        if view.gpus <= size and any(free.count[n] >= view.gpus for n in nodes):
            return True
        if view.gpus > size and free.pool_free[p] >= view.gpus:
            return True
    return False


POOL_TYPES = ("h100", "a100", "v5p")
PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def states(draw: st.DrawFn, max_devices: int = 64) -> tuple[Cluster, FreeDevices, JobView]:
    """A random cluster (1-2 pools, node sizes 1-8 and some 16, fat-trees of 1-3 nodes per leaf, TPU slices),
    a random free state and a gang of up to the free devices + 2 on a random non-empty set of pools."""
    pools, total = [], 0
    for i in range(draw(st.integers(1, 2))):
        sizes = [s for s in (1, 2, 3, 4, 6, 8, 8, 16) if s <= max_devices - total]
        if not sizes:
            break
        size = draw(st.sampled_from(sizes))
        nodes = draw(st.integers(1, min(6, (max_devices - total) // size)))
        pools.append(PoolSpec(POOL_TYPES[draw(st.integers(0, 2))], nodes, size, name=f"p{i}"))
        total += nodes * size
    cluster = fat_tree(pools, nodes_per_leaf=draw(st.integers(1, 3)), leaves_per_pod=draw(st.integers(1, 2)))
    busy = draw(st.integers(0, 2**cluster.num_devices - 1))
    density = draw(st.sampled_from([0.0, 0.3, 0.6]))
    noise = np.random.default_rng(busy % 2**32).random(cluster.num_devices) < density
    free = FreeDevices(cluster)
    free.take([d for d in range(cluster.num_devices) if busy >> d & 1 and noise[d]])
    allowed = draw(st.sets(st.integers(0, len(pools) - 1), min_size=1))
    gpus = draw(st.integers(1, max(1, free.total + 2)))
    return cluster, free, job(gpus, tuple(sorted(allowed)))


@pytest.mark.parametrize("placer_class", PLACERS)
@given(state=states())
@PROPERTY
def test_placements_are_valid_and_none_only_when_nothing_fits(placer_class: type[Placer],
                                                              state: tuple[Cluster, FreeDevices, JobView]) -> None:
    cluster, free, view = state
    before = (bytes(free.count), list(free.mask), list(free.pool_free))
    devices = placer_class().place(view, free, RNG)
    assert (bytes(free.count), list(free.mask), list(free.pool_free)) == before, "the placer changed free"
    if devices is None:
        assert not exists(cluster, view, free)
        return
    assert all(isinstance(d, int) for d in devices)
    assert valid(cluster, view, free, devices), devices
    # The lowest level: a gang that fits in one node of an allowed pool with room gets one node.
    fits_a_node = any(view.gpus <= cluster.pools[p].devices_per_node and
                      any(free.count[n] >= view.gpus for n in cluster.pool_nodes[p]) for p in view.allowed_pools)
    assert not fits_a_node or len({cluster.device_node[d] for d in devices}) == 1


@pytest.mark.parametrize("placer_class", PLACERS)
@given(state=states(max_devices=12))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_none_exactly_when_brute_force_finds_nothing(placer_class: type[Placer],
                                                     state: tuple[Cluster, FreeDevices, JobView]) -> None:
    cluster, free, view = state
    found = brute_force_exists(cluster, view, free)
    assert found == exists(cluster, view, free)
    devices = placer_class().place(view, free, RNG)
    assert (devices is not None) == found
    assert devices is None or valid(cluster, view, free, devices)


@pytest.mark.parametrize("placer_class", PLACERS)
def test_placers_are_deterministic_and_copy_without_their_cache(placer_class: type[Placer]) -> None:
    free = free_with(TWO_LEAVES, STATE)
    placer = placer_class()
    first = [placer.place(job(g), free, RNG) for g in (1, 3, 8, 16, 20)]
    assert first == [placer_class().place(job(g), free, np.random.default_rng(9)) for g in (1, 3, 8, 16, 20)]
    for clone in (copy.deepcopy(placer), pickle.loads(pickle.dumps(placer))):
        assert clone._tables is None and clone == placer
        assert [clone.place(job(g), free, RNG) for g in (1, 3, 8, 16, 20)] == first
    assert placer.describe() == {"name": placer_class.name}
    other = h100(nodes=2, nodes_per_leaf=1)  # a new cluster rebuilds the tables
    assert nodes_of(other, placer.place(job(16), FreeDevices(other), RNG)) == [0, 1]


# ----------------------------------------------------------------------------- fragmentation metric


def test_fragmentation_and_gang_capacity_by_hand() -> None:
    # h100 pool: node 0 whole (8), node 1 5 free, node 2 3 free. a100 pool of 2-GPU nodes: 2, 2, 1, 0 free.
    cluster = Cluster([PoolSpec("h100", 3, 8), PoolSpec("a100", 4, 2)])
    free = free_with(cluster, {0: 8, 1: 5, 2: 3, 3: 2, 4: 2, 5: 1, 6: 0})
    assert free.total == 21
    assert gang_capacity(free) == {1: 21, 2: 4 + 2 + 1 + 1 + 1, 4: 2 + 1 + 1, 8: 1, 16: 0, 32: 0, 64: 0}
    # size 8: h100 node 0 only (8 devices); a100: whole nodes hold 4 < 8, so none.
    assert fragmentation(free) == pytest.approx(13 / 21)
    # size 4: h100 nodes with >= 4 free (8 + 5); a100: the two whole nodes (4 devices) host one 4-gang.
    assert fragmentation(free, 4) == pytest.approx((21 - 13 - 4) / 21)
    assert fragmentation(free, 1) == 0.0 and fragmentation(free, 2) == pytest.approx(1 / 21)
    assert fragmentation(free, 16) == 1.0
    empty = FreeDevices(cluster)
    empty.take(range(cluster.num_devices))
    assert fragmentation(empty) == 0.0 and gang_capacity(empty, (1, 8)) == {1: 0, 8: 0}
    whole = FreeDevices(cluster)
    assert fragmentation(whole, 16) == pytest.approx(8 / 32)  # the a100 pool's 8 devices never host 16
    assert gang_capacity(whole, (16, 24)) == {16: 1, 24: 1}
    with pytest.raises(ValueError, match="positive integer"):
        fragmentation(free, 0)


# ----------------------------------------------------------------------------- whole simulations


def synthetic_jobs(count: int = 40) -> list[TrainingJob]:
    rng = np.random.default_rng(3)
    sizes = rng.choice([1, 2, 3, 4, 8, 12, 16, 24, 32], size=count, p=[.25, .15, .05, .15, .15, .05, .1, .05, .05])
    arrivals = np.cumsum(rng.exponential(20.0, size=count))
    durations = rng.lognormal(np.log(300.0), 1.0, size=count)
    return [TrainingJob(i, float(a), int(g), float(d)) for i, (a, g, d) in enumerate(zip(arrivals, sizes, durations,
                                                                                         strict=True))]


@pytest.mark.parametrize("placer_class", PLACERS)
@pytest.mark.parametrize("network", [None, True])
def test_whole_simulation_finishes_every_job(placer_class: type[Placer], network: bool | None) -> None:
    cluster = h100(nodes=8, nodes_per_leaf=2, leaves_per_pod=2)
    jobs = synthetic_jobs()
    results = Simulation(cluster, jobs, scheduler="fifo", placer=placer_class(), seed=1, network=network).run()
    assert (results.jobs["status"] == "finished").all()
    assert len(results.jobs) == len(jobs)
    if network:
        levels = set(results.jobs["placement_level"])
        assert levels <= {"node", "leaf", "pod", "cross-pod"} and "node" in levels
