"""Turn a ``Config`` into a cluster, a workload and a ready-to-run ``Simulation``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine import PreemptionCost, Simulation
from sim.errors import ConfigError, did_you_mean
from sim.experiments.config import (
    AccountingConfig,
    ClusterConfig,
    Config,
    ServiceConfig,
    TrainingConfig,
    config_to_dict,
)
from sim.failures import CheckpointPolicy, FailureModel, FailureSubsystem, failures
from sim.output.accounting import POWER_FIELDS, AccountingOptions, PowerModel, known_device
from sim.output.results import Results
from sim.platform.cluster import Cluster, PoolSpec, preset
from sim.platform.network.model import NetworkOptions
from sim.platform.network.specs import Fabric, NetworkSpec, NodeNetwork, default_network
from sim.random import RandomStreams, SeedLike
from sim.serving.disaggregation import ServicePool
from sim.serving.replica import BatchingConfig
from sim.serving.service import ContinuousBatching, FixedService, ServiceSpec
from sim.serving.speculative import SpeculativeDecoding
from sim.serving.step_factors import default_step_factors
from sim.units import parse_quantity
from workloads import (
    JobTrace,
    LLMSpec,
    RequestTrace,
    generate_requests,
    generate_training_jobs,
    get_model,
    make_arrivals,
    make_distribution,
    trace_loader,
)
from workloads.errors import WorkloadError
from workloads.jobs import TrainingJob
from workloads.traces import load_request_csv, load_request_trace, parse_window
from workloads.traces.gavel import load_gavel_colocations

TRACE_FORMATS = {"philly": "philly", "tiresias": "tiresias-60", "gavel": "gavel-philly"}


def build_cluster(cfg: ClusterConfig) -> Cluster:
    """A preset, or the pools listed in the config; with ``fabric`` or a pool's ``network``, the interconnect
    they describe (otherwise the defaults for the device types, built when first used)."""
    if cfg.preset is not None:
        if cfg.pools:
            raise ConfigError("cluster: give either preset or pools, not both (set preset: null to use pools)")
        cluster = preset(cfg.preset, cfg.nodes, cfg.scale)
    else:
        if not cfg.pools:
            raise ConfigError("cluster: give a preset or a list of pools")
        pools = [PoolSpec(p.device, p.nodes, p.devices_per_node, p.name, p.nodes_per_rack) for p in cfg.pools]
        cluster = Cluster(pools, name="custom")
    overrides = [p.network for p in cfg.pools] if cfg.pools else []
    if cfg.fabric is None and not any(overrides):
        return cluster
    fabric = _spec(Fabric, cfg.fabric or {}, "cluster.fabric")
    network = default_network(cluster, fabric=fabric)
    nets = list(network.pools)
    for i, override in enumerate(overrides):
        if override:
            nets[i] = _spec(NodeNetwork, {**_fields(nets[i]), **override}, f"cluster.pools[{i}].network")
    return Cluster(cluster.pools, name=cluster.name, network=NetworkSpec(tuple(nets), fabric))


def _fields(spec: Any) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def _spec(kind: type, values: dict[str, Any], where: str) -> Any:
    """``kind(**values)``, naming the config key of an unknown field or a bad value."""
    valid = [f.name for f in dataclasses.fields(kind)]
    for key in values:
        if key not in valid:
            raise ConfigError(f"{where}.{key}: unknown key{did_you_mean(key, valid)}; valid: {', '.join(valid)}")
    try:
        return kind(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _with_fractions(jobs: Sequence[TrainingJob], spec: Any, seed: SeedLike, where: str) -> tuple[TrainingJob, ...]:
    """The jobs with ``gpu_fraction`` set on each one-device job: a number, or a distribution drawn per such job from
    the ``gpu_fractions`` stream (the other jobs keep 1)."""
    key = f"{where}.gpu_fraction"
    single = [i for i, job in enumerate(jobs) if job.gpus == 1 and job.max_gpus is None]
    if isinstance(spec, Mapping):
        values = make_distribution(spec, where=key).sample(RandomStreams(seed)["gpu_fractions"], len(single))
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        values = np.full(len(single), float(spec))
    else:
        raise ConfigError(f"{key} must be a number in (0, 1] or a distribution mapping, got {spec!r}")
    out = list(jobs)
    for i, value in zip(single, np.asarray(values, dtype=float).tolist(), strict=True):
        try:
            out[i] = dataclasses.replace(out[i], gpu_fraction=value)
        except WorkloadError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return tuple(out)


def build_training_jobs(cfg: TrainingConfig, seed: SeedLike) -> JobTrace:
    """Jobs from a trace (windowed, filtered, time-scaled) or from the synthetic generator."""
    where = "workload.training"
    if cfg.trace is not None:
        if cfg.jobs is not None:
            raise ConfigError(f"{where}: give either trace or jobs (synthetic), not both")
        _refuse_synthetic_keys(cfg, SYNTHETIC_TRAINING_KEYS, where)
        trace = _load_trace(cfg)
    else:
        if cfg.jobs is None:
            return JobTrace(jobs=(), source="no training jobs")
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
    if cfg.comm_fraction is not None:
        if not (isinstance(cfg.comm_fraction, (int, float)) and 0 <= cfg.comm_fraction < 1):
            raise ConfigError(f"{where}.comm_fraction must be in [0, 1), got {cfg.comm_fraction!r}")
        jobs = tuple(dataclasses.replace(j, comm_fraction=float(cfg.comm_fraction)) for j in trace.jobs)
        trace = dataclasses.replace(trace, jobs=jobs)
    if cfg.gpu_fraction is not None:
        trace = dataclasses.replace(trace, jobs=_with_fractions(trace.jobs, cfg.gpu_fraction, seed, where))
    if cfg.precision is not None:
        try:
            jobs = tuple(dataclasses.replace(j, precision=cfg.precision) for j in trace.jobs)
        except WorkloadError as exc:
            raise ConfigError(f"{where}.precision: {exc}") from None
        trace = dataclasses.replace(trace, jobs=jobs)
    if cfg.model is not None:
        spec = dict(cfg.model)
        parallelism = spec.pop("parallelism", None)
        model = spec.pop("name", None) if set(spec) == {"name"} else spec
        if not model:
            raise ConfigError(f"{where}.model: give name (a catalog model) or params, n_layers, d_model")
        jobs = tuple(dataclasses.replace(j, model=model, parallelism=parallelism or {}) for j in trace.jobs)
        trace = dataclasses.replace(trace, jobs=jobs)
    if cfg.load_scale != 1.0:
        if cfg.load_scale <= 0:
            raise ConfigError(f"{where}.load_scale must be positive, got {cfg.load_scale!r}")
        jobs = tuple(dataclasses.replace(j, arrival=j.arrival / cfg.load_scale) for j in trace.jobs)
        trace = dataclasses.replace(trace, jobs=jobs, source=f"{trace.source} x{cfg.load_scale:g}")
    return trace


SYNTHETIC_TRAINING_KEYS = ("interarrival", "duration", "gpus", "allowed_devices", "reference_device")
"""Keys of ``workload.training`` that shape synthetic jobs; a trace replay ignores them."""
SYNTHETIC_SERVICE_KEYS = ("requests", "horizon", "arrivals", "prompt_tokens", "output_tokens")
"""Keys of a service that shape synthetic requests; a trace replay ignores them."""


def _refuse_synthetic_keys(cfg: TrainingConfig | ServiceConfig, keys: tuple[str, ...], where: str) -> None:
    """A synthetic-workload key set next to a trace would be silently ignored: refuse it, naming the key."""
    default = type(cfg)()
    given = [key for key in keys if getattr(cfg, key) != getattr(default, key)]
    if given:
        raise ConfigError(f"{where}: {', '.join(given)} shape{'s' * (len(given) == 1)} synthetic "
                          f"{'jobs' if isinstance(cfg, TrainingConfig) else 'requests'} and would be ignored next to "
                          f"a trace; remove {'it' if len(given) == 1 else 'them'}, or remove the trace")


def _load_trace(cfg: TrainingConfig) -> JobTrace:
    where = "workload.training.trace"
    options: dict[str, Any] = {"errors": cfg.errors}
    if cfg.limit is not None and not isinstance(cfg.limit, bool) and cfg.limit > 0:
        options["limit"] = cfg.limit  # the loader keeps only the first N jobs by submit time while reading
    if cfg.errors not in ("raise", "skip"):
        raise ConfigError(f"workload.training.errors must be raise or skip, got {cfg.errors!r}")
    if isinstance(cfg.trace, str):
        name = cfg.trace
    else:
        spec = dict(cfg.trace or {})
        unknown = set(spec) - {"path", "format"}
        if unknown or "path" not in spec:
            raise ConfigError(f"{where}: expected {{path: FILE, format: philly|tiresias|gavel}}, "
                              f"got keys {sorted(spec)}")
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


class _Prefixed:
    """The named random streams of one service: ``arrivals`` becomes ``service:NAME:arrivals``."""

    def __init__(self, streams: RandomStreams, prefix: str) -> None:
        self.streams = streams
        self.prefix = prefix

    def __getitem__(self, name: str) -> Any:
        return self.streams[self.prefix + name]


def build_services(configs: tuple[ServiceConfig, ...], seed: SeedLike) -> list[ServiceSpec]:
    """Service specs with their requests: a replayed trace, or synthetic arrivals and lengths."""
    streams = RandomStreams(seed)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"workload.inference.services: service names must be unique, got {names}")
    return [_service(c, f"workload.inference.services[{i}]", streams) for i, c in enumerate(configs)]


def _service(cfg: ServiceConfig, where: str, streams: RandomStreams) -> ServiceSpec:
    if cfg.trace is not None:
        _refuse_synthetic_keys(cfg, SYNTHETIC_SERVICE_KEYS, where)
        requests = _request_trace(cfg, where)
    else:
        if cfg.requests is None and cfg.horizon is None:
            raise ConfigError(f"{where}: give requests (a count), horizon (seconds) or a trace to replay")
        requests = generate_requests(
            make_arrivals(cfg.arrivals, where=f"{where}.arrivals"),
            make_distribution(cfg.prompt_tokens, where=f"{where}.prompt_tokens"),
            make_distribution(cfg.output_tokens, where=f"{where}.output_tokens"),
            _Prefixed(streams, f"service:{cfg.name}:"), count=cfg.requests, horizon=cfg.horizon, service=cfg.name,
            where=where)
    if cfg.mode == "fixed-service":
        if cfg.speculative is not None:
            raise ConfigError(f"{where}.speculative (service {cfg.name!r}): speculative decoding is for "
                              "continuous-batching services")
        if cfg.service_time is None:
            raise ConfigError(f"{where}.service_time: fixed-service replicas need a service-time distribution")
        mode: ContinuousBatching | FixedService = FixedService(
            make_distribution(cfg.service_time, where=f"{where}.service_time"))
    elif cfg.mode == "continuous-batching":
        factors, profile = _step_model(cfg.step_model, f"{where}.step_model")
        speculative = None
        if cfg.speculative is not None:
            try:
                speculative = SpeculativeDecoding.from_mapping(cfg.speculative)
            except ConfigError as exc:
                raise ConfigError(f"{where} (service {cfg.name!r}): {exc}") from None
        try:
            mode = ContinuousBatching(BatchingConfig(cfg.max_seqs, cfg.max_batched_tokens, cfg.chunked_prefill),
                                      factors=factors, kv_reserve=cfg.kv_reserve, profile=profile,
                                      prefix_cache=cfg.prefix_cache, speculative=speculative)
        except ConfigError as exc:
            raise ConfigError(f"{where}.step_model.profile: {exc}" if profile is not None and str(exc).startswith(
                profile) else f"{where}.{exc}" if str(exc).startswith("prefix_cache") else str(exc)) from None
    else:
        raise ConfigError(f"{where}.mode: unknown mode {cfg.mode!r}{did_you_mean(cfg.mode, SERVICE_MODES)}; "
                          f"valid: {', '.join(SERVICE_MODES)}")
    model = get_model(cfg.model, where=f"{where}.model")
    pools = {role: None if getattr(cfg, role) is None else ServicePool.of(getattr(cfg, role), f"{where}.{role}")
             for role in ("prefill", "decode")}
    if (pools["prefill"] is None) != (pools["decode"] is None):
        missing = "decode" if pools["decode"] is None else "prefill"
        raise ConfigError(f"{where}.{missing}: a service with prefill and decode pools needs both")
    return ServiceSpec(cfg.name, requests, cfg.replicas, mode=mode, model=model if isinstance(model, LLMSpec)
                       else None, device=cfg.device, devices_per_replica=cfg.devices_per_replica,
                       dispatch=cfg.dispatch, slo_ttft=cfg.slo.ttft, slo_tpot=cfg.slo.tpot,
                       min_replicas=cfg.min_replicas, max_replicas=cfg.max_replicas, load_bandwidth=cfg.load_bandwidth,
                       context_limit=cfg.context_limit, **pools)


SERVICE_MODES = ("continuous-batching", "fixed-service")


def _step_model(spec: Mapping[str, Any], where: str) -> tuple[dict[str, float] | None, str | None]:
    """A service's step-model overrides (each a number) and profile path; errors name the key."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping of factor names to numbers (and profile: PATH), got {spec!r}")
    spec = dict(spec)
    profile = spec.pop("profile", None)
    if profile is not None and not isinstance(profile, (str, Path)):
        raise ConfigError(f"{where}.profile: expected the path of a profile CSV, got {profile!r}")
    return _step_factors(spec, where), (str(profile) if profile is not None else None)


