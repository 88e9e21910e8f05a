"""Interconnect topology: hand-checked small builds, tori, paths, placement levels, defaults and bad input."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from collections import Counter
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pytest

from sim import Cluster, PoolSpec, preset
from sim.errors import ConfigError
from sim.platform.network.builders import (
    CUBE_MESH_PAIRS,
    build_topology,
    check_connected,
    check_links,
    torus_edges,
    torus_wraps,
)
from sim.platform.network.draw import draw_topology
from sim.platform.network.specs import (
    Fabric,
    NetworkSpec,
    NodeNetwork,
    balanced_shape,
    default_network,
    scale_up_bus_bandwidth,
    scale_up_link,
)
from sim.platform.network.topology import LEVELS, LINK_KINDS, Topology

NDR = 50e9  # one 400 Gb/s NIC, bytes/s
H100_BUS = 18 * 20.6e9


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def h100(nodes: int, fabric: Fabric, nodes_per_rack: int = 32) -> Topology:
    cluster = Cluster([PoolSpec("h100", nodes=nodes, devices_per_node=8, nodes_per_rack=nodes_per_rack)])
    return build_topology(cluster, NetworkSpec((NodeNetwork(nics=8, nic_bandwidth=NDR),), fabric))


def links_of(topo: Topology, kind: str) -> list[int]:
    return [i for i in range(topo.num_links) if LINK_KINDS[topo.link_kind[i]] == kind]


def edges_by_tier(topo: Topology) -> Counter[str]:
    return Counter(tier for _, _, tier in topo.graph.edges(data="tier"))


def assert_edges_sum_to_link_capacity(topo: Topology) -> None:
    total = np.zeros(topo.num_links)
    for _, _, data in topo.graph.edges(data=True):
        if data["link"] >= 0:
            total[data["link"]] += data["capacity"]
    np.testing.assert_allclose(total, topo.link_capacity, rtol=1e-12)


# ----------------------------------------------------------------------------- small hand-checked builds


def test_two_dgx_h100_nodes_on_one_leaf() -> None:
    topo = h100(2, Fabric(kind="fat-tree"))
    g = topo.graph
    kinds = Counter(kind for _, kind in g.nodes(data="kind"))
    assert kinds == {"device": 16, "nvswitch": 2, "nic": 16, "leaf": 1}  # no spine: one leaf, no host: rails
    # undirected: 16 GPU-NVSwitch, 16 GPU-NIC (rail k: GPU k), 16 NIC-leaf; each one edge per direction
    assert edges_by_tier(topo) == {"nvlink": 32, "pcie": 32, "nic": 32}
    assert all(g.edges[u, v]["capacity"] == H100_BUS for u, v, t in g.edges(data="tier") if t == "nvlink")
    assert set(g.successors(("nic", 1, 3))) == {("device", 11), ("leaf", 0, 0)}
    assert topo.num_links == 4 and topo.num_leaves == 1 and topo.num_pods == 1
    assert [LINK_KINDS[k] for k in topo.link_kind] == ["nic-up", "nic-down"] * 2
    np.testing.assert_array_equal(topo.link_capacity, [8 * NDR] * 4)
    assert topo.node_path(0, 1) == (topo.node_up[0], topo.node_down[1]) == (0, 3)
    assert topo.node_path(1, 0) == (2, 1)
    assert topo.node_path(0, 0) == ()
    assert topo.link_name(0) == "nic-up node 0" and topo.link_name(3) == "nic-down node 1"
    assert topo.path_latency(0, 1) == pytest.approx(2e-6)
    assert_edges_sum_to_link_capacity(topo)
    assert list(topo.device_node) == list(topo.device_domain) == [d // 8 for d in range(16)]
    assert topo.node_scale_up_bandwidth.tolist() == [H100_BUS] * 2
    assert topo.node_nics.tolist() == [8, 8] and topo.node_nic_bandwidth.tolist() == [NDR, NDR]


def test_four_nodes_on_two_leaves_two_to_one_oversubscribed() -> None:
    topo = h100(4, Fabric(kind="fat-tree", nodes_per_leaf=2, oversubscription=2.0))
    assert topo.node_leaf.tolist() == [0, 0, 1, 1] and topo.leaf_pod.tolist() == [0, 0]
    assert topo.num_links == 4 * 2 + 2 * 2
    downlink_total = 2 * 8 * NDR
    for leaf in range(2):
        assert topo.link_capacity[topo.leaf_up[leaf]] == downlink_total / 2
        assert topo.link_capacity[topo.leaf_down[leaf]] == downlink_total / 2
    assert topo.graph.edges[("leaf", 0, 0), ("spine", 0)]["capacity"] == downlink_total / 2
    assert topo.graph.edges[("leaf", 0, 0), ("spine", 0)]["link"] == topo.leaf_up[0]
    assert topo.graph.edges[("spine", 0), ("leaf", 0, 0)]["link"] == topo.leaf_down[0]
    assert not topo.graph.has_node(("core",))
    # paths: same node, same leaf, cross leaf
    assert topo.node_path(2, 2) == ()
    assert topo.node_path(0, 1) == (topo.node_up[0], topo.node_down[1])
    assert topo.node_path(1, 3) == (topo.node_up[1], topo.leaf_up[0], topo.leaf_down[1], topo.node_down[3])
    assert topo.link_name(int(topo.leaf_up[1])) == "leaf-up leaf 1"
    assert_edges_sum_to_link_capacity(topo)


def test_pods_meet_at_the_core() -> None:
    topo = h100(8, Fabric(nodes_per_leaf=2, leaves_per_pod=2, oversubscription=2.0, pod_oversubscription=4.0))
    assert topo.num_leaves == 4 and topo.num_pods == 2
    assert topo.node_pod.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert topo.num_links == 8 * 2 + 4 * 2 + 2 * 2
    assert topo.node_path(0, 7) == (topo.node_up[0], topo.leaf_up[0], topo.pod_up[0], topo.pod_down[1],
                                    topo.leaf_down[3], topo.node_down[7])
    leaf_up = 2 * 8 * NDR / 2
    assert topo.link_capacity[topo.pod_up[1]] == 2 * leaf_up / 4
    assert topo.graph.edges[("spine", 1), ("core",)]["link"] == topo.pod_up[1]
    assert_edges_sum_to_link_capacity(topo)


def test_rail_optimized_nic_k_lands_on_leaf_k() -> None:
    topo = h100(4, Fabric(kind="rail-optimized", nodes_per_leaf=2))
    g = topo.graph
    assert topo.num_leaves == 2
    assert Counter(kind for _, kind in g.nodes(data="kind"))["leaf"] == 2 * 8
    for n in range(4):
        for k in range(8):
            leaves = [v for v in g.successors(("nic", n, k)) if g.nodes[v]["kind"] == "leaf"]
            assert leaves == [("leaf", n // 2, k)]
            assert g.nodes[leaves[0]]["rail"] == k
            # NIC k serves GPU k of its node (the rail)
            assert ("device", 8 * n + k) in g.predecessors(("nic", n, k))
    for k in range(8):
        assert g.in_degree(("leaf", 0, k)) == 2 + 1  # two NICs and the spine
        assert g.edges[("leaf", 0, k), ("spine", 0)]["capacity"] == 2 * NDR
    # one logical link per rail group: all its rail switches' uplinks together
    assert topo.link_capacity[topo.leaf_up[0]] == 8 * 2 * NDR
    assert topo.node_path(0, 1) == (topo.node_up[0], topo.node_down[1])
    assert topo.node_path(0, 3) == (topo.node_up[0], topo.leaf_up[0], topo.leaf_down[1], topo.node_down[3])
    assert_edges_sum_to_link_capacity(topo)


def test_single_switch() -> None:
    topo = h100(5, Fabric(kind="single-switch", nodes_per_leaf=1))
    assert topo.num_leaves == 1 and topo.num_links == 10
    assert topo.placement_level(range(40)) == "leaf"
    assert topo.node_path(0, 4) == (topo.node_up[0], topo.node_down[4])


def test_pcie_tree_node() -> None:
    cluster = Cluster([PoolSpec("p40", nodes=2, devices_per_node=8), PoolSpec("k80", nodes=1, devices_per_node=2)])
    topo = build_topology(cluster)
    g = topo.graph
    assert Counter(kind for _, kind in g.nodes(data="kind")) == {
        "device": 18, "host": 3, "pcie-switch": 4 + 4 + 1, "nic": 3, "leaf": 2, "spine": 1}
    assert sorted(g.successors(("pcie-switch", 0, 1))) == [("device", 2), ("device", 3), ("host", 0)]
    assert g.edges[("device", 0), ("pcie-switch", 0, 0)]["capacity"] == 12e9
    assert set(g.successors(("nic", 0, 0))) == {("host", 0), ("leaf", 0, 0)}  # no rails: NIC on the host
    assert topo.node_scale_up_bandwidth.tolist() == [12e9] * 3
    assert topo.link_capacity[topo.node_up[2]] == 100e9 / 8


def test_cube_mesh() -> None:
    cluster = Cluster([PoolSpec("v100", nodes=2, devices_per_node=8)])
    topo = build_topology(cluster)
    assert topo.pool_networks[0].scale_up == "cube-mesh" and topo.pool_networks[0].nics == 4
    degree = Counter(u for u, v, t in topo.graph.edges(data="tier") if t == "nvlink")
    assert set(degree.values()) == {4} and len(degree) == 16
    assert len(CUBE_MESH_PAIRS) == 16
    assert topo.graph.edges[("device", 0), ("device", 4)]["capacity"] == 6 * 20e9 / 4
    assert not topo.graph.has_edge(("device", 0), ("device", 5))


# ----------------------------------------------------------------------------- TPU tori


def tpu(device: str, hosts: int, per_host: int, **net: object) -> Topology:
    cluster = Cluster([PoolSpec(device, nodes=hosts, devices_per_node=per_host)])
    base = default_network(cluster)
    return build_topology(cluster, NetworkSpec((dataclasses.replace(base.pools[0], **net),), base.fabric))


def ici_links(topo: Topology) -> int:
    return edges_by_tier(topo)["ici"] // 2


def test_torus_wrap_rule() -> None:
    assert torus_wraps((4, 4, 4), (4, 4, 4)) == (True, True, True)
    assert torus_wraps((2, 4, 4), (4, 4, 4)) == (False, True, True)
    assert torus_wraps((4, 4, 8), (4, 4, 4)) == (True, True, True)
    assert torus_wraps((8, 16), (16, 16)) == (False, True)
    assert torus_wraps((2, 2), (2, 2)) == (False, False)  # a 2-long axis never gets a second link


@pytest.mark.parametrize(("shape", "wraps", "links"), [
    ((4, 4, 4), (True, True, True), 64 * 6 // 2),
    ((4, 4, 4), (False, False, False), 3 * 3 * 16),
    ((2, 4, 4), (False, True, True), 16 + 2 * 32),
    ((16, 16), (True, True), 256 * 4 // 2),
    ((4, 8), (False, False), 3 * 8 + 7 * 4),
    ((1, 4), (False, True), 4),
])
def test_torus_edge_counts(shape: tuple[int, ...], wraps: tuple[bool, ...], links: int) -> None:
    edges = torus_edges(shape, wraps)
    assert len(edges) == links
    assert len({tuple(sorted(e)) for e in edges.tolist()}) == links  # no duplicates, no self-loops
    assert all(a != b for a, b in edges.tolist())


def test_v4_full_cube_is_a_3d_torus() -> None:
    topo = tpu("v4", 16, 4, slice_shape=(4, 4, 4))
    assert ici_links(topo) == 192
    assert topo.num_domains == 1 and topo.slices[0].wraps == (True, True, True)
    degree = Counter(u for u, v, t in topo.graph.edges(data="tier") if t == "ici")
    assert set(degree.values()) == {6}
    assert topo.slices[0].link_bandwidth == 600e9 / 2 / 6
    sl = topo.slices[0]
    assert sl.coordinates(0) == (0, 0, 0) and sl.coordinates(63) == (3, 3, 3)
    assert topo.graph.has_edge(("device", 0), ("device", 3))  # wrap on the last axis: (0,0,0)-(0,0,3)


def test_v4_sub_cube_and_no_wrap() -> None:
    topo = tpu("v4", 16, 4, slice_shape=(2, 4, 4))
    assert topo.num_domains == 2 and ici_links(topo) == 2 * 80
    assert topo.slices[1].first_device == 32 and topo.slices[1].wraps == (False, True, True)
    assert ici_links(tpu("v4", 16, 4, slice_shape=(4, 4, 4), wrap_axis=(8, 8, 8))) == 144


def test_v5e_2d() -> None:
    assert ici_links(tpu("v5e", 32, 8, slice_shape=(16, 16))) == 512
    small = tpu("v5e", 4, 8)
    assert small.slices[0].shape == (4, 8) and ici_links(small) == 52


def test_slice_level_and_multislice_dcn_paths() -> None:
    topo = tpu("v5p", 16, 4, slice_shape=(2, 4, 4))  # 2 slices of 8 hosts; 16 hosts on one leaf
    assert topo.node_domain.tolist() == [0] * 8 + [1] * 8
    assert topo.device_domain[31] == 0 and topo.device_domain[32] == 1
    assert topo.node_path(0, 7) == ()  # same slice: ICI, no shared link
    assert topo.placement_level(range(4)) == "node"
    one_slice = topo.placement(range(32))
    assert one_slice.level == "slice" and one_slice.ring_links == ()
    both = topo.placement(range(64))
    assert both.level == "leaf"
    # host i of slice 0 pairs with host i of slice 1, both ways: every host's DCN NICs, up and down
    assert both.ring_links == tuple(sorted([*topo.node_up, *topo.node_down]))
    assert both.link_crossings == (1,) * 32
    assert topo.domain_path(0, 1) == tuple(sorted([*topo.node_up[:8], *topo.node_down[8:]]))
    assert topo.link_capacity[topo.node_up[0]] == 4 * 50e9 / 8


# ----------------------------------------------------------------------------- placement


def test_placement_levels_and_ring_links() -> None:
    topo = h100(8, Fabric(nodes_per_leaf=2, leaves_per_pod=2))
    assert topo.placement_level([3, 1, 2]) == "node"
    assert topo.ring_links(range(8)) == ()
    same_leaf = topo.placement([0, 8])
    assert same_leaf.level == "leaf" and same_leaf.nodes == (0, 1) and same_leaf.leaves == (0,)
    assert set(same_leaf.ring_links) == {topo.node_up[0], topo.node_down[0], topo.node_up[1], topo.node_down[1]}
    cross_leaf = topo.placement([0, 16])
    assert cross_leaf.level == "pod" and cross_leaf.leaves == (0, 1)
    assert set(cross_leaf.ring_links) == {topo.node_up[0], topo.node_down[0], topo.node_up[2], topo.node_down[2],
                                          topo.leaf_up[0], topo.leaf_down[0], topo.leaf_up[1], topo.leaf_down[1]}
    cross_pod = topo.placement([*range(8), 63])
    assert cross_pod.level == "cross-pod" and cross_pod.pods == (0, 1)
    assert {int(topo.pod_up[0]), int(topo.pod_down[1]), int(topo.pod_up[1]), int(topo.pod_down[0])} <= set(
        cross_pod.ring_links)
    # ring order: nodes ascending, so each link is crossed once
    ring = topo.placement(range(0, 64, 8))
    assert ring.level == "cross-pod" and set(ring.link_crossings) == {1}
    assert ring.nodes == tuple(range(8)) and set(LEVELS) >= {p.level for p in (same_leaf, cross_leaf, ring)}


def test_bad_placements_name_the_device() -> None:
    topo = h100(2, Fabric())
    for bad in ([16], [-1], ["a"], [1.0], [True]):
        with pytest.raises(ConfigError, match=re.escape(repr(bad[0]))):
            topo.placement(bad)
    with pytest.raises(ConfigError, match="no devices"):
        topo.placement([])


# ----------------------------------------------------------------------------- defaults and presets


def test_scale_up_table() -> None:
    assert scale_up_bus_bandwidth("h100") == pytest.approx(H100_BUS)
    assert abs(scale_up_bus_bandwidth("h100") / 370e9 - 1) < 0.10  # nccl-tests issue 212: ~370 GB/s
    assert 232e9 * 0.9 <= scale_up_bus_bandwidth("a100") <= 240e9 * 1.1  # nccl-tests issue 175
    assert scale_up_bus_bandwidth("b200") == pytest.approx(18 * 40.1e9)
    assert scale_up_bus_bandwidth("k80") == 12e9 and scale_up_bus_bandwidth("l4") == 24e9
    assert scale_up_link("a100").links == 12 and scale_up_link("a100").link_bandwidth == 20e9
    assert scale_up_link("v5p").link_bandwidth == 100e9 and scale_up_link("v5e").links == 4
    assert balanced_shape(64, 3) == (4, 4, 4) and balanced_shape(32, 3) == (2, 4, 4)
    assert balanced_shape(256, 2) == (16, 16) and balanced_shape(7, 2) == (1, 7)


@pytest.mark.parametrize(("name", "nic", "scale_up"), [("dgx-a100", 25e9, 240e9), ("dgx-h100", 50e9, H100_BUS)])
def test_dgx_defaults(name: str, nic: float, scale_up: float) -> None:
    topo = build_topology(preset(name, nodes=4))
    net = topo.pool_networks[0]
    assert (net.scale_up, net.nics, net.nic_bandwidth, net.rails) == ("nvswitch", 8, nic, True)
    assert net.scale_up_bandwidth == pytest.approx(scale_up)
    assert topo.fabric.kind == "rail-optimized" and topo.fabric.oversubscription == 1.0


def test_philly_defaults() -> None:
    cluster = preset("philly")
    topo = build_topology(cluster)
    assert [(n.scale_up, n.nics, n.nic_bandwidth, n.rails) for n in topo.pool_networks] == [
        ("pcie", 1, 12.5e9, False)] * 2
    assert topo.fabric.kind == "fat-tree"
    assert topo.num_domains == cluster.num_nodes == 552
    assert topo.node_leaf.tolist() == cluster.node_rack
    assert topo.num_links == 552 * 2 + cluster.num_racks * 2 + topo.num_pods * 2
    assert Counter(kind for _, kind in topo.graph.nodes(data="kind"))["device"] == 2490
    assert_edges_sum_to_link_capacity(topo)


def test_heterogeneous_pools_share_one_fabric() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=3, devices_per_node=8, nodes_per_rack=2),
                       PoolSpec("a100", nodes=2, devices_per_node=4),
                       PoolSpec("k80", nodes=2, devices_per_node=2, name="old"),
                       PoolSpec("v5e", nodes=2, devices_per_node=8)])
    topo = build_topology(cluster)
    assert [n.scale_up for n in topo.pool_networks] == ["nvswitch", "nvswitch", "pcie", "tpu-torus"]
    assert topo.fabric.kind == "fat-tree"
    assert topo.num_domains == 3 + 2 + 2 + 1
    assert nx.is_strongly_connected(topo.graph)
    assert topo.placement([0, 24]).level in ("pod", "cross-pod")  # an H100 and an A100 talk over the fabric
    assert topo.node_nics.tolist() == [8, 8, 8, 4, 4, 1, 1, 2, 2]
    assert_edges_sum_to_link_capacity(topo)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field", ["nic_bandwidth", "scale_up_bandwidth", "pcie_bandwidth"])
@pytest.mark.parametrize("value", [0, -5e9, "fast", math.nan, math.inf, True])
def test_bad_bandwidths(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"NodeNetwork: {field}"):
        NodeNetwork(**{field: value})  # type: ignore[arg-type]


def test_nic_bandwidth_has_no_none_default() -> None:
    with pytest.raises(ConfigError, match="NodeNetwork: nic_bandwidth"):
        NodeNetwork(nic_bandwidth=None)  # type: ignore[arg-type]
    assert NodeNetwork(scale_up_bandwidth=None, pcie_bandwidth=None).scale_up_bandwidth is None


@pytest.mark.parametrize(("cls", "field", "value"), [
    (NodeNetwork, "nic_latency", -1e-6), (NodeNetwork, "scale_up_latency", "slow"), (NodeNetwork, "nics", -1),
    (NodeNetwork, "nics", 1.5), (NodeNetwork, "scale_up", "infiniband"), (NodeNetwork, "devices_per_pcie_switch", 0),
    (Fabric, "oversubscription", 0.5), (Fabric, "oversubscription", 0), (Fabric, "pod_oversubscription", 0.9),
    (Fabric, "kind", "dragonfly"), (Fabric, "nodes_per_leaf", 0), (Fabric, "leaves_per_pod", 0),
    (Fabric, "switch_latency", -1.0),
])
def test_bad_fields_name_the_field(cls: type, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__}: {field}"):
        cls(**{field: value})


def test_zero_latency_is_allowed() -> None:
    assert NodeNetwork(nic_latency=0).nic_latency == 0 and Fabric(switch_latency=0.0).switch_latency == 0


def test_torus_shape_errors_name_the_pool() -> None:
    with pytest.raises(ConfigError, match=r"pool 'tpu-v4'.*slice_shape \(4, 4, 4\) holds 64 chips.*96 devices"):
        tpu("v4", 24, 4, slice_shape=(4, 4, 4))
    with pytest.raises(ConfigError, match=r"pool 'tpu-v4'.*3D torus.*2 axes"):
        tpu("v4", 16, 4, slice_shape=(8, 8))
    with pytest.raises(ConfigError, match=r"not a whole number of 8-chip hosts"):
        tpu("v5e", 4, 8, slice_shape=(2, 2))
    with pytest.raises(ConfigError, match="slice_shape"):
        NodeNetwork(scale_up="tpu-torus", slice_shape=(4, 0, 4))
    with pytest.raises(ConfigError, match="wrap_axis"):
        NodeNetwork(scale_up="tpu-torus", slice_shape=(4, 4, 4), wrap_axis=(4, 4))
    with pytest.raises(ConfigError, match="apply to scale_up='tpu-torus' only"):
        NodeNetwork(scale_up="nvswitch", slice_shape=(4, 4))


def test_scale_up_must_fit_the_device() -> None:
    k80 = Cluster([PoolSpec("k80", nodes=2, devices_per_node=2, name="old")])
    with pytest.raises(ConfigError, match=r"pool 'old'.*'nvswitch' needs NVLink.*k80"):
        build_topology(k80, NetworkSpec((NodeNetwork(scale_up="nvswitch"),)))
    with pytest.raises(ConfigError, match=r"pool 'dgx-h100'.*'tpu-torus' does not fit h100-sxm"):
        build_topology(preset("dgx-h100", nodes=2), NetworkSpec((NodeNetwork(scale_up="tpu-torus"),)))
    with pytest.raises(ConfigError, match="cube-mesh' needs 8 devices"):
        build_topology(Cluster([PoolSpec("v100", nodes=2, devices_per_node=4)]),
                       NetworkSpec((NodeNetwork(scale_up="cube-mesh"),)))
    with pytest.raises(ConfigError, match="describes 2 pools, the cluster has 1"):
        build_topology(k80, NetworkSpec((NodeNetwork(scale_up="pcie"),) * 2))


def test_no_nics_where_nodes_must_talk() -> None:
    with pytest.raises(ConfigError, match=r"pool 'h100-sxm'.*nics=0.*2 nodes"):
        h100_no_nics = Cluster([PoolSpec("h100", nodes=2, devices_per_node=8)])
        build_topology(h100_no_nics, NetworkSpec((NodeNetwork(nics=0),)))
    with pytest.raises(ConfigError, match=r"pool 'tpu-v4'.*nics=0.*2 slices"):
        tpu("v4", 16, 4, slice_shape=(2, 4, 4), nics=0)
    # one node, or one slice, needs no NIC
    assert build_topology(Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)]),
                          NetworkSpec((NodeNetwork(nics=0),))).num_links == 0
    assert tpu("v4", 16, 4, nics=0).placement(range(64)).level == "slice"


def test_unreachable_devices_are_named() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8, name="island"),
                       PoolSpec("h100", nodes=2, devices_per_node=8, name="main")])
    with pytest.raises(ConfigError, match=r"unreachable.*device 0 \(pool 'island', node 0\).*device 8"):
        build_topology(cluster, NetworkSpec((NodeNetwork(nics=0), NodeNetwork())))


def test_connectivity_check_on_an_edited_graph() -> None:
    topo = h100(3, Fabric(kind="rail-optimized"))
    graph = topo.graph.copy()
    check_connected(graph)
    for k in range(8):
        graph.remove_edge(("nic", 2, k), ("leaf", 0, k))  # node 2 can receive but not send
    with pytest.raises(ConfigError, match=r"device 0 .* no path to device 16 \(pool 'h100-sxm', node 2\)"):
        check_connected(graph)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("capacity", 0, "capacity must be a finite positive"), ("capacity", -1e9, "capacity"),
    ("capacity", "fast", "capacity"), ("capacity", math.nan, "capacity"), ("latency", -1e-6, "latency"),
    ("latency", None, "latency"),
])
def test_link_check_names_the_link(key: str, value: object, message: str) -> None:
    topo = h100(2, Fabric(kind="rail-optimized"))
    graph = topo.graph.copy()
    check_links(graph)
    graph.edges[("nic", 1, 3), ("leaf", 0, 3)][key] = value
    with pytest.raises(ConfigError, match=re.escape("('nic', 1, 3) -> ('leaf', 0, 3)") + ".*" + message):
        check_links(graph)


# ----------------------------------------------------------------------------- arrays and drawing


def test_arrays_are_read_only_and_consistent() -> None:
    topo = h100(8, Fabric(nodes_per_leaf=2, leaves_per_pod=2))
    with pytest.raises(ValueError):
        topo.node_leaf[0] = 3
    assert topo.node_pod.tolist() == [topo.leaf_pod[leaf] for leaf in topo.node_leaf]
    assert all(topo.domain_nodes(d) == range(d, d + 1) for d in range(8))
    table = topo.links_table()
    assert len(table) == topo.num_links and table["capacity"].gt(0).all()
    assert set(table["kind"]) == set(LINK_KINDS)
    with pytest.raises(ConfigError, match="link id 99"):
        topo.link_name(99)
    assert "8 nodes" in repr(topo)
    copy = pickle.loads(pickle.dumps(topo))  # process-pool sweeps pickle what they send
    assert copy.node_path(0, 7) == topo.node_path(0, 7) and copy.num_links == topo.num_links


def test_draw_topology_highlights_the_ring() -> None:
    topo = h100(8, Fabric(nodes_per_leaf=2, leaves_per_pod=2, oversubscription=2.0))
    ax = draw_topology(topo, highlight=[*range(0, 8), *range(40, 48)])
    assert "cross-pod" in ax.get_title()
    hot = [c for c in ax.collections if hasattr(c, "get_segments") and len(c.get_segments())
           and tuple(np.round(c.get_edgecolor()[0][:3], 3)) == (1.0, 0.498, 0.055)]
    assert hot, "the ring's links are drawn in orange"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["devices", "nodes", "leaves", "spines", "core"]
    tpu_ax = draw_topology(tpu("v5p", 16, 4, slice_shape=(2, 4, 4)), highlight=range(32))
    assert "slice" in tpu_ax.get_title()
    draw_topology(build_topology(preset("philly", scale=0.02)))
