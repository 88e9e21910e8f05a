"""Loaders for Alibaba's openb GPU-sharing trace (pod and node lists of the FGD paper, USENIX ATC'23).

Pods (``openb_pod_list_<variant>.csv``): ``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
creation_time,deletion_time,scheduled_time`` (the ``multigpu`` variants stop after ``gpu_milli``). ``gpu_milli`` is
thousandths of one GPU per GPU asked for: a pod with ``num_gpu`` 1 and ``gpu_milli`` 460 needs 46% of one GPU.
``gpu_spec`` lists the GPU models a pod accepts, separated by ``|`` (empty: any). Nodes
(``openb_node_list_<kind>_node.csv``): ``sn,cpu_milli,memory_mib,gpu,model``. Source: alibaba/clusterdata,
``cluster-trace-gpu-v2023/csv/`` (see ``workloads/data/ATTRIBUTION.md``).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from workloads._names import unknown_name
from workloads.errors import TraceFormatError, WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces._rows import resolve

POD_VARIANTS = ("default", "gpushare40", "multigpu50")
NODE_KINDS = ("gpu", "all")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
               "creation_time", "deletion_time", "scheduled_time")
SHORT_POD_COLUMNS = POD_COLUMNS[:5]
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
#: Thousandths of a GPU in one whole GPU.
MILLI = 1000


def pod_file(variant: str) -> str:
    """Bundled file name of the pod list ``variant`` (one of ``POD_VARIANTS``)."""
    if variant not in POD_VARIANTS:
        raise unknown_name("openb pod list variant", variant, POD_VARIANTS)
    return f"openb_pod_list_{variant}.csv"


def node_file(kind: str) -> str:
    """Bundled file name of the node list ``kind`` (``gpu``: GPU nodes only; ``all``: with CPU-only nodes)."""
    if kind not in NODE_KINDS:
        raise unknown_name("openb node list kind", kind, NODE_KINDS)
    return f"openb_node_list_{kind}_node.csv"


Rows = list[tuple[int, list[str]]]


def _rows(path: Path, allowed_headers: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], Rows]:
    """The header and the ``(line, fields)`` of every non-blank row; a wrong header or column count raises."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise TraceFormatError(str(path), line, "columns", "bytes that are not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = tuple(next(reader, []))
    if header not in allowed_headers:
        raise TraceFormatError(str(path), 1, "columns",
                               f"expected the header {','.join(allowed_headers[0])}, got {','.join(header)!r}")
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            raise TraceFormatError(str(path), line, "columns", f"expected {len(header)} fields, got {len(fields)}")
        rows.append((line, fields))
    return header, rows


def _integer(path: Path, line: int, field: str, raw: str, low: int, high: int | None = None) -> int:
    text = raw.strip()
    value = int(text) if text.isdecimal() else None
    if value is None or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise TraceFormatError(str(path), line, field, f"expected {bound}, got {raw!r}")
    return value


def _time(path: Path, line: int, field: str, raw: str) -> float:
    text = raw.strip()
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < 0:
        raise TraceFormatError(str(path), line, field, f"expected seconds >= 0 (or empty), got {raw!r}")
    return value


def parse_gpu_spec(raw: str) -> tuple[str, ...]:
    """The GPU models of a ``gpu_spec`` field (``'V100M16|V100M32'``), sorted; ``()`` means any model."""
    return tuple(sorted({part.strip() for part in raw.split("|") if part.strip()}))


