"""Shared links of the network as bundles of physical links: their class (``nic``, ``leaf``, ``pod``), the two
directions of a bundle, how many physical links it has, and link names as ``Topology.link_name`` prints them
(``sim.failures.links`` describes what failing one does)."""

from __future__ import annotations

from sim.errors import ConfigError
from sim.platform.cluster import Cluster
from sim.platform.network.topology import LINK_KINDS, Topology


def link_class(topology: Topology, link: int) -> str:
    """``nic``, ``leaf`` or ``pod``: the class of a shared link (``FailureModel.link_mtbf_hours`` keys)."""
    return LINK_KINDS[topology.link_kind[link]].split("-")[0]


def cable(topology: Topology, link: int) -> tuple[int, int]:
    """The (up, down) link ids of the bundle ``link`` is a direction of: a physical link fails both ways."""
    owner = int(topology.link_owner[link])
    up, down = {"nic": (topology.node_up, topology.node_down), "leaf": (topology.leaf_up, topology.leaf_down),
                "pod": (topology.pod_up, topology.pod_down)}[link_class(topology, link)]
    return int(up[owner]), int(down[owner])


def physical_links(topology: Topology, link: int) -> int:
    """How many physical links the shared link bundles: a node's NICs; for a leaf or pod uplink bundle, its
    capacity over the port speed of the NICs below it (rounded, at least 1)."""
    owner = int(topology.link_owner[link])
    kind = link_class(topology, link)
    if kind == "nic":
        return int(topology.node_nics[owner])
    below = (topology.node_leaf if kind == "leaf" else topology.node_pod) == owner
    port = float(topology.node_nic_bandwidth[below & (topology.node_nics > 0)].max())
    return max(1, round(float(topology.link_capacity[link]) / port))


def parse_link(text: str, topology: Topology, where: str) -> int:
    """A shared link id from its id (``"7"``) or its name as ``Topology.link_name`` gives it (``"leaf-up leaf 1"``);
    a ``ConfigError`` starting with ``where`` otherwise."""
    try:
        link = int(text)
    except ValueError:
        names = {topology.link_name(i): i for i in range(topology.num_links)}
        key = " ".join(text.split())
        if key not in names:
            examples = ", ".join(list(names)[:3]) if names else "none: the cluster has no shared links"
            raise ConfigError(f"{where} {text!r} is not a shared link of the cluster (an id 0..{topology.num_links - 1}"
                              f" or a name such as {examples})") from None
        return names[key]
    if not 0 <= link < topology.num_links:
        raise ConfigError(f"{where} {link} is not a shared link id of the cluster (0..{topology.num_links - 1})")
    return link


def link_node(cluster: Cluster, link: int) -> tuple[int, tuple[int, ...]]:
    """The node and devices a link outage takes out of service: a NIC link's node and its devices; none (-1, ())
    for a leaf or pod uplink, which only loses capacity."""
    topology = cluster.topology
    if link_class(topology, link) != "nic":
        return -1, ()
    node = int(topology.link_owner[link])
    return node, tuple(cluster.devices_of_node(node))
