"""Loader for Philly's machine list (``cluster_machine_list.csv``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from workloads.traces._rows import RowProblems, TraceFile, resolve

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
    integer, memory not like ``12GB``, wrong column count, bytes that are not UTF-8) raises
    ``TraceFormatError`` naming the file, line and field (the earliest such row).
    """
    file = resolve(path, MACHINE_FILE)
    problems = RowProblems(file, "raise")
    machines: list[MachineRecord] = []
    seen: set[str] = set()
    with TraceFile(file, problems) as reader:
        reader.check_header(MACHINE_COLUMNS)
        for chunk in reader.chunks(MACHINE_COLUMNS, text=(0, 1, 2)):
            rows = zip(chunk.lines.tolist(), chunk.text(0).tolist(), chunk.text(1).tolist(), chunk.text(2).tolist(),
                       strict=True)
            for line, raw_id, raw_gpus, raw_memory in rows:
                machine_id, gpus, memory = raw_id.strip(), raw_gpus.strip(), raw_memory.strip()
                match = _MEMORY.fullmatch(memory)
                if not machine_id or machine_id in seen:
                    problems.add(line, "machineId", f"expected a unique machine id, got {raw_id!r}")
                elif not gpus.isdecimal() or int(gpus) <= 0:
                    problems.add(line, "number of GPUs", f"expected a positive integer, got {raw_gpus!r}")
                elif match is None or int(match.group(1)) <= 0:
                    problems.add(line, "single GPU mem", f"expected a size like '12GB', got {raw_memory!r}")
                else:
                    seen.add(machine_id)
                    machines.append(MachineRecord(machine_id, int(gpus), int(match.group(1))))
                    continue
                break
            problems.check()  # the earliest bad row: a field above, or a row with the wrong column count
    return machines
