"""KV-cache transfers of disaggregated serving: from a prefill replica to a decode replica over the interconnect.

**Path.** A replica's KV cache is sharded over its tensor-parallel devices; the transfer runs one stream per shard
pair, ``min(prefill devices, decode devices)`` streams in parallel. Inside one scale-up domain (one GPU node) the
streams run over NVLink at NCCL's measured point-to-point bandwidth per device
(:func:`~sim.platform.network.collectives.nccl_scale_up_bandwidth`, bus factor 1), crossing no shared link. Across
nodes they leave through the nodes' NICs (at most one stream per NIC, at
:func:`~sim.platform.network.collectives.nic_effective_bandwidth` of the slower side) and cross the shared links of
:meth:`Topology.node_path <sim.platform.network.topology.Topology.node_path>` (NIC up, leaf and spine links, NIC
down), whose latencies add once.

**Time.** On an idle network a transfer of ``B`` bytes takes ``latency + B / bandwidth``. With the network model
on (``Simulation(network=...)``) a transfer across nodes is one more flow on the contention solver
(:mod:`sim.platform.network.contention`), of weight 1 with the path's bandwidth as its demand on each link: it
shares NICs and switch links with training jobs' collectives and other transfers, its rate changes whenever the
solver re-solves, and its bytes progress fluidly at the current rate. Transfers inside a node are never contended
(the model has no shared links inside a scale-up domain).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial

from sim.errors import ConfigError
from sim.platform.cluster import Cluster
from sim.platform.network.collectives import nccl_scale_up_bandwidth, nic_effective_bandwidth
from sim.platform.network.model import NetworkModel


@dataclass(frozen=True)
class KVPath:
    """Where a KV transfer goes: the shared links it crosses (none inside a node), its uncontended bandwidth
    (bytes/s) and its latency (s)."""

    links: tuple[int, ...]
    bandwidth: float
    latency: float

    def seconds(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` on an idle network: latency plus bytes over bandwidth."""
        return self.latency + nbytes / self.bandwidth


def kv_path(cluster: Cluster, source: Sequence[int], target: Sequence[int]) -> KVPath:
    """The path of a KV transfer from the replica on ``source`` devices to the replica on ``target`` devices (each
    replica inside one node); a ``ConfigError`` when the nodes cannot talk (a node without NICs)."""
    topology = cluster.topology
    a, b = int(topology.device_node[source[0]]), int(topology.device_node[target[0]])
    streams = min(len(source), len(target))
    if topology.node_domain[a] == topology.node_domain[b]:
        device = cluster.device_specs[cluster.node_pool[a]]
        return KVPath((), streams * nccl_scale_up_bandwidth(device), 0.0)
    links = topology.node_path(a, b)
    nics = int(min(topology.node_nics[a], topology.node_nics[b]))
    slower = float(min(topology.node_nic_bandwidth[a], topology.node_nic_bandwidth[b]))
    per_nic = nic_effective_bandwidth(slower * 8 / 1e9)
    return KVPath(links, min(streams, nics) * per_nic, topology.path_latency(a, b))


def check_pools_connected(cluster: Cluster, service: str, prefill_pool: int, decode_pool: int) -> None:
    """A ``ConfigError`` naming ``service`` when some node of the prefill pool could not send a KV cache to some
    node of the decode pool (a node without NICs, unless both pools are that one node)."""
    nodes = sorted(set(cluster.pool_nodes[prefill_pool]) | set(cluster.pool_nodes[decode_pool]))
    if len(nodes) == 1:
        return
    where = (f"service {service!r}: no network path between its prefill pool ({cluster.pools[prefill_pool].device}) "
             f"and its decode pool ({cluster.pools[decode_pool].device}) on cluster {cluster.name!r}")
    try:
        topology = cluster.topology
    except ConfigError as exc:  # a topology whose devices cannot all reach each other is refused when built
        raise ConfigError(f"{where}: {exc}") from None
    lonely = [n for n in nodes if topology.node_nics[n] <= 0]
    if lonely:
        raise ConfigError(f"{where}: node {lonely[0]} has no NICs, so a KV cache cannot leave or reach it")


