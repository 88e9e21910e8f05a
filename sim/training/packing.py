"""Packing two training jobs on the same devices (Gandiva's and Gavel's space sharing): the cost model.

A *packed pair* is two rigid, whole-device jobs of the same gang size that run on exactly the same devices at the
same time. Each progresses at its alone speed on that pool times its *packing factor*: its steps per second while
packed with the other job over its steps per second alone on that device type, as a co-location table measured
them (Gavel's ``simulation_throughputs.json``, read by ``workloads.traces.gavel.load_gavel_colocations``; the
bundled copy by default). The factor depends on the two jobs' ``TrainingJob.job_type`` and gang size and on the
device type, and on nothing else (no dependence on the phase, the placement or the time packed). A job without a
``job_type``, a pair the table does not measure, or one it records as ``[0, 0]`` (never packed), has no factors:
such jobs run alone.

When the pair forms, each job is re-rated to its factor; when one of the two leaves (finishes, is preempted or
fails) the other goes back to its alone speed on the same devices, which it keeps. Work done so far is banked at
each change, as for a network re-solve. Each job of a pair is charged half the devices' time while packed (its
``device_seconds`` and attained service): the two together hold the devices once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sim.errors import ConfigError
from sim.platform.hardware import get_device
from workloads.errors import WorkloadError
from workloads.jobs import TrainingJob
from workloads.traces.gavel import GAVEL_DEVICES, Colocations, load_gavel_colocations

PACKED_SHARE = 0.5
"""Share of its devices' time a packed job is charged (two jobs hold them together)."""


class PackingBook:
    """The co-location table a run packs by, and the run's ``packing`` random stream (for a packing policy's
    choices). ``colocations``: a loaded table, or None for Gavel's bundled file (read at the first question)."""

    __slots__ = ("_device_keys", "_factors", "_table", "rng")

    def __init__(self, rng: np.random.Generator, colocations: Colocations | None = None) -> None:
        if colocations is not None and not isinstance(colocations, Colocations):
            raise ConfigError("sim.packing: colocations must be a workloads.traces.gavel.Colocations "
                              f"(load_gavel_colocations), got {type(colocations).__name__}")
        self.rng = rng
        self._table = colocations
        self._device_keys: dict[str, str | None] = {}
        self._factors: dict[tuple[str, int, str, int, str], tuple[float, float] | None] = {}

    @property
    def table(self) -> Colocations:
        if self._table is None:
            self._table = load_gavel_colocations()
        return self._table

    def _device_key(self, device: str) -> str | None:
        """The table's device type for a gpusim device name (None if the table has none)."""
        if device not in self._device_keys:
            canonical = get_device(device).name
            table = self.table
            self._device_keys[device] = next(
                (key for key in table if get_device(GAVEL_DEVICES.get(key, key)).name == canonical), None)
        return self._device_keys[device]

    def factors(self, a: TrainingJob, b: TrainingJob, device: str) -> tuple[float, float] | None:
        """Each job's packing factor when ``a`` and ``b`` are packed on devices of type ``device`` (module
        docstring), or None when they may not be packed there: a job without a type, elastic or fractional, gangs of
        different sizes, a pair the table does not measure or records as ``[0, 0]``."""
        if (a.job_type is None or b.job_type is None or a.gpus != b.gpus or a.max_gpus is not None
                or b.max_gpus is not None or a.gpu_fraction != 1.0 or b.gpu_fraction != 1.0):
            return None
        key = (a.job_type, a.gpus, b.job_type, b.gpus, device)
        if key not in self._factors:
            self._factors[key] = self._measured(a.job_type, b.job_type, a.gpus, device)
        return self._factors[key]

    def _measured(self, type_a: str, type_b: str, gang: int, device: str) -> tuple[float, float] | None:
        kind = self._device_key(device)
        if kind is None:
            return None
        table = self.table
        measured = table[kind].get(((type_a, gang), (type_b, gang)))
        alone: Mapping[tuple[str, int], float] = table.alone[kind]
        if measured is None or measured[0] <= 0 or measured[1] <= 0:
            return None
        try:
            first, second = alone[(type_a, gang)], alone[(type_b, gang)]
        except KeyError:
            return None
        if first <= 0 or second <= 0:
            raise WorkloadError(f"{table.source}: {kind}: a job type packed with another does not run alone there")
        return measured[0] / first, measured[1] / second

    def combined(self, a: TrainingJob, b: TrainingJob, device: str) -> float:
        """The pair's combined normalised throughput on ``device``: the sum of the two factors (0 if not packable);
        above 1, packing the two does more work per device-second than running them one after the other."""
        factors = self.factors(a, b, device)
        return 0.0 if factors is None else factors[0] + factors[1]
