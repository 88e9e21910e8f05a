"""Loaders for real cluster traces and the registry of traces bundled with the package."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from workloads._names import unknown_name
from workloads.errors import SkippedRowsWarning
from workloads.jobs import JobTrace
from workloads.requests import RequestTrace
from workloads.traces._rows import describe_skipped
from workloads.traces.azure import load_azure_llm, load_request_csv
from workloads.traces.bundled import DATA_DIR, bundled_files, bundled_path
from workloads.traces.gavel import (
    Colocations,
    colocation_slowdown,
    generate_gavel_jobs,
    load_gavel_colocations,
    load_gavel_jobs,
    load_gavel_throughputs,
)
from workloads.traces.machines import MachineRecord, load_machine_list
from workloads.traces.openb import load_openb_nodes, load_openb_pods, openb_training_jobs
from workloads.traces.philly import PhillyColumns, load_philly_jobs, read_philly_columns
from workloads.traces.pollux import load_pollux_workload
from workloads.traces.shockwave import load_shockwave_jobs
from workloads.traces.tiresias import load_tiresias_jobs
from workloads.traces.window import parse_window

TraceLoader = Callable[..., JobTrace]
RequestTraceLoader = Callable[..., RequestTrace]

#: Bundled job traces by the name config uses (``trace: philly``); each loader reads the bundled copy by default.
TRACES: MappingProxyType[str, TraceLoader] = MappingProxyType({
    "philly": load_philly_jobs,
    "tiresias-60": load_tiresias_jobs,
    "gavel-philly": load_gavel_jobs,
})


#: Bundled inference-request traces by the name config uses (``trace: azure-conv``); kept apart from ``TRACES``.
REQUEST_TRACES: MappingProxyType[str, RequestTraceLoader] = MappingProxyType({
    "azure-conv": load_azure_llm,
})


def trace_loader(name: str, *, where: str = "trace") -> TraceLoader:
    """The loader of bundled trace ``name``; an unknown name lists the valid ones and the closest match."""
    loader = TRACES.get(name) if isinstance(name, str) else None
    if loader is None:
        raise unknown_name("trace", name, TRACES, where=where)
    return loader


def load_trace(name: str, **options: Any) -> JobTrace:
    """Load bundled trace ``name`` (see ``TRACES``) with the loader's keyword ``options``."""
    return trace_loader(name)(**options)


def request_trace_loader(name: str, *, where: str = "trace") -> RequestTraceLoader:
    """The loader of bundled request trace ``name``; an unknown name lists the valid ones and the closest match."""
    loader = REQUEST_TRACES.get(name) if isinstance(name, str) else None
    if loader is None:
        raise unknown_name("request trace", name, REQUEST_TRACES, where=where)
    return loader


def load_request_trace(name: str, **options: Any) -> RequestTrace:
    """Load bundled request trace ``name`` (see ``REQUEST_TRACES``) with the loader's keyword ``options``."""
    return request_trace_loader(name)(**options)


__all__ = [
    "DATA_DIR",
    "REQUEST_TRACES",
    "TRACES",
    "Colocations",
    "MachineRecord",
    "PhillyColumns",
    "RequestTraceLoader",
    "SkippedRowsWarning",
    "TraceLoader",
    "bundled_files",
    "bundled_path",
    "colocation_slowdown",
    "describe_skipped",
    "generate_gavel_jobs",
    "load_azure_llm",
    "load_gavel_colocations",
    "load_gavel_jobs",
    "load_gavel_throughputs",
    "load_machine_list",
    "load_openb_nodes",
    "load_openb_pods",
    "load_philly_jobs",
    "load_pollux_workload",
    "load_request_csv",
    "load_request_trace",
    "load_shockwave_jobs",
    "load_tiresias_jobs",
    "load_trace",
    "openb_training_jobs",
    "parse_window",
    "read_philly_columns",
    "request_trace_loader",
    "trace_loader",
]
