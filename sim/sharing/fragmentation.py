"""The FGD fragmentation measure (Weng et al., USENIX ATC'23, section 4): the free GPU share of a node that a pod
drawn from the target workload could not use, in expectation over that workload's pod sizes.

For one pod size (CPU ``c``, ``n`` GPUs of ``m`` thousandths each, allowed models) a node's fragment is:
all its free GPU share, unless the pod fits (model allowed, at least ``n`` GPUs with ``m`` free, ``c`` CPU free),
in which case only the free share of the GPUs with less than ``m`` free. A CPU-only pod size counts all the free
GPU share as fragment. The node's fragmentation is the frequency-weighted sum over pod sizes (``PodMix``); the
cluster's is the sum over nodes. This follows the authors' simulator (hkust-adsl/kubernetes-scheduler-simulator,
``pkg/utils/frag.go``, ``NodeGpuShareFragAmountScore``): memory is not part of the measure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError
from sim.sharing.cluster import SharedCluster
from sim.sharing.pods import PodRequests


@dataclass(frozen=True, slots=True)
class PodMix:
    """The target workload's pod sizes and their frequencies (weights sum to 1)."""

    cpu_milli: np.ndarray
    gpu_milli: np.ndarray
    num_gpu: np.ndarray
    gpu_spec: tuple[tuple[str, ...], ...]
    weight: np.ndarray

    @classmethod
    def from_pods(cls, pods: PodRequests, coverage: float = 0.95, step: int = 10) -> PodMix:
        """The most frequent pod sizes of ``pods`` covering ``coverage`` of them, renormalised.

        Sizes are ``(cpu_milli, gpu_milli, num_gpu, gpu_spec)``, taken in decreasing count ``step`` at a time
        until they cover ``coverage`` of the pods (the authors' typical pods, popularity threshold 95, step 10).
        """
        if not 0 < coverage <= 1:
            raise ConfigError(f"coverage: must be in (0, 1], got {coverage!r}")
        if step < 1:
            raise ConfigError(f"step: must be a positive integer, got {step!r}")
        counts = Counter(zip(pods.cpu_milli.tolist(), pods.gpu_milli.tolist(), pods.num_gpu.tolist(), pods.gpu_spec,
                             strict=True))
        if not counts:
            raise ConfigError("pod mix: no pods")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][:3], kv[0][3]))
        total, kept, covered = len(pods), 0, 0
        while covered < coverage * total and kept < len(ranked):
            for _ in range(step):
                if kept < len(ranked):
                    covered += ranked[kept][1]
                    kept += 1
        chosen = ranked[:kept]
        weight = np.array([count for _, count in chosen], float)
        return cls(np.array([k[0] for k, _ in chosen], np.int64), np.array([k[1] for k, _ in chosen], np.int64),
                   np.array([k[2] for k, _ in chosen], np.int64), tuple(k[3] for k, _ in chosen), weight / weight.sum())

    def __len__(self) -> int:
        return len(self.weight)

    def accessible(self, cluster: SharedCluster) -> np.ndarray:
        """``(nodes, sizes)``: whether each node's GPU model suits each pod size."""
        return np.stack([cluster.model_mask(spec) for spec in self.gpu_spec], axis=1)


def gpu_aggregates(gpu_left: np.ndarray, mix: PodMix) -> tuple[np.ndarray, np.ndarray]:
    """Per node and pod size: GPUs with at least the size's share free, and the free share of the others."""
    g = gpu_left[:, :, None]
    m = mix.gpu_milli[None, None, :]
    return (g >= m).sum(axis=1), np.where(g < m, g, 0).sum(axis=1)


def fragment(free: np.ndarray, cpu_left: np.ndarray, count: np.ndarray, low: np.ndarray, accessible: np.ndarray,
             mix: PodMix) -> np.ndarray:
    """Fragmentation (GPU thousandths) of nodes given their free share, free CPU and ``gpu_aggregates``."""
    fits = accessible & (count >= mix.num_gpu) & (cpu_left[:, None] >= mix.cpu_milli) & (mix.gpu_milli > 0)
    return np.where(fits, low, free[:, None]) @ mix.weight


def node_fragmentation(cluster: SharedCluster, mix: PodMix) -> np.ndarray:
    """Fragmentation of every node of ``cluster`` now, in GPU thousandths."""
    count, low = gpu_aggregates(cluster.gpu_left, mix)
    return fragment(cluster.free_milli, cluster.cpu_left, count, low, mix.accessible(cluster), mix)


class FragmentationIndex:
    """Per-node fragmentation of a cluster, kept current by refreshing the nodes that changed (``cluster.stamp``),
    and the fragmentation a node would have after a placement, for many candidates at once."""

    def __init__(self, cluster: SharedCluster, mix: PodMix) -> None:
        self.cluster = cluster
        self.mix = mix
        self.accessible = mix.accessible(cluster)
        self.count, self.low = gpu_aggregates(cluster.gpu_left, mix)
        self.free = cluster.free_milli
        self.frag = fragment(self.free, cluster.cpu_left, self.count, self.low, self.accessible, mix)
        self._stamp = cluster.stamp.copy()

    def refresh(self) -> None:
        """Recompute the nodes allocated on since the last refresh."""
        changed = np.flatnonzero(self.cluster.stamp != self._stamp)
        if not len(changed):
            return
        c = self.cluster
        self.count[changed], self.low[changed] = gpu_aggregates(c.gpu_left[changed], self.mix)
        self.free[changed] = c.gpu_left[changed].sum(axis=1)
        self.frag[changed] = fragment(self.free[changed], c.cpu_left[changed], self.count[changed],
                                      self.low[changed], self.accessible[changed], self.mix)
        self._stamp[changed] = c.stamp[changed]

    def after(self, nodes: np.ndarray, cpu: int, taken: int, old: np.ndarray, new: np.ndarray,
              whole: int = 0) -> np.ndarray:
        """Fragmentation of ``nodes`` after taking ``cpu`` CPU and ``taken`` GPU thousandths in all, where one GPU
        per candidate goes from ``old`` to ``new`` free (a fractional pod) or ``whole`` GPUs go from full to empty."""
        m = self.mix.gpu_milli[None, :]
        o, n = old[:, None], new[:, None]
        count = self.count[nodes] - (o >= m) + (n >= m) - whole
        low = self.low[nodes] - np.where(o < m, o, 0) + np.where(n < m, n, 0)
        return fragment(self.free[nodes] - taken, self.cluster.cpu_left[nodes] - cpu, count, low,
                        self.accessible[nodes], self.mix)
