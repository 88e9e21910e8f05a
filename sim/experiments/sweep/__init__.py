"""Experiments at scale: a grid of configs x seeds on any executor, resumable results, confidence intervals.

    from sim.experiments.sweep import Experiment

    experiment = Experiment("base.yaml", {"policy.scheduler": ["fifo", "las"],
                                          "workload.training.interarrival.mean": [20, 30, 60]}, seeds=5)
    sweep = experiment.run("out/sweep", tables=("jobs",))       # executor="processes" | "serial" | "dask" | ...
    sweep.summary()        # one row per point: parameters, replication, every summary figure
    sweep.aggregate()      # mean and 95% CI half-width across seeds, per grid point and metric
    sweep.table("jobs")    # every point's jobs, with the parameter columns
    sweep.report()         # plots and report.md

Worker processes import the main script again: a script runs its sweep under ``if __name__ == "__main__":``.
"""

from sim.experiments.sweep.errors import PointsDiedError, SweepError
from sim.experiments.sweep.executors import DASK_CONNECT_TIMEOUT, is_death, make_backend
from sim.experiments.sweep.experiment import Experiment
from sim.experiments.sweep.grid import parse_grid_option
from sim.experiments.sweep.points import Point, replication_seed
from sim.experiments.sweep.report import plot_sweep, write_report
from sim.experiments.sweep.results import RunReport, Sweep
from sim.experiments.sweep.stats import aggregate, mean_ci, t_quantile
from sim.experiments.sweep.worker import TABLES, run_point

__all__ = [
    "DASK_CONNECT_TIMEOUT", "TABLES", "Experiment", "Point", "PointsDiedError", "RunReport", "Sweep", "SweepError",
    "aggregate", "is_death", "make_backend", "mean_ci", "parse_grid_option", "plot_sweep", "replication_seed",
    "run_point", "t_quantile", "write_report",
]