def load_openb_pods(variant: str = "default", path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Load an openb pod list as a typed table, one row per pod in file order.

    Columns: ``name``, ``cpu_milli``, ``memory_mib``, ``num_gpu``, ``gpu_milli`` (int64), ``gpu_spec`` (tuple of
    allowed GPU models, ``()`` for any), ``qos``, ``pod_phase`` (str, empty in the ``multigpu`` variants),
    ``creation_time``, ``deletion_time``, ``scheduled_time`` (float seconds, NaN where absent) and ``line`` (1-based
    line in the CSV). ``path=None`` reads the bundled copy of ``variant``. A bad row (repeated name, a count that is
    not a non-negative integer, ``gpu_milli`` outside 0..1000 or inconsistent with ``num_gpu``) raises
    ``TraceFormatError`` naming the file, line and field.
    """
    file = resolve(path, pod_file(variant))
    header, rows = _rows(file, (POD_COLUMNS, SHORT_POD_COLUMNS))
    records: list[tuple[object, ...]] = []
    seen: set[str] = set()
    for line, fields in rows:
        row = dict(zip(header, fields, strict=True))
        name = row["name"].strip()
        if not name or name in seen:
            raise TraceFormatError(str(file), line, "name", f"expected a unique pod name, got {row['name']!r}")
        seen.add(name)
        cpu = _integer(file, line, "cpu_milli", row["cpu_milli"], 0)
        memory = _integer(file, line, "memory_mib", row["memory_mib"], 0)
        num_gpu = _integer(file, line, "num_gpu", row["num_gpu"], 0)
        gpu_milli = _integer(file, line, "gpu_milli", row["gpu_milli"], 0, MILLI)
        if (num_gpu == 0) != (gpu_milli == 0):
            raise TraceFormatError(str(file), line, "gpu_milli",
                                   f"expected 0 exactly when num_gpu is 0, got {gpu_milli} with num_gpu {num_gpu}")
        if num_gpu > 1 and gpu_milli != MILLI:
            raise TraceFormatError(str(file), line, "gpu_milli",
                                   f"a pod of {num_gpu} GPUs takes whole GPUs (1000), got {gpu_milli}")
        times = [_time(file, line, key, row.get(key, "")) for key in POD_COLUMNS[8:]]
        records.append((name, cpu, memory, num_gpu, gpu_milli, parse_gpu_spec(row.get("gpu_spec", "")),
                        row.get("qos", "").strip(), row.get("pod_phase", "").strip(), *times, line))
    table = pd.DataFrame.from_records(records, columns=[*POD_COLUMNS, "line"])
    if not records:
        raise WorkloadError(f"{file}: no pods")
    return table.astype({"cpu_milli": "int64", "memory_mib": "int64", "num_gpu": "int64", "gpu_milli": "int64",
                         "creation_time": "float64", "deletion_time": "float64", "scheduled_time": "float64",
                         "line": "int64"})


def load_openb_nodes(kind: str = "gpu", path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Load an openb node list as a typed table, one row per node in file order.

    Columns: ``name`` (the ``sn``), ``cpu_milli``, ``memory_mib``, ``gpus`` (int64), ``model`` (str, empty for a
    node without GPUs) and ``line``. ``kind="gpu"`` is the 1,213 GPU nodes the paper's simulator uses; ``"all"``
    adds the 310 CPU-only nodes (1,523). A bad row (repeated name, a count that is not a non-negative integer, a
    model without GPUs or GPUs without a model) raises ``TraceFormatError`` naming the file, line and field.
    """
    file = resolve(path, node_file(kind))
    header, rows = _rows(file, (NODE_COLUMNS,))
    records: list[tuple[object, ...]] = []
    seen: set[str] = set()
    for line, fields in rows:
        row = dict(zip(header, fields, strict=True))
        name = row["sn"].strip()
        if not name or name in seen:
            raise TraceFormatError(str(file), line, "sn", f"expected a unique node name, got {row['sn']!r}")
        seen.add(name)
        cpu = _integer(file, line, "cpu_milli", row["cpu_milli"], 1)
        memory = _integer(file, line, "memory_mib", row["memory_mib"], 1)
        gpus = _integer(file, line, "gpu", row["gpu"], 0)
        model = row["model"].strip()
        if (gpus == 0) != (model == ""):
            raise TraceFormatError(str(file), line, "model",
                                   f"expected a GPU model exactly when gpu > 0, got {row['model']!r} with gpu {gpus}")
        records.append((name, cpu, memory, gpus, model, line))
    if not records:
        raise WorkloadError(f"{file}: no nodes")
    table = pd.DataFrame.from_records(records, columns=["name", "cpu_milli", "memory_mib", "gpus", "model", "line"])
    return table.astype({"cpu_milli": "int64", "memory_mib": "int64", "gpus": "int64", "line": "int64"})


def openb_training_jobs(pods: pd.DataFrame, *, limit: int | None = None, source: str = "openb") -> JobTrace:
    """The GPU pods of an openb pod list (``load_openb_pods``) as training jobs for the engine, to replay them with
    their GPU fractions: a pod of one GPU with ``gpu_milli`` below 1000 becomes a fractional job
    (``gpu_fraction = gpu_milli / 1000``), a pod of ``num_gpu`` whole GPUs a gang of that size.

    Kept: pods that ask for GPUs and ran (a ``scheduled_time`` and a later ``deletion_time``); their ``duration`` is
    ``deletion_time - scheduled_time`` (the time they held their GPUs in the trace, taken as their run time at
    their share) and their ``arrival`` is ``creation_time`` less the earliest one kept. Jobs are numbered in arrival
    order (ties keep file order), ``limit`` keeps the first ones. Not kept: ``gpu_spec`` (the trace's model names,
    such as ``V100M16`` or ``G2``, are not the catalog's), CPU and memory requests, ``qos``."""
    ran = pods[(pods["num_gpu"] > 0) & np.isfinite(pods["scheduled_time"]) & np.isfinite(pods["deletion_time"])
               & (pods["deletion_time"] > pods["scheduled_time"]) & np.isfinite(pods["creation_time"])]
    ran = ran.sort_values("creation_time", kind="stable")
    if limit is not None:
        ran = ran.iloc[:limit]
    if ran.empty:
        raise WorkloadError(f"{source}: no GPU pod that ran (scheduled, then deleted later)")
    origin = float(ran["creation_time"].iloc[0])
    jobs = tuple(
        TrainingJob(job_id=i, arrival=float(created) - origin, gpus=int(gpus), duration=float(deleted - scheduled),
                    name=str(name), gpu_fraction=float(milli) / MILLI if gpus == 1 else 1.0)
        for i, (name, gpus, milli, created, scheduled, deleted) in enumerate(zip(
            ran["name"], ran["num_gpu"], ran["gpu_milli"], ran["creation_time"], ran["scheduled_time"],
            ran["deletion_time"], strict=True)))
    return JobTrace(jobs=jobs, source=source)
