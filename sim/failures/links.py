"""Links of the network that fail and are repaired (``FailureModel.link_mtbf_hours``, or a trace's ``link`` column).

A shared link of the topology (``sim.platform.network.topology``) is a bundle of physical links, and what one of them
failing does depends on where it is:

- **A node's NICs** (``nic-up``/``nic-down node n``: one cable per NIC). When one NIC's link goes down, the
  collectives of every job spanning the node break (NCCL rings and trees use every rail, and a collective whose link
  drops errors out rather than re-routing), and the node is drained until the cable is repaired: the node fails as a
  node failure does, with kind ``link`` (its jobs lose the work since their last checkpoint and re-queue, its
  replicas are lost). A node's NIC links fail at a rate of (its NICs) / MTBF. (Support, not a checked figure:
  Meta's Llama 3 405B run counted 35 of its 419 unexpected job interruptions, 8.4%, as network switch or cable
  faults, its table of root causes as DatacenterDynamics quotes it: "The Llama 3 Herd of Models", arXiv:2407.21783,
  section 3.3.4; the paper's own text was not opened.)
- **A leaf's spine uplinks** (``leaf-up``/``leaf-down leaf l``) and **a pod's core uplinks** (``pod-up``/``pod-down
  pod p``): a bundle of ``k`` physical links, ``k = round(bundle capacity / port speed)`` (``physical_links``) with
  the port speed that of the NICs below (one switch model for the fabric: a leaf with ``N`` NIC ports at
  oversubscription ``o`` has ``N / o`` uplinks of the same speed). Traffic is spread over the ``k`` links (ECMP);
  when one fails, routing moves its flows onto the others, so the bundle keeps ``(k - f) / k`` of its capacity in
  both directions while ``f`` of its links are down, nothing is interrupted, and the contention solver slows the
  jobs and transfers crossing it if it is now contended (this needs the network model with contention on).
  The last working link of a bundle does not fail at random (a leaf or pod cut off from the spine partitions the
  fabric, which the contention model cannot represent): a bundle fails at a rate of ``(k - 1 - f) / MTBF``, one of
  ``k = 1`` never; a trace outage that would take it is a ``ConfigError`` naming its line.

Times to failure and to repair are exponential; the draws come from the run's ``links`` stream, so a run without
link failures draws nothing more than before. The links table's utilizations stay relative to the nominal capacity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from sim.engine.kernel import EventOrder, Kernel
from sim.errors import ConfigError
from sim.failures.link_topology import cable, link_class, physical_links
from sim.failures.model import HOUR, FailureModel
from sim.failures.trace import FailureRecord
from sim.platform.cluster import Cluster
from sim.platform.network.topology import Topology

if TYPE_CHECKING:
    from sim.platform.network.model import NetworkModel

Outage = Callable[..., None]
"""``FailureSubsystem._outage``: devices out of service for a while (a node's NIC link failing takes its node)."""


class _Bundle:
    """A leaf's or pod's uplink bundle: its two directions, ``k`` physical links, ``down`` of them failed."""

    __slots__ = ("capacity", "down", "k", "links", "mtbf", "name")

    def __init__(self, topology: Topology, up: int, down: int, mtbf: float) -> None:
        self.links = (up, down)
        self.capacity = (float(topology.link_capacity[up]), float(topology.link_capacity[down]))
        self.k = physical_links(topology, up)
        self.down = 0
        self.mtbf = mtbf
        self.name = topology.link_name(up)

    def rate(self) -> float:
        return (self.k - 1 - self.down) / self.mtbf


class LinkFailures:
    """Random and traced link failures of a ``FailureSubsystem`` (see the module docstring)."""

    def __init__(self, kernel: Kernel, cluster: Cluster, model: FailureModel, network: NetworkModel | None,
                 rng: np.random.Generator | None, trace: list[FailureRecord], *, outage: Outage,
                 active: Callable[[], bool], rows: list, network_changed: Callable[[float], None]) -> None:
        """``outage(devices, duration, kind, node, link=name)`` takes a node out; ``active()`` says whether failures
        still matter; link outages append to ``rows`` (the failures table); ``network_changed(now)`` applies a
        re-solved contention to the running jobs (``TrainingSubsystem.network_changed``)."""
        self.kernel, self.cluster, self.network, self._rng = kernel, cluster, network, rng
        self._outage, self._active, self._rows, self._network_changed = outage, active, rows, network_changed
        traced = [r for r in trace if r.link >= 0]
        if network is None:
            if model.link_mtbf_hours:
                raise ConfigError("failures.link_mtbf_hours: link failures need the network model (sim.network: true, "
                                  "or Simulation(network=True))")
            if traced:
                raise ConfigError(f"{traced[0].where}: a link outage needs the network model (sim.network: true, or "
                                  "Simulation(network=True))")
        self._mttr = model.link_mttr_hours * HOUR
        self._version = 0
        self._trace = traced
        self._bundles: list[_Bundle] = []
        self._bundle_of: dict[int, _Bundle] = {}
        self._nodes: list[int] = []
        self._nic_weights = np.zeros(0)
        self._nic_rate = 0.0
        if network is None:
            return
        topology = network.topology
        mtbf = {name: hours * HOUR for name, hours in model.link_mtbf_hours.items()}
        bundled = [r for r in traced if r.node < 0]
        if not network.contended:
            if "leaf" in mtbf or "pod" in mtbf:
                name = "leaf" if "leaf" in mtbf else "pod"
                raise ConfigError(f"failures.link_mtbf_hours.{name}: leaf and pod link failures cut capacity, which "
                                  "needs the contention model (sim.network.contention: true)")
            if bundled:
                raise ConfigError(f"{bundled[0].where}: a leaf or pod link outage cuts capacity, which needs the "
                                  "contention model (sim.network.contention: true)")
        for link in range(topology.num_links):
            kind = link_class(topology, link)
            up, down = cable(topology, link)
            if kind != "nic" and link == up:
                bundle = _Bundle(topology, up, down, mtbf.get(kind, math.inf))
                self._bundles.append(bundle)
                self._bundle_of[up] = self._bundle_of[down] = bundle
        if "nic" in mtbf:
            self._nodes = [n for n in range(len(topology.node_nics)) if topology.node_up[n] >= 0]
            nics = np.array([topology.node_nics[n] for n in self._nodes], dtype=float)
            self._nic_weights = nics / nics.sum() if nics.size else nics
            self._nic_rate = float(nics.sum()) / mtbf["nic"]

    def start(self) -> None:
        """Schedule the traced outages and the first random one."""
        for record in self._trace:
            self.kernel.at(record.time, EventOrder.ARRIVAL, lambda r=record: self._traced(r))
        self._schedule()

    # ----------------------------------------------------------------------------- random failures
    def _schedule(self) -> None:
        """The next random link failure, drawn again from now (the rate changed, or one just happened)."""
        self._version += 1
        rate = self._nic_rate + sum(b.rate() for b in self._bundles if math.isfinite(b.mtbf))
        if rate <= 0.0 or not self._active():
            return
        assert self._rng is not None
        version = self._version
        self.kernel.at(float(self._rng.exponential(1.0 / rate)), EventOrder.ARRIVAL,
                             lambda: self._random(version, rate))

    def _random(self, version: int, rate: float) -> None:
        if version != self._version or not self._active():
            return
        assert self._rng is not None and self.network is not None
        pick = float(self._rng.random()) * rate
        duration = float(self._rng.exponential(self._mttr))
        if pick < self._nic_rate:
            node = self._nodes[int(self._rng.choice(len(self._nodes), p=self._nic_weights))]
            self._nic(node, duration)
        else:
            pick -= self._nic_rate
            chosen = None
            for bundle in self._bundles:
                if math.isfinite(bundle.mtbf) and bundle.rate() > 0:
                    chosen = bundle
                    pick -= bundle.rate()
                    if pick < 0:
                        break
            assert chosen is not None
            self._degrade(chosen, duration, "link")
        self._schedule()

    # ----------------------------------------------------------------------------- outages
    def _traced(self, record: FailureRecord) -> None:
        if record.node >= 0:
            self._nic(record.node, record.duration, record.kind, record.link)
            return
        bundle = self._bundle_of[record.link]
        if bundle.down + 1 >= bundle.k:
            raise ConfigError(f"{record.where}: the outage would take the last working physical link of "
                              f"{bundle.name} ({bundle.k} in all): a leaf or pod cut off from the spine is not "
                              "modelled")
        self._degrade(bundle, record.duration, record.kind)
        self._schedule()

    def _nic(self, node: int, duration: float, kind: str = "link", link: int = -1) -> None:
        """A NIC link of ``node`` fails: the node is out until it is repaired."""
        assert self.network is not None
        topology = self.network.topology
        name = topology.link_name(int(topology.node_up[node]) if link < 0 else cable(topology, link)[0])
        self._outage(tuple(self.cluster.devices_of_node(node)), duration, kind, node, link=name)

    def _degrade(self, bundle: _Bundle, duration: float, kind: str) -> None:
        """One physical link of ``bundle`` fails for ``duration`` seconds: the bundle loses 1/k of its capacity."""
        bundle.down += 1
        self._apply(bundle)
        self._rows.append((self.kernel.now, kind, -1, (), duration, 0, 0, bundle.name))
        self.kernel.at(duration, EventOrder.FINISH, lambda: self._repair(bundle))

    def _repair(self, bundle: _Bundle) -> None:
        bundle.down -= 1
        self._apply(bundle)
        self._schedule()

    def _apply(self, bundle: _Bundle) -> None:
        """Set the bundle's capacity for its links down and re-solve contention now."""
        assert self.network is not None
        now = self.kernel.now
        for link, capacity in zip(bundle.links, bundle.capacity, strict=True):
            value = capacity if bundle.down == 0 else capacity * (bundle.k - bundle.down) / bundle.k
            self.network.set_link_capacity(link, value, now)
        self._network_changed(now)
