"""The FGD paper's workload protocol: shuffle the trace's pods, then append pods drawn from it at random until the
GPUs asked for reach a multiple of the cluster's GPU capacity (the authors' ``workloadTuningConfig``, ratio 1.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.errors import ConfigError

MILLI = 1000


def inflate_pods(pods: pd.DataFrame, capacity_gpus: float, ratio: float = 1.3, seed: int = 0) -> pd.DataFrame:
    """``pods`` shuffled, then pods sampled from them with replacement (named ``<name>-tuned-<k>``) appended while
    the total GPU request stays within ``ratio * capacity_gpus``; row order is the arrival order."""
    if not ratio > 0:
        raise ConfigError(f"ratio: must be > 0, got {ratio!r}")
    if not capacity_gpus > 0:
        raise ConfigError(f"capacity_gpus: must be > 0, got {capacity_gpus!r}")
    rng = np.random.default_rng(seed)
    shuffled = pods.iloc[rng.permutation(len(pods))].reset_index(drop=True)
    request = (pods["num_gpu"].to_numpy(np.int64) * pods["gpu_milli"].to_numpy(np.int64))
    target = ratio * capacity_gpus * MILLI
    total = int(request.sum())
    extra: list[int] = []
    while True:
        k = int(rng.integers(len(pods)))
        if total + request[k] > target:
            break
        total += int(request[k])
        extra.append(k)
    added = pods.iloc[extra].copy()
    added["name"] = [f"{name}-tuned-{j}" for j, name in enumerate(added["name"])]
    return pd.concat([shuffled, added], ignore_index=True)
