"""Co-location: the broker between training and serving over the device ledger.

Replicas get devices through it (a reserved headroom set, the inference partition, or training's free
devices, preempting training jobs when the co-location policy names victims); devices a replica gives back
return through it and wake training's scheduler. Training never sees serving, nor serving training.
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.engine.kernel import Kernel, ask
from sim.engine.ledger import DeviceLedger
from sim.errors import PolicyError
from sim.platform.free_devices import FreeDevices
from sim.serving.contracts import Colocation
from sim.serving.service import ServiceRuntime
from sim.training.subsystem import TrainingSubsystem


def tightest_node(free: FreeDevices, pool: int, count: int) -> int | None:
    """The node of ``pool`` with the fewest free devices that still has ``count`` (lowest id on ties), so
    replicas fill partly used nodes and leave whole nodes to large training gangs."""
    for k in range(count, free.cluster.pools[pool].devices_per_node + 1):
        node = free.lowest_node_with(pool, k)
        if node >= 0:
            return node
    return None


class ColocationBroker:
    """Devices for inference replicas, under a ``Colocation`` policy, taken from and given back to the ledger."""

    def __init__(self, kernel: Kernel, ledger: DeviceLedger, training: TrainingSubsystem, policy: Colocation) -> None:
        self.kernel = kernel
        self.ledger = ledger
        self.training = training
        self.policy = policy
        self.training_preemptions_caused = 0

    def set_partition(self, pools: Sequence[int]) -> None:
        """Nodes the co-location policy sets aside for inference leave training's free devices for good."""
        cluster = self.ledger.cluster
        policy = self.policy
        nodes = ask(policy, policy.inference_nodes, (cluster, pools), "setting nodes aside for inference")
        if not nodes:
            return
        if len(set(nodes)) != len(nodes) or not all(0 <= n < cluster.num_nodes for n in nodes):
            raise PolicyError(f"co-location {policy.name!r} sets aside nodes {nodes}: not distinct node ids")
        self.ledger.set_partition(nodes)

    def devices_for_inference(self, pool: int) -> int:
        """Devices of ``pool`` replicas could ever use: the pool, or its part of the inference partition."""
        cluster = self.ledger.cluster
        if self.ledger.partition is None:
            return cluster.pool_devices[pool]
        return sum(cluster.node_size[n] for n in self.ledger.partition_nodes if cluster.node_pool[n] == pool)

    def replica_devices(self, pool: int, count: int, runtime: ServiceRuntime | None = None) -> tuple[int, ...] | None:
        """Take ``count`` devices in one node of ``pool`` (first fit) for a replica: a reserved headroom
        set if the service has one, else from the inference partition if there is one, else from the free
        devices, preempting training if the co-location policy says so. None if there is no room."""
        if runtime is not None and runtime.slots:
            return runtime.slots.pop()
        ledger = self.ledger
        free = ledger.inference_free()
        node = tightest_node(free, pool, count)
        if node is None and ledger.partition is None and self.training.running:
            self._preempt_for_replica(pool, count)
            node = tightest_node(free, pool, count)
        if node is None:
            return None
        devices = free.free_on(node)[:count]
        ledger.reserve(devices)
        return devices

    def _preempt_for_replica(self, pool: int, count: int) -> None:
        policy, training, ledger = self.policy, self.training, self.ledger
        running = training.running_by_priority()
        victims = tuple(ask(policy, policy.victims, (pool, count, ledger.free, running, ledger.cluster,
                                                     self.kernel.now), "choosing training jobs to preempt"))
        if not victims:
            return
        records = []
        for job_id in victims:
            record = training.running.get(job_id)
            if record is None or record in records:
                raise PolicyError(f"co-location {policy.name!r} preempts job {job_id!r}, which is not running "
                                  "(or twice)")
            records.append(record)
        # a replica needs whole devices: preempting a fractional job preempts every fractional job on its device
        for record in list(records):
            if record.spec.gpu_fraction != 1.0:
                for job_id in ledger.shared.jobs[record.devices[0]]:
                    other = training.running[job_id]
                    if other not in records:
                        records.append(other)
        trial = ledger.free.scratch()
        for device in {d for record in records for d in record.devices}:
            trial.give((device,))
        if next(trial.nodes_with(pool, count), None) is None:
            raise PolicyError(f"co-location {policy.name!r} preempts jobs {list(victims)}, which frees no node of "
                              f"pool {ledger.cluster.pools[pool].name!r} with {count} devices for a replica")
        for record in records:
            training.preempt(record)
        self.training_preemptions_caused += len(records)
        training.request_pass()

    def top_up_headroom(self, services: Sequence[ServiceRuntime]) -> None:
        """Refill each service's reserve of replica-sized free device sets (headroom co-location)."""
        policy = self.policy
        want = ask(policy, policy.headroom_slots, (), "sizing the headroom")
        ledger = self.ledger
        if not want or ledger.partition is not None:
            return
        for runtime in services:
            count = runtime.spec.devices_per_replica
            while len(runtime.slots) < want and not runtime.ended:
                node = tightest_node(ledger.free, runtime.pool, count)
                if node is None:
                    break
                devices = ledger.free.free_on(node)[:count]
                ledger.reserve(devices)
                runtime.slots.append(devices)

    def give_back(self, devices: tuple[int, ...]) -> None:
        """A replica's (or a headroom set's) devices go back, to the partition or to training."""
        self.ledger.unreserve(devices)
        self.training.request_pass()
