"""The device ledger: which devices are free for training, which are held by jobs, which are reserved for
inference replicas, the devices out of service (failed, or taken back from a spot pool), and the nodes set aside
for inference. Every subsystem changes devices through it, so the invariant ``free + allocated + reserved + failed
== devices`` is checked in one place."""

from __future__ import annotations

from collections.abc import Iterable

from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.platform.shared_devices import SharedDevices


class DeviceLedger:
    """Free devices seen by training (``free``), devices held by running jobs (``allocated``), devices held or
    reserved by inference outside a partition (``reserved``), devices out of service (``failed``: taken from the free
    devices by the failures subsystem, ``sim.failures``, until repaired), and an inference partition (``partition``:
    the free devices of the nodes set aside for inference, or None). ``shared``: the share book of the devices
    fractional jobs share (``share_fit``: how a fractional job picks among them)."""

    __slots__ = ("allocated", "cluster", "failed", "free", "partition", "partition_nodes", "reserved", "shared")

    def __init__(self, cluster: Cluster, share_fit: str = "best-fit") -> None:
        self.cluster = cluster
        self.free = FreeDevices(cluster)
        self.shared = SharedDevices(cluster, share_fit)
        self.allocated = 0
        self.reserved = 0
        self.failed = 0
        self.partition: FreeDevices | None = None
        self.partition_nodes: tuple[int, ...] = ()

    # training
    def take_for_job(self, devices: tuple[int, ...]) -> None:
        self.free.take(devices)
        self.allocated += len(devices)

    def give_from_job(self, devices: tuple[int, ...]) -> None:
        self.free.give(devices)
        self.allocated -= len(devices)

    def take_share(self, device: int, job_id: int, fraction: float) -> None:
        """A fractional job takes ``fraction`` of ``device``: a shared device with room, or a free device it opens
        (which then counts as allocated)."""
        if not self.shared.is_shared(device):
            self.take_for_job((device,))
        self.shared.add(device, job_id, fraction)

    def give_share(self, device: int, job_id: int) -> None:
        """A fractional job leaves ``device``; the last one to leave gives the device back to the free devices."""
        if self.shared.remove(device, job_id):
            self.give_from_job((device,))

    # inference
    def set_partition(self, nodes: Iterable[int]) -> None:
        """Set ``nodes`` aside for inference for the whole run: they leave training's free devices."""
        cluster = self.cluster
        nodes = tuple(nodes)
        chosen = set(nodes)
        partition = FreeDevices(cluster)
        partition.take(d for n in range(cluster.num_nodes) if n not in chosen for d in cluster.devices_of_node(n))
        for n in nodes:
            self.free.take(cluster.devices_of_node(n))
            self.reserved += cluster.node_size[n]
        self.partition = partition
        self.partition_nodes = nodes

    def inference_free(self) -> FreeDevices:
        """Where replicas take devices from: the partition if there is one, else training's free devices."""
        return self.partition or self.free

    def reserve(self, devices: tuple[int, ...]) -> None:
        """Take free devices for inference (a replica, or headroom kept for one)."""
        if self.partition is not None:
            self.partition.take(devices)
        else:
            self.free.take(devices)
            self.reserved += len(devices)

    def unreserve(self, devices: tuple[int, ...]) -> None:
        """Give inference's devices back (to the partition, or to training)."""
        if self.partition is not None:
            self.partition.give(devices)
        else:
            self.free.give(devices)
            self.reserved -= len(devices)

    # failures
    def _split(self, devices: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``devices`` outside the inference partition, and inside it."""
        if self.partition is None:
            return devices, ()
        nodes, node_of = set(self.partition_nodes), self.cluster.device_node
        return (tuple(d for d in devices if node_of[d] not in nodes), tuple(d for d in devices if node_of[d] in nodes))

    def take_failed(self, devices: tuple[int, ...]) -> None:
        """Free devices go out of service (failed, or reclaimed from a spot pool): no one is given them. Devices
        of the inference partition leave the partition's free devices (and stay counted as reserved)."""
        outside, inside = self._split(devices)
        self.free.take(outside)
        self.failed += len(outside)
        if inside:
            self.partition.take(inside)  # type: ignore[union-attr]

    def give_repaired(self, devices: tuple[int, ...]) -> None:
        """Devices out of service come back, free (to the partition for its devices)."""
        outside, inside = self._split(devices)
        self.free.give(outside)
        self.failed -= len(outside)
        if inside:
            self.partition.give(inside)  # type: ignore[union-attr]

    def consistent(self) -> bool:
        """Whether training's free devices are exactly those neither allocated, reserved nor out of service, and
        no shared device is free."""
        shared = self.shared
        if shared and any(self.free.is_free(d) for d in shared.jobs):
            return False
        return self.free.total == self.cluster.num_devices - self.allocated - self.reserved - self.failed
