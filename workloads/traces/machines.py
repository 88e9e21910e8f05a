"""Loader for Philly's machine list (``cluster_machine_list.csv``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from workloads.errors import TraceFormatError
from workloads.traces._rows import RowProblems, read_rows, resolve

MACHINE_COLUMNS = ("machineId", "number of GPUs", "single GPU mem")
MACHINE_FILE = "cluster_machine_list.csv"
_MEMORY = re.compile(r"(\d+)\s*GB", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """One machine of a real cluster: its id, GPU count and memory per GPU in GB."""

    machine_id: str
    gpus: int
    gpu_memory_gb: int


def load_machine_list(path: str | os.PathLike[str] | None = None) -> list[MachineRecord]:
    """Load ``cluster_machine_list.csv`` (``machineId, number of GPUs, single GPU mem``, e.g. ``m0,2, 12GB``).

    ``path=None`` reads the bundled copy. A malformed row (empty or repeated id, GPU count not a positive
    integer, memory not like ``12GB``) raises ``TraceFormatError`` naming the file, line and field.
    """
    file = resolve(path, MACHINE_FILE)
    problems = RowProblems(file, "raise")
    rows, lines = read_rows(file, MACHINE_COLUMNS, problems)
    problems.finish()
    machines: list[MachineRecord] = []
    seen: set[str] = set()
    for line, (raw_id, raw_gpus, raw_memory) in zip(lines, rows, strict=True):
        machine_id, gpus, memory = raw_id.strip(), raw_gpus.strip(), raw_memory.strip()
        if not machine_id or machine_id in seen:
            raise TraceFormatError(str(file), line, "machineId", f"expected a unique machine id, got {raw_id!r}")
        if not gpus.isdecimal() or int(gpus) <= 0:
            raise TraceFormatError(str(file), line, "number of GPUs", f"expected a positive integer, got {raw_gpus!r}")
        match = _MEMORY.fullmatch(memory)
        if match is None or int(match.group(1)) <= 0:
            raise TraceFormatError(str(file), line, "single GPU mem",
                                   f"expected a size like '12GB', got {raw_memory!r}")
        seen.add(machine_id)
        machines.append(MachineRecord(machine_id, int(gpus), int(match.group(1))))
    return machines
