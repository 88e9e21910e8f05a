"""Pod requests for GPU sharing: whole GPUs, or one fraction of one GPU, plus CPU, memory and allowed GPU models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import ConfigError

#: Thousandths of a GPU in one whole GPU.
MILLI = 1000
#: Columns a pod table must have (``gpu_spec`` is optional: a tuple of allowed models, ``()`` for any).
REQUIRED_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class PodRequestError(ConfigError):
    """A pod asks for something impossible; the message names the pod, the field and the value."""


@dataclass(frozen=True, slots=True)
class PodRequests:
    """Validated pod requests as arrays, in arrival order.

    ``gpu_milli`` is thousandths of one GPU per GPU: a fractional pod has ``num_gpu == 1`` and ``gpu_milli`` in
    1..999; a whole-GPU pod has ``gpu_milli == 1000``; a CPU-only pod has ``num_gpu == gpu_milli == 0``.
    """

    names: np.ndarray
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    num_gpu: np.ndarray
    gpu_milli: np.ndarray
    gpu_spec: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def total_milli(self) -> np.ndarray:
        """GPU thousandths each pod asks for in all (``num_gpu * gpu_milli``)."""
        return self.num_gpu * self.gpu_milli

    @classmethod
    def from_table(cls, pods: pd.DataFrame) -> PodRequests:
        """Check and convert a pod table (``workloads.traces.openb.load_openb_pods`` gives one)."""
        missing = [column for column in REQUIRED_COLUMNS if column not in pods.columns]
        if missing:
            raise PodRequestError(f"pod table: missing column(s) {', '.join(missing)}")
        names = pods["name"].astype(str).to_numpy()
        arrays = {}
        for field in REQUIRED_COLUMNS[1:]:
            values = pods[field].to_numpy()
            bad = _first_bad(values, lambda v: v >= 0)
            if bad is not None:
                got = values.tolist()[bad]
                raise PodRequestError(f"pod {names[bad]!r}: {field} must be an integer >= 0, got {got!r}")
            arrays[field] = values.astype(np.int64)
        num, milli = arrays["num_gpu"], arrays["gpu_milli"]
        checks = (
            ((num > 0) & ((milli < 1) | (milli > MILLI)), "gpu_milli",
             "must be 1..1000 (a fraction in (0, 1] of one GPU) for a pod that asks for GPUs"),
            ((num == 0) & (milli != 0), "gpu_milli", "must be 0 for a pod with num_gpu 0"),
            ((num > 1) & (milli != MILLI), "gpu_milli", "must be 1000 for a pod of several GPUs (only one GPU shares)"),
        )
        for bad_mask, field, rule in checks:
            if bad_mask.any():
                i = int(np.argmax(bad_mask))
                raise PodRequestError(f"pod {names[i]!r}: {field} {rule}, got {int(arrays[field][i])}")
        if "gpu_spec" in pods.columns:
            specs = tuple(_spec(name, raw) for name, raw in zip(names, pods["gpu_spec"], strict=True))
        else:
            specs = ((),) * len(names)
        return cls(names, arrays["cpu_milli"], arrays["memory_mib"], num, milli, specs)

    def check_models(self, models: tuple[str, ...]) -> None:
        """Raise ``PodRequestError`` naming the first pod that accepts only GPU models not in ``models``."""
        present = set(models)
        for name, num, spec in zip(self.names, self.num_gpu, self.gpu_spec, strict=True):
            if num > 0 and spec and not present.intersection(spec):
                raise PodRequestError(f"pod {name!r}: gpu_spec {'|'.join(spec)!r} names no GPU model of the cluster "
                                      f"(models: {', '.join(sorted(present)) or 'none'})")


def _first_bad(values: np.ndarray, rule: object) -> int | None:
    for i, value in enumerate(values.tolist()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value \
                or not rule(value):  # type: ignore[operator]
            return i
    return None


def _spec(name: str, raw: object) -> tuple[str, ...]:
    if raw is None or (isinstance(raw, float) and raw != raw) or raw == "":
        return ()
    if isinstance(raw, str):
        return tuple(sorted({part.strip() for part in raw.split("|") if part.strip()}))
    if isinstance(raw, (tuple, list, frozenset, set)) and all(isinstance(m, str) for m in raw):
        return tuple(sorted(raw))
    raise PodRequestError(f"pod {name!r}: gpu_spec must be models separated by '|' or a tuple of names, got {raw!r}")
