"""Draw a topology in layers (core, spines, leaves, nodes, devices) and a job's placement on it.

Meant for notebooks on small clusters (about 8-16 nodes); it draws every device, so thousands of devices
give an unreadable (but correct) picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from sim.platform.network.topology import LINK_KINDS, Topology

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LAYERS: tuple[str, ...] = ("devices", "nodes", "leaves", "spines", "core")
"""Layer names from bottom (y = 0) to top."""


def _positions(topology: Topology) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], float], dict[int, float]]:
    """x of every device, node, physical leaf switch (leaf, rail) and pod spine layer."""
    cluster = topology.cluster
    device_x = np.arange(cluster.num_devices, dtype=float) + topology.device_node * 1.0
    node_x = np.array([device_x[list(cluster.devices_of_node(n))].mean() for n in range(cluster.num_nodes)])
    switch_x: dict[tuple[int, int], float] = {}
    for leaf in range(topology.num_leaves):
        rails = sorted(v[2] for v, kind in topology.graph.nodes(data="kind") if kind == "leaf" and v[1] == leaf)
        xs = node_x[topology.node_leaf == leaf]
        if not rails or xs.size == 0:
            continue
        lo, hi = xs.min(), xs.max()
        for i, rail in enumerate(rails):
            switch_x[(leaf, rail)] = (lo + hi) / 2 if len(rails) == 1 else lo + (hi - lo) * i / (len(rails) - 1)
    spine_x: dict[int, float] = {}
    for pod in range(topology.num_pods):
        xs = [x for (leaf, _), x in switch_x.items() if topology.leaf_pod[leaf] == pod]
        if xs and topology.graph.has_node(("spine", pod)):
            spine_x[pod] = float(np.mean(xs))
    return device_x, node_x, switch_x, spine_x


def draw_topology(topology: Topology, ax: Axes | None = None, highlight: Iterable[int] | None = None,
                  *, labels: bool = True) -> Axes:
    """Draw ``topology`` in layers; with ``highlight`` (a job's devices) mark them and the links its ring uses.

    Devices sit at the bottom, joined to their node; nodes join the leaf switches their NICs reach (every
    rail switch of their group in a rail-optimized fabric); leaves join their pod's spine layer, spines the
    core. TPU slices are underlined. Highlighted shared links (the job's ring, see
    :meth:`Topology.placement`) are drawn thick in orange, the job's devices in red; the title gives its level.
    Draws on ``ax`` (a new figure when ``None``) and returns it.
    """
    from matplotlib.collections import LineCollection

    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.subplots(figsize=(10, 4.5))[1]
    graph, cluster = topology.graph, topology.cluster
    device_x, node_x, switch_x, spine_x = _positions(topology)
    core_x = float(np.mean(list(spine_x.values()))) if spine_x else 0.0
    has_core = graph.has_node(("core",))

    node_switches: dict[int, list[tuple[int, int]]] = {n: [] for n in range(cluster.num_nodes)}
    for vertex, kind in graph.nodes(data="kind"):
        if kind == "nic":
            node_switches[vertex[1]].extend((v[1], v[2]) for v in graph.successors(vertex) if v[0] == "leaf")

    def segments(pairs: Iterable[tuple[float, float, float, float]]) -> list[list[tuple[float, float]]]:
        return [[(x0, y0), (x1, y1)] for x0, y0, x1, y1 in pairs]

    base = {
        "scale-up": segments((device_x[d], 0, node_x[cluster.device_node[d]], 1) for d in range(cluster.num_devices)),
        "nic": segments((node_x[n], 1, switch_x[s], 2) for n, ss in node_switches.items() for s in set(ss)),
        "leaf-spine": segments((x, 2, spine_x[topology.leaf_pod[leaf]], 3) for (leaf, _), x in switch_x.items()
                               if int(topology.leaf_pod[leaf]) in spine_x),
        "spine-core": segments((x, 3, core_x, 4) for x in spine_x.values()) if has_core else [],
    }
    for lines in base.values():
        ax.add_collection(LineCollection(lines, colors="0.75", linewidths=0.8, zorder=1))

    for sl in topology.slices.values():
        xs = device_x[list(sl.devices)]
        ax.plot([xs.min(), xs.max()], [-0.15, -0.15], color="tab:green", lw=2, zorder=1)
        if labels:
            ax.text(xs.mean(), -0.3, "x".join(map(str, sl.shape)) + " torus", ha="center", va="top", fontsize=7)

    job = sorted(set(highlight)) if highlight is not None else []
    colors = np.full(cluster.num_devices, "tab:blue", dtype=object)
    if job:
        placement = topology.placement(job)
        colors[job] = "tab:red"
        hot: list[list[tuple[float, float]]] = []
        for link in placement.ring_links:
            kind, owner = LINK_KINDS[topology.link_kind[link]], int(topology.link_owner[link])
            if kind.startswith("nic"):
                hot += segments((node_x[owner], 1, switch_x[s], 2) for s in set(node_switches[owner]))
            elif kind.startswith("leaf"):
                hot += segments((x, 2, spine_x[topology.leaf_pod[leaf]], 3) for (leaf, _), x in switch_x.items()
                                if leaf == owner)
            else:
                hot += segments([(spine_x[owner], 3, core_x, 4)])
        hot += segments((device_x[d], 0, node_x[cluster.device_node[d]], 1) for d in job)
        ax.add_collection(LineCollection(hot, colors="tab:orange", linewidths=2.5, zorder=2))
        ax.set_title(f"{len(job)} devices on {len(placement.nodes)} node(s): level {placement.level}, "
                     f"ring crosses {len(placement.ring_links)} shared links")
    ax.scatter(device_x, np.zeros_like(device_x), c=list(colors), s=18, zorder=3)
    ax.scatter(node_x, np.ones_like(node_x), marker="s", s=60, c="0.3", zorder=3)
    ax.scatter(list(switch_x.values()), [2] * len(switch_x), marker="D", s=40, c="tab:purple", zorder=3)
    ax.scatter(list(spine_x.values()), [3] * len(spine_x), marker="^", s=70, c="tab:brown", zorder=3)
    if has_core:
        ax.scatter([core_x], [4], marker="*", s=150, c="k", zorder=3)
    if labels and cluster.num_nodes <= 32:
        for n, x in enumerate(node_x):
            ax.text(x, 1.12, str(n), ha="center", va="bottom", fontsize=7)
    top = 4 if has_core else 3 if spine_x else 2
    ax.set_yticks(range(top + 1), LAYERS[:top + 1])
    ax.set_ylim(-0.6, top + 0.5)
    ax.set_xlim(device_x.min() - 1, device_x.max() + 1)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    return ax
