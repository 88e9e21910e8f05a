"""Benchmark: incremental network-contention recomputes on a 4,096-GPU fat-tree (issue 4, point 9).

The cluster: 512 DGX H100 nodes (8 GPUs, 8 x 50 GB/s NICs each), 32 nodes per leaf, 16 leaves, leaf-spine
oversubscribed 2:1. Its links are built here in a few lines, independently of ``sim.platform.network.topology``:
per node one NIC uplink and one downlink of 8 x 50 GB/s; per leaf one uplink bundle and one downlink bundle
of 32 x 400 GB/s / 2.

The workload: the cluster is filled with multi-node jobs of 16-256 GPUs (mostly 16), each spread over 2-256
random nodes with 1, 2, 4 or 8 GPUs on each (half of them kept inside one leaf when they fit), then churned:
each step removes a random job and places a new one. Synthetic demands: every GPU of a job pushes b_j
bytes/s (``--per-gpu``, drawn per job; default 25-100 GB/s, so jobs sharing a node can oversubscribe its
NICs; 25-50 keeps every GPU within its own NIC's line rate and leaves contention to the leaf bundles)
through its node's NICs, at most 400 GB/s per node; traffic is all-to-all among the job's nodes, so a leaf
carries the share of its nodes' traffic that goes to nodes in other leaves. Weights (exposed-communication
fractions) are drawn in [0.05, 0.6].

Prints the median and p99 time of one ``add + update`` and one ``remove + update``, the jobs, contended
links and components each update re-solves, next to references measured in the same run: ``solve_all``
(every component re-solved, indexes kept) and ``rebuild`` (a fresh solver given every job, then solved).
Target (issue): median recompute <= 5 ms.

    python benchmarks/bench_contention.py
    python benchmarks/bench_contention.py --per-gpu 25,50
    python benchmarks/bench_contention.py --steps 2000 --fairness rate --seed 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Hashable

import numpy as np

from sim.platform.network.contention import ContentionSolver

NODES, GPUS_PER_NODE, NODES_PER_LEAF = 512, 8, 32
NODE_BW = 8 * 50e9  # bytes/s: 8 NICs of 400 Gb/s
LEAF_BW = NODES_PER_LEAF * NODE_BW / 2  # 2:1 oversubscribed
LEAVES = NODES // NODES_PER_LEAF
SIZES, SIZE_WEIGHTS = (16, 32, 64, 128, 256), (0.9, 0.05, 0.03, 0.015, 0.005)
CHUNKS = (1, 2, 4, 8)  # GPUs per node
TARGET_MS = 5.0


def link_capacity() -> np.ndarray:
    """Node ``n``: uplink ``2n``, downlink ``2n + 1``; leaf ``k``: uplink bundle ``2N + 2k``, downlink one more."""
    return np.concatenate([np.full(2 * NODES, NODE_BW), np.full(2 * LEAVES, LEAF_BW)])


class Workload:
    """Free GPUs per node, and jobs placed on random nodes with their synthetic link demands."""

    def __init__(self, rng: np.random.Generator, per_gpu: tuple[float, float]) -> None:
        self.rng = rng
        self.per_gpu = per_gpu
        self.free = np.full(NODES, GPUS_PER_NODE)
        self.placed: dict[int, tuple[np.ndarray, int]] = {}
        self.next_id = 0

    def place(self) -> tuple[int, list[int], list[float], float] | None:
        """A new job's id, links, demands and weight, or None when the drawn job does not fit."""
        rng = self.rng
        gpus = int(rng.choice(SIZES, p=SIZE_WEIGHTS))
        chunk = int(rng.choice([c for c in CHUNKS if gpus // c >= 2]))
        count = gpus // chunk
        pool = np.arange(NODES)
        if count <= NODES_PER_LEAF and rng.random() < 0.5:
            leaf = int(rng.integers(LEAVES))
            pool = pool[leaf * NODES_PER_LEAF:(leaf + 1) * NODES_PER_LEAF]
        candidates = pool[self.free[pool] >= chunk]
        if len(candidates) < count:
            return None
        nodes = rng.choice(candidates, size=count, replace=False)
        self.free[nodes] -= chunk
        job_id, self.next_id = self.next_id, self.next_id + 1
        self.placed[job_id] = (nodes, chunk)
        per_node = min(NODE_BW, chunk * rng.uniform(*self.per_gpu))
        links = [link for node in nodes.tolist() for link in (2 * node, 2 * node + 1)]
        demands = [per_node] * len(links)
        leaves, in_leaf = np.unique(nodes // NODES_PER_LEAF, return_counts=True)
        for leaf, k in zip(leaves.tolist(), in_leaf.tolist(), strict=True):
            if k < count:  # all-to-all: k nodes send (count - k) / (count - 1) of their traffic out, and receive alike
                links += [2 * NODES + 2 * leaf, 2 * NODES + 2 * leaf + 1]
                demands += [per_node * k * (count - k) / (count - 1)] * 2
        return job_id, links, demands, float(rng.uniform(0.05, 0.6))

    def release(self, job_id: int) -> None:
        nodes, chunk = self.placed.pop(job_id)
        self.free[nodes] += chunk


def timed(call: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="churn steps (one remove and one add each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fairness", choices=("bandwidth", "rate"), default="bandwidth")
    parser.add_argument("--per-gpu", default="25,100", metavar="LO,HI",
                        help="GB/s each GPU pushes at uncontended speed, drawn per job (50 = one NIC's line rate)")
    args = parser.parse_args()
    low, high = (float(v) * 1e9 for v in args.per_gpu.split(","))

    rng = np.random.default_rng(args.seed)
    workload = Workload(rng, (low, high))
    solver = ContentionSolver(link_capacity(), fairness=args.fairness)
    specs: dict[Hashable, tuple[int, list[int], list[float], float]] = {}
    misses = 0
    while misses < 1000:  # fill the cluster
        spec = workload.place()
        if spec is None:
            misses += 1
            continue
        specs[spec[0]] = spec
        solver.add(*spec)
    solver.update()

    def add_one() -> None:
        spec = None
        while spec is None:
            spec = workload.place()
        specs[spec[0]] = spec
        solver.add(*spec)
        solver.update()

    def remove_one() -> None:
        victim = int(rng.choice(list(specs)))
        del specs[victim]
        workload.release(victim)
        solver.remove(victim)
        solver.update()

    add_ms, remove_ms, solved_jobs, solved_links, components = [], [], [], [], []
    for _ in range(args.steps):
        for bucket, call in ((remove_ms, remove_one), (add_ms, add_one)):
            bucket.append(timed(call))
            solved_jobs.append(solver.last_update.jobs)
            solved_links.append(solver.last_update.links)
            components.append(solver.last_update.components)

    full_ms = [timed(solver.solve_all) for _ in range(20)]
    assert solver.solve_all() == solver.rates()

    def rebuild() -> None:
        fresh = ContentionSolver(link_capacity(), fairness=args.fairness)
        for spec in specs.values():
            fresh.add(*spec)
        fresh.update()

    rebuild_ms = [timed(rebuild) for _ in range(5)]
    rates = np.array(list(solver.rates().values()))
    load = solver.link_load() / solver.link_capacity
    busy_gpus = NODES * GPUS_PER_NODE - int(workload.free.sum())
    node_links, leaf_links = load[: 2 * NODES], load[2 * NODES:]
    print(f"cluster: {NODES} nodes x {GPUS_PER_NODE} GPUs, {LEAVES} leaves, {len(load)} links; "
          f"{len(specs)} jobs on {busy_gpus} busy GPUs; {args.per_gpu} GB/s per GPU; fairness={args.fairness}, "
          f"seed={args.seed}")
    print(f"contention: {np.mean(rates < 1):.0%} of jobs slowed, mean rate {rates.mean():.3f}, min {rates.min():.3f}; "
          f"saturated links: {np.sum(node_links >= 1 - 1e-9)} NIC, {np.sum(leaf_links >= 1 - 1e-9)} leaf")
    print(f"per update ({args.steps} steps): re-solved jobs median {statistics.median(solved_jobs):.0f} "
          f"(max {max(solved_jobs)}), contended links median {statistics.median(solved_links):.0f} "
          f"(max {max(solved_links)}), components median {statistics.median(components):.0f}")
    print(f"{'operation':<22}{'median ms':>10}{'p99 ms':>9}{'max ms':>9}")
    for name, values in (("add + update", add_ms), ("remove + update", remove_ms),
                         ("reference: solve_all", full_ms), ("reference: rebuild", rebuild_ms)):
        print(f"{name:<22}{statistics.median(values):>10.3f}{percentile(values, 99):>9.3f}{max(values):>9.3f}")
    median = statistics.median(add_ms + remove_ms)
    print(f"median recompute {median:.3f} ms (target <= {TARGET_MS} ms: {'met' if median <= TARGET_MS else 'MISSED'}), "
          f"{median / statistics.median(full_ms):.2f} x a from-scratch solve")


if __name__ == "__main__":
    main()
