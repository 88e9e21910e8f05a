"""Turn a ``Config`` into a cluster, a workload and a ready-to-run ``Simulation``."""

from __future__ import annotations

import dataclasses
from typing import Any

from sim.cluster import Cluster, PoolSpec, preset
from sim.config import ClusterConfig, Config, TrainingConfig, config_to_dict
from sim.engine import PreemptionCost, Simulation
from sim.errors import ConfigError
from sim.random import RandomStreams, SeedLike
from sim.results import Results
from workloads import JobTrace, generate_training_jobs, make_distribution, trace_loader
from workloads.traces import parse_window

TRACE_FORMATS = {"philly": "philly", "tiresias": "tiresias-60"}


def build_cluster(cfg: ClusterConfig) -> Cluster:
    """A preset, or the pools listed in the config."""
    if cfg.preset is not None:
        if cfg.pools:
            raise ConfigError("cluster: give either preset or pools, not both (set preset: null to use pools)")
        return preset(cfg.preset, cfg.nodes, cfg.scale)
    if not cfg.pools:
        raise ConfigError("cluster: give a preset or a list of pools")
    pools = [PoolSpec(p.device, p.nodes, p.devices_per_node, p.name, p.nodes_per_rack) for p in cfg.pools]
    return Cluster(pools, name="custom")


def build_training_jobs(cfg: TrainingConfig, seed: SeedLike) -> JobTrace:
    """Jobs from a trace (windowed, filtered, time-scaled) or from the synthetic generator."""
    where = "workload.training"
    if cfg.trace is not None:
        if cfg.jobs is not None:
            raise ConfigError(f"{where}: give either trace or jobs (synthetic), not both")
        trace = _load_trace(cfg)
    else:
        if cfg.jobs is None:
            raise ConfigError(f"{where}: give a trace (e.g. trace: philly) or a number of synthetic jobs (jobs: N)")
        if isinstance(cfg.jobs, bool) or cfg.jobs <= 0:
            raise ConfigError(f"{where}.jobs must be a positive integer, got {cfg.jobs!r}")
        for key in ("window", "virtual_clusters"):
            if getattr(cfg, key) is not None:
                raise ConfigError(f"{where}.{key} applies to traces only")
        trace = generate_training_jobs(
            cfg.jobs,
            make_distribution(cfg.interarrival, where=f"{where}.interarrival"),
            make_distribution(cfg.duration, where=f"{where}.duration"),
            make_distribution(cfg.gpus, where=f"{where}.gpus"),
            RandomStreams(seed),
            allowed_devices=cfg.allowed_devices,
            reference_device=cfg.reference_device,
            where=where,
        )
    if cfg.limit is not None:
        if cfg.limit <= 0:
            raise ConfigError(f"{where}.limit must be a positive integer, got {cfg.limit!r}")
        trace = dataclasses.replace(trace, jobs=trace.jobs[: cfg.limit])
    if cfg.load_scale != 1.0:
        if cfg.load_scale <= 0:
            raise ConfigError(f"{where}.load_scale must be positive, got {cfg.load_scale!r}")
        jobs = tuple(dataclasses.replace(j, arrival=j.arrival / cfg.load_scale) for j in trace.jobs)
        trace = dataclasses.replace(trace, jobs=jobs, source=f"{trace.source} x{cfg.load_scale:g}")
    return trace


def _load_trace(cfg: TrainingConfig) -> JobTrace:
    where = "workload.training.trace"
    options: dict[str, Any] = {"errors": cfg.errors}
    if cfg.errors not in ("raise", "skip"):
        raise ConfigError(f"workload.training.errors must be raise or skip, got {cfg.errors!r}")
    if isinstance(cfg.trace, str):
        name = cfg.trace
    else:
        spec = dict(cfg.trace or {})
        unknown = set(spec) - {"path", "format"}
        if unknown or "path" not in spec:
            raise ConfigError(f"{where}: expected {{path: FILE, format: philly|tiresias}}, got keys {sorted(spec)}")
        fmt = spec.get("format", "philly")
        if fmt not in TRACE_FORMATS:
            raise ConfigError(f"{where}.format: unknown trace format {fmt!r}; valid: {', '.join(TRACE_FORMATS)}")
        name = TRACE_FORMATS[fmt]
        options["path"] = spec["path"]
    loader = trace_loader(name, where=where)
    if name == "philly":
        options["window"] = None if cfg.window is None else parse_window(cfg.window, what="workload.training.window")
        options["virtual_clusters"] = cfg.virtual_clusters
    elif cfg.window is not None or cfg.virtual_clusters is not None:
        raise ConfigError(f"workload.training: window and virtual_clusters apply to the philly trace, not {name!r}")
    return loader(**options)


def build_simulation(config: Config, **overrides: Any) -> Simulation:
    """The ``Simulation`` a config describes; keyword ``overrides`` go to its constructor."""
    cluster = build_cluster(config.cluster)
    jobs = build_training_jobs(config.workload.training, config.seed)
    p = config.sim.preemption
    options: dict[str, Any] = {
        "scheduler": config.policy.scheduler,
        "placer": config.policy.placer,
        "seed": config.seed,
        "preemption": PreemptionCost(p.checkpoint_s, p.restore_s),
        "horizon": config.sim.horizon,
        "record_events": config.sim.record_events,
        "progress": config.sim.progress,
        "metadata": {"seed": config.seed},
    }
    options.update(overrides)
    return Simulation(cluster, jobs, **options)


def run_config(config: Config, **overrides: Any) -> Results:
    """Build and run; the results remember the resolved config."""
    results = build_simulation(config, **overrides).run()
    results.config = config_to_dict(config)
    return results
