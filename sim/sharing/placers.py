"""Placers for GPU-sharing pods: best-fit, worst-fit, random and FGD (fragmentation gradient descent).

A placer gets the cluster, the pods and the index of the pod to place together with the mask of nodes that can
host it (never empty), and returns ``(node, gpu_ids)``. ``replay`` checks the answer (``PolicyError`` if it does
not fit). Ties go to the lowest node index, then the lowest GPU index, as in the authors' simulator
(hkust-adsl/kubernetes-scheduler-simulator, whose scheduler picks the smallest node name among equal scores).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sim.errors import ConfigError, UnknownNameError
from sim.sharing.cluster import SharedCluster
from sim.sharing.fragmentation import FragmentationIndex, PodMix
from sim.sharing.pods import MILLI, PodRequests

#: Normalisers of the authors' best-fit score (``MaxSpecCpu``, ``MaxSpecGpu`` in their simulator).
MAX_SPEC_CPU, MAX_SPEC_GPU = 128_000, 8_000

Placement = tuple[int, tuple[int, ...]]


class SharePlacer(Protocol):
    """Chooses a node and GPUs for one pod."""

    name: str

    def place(self, cluster: SharedCluster, pods: PodRequests, i: int, feasible: np.ndarray) -> Placement:
        """``(node, gpu_ids)`` for pod ``i`` among the ``feasible`` nodes."""
        ...


def whole_gpus(cluster: SharedCluster, node: int, num: int) -> tuple[int, ...]:
    """The first ``num`` fully free GPUs of ``node``."""
    return tuple(int(g) for g in np.flatnonzero(cluster.gpu_left[node] == MILLI)[:num])


def _gpus(cluster: SharedCluster, pods: PodRequests, i: int, node: int, tightest: bool) -> tuple[int, ...]:
    num, milli = int(pods.num_gpu[i]), int(pods.gpu_milli[i])
    if num == 0:
        return ()
    if milli == MILLI:
        return whole_gpus(cluster, node, num)
    left = cluster.gpu_left[node, :cluster.gpus[node]]
    scored = np.where(left >= milli, left if tightest else -left, np.iinfo(np.int64).max)
    return (int(np.argmin(scored)),)


def fit_score(cluster: SharedCluster, pods: PodRequests, i: int) -> np.ndarray:
    """The authors' best-fit score of every node for pod ``i``: half the CPU and half the GPU share left after
    placing it, each over a large node's size (lower is a tighter fit)."""
    cpu = (cluster.cpu_left - pods.cpu_milli[i]) / MAX_SPEC_CPU
    gpu = (cluster.free_milli - pods.total_milli[i]) / MAX_SPEC_GPU
    return 0.5 * cpu + 0.5 * gpu


def score_levels(value: np.ndarray) -> np.ndarray:
    """A score in 0..1 as the integer 0..100 a Kubernetes score plugin returns (truncated)."""
    return np.floor(value * 100)


def _first_best(score: np.ndarray, feasible: np.ndarray) -> int:
    """The lowest-index feasible node of highest score (the authors' scheduler breaks ties by the smallest name)."""
    return int(np.argmax(np.where(feasible, score, -np.inf)))


class BestFit:
    """The node left with the least CPU and GPU (``fit_score``); the fractional pod's GPU with the least free.

    With ``quantize`` (default) the score is the authors' integer ``(1 - fit_score) * 100``, ties to the lowest
    node index; without, the exact score is compared.
    """

    name = "best-fit"

    def __init__(self, quantize: bool = True) -> None:
        self.quantize = quantize

    def place(self, cluster: SharedCluster, pods: PodRequests, i: int, feasible: np.ndarray) -> Placement:
        score = 1 - fit_score(cluster, pods, i)
        node = _first_best(score_levels(score) if self.quantize else score, feasible)
        return node, _gpus(cluster, pods, i, node, tightest=True)


class WorstFit:
    """The node left with the most CPU and GPU (``fit_score``); the fractional pod's GPU with the most free.
    ``quantize`` as in ``BestFit`` (score ``fit_score * 100``)."""

    name = "worst-fit"

    def __init__(self, quantize: bool = True) -> None:
        self.quantize = quantize

    def place(self, cluster: SharedCluster, pods: PodRequests, i: int, feasible: np.ndarray) -> Placement:
        score = fit_score(cluster, pods, i)
        node = _first_best(score_levels(score) if self.quantize else score, feasible)
        return node, _gpus(cluster, pods, i, node, tightest=False)


