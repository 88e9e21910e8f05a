"""The interconnect topology of a cluster: a networkx graph plus the flat arrays the hot path reads.

``sim.platform.network.builders.build_topology(cluster, network=None)`` (network: a
:class:`~sim.platform.network.specs.NetworkSpec`, default :func:`~sim.platform.network.specs.default_network`) gives a
:class:`Topology`.

**Graph.** ``topology.graph`` is a ``networkx.DiGraph`` with an edge per link direction; every edge has
``capacity`` (bytes/s in that direction), ``latency`` (seconds), ``tier`` (``nvlink``, ``pcie``, ``ici``,
``nic``, ``leaf-spine``, ``spine-core``) and ``link`` (the shared-link id it belongs to, -1 for links
inside a node or slice). Vertices are tuples with a ``kind`` attribute: ``("device", d)``, ``("host", n)``
(CPU root complex, where devices or NICs hang off it: PCIe trees, TPU hosts, nodes without rails),
``("nvswitch", n)``, ``("pcie-switch", n, j)``, ``("nic", n, k)``, ``("leaf", l, k)``
(physical switch ``k`` of leaf ``l``: the rail index in a rail-optimized fabric, else 0), ``("spine", p)``
(the spine layer of pod ``p``, one vertex for all its switches) and ``("core",)``.

**Shared links.** Contention happens on the links that several jobs' traffic can cross: each node's
NICs (one *logical* link per direction with the NICs' aggregate capacity, ``nic-up``/``nic-down``), each
leaf's bundle of spine uplinks (``leaf-up``/``leaf-down``, capacity = the leaf's NIC total divided by the
fabric's oversubscription), and each pod's bundle of core uplinks (``pod-up``/``pod-down``, only with
several pods). They have ids ``0..L-1`` with ``link_capacity`` and ``link_latency`` arrays; the graph edges
of a logical link sum to its capacity. Scale-up links (NVSwitch, PCIe, ICI) carry no id: an NVSwitch is
non-blocking and a TPU slice belongs to one job. Traffic between two nodes of one leaf crosses
``(nic-up a, nic-down b)``; across leaves of one pod ``(nic-up a, leaf-up, leaf-down, nic-down b)``;
across pods the pod links in between. In a rail-optimized fabric a *leaf* is a rail group (its ``k``
physical switches take NIC ``k`` of every node); traffic is striped evenly over the rails, so one logical
link per group is exact for jobs that use all their node's NICs.

**Scale-up domains.** A GPU node is one domain; a TPU slice (several hosts) is one. Traffic inside a domain
crosses no shared link. Devices of TPU pools are chips numbered row-major over the slice shape (last axis
fastest); host ``k`` of a slice holds the next ``devices_per_node`` chips. A torus axis wraps around when its
length is a whole multiple of ``NodeNetwork.wrap_axis`` and longer than 2 (default 4 for v4/v5p, so a slice
of whole 4x4x4 cubes is a full 3D torus and a 2x4x4 sub-cube wraps on its two 4-long axes only; 16 for
v5e, so only the full 16-long axes of a v5e pod wrap). An axis of length 2 never gets a second link.

**Placement.** :meth:`Topology.placement` gives a job's level, ``LEVELS``: ``node`` (one node), ``slice``
(several hosts of one TPU slice), ``leaf``, ``pod``, ``cross-pod``, and the shared links a ring over its
devices crosses (devices grouped by node, nodes in ascending order, domains in that order; between two TPU
slices the job's hosts are paired by position, as in multi-slice data parallelism over the DCN).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from sim.errors import ConfigError
from sim.platform.network.shape import ClusterShape
from sim.platform.network.specs import (
    Fabric,
    NetworkSpec,
    NodeNetwork,
    ScaleUpLink,
    default_network,
    scale_up_bus_bandwidth,
    scale_up_link,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [  # the network specs are re-exported so that this module is the one entry point
    "LEVELS", "LINK_KINDS", "Fabric", "NetworkSpec", "NodeNetwork", "Placement", "ScaleUpLink", "Topology",
    "TorusSlice", "default_network", "scale_up_bus_bandwidth", "scale_up_link",
]

LEVELS: tuple[str, ...] = ("node", "slice", "leaf", "pod", "cross-pod")
"""Placement levels from best to worst; ``slice`` occurs only for jobs on several hosts of one TPU slice."""

LINK_KINDS: tuple[str, ...] = ("nic-up", "nic-down", "leaf-up", "leaf-down", "pod-up", "pod-down")
"""Kinds of shared links; ``link_owner`` is a node for nic-*, a leaf for leaf-*, a pod for pod-*."""

_OWNER = {"nic": "node", "leaf": "leaf", "pod": "pod"}


@dataclass(frozen=True)
class TorusSlice:
    """One TPU slice: a scale-up domain of ``prod(shape)`` chips on consecutive hosts."""

    domain: int = field(metadata={"help": "scale-up domain id of the slice"})
    pool: int = field(metadata={"help": "cluster pool index"})
    first_device: int = field(metadata={"help": "device id of chip 0 (chips are consecutive device ids)"})
    shape: tuple[int, ...] = field(metadata={"help": "chips along each torus axis"})
    wraps: tuple[bool, ...] = field(metadata={"help": "whether each axis has wrap-around links"})
    link_bandwidth: float = field(metadata={"help": "bytes/s per direction of one ICI link"})

    @property
    def chips(self) -> int:
        return int(np.prod(self.shape))

    @property
    def devices(self) -> range:
        return range(self.first_device, self.first_device + self.chips)

    def coordinates(self, device: int) -> tuple[int, ...]:
        """Torus coordinates of ``device`` (row-major, last axis fastest)."""
        return tuple(int(c) for c in np.unravel_index(device - self.first_device, self.shape))


@dataclass(frozen=True)
class Placement:
    """Where a set of devices sits in the topology and which shared links a ring over them crosses."""

    level: str = field(metadata={"help": "one of LEVELS"})
    nodes: tuple[int, ...] = field(metadata={"help": "nodes holding the devices, ascending"})
    domains: tuple[int, ...] = field(metadata={"help": "scale-up domains, ascending"})
    leaves: tuple[int, ...] = field(metadata={"help": "leaves of those nodes, ascending"})
    pods: tuple[int, ...] = field(metadata={"help": "pods of those leaves, ascending"})
    ring_links: tuple[int, ...] = field(metadata={"help": "shared link ids a ring over the devices crosses"})
    link_crossings: tuple[int, ...] = field(metadata={"help": "ring flows on each of ring_links (same order)"})


def _frozen(values: Sequence[Any], dtype: type) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    array.flags.writeable = False
    return array


class Topology:
    """A built topology. Build it with :func:`sim.platform.network.builders.build_topology`; do not mutate it.

    Flat arrays (numpy, read-only), indexed by device, node, domain, leaf, pod or link id:
    ``device_node``, ``device_domain``, ``node_domain``, ``node_leaf``, ``node_pod``, ``leaf_pod``,
    ``domain_first_node``, ``domain_num_nodes``; shared-link ids (-1: none) ``node_up``, ``node_down``,
    ``leaf_up``, ``leaf_down``, ``pod_up``, ``pod_down``; per link ``link_capacity`` (bytes/s),
    ``link_latency`` (s), ``link_kind`` (index into ``LINK_KINDS``) and ``link_owner``; per node the figures
    the collectives model needs: ``node_nics``, ``node_nic_bandwidth`` (bytes/s per NIC per direction) and
    ``node_scale_up_bandwidth`` (bytes/s per device per direction over all its scale-up links).
    """

    def __init__(self, cluster: ClusterShape, network: NetworkSpec, pool_networks: Sequence[NodeNetwork],
                 graph: nx.DiGraph, *, node_domain: Sequence[int], node_leaf: Sequence[int], leaf_pod: Sequence[int],
                 node_up: Sequence[int], node_down: Sequence[int], leaf_up: Sequence[int], leaf_down: Sequence[int],
                 pod_up: Sequence[int], pod_down: Sequence[int], link_kind: Sequence[int], link_owner: Sequence[int],
                 link_capacity: Sequence[float], link_latency: Sequence[float],
                 slices: Mapping[int, TorusSlice]) -> None:
        self.cluster = cluster
        self.network = network
        self.fabric = network.fabric
        self.pool_networks: tuple[NodeNetwork, ...] = tuple(pool_networks)
        """Each pool's NodeNetwork with every ``None`` default resolved."""
        self.graph = graph
        self.slices: dict[int, TorusSlice] = dict(slices)
        """TPU slices by domain id (a plain dict so that a topology pickles; do not modify it)."""

        # Python lists for scalar lookups in the hot path; numpy arrays for vectorised use.
        self._device_node = list(cluster.device_node)
        self._node_domain = list(node_domain)
        self._node_leaf = list(node_leaf)
        self._leaf_pod = list(leaf_pod)
        self._node_up, self._node_down = list(node_up), list(node_down)
        self._leaf_up, self._leaf_down = list(leaf_up), list(leaf_down)
        self._pod_up, self._pod_down = list(pod_up), list(pod_down)
        first: dict[int, int] = {}
        count: dict[int, int] = {}
        for n, dom in enumerate(self._node_domain):
            first.setdefault(dom, n)
            count[dom] = count.get(dom, 0) + 1
        self._domain_nodes = [range(first[d], first[d] + count[d]) for d in range(len(first))]
        self._domain_paths: dict[tuple[int, int], tuple[int, ...]] = {}

        self.device_node = _frozen(self._device_node, np.int64)
        self.node_domain = _frozen(self._node_domain, np.int64)
        self.device_domain = _frozen(self.node_domain[self.device_node], np.int64)
        self.node_leaf = _frozen(self._node_leaf, np.int64)
        self.leaf_pod = _frozen(self._leaf_pod, np.int64)
        self.node_pod = _frozen(self.leaf_pod[self.node_leaf], np.int64)
        self.domain_first_node = _frozen([r.start for r in self._domain_nodes], np.int64)
        self.domain_num_nodes = _frozen([len(r) for r in self._domain_nodes], np.int64)
        self.node_up, self.node_down = _frozen(node_up, np.int64), _frozen(node_down, np.int64)
        self.leaf_up, self.leaf_down = _frozen(leaf_up, np.int64), _frozen(leaf_down, np.int64)
        self.pod_up, self.pod_down = _frozen(pod_up, np.int64), _frozen(pod_down, np.int64)
        self.link_kind = _frozen(link_kind, np.int64)
        self.link_owner = _frozen(link_owner, np.int64)
        self.link_capacity = _frozen(link_capacity, np.float64)
        self.link_latency = _frozen(link_latency, np.float64)
        nets = [self.pool_networks[p] for p in cluster.node_pool]
        self.node_nics = _frozen([net.nics for net in nets], np.int64)
        self.node_nic_bandwidth = _frozen([net.nic_bandwidth for net in nets], np.float64)
        self.node_scale_up_bandwidth = _frozen([net.scale_up_bandwidth for net in nets], np.float64)

    # ------------------------------------------------------------------ sizes and names

    @property
    def num_links(self) -> int:
        return len(self.link_capacity)

    @property
    def num_domains(self) -> int:
        return len(self._domain_nodes)

    @property
    def num_leaves(self) -> int:
        return len(self._leaf_pod)

    @property
    def num_pods(self) -> int:
        return max(self._leaf_pod) + 1

    def domain_nodes(self, domain: int) -> range:
        """Nodes of a scale-up domain (one node for GPUs, the slice's hosts for TPUs)."""
        return self._domain_nodes[domain]

    def link_name(self, link: int) -> str:
        """Readable name of a shared link, e.g. ``"nic-up node 3"`` or ``"leaf-down leaf 1"``."""
        if not 0 <= link < self.num_links:
            raise ConfigError(f"topology: link id {link!r} is not in 0..{self.num_links - 1}")
        kind = LINK_KINDS[self.link_kind[link]]
        return f"{kind} {_OWNER[kind.split('-')[0]]} {self.link_owner[link]}"

    def links_table(self) -> pd.DataFrame:
        """One row per shared link: ``link``, ``name``, ``kind``, ``owner``, ``capacity`` (bytes/s), ``latency``."""
        import pandas as pd

        return pd.DataFrame({
            "link": np.arange(self.num_links),
            "name": [self.link_name(i) for i in range(self.num_links)],
            "kind": [LINK_KINDS[k] for k in self.link_kind],
            "owner": self.link_owner,
            "capacity": self.link_capacity,
            "latency": self.link_latency,
        })

    def describe(self) -> str:
        pools = ", ".join(f"{p.name}: {net.scale_up}, {net.nics} x {net.nic_bandwidth / 1e9:g} GB/s NICs"
                          for p, net in zip(self.cluster.pools, self.pool_networks, strict=True))
        return (f"{self.cluster.name}: {self.cluster.num_devices} devices, {self.cluster.num_nodes} nodes, "
                f"{self.num_domains} scale-up domains, {self.num_leaves} leaves, {self.num_pods} pods, "
                f"{self.num_links} shared links; {self.fabric.kind} {self.fabric.oversubscription:g}:1 ({pools})")

    def __repr__(self) -> str:
        return f"Topology({self.describe()})"

    # ------------------------------------------------------------------ paths

    def node_path(self, a: int, b: int) -> tuple[int, ...]:
        """Shared link ids traffic from node ``a`` to node ``b`` crosses, in order; ``()`` inside one domain."""
        if self._node_domain[a] == self._node_domain[b]:
            return ()
        up, down = self._node_up[a], self._node_down[b]
        if up < 0 or down < 0:
            raise ConfigError(f"topology: node {a if up < 0 else b} has no NICs, so nodes {a} and {b} cannot talk")
        la, lb = self._node_leaf[a], self._node_leaf[b]
        if la == lb:
            return (up, down)
        pa, pb = self._leaf_pod[la], self._leaf_pod[lb]
        if pa == pb:
            return (up, self._leaf_up[la], self._leaf_down[lb], down)
        return (up, self._leaf_up[la], self._pod_up[pa], self._pod_down[pb], self._leaf_down[lb], down)

    def domain_path(self, a: int, b: int) -> tuple[int, ...]:
        """Shared link ids traffic from domain ``a`` to domain ``b`` crosses (sorted, unique).

        For GPU nodes this is :meth:`node_path`; between TPU slices, host ``i`` of ``a`` talks to host ``i``
        of ``b`` (cycling over the smaller slice), so every host's DCN NICs carry a share.
        """
        key = (a, b)
        if key not in self._domain_paths:
            self._domain_paths[key] = tuple(sorted(self._pair_counts(self._domain_nodes[a], self._domain_nodes[b])))
        return self._domain_paths[key]

    def path_latency(self, a: int, b: int) -> float:
        """Sum of the shared links' latencies from node ``a`` to node ``b`` (0 inside one domain)."""
        return float(sum(self.link_latency[i] for i in self.node_path(a, b)))

    def _pair_counts(self, hosts_a: Sequence[int], hosts_b: Sequence[int],
                     counts: dict[int, int] | None = None) -> dict[int, int]:
        counts = {} if counts is None else counts
        for i in range(max(len(hosts_a), len(hosts_b))):
            for link in self.node_path(hosts_a[i % len(hosts_a)], hosts_b[i % len(hosts_b)]):
                counts[link] = counts.get(link, 0) + 1
        return counts

    # ------------------------------------------------------------------ placements

    def placement(self, devices: Iterable[int], *, checked: bool = False) -> Placement:
        """Level and ring links of a job on ``devices`` (any order; duplicates are ignored). ``checked``: the
        caller has validated the device ids already (the engine's hot path), so they are not checked again."""
        if checked:
            nodes = sorted(set(map(self._device_node.__getitem__, devices)))
        else:
            nodes = sorted({self._device_node[self._check_device(d)] for d in devices})
        if not nodes:
            raise ConfigError("placement: no devices given")
        groups: list[tuple[int, list[int]]] = []
        for n in nodes:
            dom = self._node_domain[n]
            if groups and groups[-1][0] == dom:
                groups[-1][1].append(n)
            else:
                groups.append((dom, [n]))
        leaves = sorted({self._node_leaf[n] for n in nodes})
        pods = sorted({self._leaf_pod[leaf] for leaf in leaves})
        if len(nodes) == 1:
            level = "node"
        elif len(groups) == 1:
            level = "slice"
        else:
            level = "leaf" if len(leaves) == 1 else "pod" if len(pods) == 1 else "cross-pod"
        counts: dict[int, int] = {}
        if len(groups) > 1:
            for i, (_, hosts) in enumerate(groups):
                self._pair_counts(hosts, groups[(i + 1) % len(groups)][1], counts)
        links = tuple(sorted(counts))
        return Placement(level, tuple(nodes), tuple(g[0] for g in groups), tuple(leaves), tuple(pods), links,
                         tuple(counts[i] for i in links))

    def placement_level(self, devices: Iterable[int]) -> str:
        """``node``, ``slice``, ``leaf``, ``pod`` or ``cross-pod`` (see ``LEVELS``)."""
        return self.placement(devices).level

    def ring_links(self, devices: Iterable[int]) -> tuple[int, ...]:
        """Shared link ids a ring over ``devices`` crosses (sorted; ``()`` inside one domain)."""
        return self.placement(devices).ring_links

    def _check_device(self, device: Any) -> int:
        if isinstance(device, (bool, np.bool_)) or not isinstance(device, (int, np.integer)) \
                or not 0 <= device < len(self._device_node):
            raise ConfigError(f"placement: device {device!r} is not a device of this topology "
                              f"(0..{len(self._device_node) - 1})")
        return int(device)
