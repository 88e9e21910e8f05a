"""What arrives at a cluster: job types, distributions, synthetic generators and trace loaders."""

from workloads.distributions import (
    DISTRIBUTIONS,
    Choice,
    Deterministic,
    Distribution,
    Empirical,
    Exponential,
    LogNormal,
    Uniform,
    make_distribution,
    trace_distribution,
)
from workloads.errors import TraceFormatError, WorkloadError
from workloads.jobs import JobTrace, SkippedRow, TrainingJob
from workloads.synthetic import generate_training_jobs
from workloads.traces import (
    TRACES,
    MachineRecord,
    bundled_path,
    load_machine_list,
    load_philly_jobs,
    load_tiresias_jobs,
    load_trace,
    trace_loader,
)

__all__ = [
    "DISTRIBUTIONS",
    "TRACES",
    "Choice",
    "Deterministic",
    "Distribution",
    "Empirical",
    "Exponential",
    "JobTrace",
    "LogNormal",
    "MachineRecord",
    "SkippedRow",
    "TraceFormatError",
    "TrainingJob",
    "Uniform",
    "WorkloadError",
    "bundled_path",
    "generate_training_jobs",
    "load_machine_list",
    "load_philly_jobs",
    "load_tiresias_jobs",
    "load_trace",
    "make_distribution",
    "trace_distribution",
    "trace_loader",
]
