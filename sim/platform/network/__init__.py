"""Interconnect model: topology graph, collective costs and link contention.

- ``topology``: :func:`~sim.platform.network.builders.build_topology` turns a
  :class:`~sim.platform.cluster.Cluster` and a :class:`~sim.platform.network.specs.NetworkSpec` into a
  :class:`~sim.platform.network.topology.Topology`: the networkx graph of devices, scale-up fabrics, NICs and
  switches, integer ids of the shared links with their capacities and latencies, and the arrays the hot path
  reads (each device's node and scale-up domain, each node's leaf and pod, node-to-node link paths, placement
  levels).
- ``specs``: the frozen dataclasses describing a network (``NodeNetwork`` per pool, ``Fabric``), the
  NCCL-effective scale-up bandwidth table and ``default_network(cluster)``; ``builders`` builds the graph;
  ``draw`` plots it.
- ``collectives``: alpha-beta cost of collectives; ``contention``: weighted max-min sharing of links.

Submodules are imported explicitly (``from sim.platform.network.builders import build_topology``); this package
imports none of them, so each stays independent of the others.
"""
