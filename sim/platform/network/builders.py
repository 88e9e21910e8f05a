"""Builds a :class:`~sim.platform.network.topology.Topology` from a cluster and a network description.

One pass over the nodes adds each node's scale-up fabric and NICs, one pass over the TPU slices adds their
ICI tori, and one pass over leaves and pods adds the fabric and numbers the shared links. The graph is then
checked (every link's capacity and latency, every device reachable from every other). Rules and link
model: see :mod:`sim.platform.network.topology`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any

import networkx as nx
import numpy as np

from sim.errors import ConfigError
from sim.platform.network.shape import ClusterShape
from sim.platform.network.specs import (
    NVLINK_EFFECTIVE,
    PCIE_LATENCY,
    NetworkSpec,
    NodeNetwork,
    balanced_shape,
    check_number,
    default_network,
    default_scale_up_latency,
    host_pcie_bandwidth,
    scale_up_bus_bandwidth,
)
from sim.platform.network.topology import LINK_KINDS, Topology, TorusSlice

# NVLink hybrid cube-mesh of an 8-GPU DGX-1: two fully connected quads, GPU i linked to GPU i + 4. Each GPU
# has 4 peers; its NVLink bandwidth is spread evenly over them (DGX-1V doubles some pairs: not modelled).
CUBE_MESH_PAIRS: tuple[tuple[int, int], ...] = tuple(
    [(a, b) for q in (0, 4) for a in range(q, q + 4) for b in range(a + 1, q + 4)] + [(i, i + 4) for i in range(4)])

DEFAULT_WRAP_AXIS = {3: 4, 2: 16}
"""Default ``wrap_axis`` entry by torus dimensionality: whole 4-chip axes of v4/v5p cubes, full 16-chip v5e axes."""

Edge = tuple[Hashable, Hashable, dict[str, Any]]


def torus_wraps(shape: Sequence[int], wrap_axis: Sequence[int]) -> tuple[bool, ...]:
    """Axis ``i`` wraps around iff ``shape[i]`` is a whole multiple of ``wrap_axis[i]`` and longer than 2."""
    return tuple(length > 2 and length % unit == 0 for length, unit in zip(shape, wrap_axis, strict=True))


def torus_edges(shape: Sequence[int], wraps: Sequence[bool]) -> np.ndarray:
    """Undirected chip pairs ``(i, j)`` (row-major chip indices) of a torus/mesh, one row per ICI link."""
    index = np.arange(int(np.prod(shape))).reshape(tuple(shape))
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for axis, length in enumerate(shape):
        if length < 2:
            continue
        a, b = np.take(index, range(length - 1), axis=axis), np.take(index, range(1, length), axis=axis)
        pairs.append(np.stack([a.ravel(), b.ravel()], axis=1))
        if wraps[axis] and length > 2:
            a, b = np.take(index, [length - 1], axis=axis), np.take(index, [0], axis=axis)
            pairs.append(np.stack([a.ravel(), b.ravel()], axis=1))
    return np.concatenate(pairs)


def _link(edges: list[Edge], u: Hashable, v: Hashable, capacity: float, latency: float, tier: str,
          up: int = -1, down: int = -1) -> None:
    """Both directions of a physical link; ``up`` is the shared-link id of u -> v, ``down`` of v -> u."""
    edges.append((u, v, {"capacity": capacity, "latency": latency, "tier": tier, "link": up}))
    edges.append((v, u, {"capacity": capacity, "latency": latency, "tier": tier, "link": down}))


def resolve_pool(cluster: ClusterShape, pool: int, net: NodeNetwork) -> NodeNetwork:
    """``net`` checked against the pool's device type, with every ``None`` default filled in."""
    spec, p = cluster.device_specs[pool], cluster.pools[pool]
    where = f"network of pool {p.name!r}"
    tpu = spec.scale_up.startswith("ici")
    if tpu != (net.scale_up == "tpu-torus"):
        raise ConfigError(f"{where}: scale_up {net.scale_up!r} does not fit {spec.name} (scale-up {spec.scale_up}); "
                          f"use {'tpu-torus' if tpu else 'nvswitch, cube-mesh or pcie'}")
    if net.scale_up in ("nvswitch", "cube-mesh") and spec.scale_up not in NVLINK_EFFECTIVE:
        raise ConfigError(f"{where}: scale_up {net.scale_up!r} needs NVLink devices; {spec.name} has {spec.scale_up}")
    if net.scale_up == "cube-mesh" and p.devices_per_node != 8:
        raise ConfigError(f"{where}: scale_up 'cube-mesh' needs 8 devices per node, the pool has "
                          f"{p.devices_per_node}")
    changes: dict[str, Any] = {
        "scale_up_bandwidth": net.scale_up_bandwidth or scale_up_bus_bandwidth(spec),
        "scale_up_latency": default_scale_up_latency(net.scale_up) if net.scale_up_latency is None
        else net.scale_up_latency,
        "pcie_bandwidth": net.pcie_bandwidth or host_pcie_bandwidth(spec),
    }
    if tpu:
        dims = 3 if spec.scale_up == "ici-3d-torus" else 2
        devices = p.nodes * p.devices_per_node
        shape = net.slice_shape or balanced_shape(devices, dims)
        if len(shape) != dims:
            raise ConfigError(f"{where}: {spec.name} is a {dims}D torus but slice_shape {shape} has {len(shape)} axes")
        chips = math.prod(shape)
        if devices % chips:
            raise ConfigError(f"{where}: slice_shape {shape} holds {chips} chips, which does not divide the pool's "
                              f"{devices} devices ({p.nodes} hosts x {p.devices_per_node})")
        if chips % p.devices_per_node:
            raise ConfigError(f"{where}: slice_shape {shape} holds {chips} chips, not a whole number of "
                              f"{p.devices_per_node}-chip hosts")
        wrap = net.wrap_axis or (DEFAULT_WRAP_AXIS[dims],) * dims
        if len(wrap) != dims:
            raise ConfigError(f"{where}: wrap_axis {wrap} must have {dims} entries for {spec.name}")
        changes.update(slice_shape=shape, wrap_axis=wrap)
    return dataclasses.replace(net, **changes)


