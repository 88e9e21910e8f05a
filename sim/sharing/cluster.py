"""A GPU-sharing cluster's free capacity: CPU, memory and, per GPU, the thousandths still free."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.errors import ConfigError, PolicyError
from sim.sharing.pods import MILLI, PodRequests

NODE_COLUMNS = ("name", "cpu_milli", "memory_mib", "gpus", "model")


class SharedCluster:
    """Nodes with CPU milli-cores, memory and GPUs of one model, each GPU with a free share (in thousandths).

    ``gpu_left[i, j]`` is the free thousandths of GPU ``j`` of node ``i`` (rows are padded with 0 past the node's
    GPU count, which reads as a full GPU). ``allocate`` is the one way state changes, and it refuses anything that
    would take a GPU below 0 free, so fractional allocations never exceed one GPU per device.
    """

    def __init__(self, nodes: pd.DataFrame) -> None:
        missing = [column for column in NODE_COLUMNS if column not in nodes.columns]
        if missing:
            raise ConfigError(f"node table: missing column(s) {', '.join(missing)}")
        if nodes.empty:
            raise ConfigError("node table: no nodes")
        self.names = nodes["name"].astype(str).to_numpy()
        for field in ("cpu_milli", "memory_mib", "gpus"):
            values = nodes[field].to_numpy()
            if not np.issubdtype(values.dtype, np.integer) or (values < 0).any():
                bad = int(np.argmax(values < 0)) if np.issubdtype(values.dtype, np.number) else 0
                got = values.tolist()[bad]
                raise ConfigError(f"node {self.names[bad]!r}: {field} must be an integer >= 0, got {got!r}")
        self.cpu_total = nodes["cpu_milli"].to_numpy(np.int64)
        self.memory_total = nodes["memory_mib"].to_numpy(np.int64)
        self.gpus = nodes["gpus"].to_numpy(np.int64)
        model_names = nodes["model"].fillna("").astype(str).to_numpy()
        self.models: tuple[str, ...] = tuple(sorted({m for m, g in zip(model_names, self.gpus, strict=True) if g}))
        index = {m: k for k, m in enumerate(self.models)}
        self.model = np.array([index[m] if g else -1 for m, g in zip(model_names, self.gpus, strict=True)], np.int64)
        width = max(1, int(self.gpus.max()))
        self.gpu_left = np.where(np.arange(width)[None, :] < self.gpus[:, None], MILLI, 0).astype(np.int64)
        self.cpu_left = self.cpu_total.copy()
        self.memory_left = self.memory_total.copy()
        #: Allocations made on each node (a placer may cache per-node values and refresh the rows that changed).
        self.stamp = np.zeros(len(self.names), np.int64)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def capacity_gpus(self) -> int:
        """GPUs in the cluster."""
        return int(self.gpus.sum())

    @property
    def free_milli(self) -> np.ndarray:
        """Free GPU thousandths per node."""
        return self.gpu_left.sum(axis=1)

    def model_mask(self, spec: tuple[str, ...]) -> np.ndarray:
        """Nodes whose GPU model is in ``spec`` (every GPU node for ``()``)."""
        if not spec:
            return self.model >= 0
        allowed = [k for k, m in enumerate(self.models) if m in spec]
        return np.isin(self.model, allowed)

    def feasible(self, pods: PodRequests, i: int) -> np.ndarray:
        """Nodes that can host pod ``i`` now (CPU, memory, GPU model and free GPUs)."""
        mask = (self.cpu_left >= pods.cpu_milli[i]) & (self.memory_left >= pods.memory_mib[i])
        num, milli = int(pods.num_gpu[i]), int(pods.gpu_milli[i])
        if num == 0:
            return mask
        mask &= self.model_mask(pods.gpu_spec[i])
        if milli < MILLI:
            return mask & (self.gpu_left.max(axis=1) >= milli)
        return mask & ((self.gpu_left == MILLI).sum(axis=1) >= num)

    def allocate(self, pods: PodRequests, i: int, node: int, gpu_ids: tuple[int, ...], who: str = "placer") -> None:
        """Give pod ``i`` node ``node`` and GPUs ``gpu_ids``; a placement that does not fit raises ``PolicyError``."""
        name = pods.names[i]
        if not (0 <= node < len(self.names)):
            raise PolicyError(f"{who}: pod {name!r} placed on node {node}, not one of the {len(self.names)} nodes")
        num, milli = int(pods.num_gpu[i]), int(pods.gpu_milli[i])
        where = f"{who}: pod {name!r} on node {self.names[node]!r}"
        if len(gpu_ids) != num or len(set(gpu_ids)) != num:
            raise PolicyError(f"{where}: needs {num} distinct GPU(s), got {gpu_ids!r}")
        if any(not (0 <= g < self.gpus[node]) for g in gpu_ids):
            raise PolicyError(f"{where}: GPU ids {gpu_ids!r} outside 0..{self.gpus[node] - 1}")
        if self.cpu_left[node] < pods.cpu_milli[i] or self.memory_left[node] < pods.memory_mib[i]:
            raise PolicyError(f"{where}: not enough CPU or memory left")
        if num and not self.model_mask(pods.gpu_spec[i])[node]:
            raise PolicyError(f"{where}: GPU model {self.models[self.model[node]]!r} not in {pods.gpu_spec[i]!r}")
        for g in gpu_ids:
            if self.gpu_left[node, g] < milli:
                raise PolicyError(f"{where}: GPU {g} has {self.gpu_left[node, g]} thousandths free, pod needs {milli}")
        self.cpu_left[node] -= pods.cpu_milli[i]
        self.memory_left[node] -= pods.memory_mib[i]
        for g in gpu_ids:
            self.gpu_left[node, g] -= milli
        self.stamp[node] += 1