def _step_factors(spec: Mapping[str, Any], where: str) -> dict[str, float] | None:
    """A service's step-model overrides, each a number; errors name the key."""
    try:
        default_step_factors("h100-sxm").replace(spec, where=where)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return dict(spec) or None


def _request_trace(cfg: ServiceConfig, where: str) -> RequestTrace:
    if isinstance(cfg.trace, str):
        trace = load_request_trace(cfg.trace)
    else:
        spec = dict(cfg.trace or {})
        unknown = set(spec) - {"path", "columns", "time_unit"}
        if unknown or "path" not in spec or "columns" not in spec:
            raise ConfigError(f"{where}.trace: expected {{path: FILE, columns: {{arrival: ..., prompt_tokens: ..., "
                              f"output_tokens: ...}}, time_unit: s}}, got keys {sorted(spec)}")
        trace = load_request_csv(spec["path"], columns=spec["columns"], time_unit=spec.get("time_unit", "s"))
    window = None
    if cfg.trace_window is not None:
        if len(cfg.trace_window) != 2:
            raise ConfigError(f"{where}.trace_window: expected [start, end] in seconds, got {list(cfg.trace_window)}")
        window = (float(cfg.trace_window[0]), float(cfg.trace_window[1]))
    if cfg.trace_scale <= 0:
        raise ConfigError(f"{where}.trace_scale must be positive, got {cfg.trace_scale}")
    return trace.replay(cfg.trace_scale, window) if (cfg.trace_scale != 1.0 or window) else trace