def build_topology(cluster: ClusterShape, network: NetworkSpec | None = None) -> Topology:
    """Build the topology of ``cluster`` (default network: ``default_network(cluster)``).

    Raises :class:`~sim.errors.ConfigError` naming the pool, field, link or device on a network that
    does not fit the cluster, a non-positive capacity, or devices that cannot reach each other.
    """
    if not isinstance(cluster, ClusterShape):
        raise ConfigError(f"topology: expected a Cluster, got {type(cluster).__name__}")
    network = default_network(cluster) if network is None else network
    if not isinstance(network, NetworkSpec):
        raise ConfigError(f"topology: network must be a NetworkSpec, got {type(network).__name__}")
    if len(network.pools) != len(cluster.pools):
        raise ConfigError(f"topology: the network describes {len(network.pools)} pools, the cluster has "
                          f"{len(cluster.pools)} ({', '.join(p.name for p in cluster.pools)})")
    nets = tuple(resolve_pool(cluster, p, net) for p, net in enumerate(network.pools))
    vertices: list[tuple[Hashable, dict[str, Any]]] = []
    edges: list[Edge] = []
    node_domain, slices = _domains(cluster, nets)
    for n in range(cluster.num_nodes):
        _add_node(cluster, nets, n, vertices, edges)
    for sl in slices.values():
        first, latency = sl.first_device, nets[sl.pool].scale_up_latency
        for i, j in torus_edges(sl.shape, sl.wraps).tolist():
            _link(edges, ("device", first + i), ("device", first + j), sl.link_bandwidth, latency, "ici")
    arrays = _add_fabric(cluster, network, nets, vertices, edges)

    graph = nx.DiGraph(name=cluster.name)
    graph.add_nodes_from(vertices)
    graph.add_edges_from(edges)
    check_links(graph)
    check_connected(graph)
    return Topology(cluster, network, nets, graph, node_domain=node_domain, slices=slices, **arrays)


