"""Co-location of training and inference on one cluster: who gets devices when both want them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.serving.contracts import Colocation
from sim.training.jobs import JobView

VICTIM_ORDERS = ("least-attained", "most-attained", "scheduler")


@dataclass
class Shared(Colocation):
    """One pool of devices, first come first served: replicas take free devices and never preempt
    training; training uses whatever replicas leave free. A scale-up finds no room while training holds
    the devices."""

    name = "shared"


@dataclass
class Partitioned(Colocation):
    """A fixed set of nodes for inference: the last ``nodes`` nodes of the services' pool (or
    ``fraction`` of its nodes, rounded up). Replicas live only there, training never uses them, even
    when idle."""

    name = "partitioned"
    nodes: int = 0
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.nodes < 0 or not 0 <= self.fraction <= 1 or (self.nodes and self.fraction):
            raise ValueError("give nodes (>= 0) or fraction (in [0, 1]), not both")

    def inference_nodes(self, cluster: Cluster, pools: Sequence[int]) -> tuple[int, ...]:
        chosen: list[int] = []
        for pool in dict.fromkeys(pools):
            nodes = cluster.pool_nodes[pool]
            n = self.nodes if self.nodes else -(-len(nodes) * self.fraction // 1)
            chosen.extend(nodes[len(nodes) - min(int(n), len(nodes)):])
        return tuple(chosen)


@dataclass
class InferencePriority(Colocation):
    """Inference first: a replica that finds no free devices preempts training jobs on the node where
    that costs the fewest devices (among equals, the jobs with the least attained service). Training
    borrows every device replicas do not hold, and is preempted again when the autoscaler wants it back;
    preempted jobs resume later and pay their checkpoint + restore.

    ``victim_order`` is which jobs of a node go first: ``least-attained`` (default), ``most-attained``,
    or ``scheduler``: the jobs the training scheduler ranks lowest (``Scheduler.priority``; the engine
    offers running jobs in that order), falling back to start order when the scheduler has no order."""

    name = "inference-priority"
    victim_order: str = "least-attained"

    def __post_init__(self) -> None:
        if self.victim_order not in VICTIM_ORDERS:
            raise ValueError(f"victim_order must be one of {', '.join(VICTIM_ORDERS)}, got {self.victim_order!r}")

    def victims(self, pool: int, count: int, free: FreeDevices, running: Sequence[JobView], cluster: Cluster,
                now: float) -> tuple[int, ...]:
        order = self.victim_order
        on_node: dict[int, list[tuple[float, JobView, int]]] = {}
        for position, job in enumerate(running):
            # smaller goes first: attained service, its negative, or the scheduler's order as offered
            key = (job.attained_service(now) if order == "least-attained" else
                   -job.attained_service(now) if order == "most-attained" else float(position))
            per_node: dict[int, int] = {}
            for d in job.devices:
                node = cluster.device_node[d]
                if cluster.node_pool[node] == pool:
                    per_node[node] = per_node.get(node, 0) + 1
            for node, n in per_node.items():
                on_node.setdefault(node, []).append((key, job, n))
        best: tuple[int, float, int] | None = None
        best_jobs: list[JobView] = []
        for node, jobs in on_node.items():
            room, picked, cost, keys = free.count[node], [], 0, 0.0
            for key, job, n in sorted(jobs, key=lambda kjn: (kjn[0], kjn[1].job_id)):
                if room >= count:
                    break
                room += n
                picked.append(job)
                cost += job.gpus
                keys += key
            if room >= count and (best is None or (cost, keys, node) < best):
                best, best_jobs = (cost, keys, node), picked
        return tuple(job.job_id for job in best_jobs)


@dataclass
class SchedulerAware(InferencePriority):
    """Inference-priority whose victims are the training jobs the training scheduler itself would
    preempt first (its lowest priority), on the node where that costs the fewest devices. A victim then
    waits its turn instead of preempting another job to restart at once, as a high-priority victim
    (under ``las``, one with little attained service) does: one preemption per replica, not a chain."""

    name = "scheduler-aware"
    victim_order: str = "scheduler"


@dataclass
class Headroom(InferencePriority):
    """Inference-priority with a small standing reserve: ``slots`` replica-sized sets of free devices
    per service that training may not use. A scale-up takes a reserved set at once; only when the
    reserve is spent does it preempt training (as inference-priority does). The reserve is refilled
    from devices training frees. It trades ``slots`` idle replicas' worth of devices for fewer
    training preemptions than inference-priority, and far fewer idle devices than a partition sized
    for the peak."""

    name = "headroom"
    slots: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slots < 0:
            raise ValueError(f"slots must be >= 0, got {self.slots}")

    def headroom_slots(self) -> int:
        return self.slots