def build_accounting(cfg: AccountingConfig) -> AccountingOptions:
    """The accounting options of the config's ``accounting:`` section; errors name the config key."""
    for key in ("training_utilization", "inference_utilization"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise ConfigError(f"accounting.{key} must be in [0, 1], got {getattr(cfg, key)!r}")
    if not 0 < cfg.training_mfu <= 1:
        raise ConfigError(f"accounting.training_mfu must be in (0, 1], got {cfg.training_mfu!r}")
    overrides = {}
    for name, values in cfg.power.items():
        where = f"accounting.power.{name}"
        known_device("accounting.power", name)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must map idle_watts and/or tdp_watts to watts, got {values!r}")
        for key in values:
            if key not in POWER_FIELDS:
                raise ConfigError(f"{where}.{key}: not a power field{did_you_mean(str(key), POWER_FIELDS)}; valid: "
                                  f"{', '.join(POWER_FIELDS)} (watts, or a string with its unit: '700 W', '0.7 kW')")
        overrides[name] = {key: parse_quantity(f"{where}.{key}", value, "power", positive=key == "tdp_watts")
                           for key, value in values.items()}
    prices = {}
    for name, value in cfg.prices.items():
        prices[known_device("accounting.prices", name).name] = parse_quantity(f"accounting.prices.{name}", value,
                                                                              "price")
    grid = (None if cfg.grid_intensity is None
            else parse_quantity("accounting.grid_intensity", cfg.grid_intensity, "intensity"))
    try:  # what is left to check spans fields: idle above TDP, a device type given twice under two names
        power = PowerModel(cfg.training_utilization, cfg.inference_utilization, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"accounting.power: {exc}") from None
    return AccountingOptions(power, prices, grid, cfg.training_mfu)


def build_simulation(config: Config, *, seed: SeedLike | None = None, cluster: Cluster | None = None,
                     **overrides: Any) -> Simulation:
    """The ``Simulation`` a config describes; keyword ``overrides`` go to its constructor.

    ``seed`` (an int or a ``SeedSequence``, e.g. a sweep's per-replication seed) replaces
    ``config.seed`` for the workload and the policies alike; ``cluster`` replaces the configured cluster.
    """
    seed = config.seed if seed is None else seed
    cluster = build_cluster(config.cluster) if cluster is None else cluster
    jobs = build_training_jobs(config.workload.training, seed)
    services = build_services(config.workload.inference.services, seed)
    if not len(jobs) and not services:
        raise ConfigError("workload: nothing to simulate; give training jobs (workload.training.trace or .jobs) "
                          "or inference services (workload.inference.services)")
    p = config.sim.preemption
    options: dict[str, Any] = {
        "scheduler": config.policy.scheduler,
        "placer": config.policy.placer,
        "router": config.policy.router,
        "autoscaler": config.policy.autoscaler,
        "colocation": config.policy.colocation,
        "services": services,
        "seed": seed,
        "preemption": PreemptionCost(p.checkpoint_s, p.restore_s),
        "horizon": config.sim.horizon,
        "record_events": config.sim.record_events,
        "sample_interval": config.sim.sample_interval,
        "share_fit": config.sim.share_fit,
        "progress": config.sim.progress,
        "metadata": {"seed": _seed_label(seed)},
    }
    options["accounting"] = build_accounting(config.accounting)
    if config.cluster.quotas is not None:
        options["quotas"] = config.cluster.quotas
        options["tenant_order"] = config.policy.tenant_order
    net = config.sim.network
    if net.enabled:
        options["network"] = NetworkOptions(net.comm_fraction, net.contention, net.demand)
    failure_subsystem = build_failures(config)
    if failure_subsystem is not None:
        options["subsystems"] = (failure_subsystem,)
    if config.sim.colocations is not None:
        try:
            options["colocations"] = load_gavel_colocations(config.sim.colocations)
        except (OSError, WorkloadError) as exc:
            raise ConfigError(f"sim.colocations: {exc}") from None
    options.update(overrides)
    return Simulation(cluster, jobs, **options)


def build_failures(config: Config) -> Callable[[Simulation], FailureSubsystem] | None:
    """The failures subsystem the config's ``failures`` and ``checkpoint`` sections describe (None when they
    describe neither failures nor checkpoints: the run is then exactly as without them)."""
    f, c = config.failures, config.checkpoint
    if not f.mtbf_hours and f.trace is None and not f.spot and not f.link_mtbf_hours and c.interval is None:
        return None
    model = FailureModel(mtbf_hours=f.mtbf_hours, mttr_hours=f.mttr_hours, node_correlated=f.node_correlated,
                         trace=f.trace, spot=tuple(f.spot), restart_s=f.restart_s,
                         link_mtbf_hours=f.link_mtbf_hours, link_mttr_hours=f.link_mttr_hours,
                         distribution=f.distribution, repair_distribution=f.repair_distribution,
                         first_failure=f.first_failure)
    checkpoint = None if c.interval is None else CheckpointPolicy(interval=c.interval, cost=c.cost)
    return failures(model, checkpoint)


def run_config(config: Config, *, seed: SeedLike | None = None, cluster: Cluster | None = None,
               **overrides: Any) -> Results:
    """Build and run; the results remember the resolved config."""
    results = build_simulation(config, seed=seed, cluster=cluster, **overrides).run()
    results.config = config_to_dict(config)
    return results


def _seed_label(seed: SeedLike) -> Any:
    """A JSON-friendly record of the seed: the int, or a SeedSequence's entropy and spawn key."""
    if isinstance(seed, np.random.SeedSequence):
        return {"entropy": int(seed.entropy), "spawn_key": [int(k) for k in seed.spawn_key]}  # type: ignore[arg-type]
    if isinstance(seed, np.random.Generator):
        return "generator"
    return seed if seed is None else int(seed)