def _domains(cluster: ClusterShape, nets: Sequence[NodeNetwork]) -> tuple[list[int], dict[int, TorusSlice]]:
    node_domain = [0] * cluster.num_nodes
    slices: dict[int, TorusSlice] = {}
    domain = 0
    for p, pool in enumerate(cluster.pools):
        net, nodes = nets[p], cluster.pool_nodes[p]
        first_domain = domain
        if net.scale_up == "tpu-torus":
            assert net.slice_shape is not None and net.wrap_axis is not None
            hosts = math.prod(net.slice_shape) // pool.devices_per_node
            link_bw = net.scale_up_bandwidth / (2 * len(net.slice_shape))  # type: ignore[operator]
            for s in range(len(nodes) // hosts):
                first_node = nodes.start + s * hosts
                node_domain[first_node:first_node + hosts] = [domain] * hosts
                slices[domain] = TorusSlice(domain, p, cluster.node_first_device[first_node], net.slice_shape,
                                            torus_wraps(net.slice_shape, net.wrap_axis), link_bw)
                domain += 1
        else:
            for n in nodes:
                node_domain[n] = domain
                domain += 1
        if net.nics == 0 and domain - first_domain > 1:
            what = "slices" if net.scale_up == "tpu-torus" else "nodes"
            raise ConfigError(f"network of pool {pool.name!r}: nics=0, but its {domain - first_domain} {what} need "
                              "cross-node traffic; give each node at least one NIC")
    return node_domain, slices


def _add_node(cluster: ClusterShape, nets: Sequence[NodeNetwork], n: int,
              vertices: list[tuple[Hashable, dict[str, Any]]], edges: list[Edge]) -> None:
    p = cluster.node_pool[n]
    net, pool, spec = nets[p], cluster.pools[p], cluster.device_specs[p]
    bw, lat, pcie = net.scale_up_bandwidth, net.scale_up_latency, net.pcie_bandwidth
    assert bw is not None and lat is not None and pcie is not None
    host = ("host", n)
    if net.scale_up in ("pcie", "tpu-torus") or not net.rails:
        vertices.append((host, {"kind": "host", "node": n, "pool": pool.name}))
    devices = [("device", d) for d in cluster.devices_of_node(n)]
    for local, dev in enumerate(devices):
        vertices.append((dev, {"kind": "device", "node": n, "pool": pool.name, "device_type": spec.name,
                               "local": local}))
    if net.scale_up == "nvswitch":
        switch = ("nvswitch", n)
        vertices.append((switch, {"kind": "nvswitch", "node": n, "pool": pool.name}))
        for dev in devices:
            _link(edges, dev, switch, bw, lat, "nvlink")
    elif net.scale_up == "cube-mesh":
        for i, j in CUBE_MESH_PAIRS:
            _link(edges, devices[i], devices[j], bw / 4, lat, "nvlink")
    if net.scale_up == "pcie":
        per_switch = net.devices_per_pcie_switch
        for j in range(-(-len(devices) // per_switch)):
            switch = ("pcie-switch", n, j)
            vertices.append((switch, {"kind": "pcie-switch", "node": n, "pool": pool.name}))
            _link(edges, switch, host, bw, lat, "pcie")
        for local, dev in enumerate(devices):
            _link(edges, dev, ("pcie-switch", n, local // per_switch), bw, lat, "pcie")
    elif net.scale_up == "tpu-torus" or not net.rails:
        for dev in devices:
            _link(edges, dev, host, pcie, PCIE_LATENCY, "pcie")
    size = len(devices)
    for k in range(net.nics):
        nic = ("nic", n, k)
        vertices.append((nic, {"kind": "nic", "node": n, "pool": pool.name, "rail": k}))
        if not net.rails:
            _link(edges, host, nic, pcie, PCIE_LATENCY, "pcie")
            continue
        for local in sorted({*range(k, size, net.nics), k % size}):
            _link(edges, devices[local], nic, pcie, PCIE_LATENCY, "pcie")


def _leaves(cluster: ClusterShape, network: NetworkSpec) -> list[int]:
    fabric = network.fabric
    if fabric.kind == "single-switch":
        return [0] * cluster.num_nodes
    if fabric.nodes_per_leaf is None:
        return list(cluster.node_rack)
    leaves: list[int] = []
    for nodes in cluster.pool_nodes:
        base = leaves[-1] + 1 if leaves else 0
        leaves.extend(base + k // fabric.nodes_per_leaf for k in range(len(nodes)))
    return leaves


def _add_fabric(cluster: ClusterShape, network: NetworkSpec, nets: Sequence[NodeNetwork],
                vertices: list[tuple[Hashable, dict[str, Any]]], edges: list[Edge]) -> dict[str, list[Any]]:
    fabric = network.fabric
    rail = fabric.kind == "rail-optimized"
    node_leaf = _leaves(cluster, network)
    num_leaves = max(node_leaf) + 1
    leaf_pod = [0] * num_leaves if fabric.kind == "single-switch" else [
        leaf // fabric.leaves_per_pod for leaf in range(num_leaves)]
    num_pods = max(leaf_pod) + 1
    has_spine = num_leaves > 1
    has_core = num_pods > 1

    kinds: list[int] = []
    owners: list[int] = []
    capacity: list[float] = []
    latency: list[float] = []

    def add(kind: str, owner: int, cap: float, lat: float) -> int:
        kinds.append(LINK_KINDS.index(kind))
        owners.append(owner)
        capacity.append(cap)
        latency.append(lat)
        return len(capacity) - 1

    node_up = [-1] * cluster.num_nodes
    node_down = [-1] * cluster.num_nodes
    leaf_total = [0.0] * num_leaves
    switch_total: dict[tuple[int, int], float] = {}
    for n, p in enumerate(cluster.node_pool):
        net = nets[p]
        if net.nics == 0:
            continue
        total = net.nics * net.nic_bandwidth
        node_up[n] = add("nic-up", n, total, net.nic_latency)
        node_down[n] = add("nic-down", n, total, net.nic_latency)
        leaf = node_leaf[n]
        leaf_total[leaf] += total
        for k in range(net.nics):
            key = (leaf, k if rail else 0)
            switch_total[key] = switch_total.get(key, 0.0) + net.nic_bandwidth
            _link(edges, ("nic", n, k), ("leaf", *key), net.nic_bandwidth, net.nic_latency, "nic",
                  node_up[n], node_down[n])
    for leaf, k in sorted(switch_total):
        vertices.append((("leaf", leaf, k), {"kind": "leaf", "leaf": leaf, "rail": k, "pod": leaf_pod[leaf]}))

    leaf_up = [-1] * num_leaves
    leaf_down = [-1] * num_leaves
    pod_total = [0.0] * num_pods
    if has_spine:
        for pod in sorted({leaf_pod[leaf] for leaf in range(num_leaves) if leaf_total[leaf] > 0}):
            vertices.append((("spine", pod), {"kind": "spine", "pod": pod}))
        for leaf in range(num_leaves):
            if leaf_total[leaf] > 0:
                cap = leaf_total[leaf] / fabric.oversubscription
                leaf_up[leaf] = add("leaf-up", leaf, cap, fabric.switch_latency)
                leaf_down[leaf] = add("leaf-down", leaf, cap, fabric.switch_latency)
                pod_total[leaf_pod[leaf]] += cap
        for (leaf, k), total in switch_total.items():
            _link(edges, ("leaf", leaf, k), ("spine", leaf_pod[leaf]), total / fabric.oversubscription,
                  fabric.switch_latency, "leaf-spine", leaf_up[leaf], leaf_down[leaf])
    pod_up = [-1] * num_pods
    pod_down = [-1] * num_pods
    if has_core:
        vertices.append((("core",), {"kind": "core"}))
        for pod in range(num_pods):
            if pod_total[pod] > 0:
                cap = pod_total[pod] / fabric.pod_oversubscription
                pod_up[pod] = add("pod-up", pod, cap, fabric.switch_latency)
                pod_down[pod] = add("pod-down", pod, cap, fabric.switch_latency)
                _link(edges, ("spine", pod), ("core",), cap, fabric.switch_latency, "spine-core",
                      pod_up[pod], pod_down[pod])
    return {"node_leaf": node_leaf, "leaf_pod": leaf_pod, "node_up": node_up, "node_down": node_down,
            "leaf_up": leaf_up, "leaf_down": leaf_down, "pod_up": pod_up, "pod_down": pod_down,
            "link_kind": kinds, "link_owner": owners, "link_capacity": capacity, "link_latency": latency}


# ----------------------------------------------------------------------------- checks


def check_links(graph: nx.DiGraph) -> None:
    """Every edge has a positive finite ``capacity`` and a finite ``latency`` >= 0; errors name the link."""
    data = [d for _, _, d in graph.edges(data=True)]
    capacity = [d.get("capacity") for d in data]
    latency = [d.get("latency") for d in data]
    numeric = (int, float, np.floating, np.integer)
    if all(type(x) in numeric for x in capacity) and all(type(x) in numeric for x in latency):
        caps, lats = np.asarray(capacity, dtype=float), np.asarray(latency, dtype=float)
        if np.isfinite(caps).all() and (caps > 0).all() and np.isfinite(lats).all() and (lats >= 0).all():
            return
    for u, v, d in graph.edges(data=True):  # slow path: find and name the first bad link
        where = f"topology link {u} -> {v}"
        check_number(where, "capacity", d.get("capacity"), unit=" (bytes/s per direction)")
        check_number(where, "latency", d.get("latency"), zero_ok=True, unit=" (seconds)")


def check_connected(graph: nx.DiGraph) -> None:
    """Every device can reach every other device; otherwise name two devices that cannot.

    Reachability is strong connectivity; on a graph whose links all run both ways (as built) the cheaper
    weak connectivity is the same thing.
    """
    symmetric = all(graph.succ[v].keys() == graph.pred[v].keys() for v in graph)
    components = nx.weakly_connected_components if symmetric else nx.strongly_connected_components
    groups: list[int] = []
    for component in components(graph):
        devices = [v[1] for v in component if v[0] == "device"]
        if devices:
            groups.append(min(devices))
    if len(groups) <= 1:
        return
    a, b = sorted(groups)[:2]
    attrs_a, attrs_b = graph.nodes[("device", a)], graph.nodes[("device", b)]
    raise ConfigError(
        f"topology: devices are unreachable from each other ({len(groups)} disconnected groups): device {a} "
        f"(pool {attrs_a.get('pool')!r}, node {attrs_a.get('node')}) has no path to device {b} (pool "
        f"{attrs_b.get('pool')!r}, node {attrs_b.get('node')}); check the NICs of those pools (nics > 0)")
