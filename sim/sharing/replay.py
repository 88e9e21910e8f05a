"""Replay pods in order onto a GPU-sharing cluster with one placer; results as tidy tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import ConfigError, PolicyError
from sim.sharing.cluster import SharedCluster
from sim.sharing.fragmentation import PodMix, node_fragmentation
from sim.sharing.placers import SharePlacer
from sim.sharing.pods import MILLI, PodRequests


@dataclass(frozen=True, slots=True)
class SharingResults:
    """Per pod (``pods``), per node (``nodes``) and one summary row (``summary``) of a replay.

    ``pods``: ``order``, ``name``, ``creation_time``, ``num_gpu``, ``gpu_milli``, ``placed``, ``node``, ``gpus``
    (ids, comma separated), ``arrived_gpus`` (GPUs asked for by this pod and those before it) and
    ``allocated_gpus`` (GPUs held after it). ``nodes``: capacity, what is allocated, ``gpu_utilization`` and
    ``fragmentation_gpus`` (``fragmentation`` module, under the run's mix). ``summary``: counts, the first rejected
    pod and the unallocated GPUs at that point and at the end, in GPUs and as a fraction of the capacity.
    """

    pods: pd.DataFrame
    nodes: pd.DataFrame
    summary: pd.DataFrame

    def allocation_curve(self, percents: np.ndarray | None = None) -> pd.DataFrame:
        """GPUs allocated (and unallocated) when the arrived GPU requests first reach each percent of capacity."""
        capacity = float(self.summary["capacity_gpus"].iloc[0])
        percents = np.arange(0, 131) if percents is None else np.asarray(percents)
        arrived = self.pods["arrived_gpus"].to_numpy()
        held = self.pods["allocated_gpus"].to_numpy()
        rows = []
        for pct in percents:
            k = int(np.searchsorted(arrived, pct / 100 * capacity, side="right")) - 1
            allocated = float(held[k]) if k >= 0 else 0.0
            if k == len(arrived) - 1 and arrived[-1] < pct / 100 * capacity:
                continue  # the workload never got that far
            rows.append((int(pct), allocated, capacity - allocated, (capacity - allocated) / capacity))
        return pd.DataFrame(rows, columns=["arrived_percent", "allocated_gpus", "unallocated_gpus",
                                           "unallocated_fraction"])


def replay(pods: pd.DataFrame | PodRequests, nodes: pd.DataFrame, placer: SharePlacer, *,
           mix: PodMix | None = None, stop_at_first_reject: bool = False) -> SharingResults:
    """Place ``pods`` one by one in table order on a fresh cluster of ``nodes`` with ``placer``; no pod leaves.

    A pod no node can host is rejected and the replay goes on (or stops, with ``stop_at_first_reject``).
    ``mix`` (default: the pods' own) is the pod-size distribution the reported fragmentation is measured under.
    A pod asking for a fraction outside (0, 1] or for a GPU model the cluster lacks raises ``PodRequestError``;
    a placement that does not fit raises ``PolicyError``.
    """
    requests = pods if isinstance(pods, PodRequests) else PodRequests.from_table(pods)
    if not len(requests):
        raise ConfigError("replay: no pods")
    cluster = SharedCluster(nodes)
    requests.check_models(cluster.models)
    who = f"sharing placer {getattr(placer, 'name', type(placer).__name__)!r}"
    n = len(requests)
    placed = np.zeros(n, bool)
    node_of = np.full(n, -1, np.int64)
    gpus_of = [""] * n
    held = np.zeros(n, float)
    allocated = 0
    first_reject = -1
    first_reject_free = np.nan
    last = n - 1
    for i in range(n):
        feasible = cluster.feasible(requests, i)
        if feasible.any():
            answer = placer.place(cluster, requests, i, feasible)
            try:
                node, gpu_ids = int(answer[0]), tuple(int(g) for g in answer[1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise PolicyError(f"{who}: pod {requests.names[i]!r}: expected (node, gpu_ids), got {answer!r}") \
                    from None
            cluster.allocate(requests, i, node, gpu_ids, who)
            placed[i], node_of[i], gpus_of[i] = True, node, ",".join(map(str, gpu_ids))
            allocated += int(requests.total_milli[i])
        elif first_reject < 0:
            first_reject = i
            first_reject_free = cluster.capacity_gpus - allocated / MILLI
            if stop_at_first_reject:
                last = i
                held[i] = allocated / MILLI
                break
        held[i] = allocated / MILLI
    keep = slice(0, last + 1)
    creation = pods["creation_time"].to_numpy(float)[keep] if isinstance(pods, pd.DataFrame) \
        and "creation_time" in pods.columns else np.full(last + 1, np.nan)
    pod_table = pd.DataFrame({
        "order": np.arange(last + 1), "name": requests.names[keep], "creation_time": creation,
        "num_gpu": requests.num_gpu[keep], "gpu_milli": requests.gpu_milli[keep], "placed": placed[keep],
        "node": np.where(node_of[keep] >= 0, cluster.names[np.maximum(node_of[keep], 0)], None),
        "gpus": gpus_of[:last + 1], "arrived_gpus": np.cumsum(requests.total_milli[keep]) / MILLI,
        "allocated_gpus": held[keep]})
    mix = mix if mix is not None else PodMix.from_pods(requests)
    frag = node_fragmentation(cluster, mix) / MILLI
    gpu_alloc = (cluster.gpus * MILLI - cluster.free_milli) / MILLI
    node_table = pd.DataFrame({
        "node": cluster.names, "model": [cluster.models[m] if m >= 0 else "" for m in cluster.model],
        "gpus": cluster.gpus, "gpu_allocated": gpu_alloc,
        "gpu_utilization": np.divide(gpu_alloc, cluster.gpus, out=np.zeros(len(cluster)), where=cluster.gpus > 0),
        "cpu_utilization": 1 - cluster.cpu_left / cluster.cpu_total,
        "memory_utilization": 1 - cluster.memory_left / cluster.memory_total,
        "fragmentation_gpus": frag})
    capacity = cluster.capacity_gpus
    end_free = capacity - allocated / MILLI
    summary = pd.DataFrame([{
        "placer": getattr(placer, "name", type(placer).__name__), "pods": last + 1, "placed": int(placed.sum()),
        "rejected": int(last + 1 - placed.sum()), "capacity_gpus": capacity,
        "first_reject_order": first_reject if first_reject >= 0 else None,
        "unallocated_gpus_at_first_reject": first_reject_free,
        "unallocated_fraction_at_first_reject": first_reject_free / capacity,
        "unallocated_gpus": end_free, "unallocated_fraction": end_free / capacity,
        "fragmentation_gpus": float(frag.sum())}])
    return SharingResults(pod_table, node_table, summary)