class _Flow:
    __slots__ = ("bandwidth", "begins", "on_done", "rate", "remaining", "since", "version")

    def __init__(self, nbytes: float, bandwidth: float, begins: float, on_done: Callable[[float], None]) -> None:
        self.remaining = nbytes
        self.bandwidth = bandwidth
        self.rate = bandwidth  # bytes/s now
        self.begins = begins  # bytes flow from here on (after the path latency)
        self.since = begins
        self.on_done = on_done
        self.version = 0


class KVTransfers:
    """The KV transfers in flight in one simulation. ``call_at(time, fn)`` schedules on the engine's clock;
    ``network`` (optional) is the run's network model, whose contention transfers across nodes join;
    ``network_changed(now)`` re-solves contention and applies it to training jobs (the training subsystem's)."""

    def __init__(self, cluster: Cluster, call_at: Callable[[float, Callable[[], None]], None],
                 network: NetworkModel | None = None,
                 network_changed: Callable[[float], None] | None = None) -> None:
        self.cluster = cluster
        self.call_at = call_at
        self.network = network if network is not None and network.contended else None
        self.network_changed = network_changed
        self._paths: dict[tuple[tuple[int, ...], tuple[int, ...]], KVPath] = {}
        self._flows: dict[Hashable, _Flow] = {}
        self._ids = itertools.count()
        if self.network is not None:
            self.network.flow_listener = self._rates_changed

    def path(self, source: tuple[int, ...], target: tuple[int, ...]) -> KVPath:
        """The (cached) path between two replicas' devices."""
        key = (source, target)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = kv_path(self.cluster, source, target)
        return path

    def start(self, source: tuple[int, ...], target: tuple[int, ...], nbytes: float, now: float,
              on_done: Callable[[float], None]) -> Hashable | None:
        """Move ``nbytes`` from ``source`` to ``target`` devices from ``now``; ``on_done(time)`` when they are there.
        Returns the key of its flow on the network model (for ``cancel``), or None for a transfer on no shared link
        (a timer: its caller ignores the ``on_done`` of a transfer it gave up)."""
        path = self._paths.get((source, target))  # self.path, inline: once per hand-off
        if path is None:
            path = self.path(source, target)
        if self.network is None or not path.links or nbytes <= 0:
            end = now + (path.latency + nbytes / path.bandwidth)  # path.seconds(nbytes)
            self.call_at(end, partial(on_done, end))
            return None
        key = ("kv", next(self._ids))
        flow = self._flows[key] = _Flow(nbytes, path.bandwidth, now + path.latency, on_done)
        self.network.start_flow(key, path.links, path.bandwidth, now)
        assert self.network_changed is not None
        self.network_changed(now)  # re-solves: the new flow's rate comes back through _rates_changed
        if flow.version == 0:
            self._schedule(key, flow, now)
        return key

    def cancel(self, key: Hashable | None, now: float) -> None:
        """Give up the transfer whose flow is ``key`` (``start``'s answer; None: nothing to do) at ``now``: it leaves
        its links, which the others in flight then share, and its ``on_done`` never comes."""
        flow = self._flows.pop(key, None) if key is not None else None
        if flow is None:
            return
        flow.version += 1  # its scheduled end is void
        assert self.network is not None and self.network_changed is not None
        self.network.stop_flow(key, now)
        self.network_changed(now)

    def _rates_changed(self, rates: dict[Hashable, float], now: float) -> None:
        """The contention solver gave some flows a new rate factor: progress so far at the old rate, then the rest
        at the new one."""
        for key, factor in rates.items():
            flow = self._flows.get(key)
            if flow is None:
                continue
            if now > flow.since:
                flow.remaining = max(0.0, flow.remaining - flow.rate * (now - flow.since))
                flow.since = now
            flow.rate = factor * flow.bandwidth
            self._schedule(key, flow, now)

    def _schedule(self, key: Hashable, flow: _Flow, now: float) -> None:
        flow.version += 1
        version = flow.version
        end = max(now, flow.begins) + flow.remaining / flow.rate if flow.rate > 0 else math.inf

        def done() -> None:
            if flow.version != version:
                return
            del self._flows[key]
            assert self.network is not None and self.network_changed is not None
            self.network.stop_flow(key, end)
            self.network_changed(end)
            flow.on_done(end)

        if math.isfinite(end):
            self.call_at(end, done)