class RandomFit:
    """A feasible node and, for a fractional pod, a GPU that fits, uniformly at random (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def place(self, cluster: SharedCluster, pods: PodRequests, i: int, feasible: np.ndarray) -> Placement:
        node = int(self.rng.choice(np.flatnonzero(feasible)))
        num, milli = int(pods.num_gpu[i]), int(pods.gpu_milli[i])
        if num == 0 or milli == MILLI:
            return node, _gpus(cluster, pods, i, node, tightest=True)
        return node, (int(self.rng.choice(np.flatnonzero(cluster.gpu_left[node] >= milli))),)


class FGD:
    """Fragmentation gradient descent: the node (and GPU) whose fragmentation grows least, under ``mix``.

    The fragmentation of the other nodes does not change, so the smallest growth of the node's fragmentation is
    the steepest descent of the cluster's. With ``quantize`` (default), as in the authors' plugin, a candidate
    scores ``sigmoid(-growth / 1000)`` truncated to an integer 0..100 and ties go to the lowest node index, then
    the lowest GPU index; this coarse score packs pods onto low-index nodes whenever growths are within ~40
    thousandths, and it matters: on openb it is what reproduces the paper's figure, while the exact smallest
    growth leaves more GPUs unallocated (``benchmarks/openb_packing.py --exact``). Without ``quantize`` the exact
    smallest growth wins (growths equal to 1e-6 thousandths tie; same tie rule).
    """

    name = "fgd"

    def __init__(self, mix: PodMix, quantize: bool = True) -> None:
        self.mix = mix
        self.quantize = quantize
        self._index: FragmentationIndex | None = None

    def index(self, cluster: SharedCluster) -> FragmentationIndex:
        """The fragmentation index of ``cluster``, refreshed."""
        if self._index is None or self._index.cluster is not cluster:
            self._index = FragmentationIndex(cluster, self.mix)
        self._index.refresh()
        return self._index

    def _score(self, growth: np.ndarray) -> np.ndarray:
        if self.quantize:
            return score_levels(1 / (1 + np.exp(np.clip(growth / MILLI, -700, 700))))
        return -np.round(growth, 6)  # equal growths summed in another order differ in the last bits

    def place(self, cluster: SharedCluster, pods: PodRequests, i: int, feasible: np.ndarray) -> Placement:
        index = self.index(cluster)
        num, milli, cpu = int(pods.num_gpu[i]), int(pods.gpu_milli[i]), int(pods.cpu_milli[i])
        nodes = np.flatnonzero(feasible)
        if num == 0 or milli == MILLI:
            zero = np.zeros(len(nodes), np.int64)
            growth = index.after(nodes, cpu, num * milli, zero, zero, whole=num) - index.frag[nodes]
            node = int(nodes[int(np.argmax(self._score(growth)))])
            return node, _gpus(cluster, pods, i, node, tightest=True)
        cand_node, cand_gpu = np.nonzero(cluster.gpu_left[nodes] >= milli)
        cand_node = nodes[cand_node]
        old = cluster.gpu_left[cand_node, cand_gpu]
        # GPUs of one node with the same free share are interchangeable: keep the first of each
        _, first = np.unique(cand_node * (MILLI + 1) + old, return_index=True)
        first.sort()
        cand_node, cand_gpu, old = cand_node[first], cand_gpu[first], old[first]
        growth = index.after(cand_node, cpu, milli, old, old - milli) - index.frag[cand_node]
        best = int(np.argmax(self._score(growth)))  # candidates are in (node, GPU) order: ties to the first
        return int(cand_node[best]), (int(cand_gpu[best]),)


PLACERS = ("best-fit", "worst-fit", "random", "fgd")


def make_placer(name: str, mix: PodMix | None = None, seed: int = 0, quantize: bool = True) -> SharePlacer:
    """A placer by name (``PLACERS``); ``fgd`` needs the target workload's ``mix``; ``seed`` is for ``random``;
    ``quantize`` as in ``BestFit`` and ``FGD``."""
    if name == "best-fit":
        return BestFit(quantize)
    if name == "worst-fit":
        return WorstFit(quantize)
    if name == "random":
        return RandomFit(seed)
    if name == "fgd":
        if mix is None:
            raise ConfigError("placer 'fgd' needs the target workload's pod mix (mix=PodMix.from_pods(pods))")
        return FGD(mix, quantize)
    raise UnknownNameError("sharing placer", name, PLACERS)
