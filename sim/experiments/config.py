"""Run configuration: frozen dataclasses that YAML maps onto 1:1, with help text and key checking.

``load_config(path_or_mapping, overrides=["policy.scheduler=las"])`` gives a ``Config``;
``config_to_dict`` gives back the resolved mapping a run writes beside its results.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError, did_you_mean


def _opt(default: Any, help: str, kind: str = "any", nested: type | None = None) -> Any:
    """A config field with its help text and the kind of value it takes."""
    meta = {"help": help, "kind": kind, "nested": nested}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: default.copy(), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: type(default)(), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PoolConfig:
    device: str = _opt("h100", "device type from the catalog (sim.platform.hardware.DEVICES), e.g. h100, a100, k80",
                       "str")
    nodes: int = _opt(1, "number of machines in the pool", "int")
    devices_per_node: int = _opt(8, "devices per machine (at most 64)", "int")
    name: str = _opt("", "pool name (default: the device type)", "str")
    nodes_per_rack: int = _opt(32, "machines per rack/leaf switch", "int")
    network: dict[str, Any] | None = _opt(
        None, "this pool's node network, overriding the defaults for its device type: {nics, nic_bandwidth, "
        "scale_up, rails, ...} (sim.platform.network.specs.NodeNetwork)", "mapping?")


@dataclass(frozen=True)
class ClusterConfig:
    preset: str | None = _opt("dgx-h100", "named cluster: philly, dgx-a100, dgx-h100; null to use pools", "str?")
    nodes: int | None = _opt(None, "node count for the dgx presets (default 4)", "int?")
    scale: float | None = _opt(None, "philly preset: keep this fraction of its machines, e.g. 0.25", "float?")
    pools: tuple[PoolConfig, ...] = _opt((), "custom cluster: a list of pools (used when preset is null)",
                                         "list", PoolConfig)
    fabric: dict[str, Any] | None = _opt(
        None, "scale-out network: {kind: fat-tree|rail-optimized|single-switch, nodes_per_leaf, leaves_per_pod, "
        "oversubscription, pod_oversubscription} (sim.platform.network.specs.Fabric); null: the defaults for the "
        "devices",
        "mapping?")
    quotas: dict[str, Any] | str | None = _opt(
        None, "nominal quota per tenant and pool: {TENANT: {POOL: devices}}, or philly-vc (Philly's virtual "
        "clusters sized as the Helios artifact does), or {nominal: ..., mode: hard|borrow|reclaim, "
        "borrowing_limit: N | {TENANT: N | {POOL: N}}, lending_limit: ..., weights: {TENANT: w}}; each tenant's jobs "
        "are scheduled by their own instance of the scheduler (sim.training.quotas); null: one pool for all", "any")


@dataclass(frozen=True)
class TrainingConfig:
    trace: str | dict[str, Any] | None = _opt(
        None, "bundled trace name (philly, tiresias-60, gavel-philly) or {path: FILE, format: philly|tiresias|gavel}",
        "trace")
    window: dict[str, Any] | None = _opt(None, "trace submit-time window: {start: DATE, days: N} or {start, end}",
                                         "mapping?")
    virtual_clusters: tuple[str, ...] | None = _opt(None, "keep only these virtual clusters (Philly)", "strlist?")
    errors: str = _opt("raise", "malformed trace rows: raise (stop with file/line/field) or skip (count them)",
                       "str")
    load_scale: float = _opt(1.0, "divide arrival times by this: 2 replays the trace twice as fast", "float")
    limit: int | None = _opt(None, "keep only the first N jobs (by submit time)", "int?")
    jobs: int | None = _opt(None, "synthetic: number of jobs to generate (when no trace is given)", "int?")
    interarrival: dict[str, Any] = _opt({"dist": "exponential", "mean": 30.0},
                                        "synthetic inter-arrival distribution (seconds)", "mapping")
    duration: dict[str, Any] = _opt({"dist": "lognormal", "median": 1144.0, "sigma": 2.0},
                                    "synthetic run-time distribution (seconds on the reference device)", "mapping")
    gpus: dict[str, Any] = _opt({"dist": "choice", "values": [1, 2, 4, 8], "weights": [0.7, 0.1, 0.15, 0.05]},
                                "synthetic gang-size distribution", "mapping")
    allowed_devices: tuple[str, ...] | None = _opt(None, "synthetic: device types the jobs may use", "strlist?")
    reference_device: str | None = _opt(None, "synthetic: device the run times hold on (null: any)", "str?")
    comm_fraction: float | None = _opt(
        None, "share of each job's step in exposed communication on its reference placement (network model); "
        "null: sim.network.comm_fraction", "float?")
    precision: str | None = _opt(
        None, "format every job trains in (bf16, fp16, fp8, int8, fp32): speed across device types scales by "
        "their peaks in it; null: bf16", "str?")
    gpu_fraction: float | dict[str, Any] | None = _opt(
        None, "share of one device each one-device job asks for (fractional jobs share devices): a number in (0, 1], "
        "or a distribution drawn per one-device job, e.g. {dist: choice, values: [0.25, 0.5, 1]}; null: whole "
        "devices", "any")
    model: dict[str, Any] | None = _opt(
        None, "network model: every job trains this model, {name: llama-3.1-8b | params: .., n_layers: .., d_model: "
        "..; parallelism: {tensor, pipeline, micro_batch, global_batch, sequence, ...}}; run times stay those drawn, "
        "on the reference placement", "mapping?")


@dataclass(frozen=True)
class SloConfig:
    ttft: float | None = _opt(None, "time-to-first-token target (seconds); null: no target", "float?")
    tpot: float | None = _opt(None, "time-per-output-token target (seconds); null: no target", "float?")


@dataclass(frozen=True)
class ServiceConfig:
    name: str = _opt("chat", "service name (requests and replicas tables carry it)", "str")
    model: str | dict[str, Any] = _opt("llama-3.1-8b", "catalog model, or {name: ..., weights: int8, kv_cache: fp8}",
                                       "policy")
    device: str | None = _opt("h100", "device type of the replicas; null: the first pool with room", "str?")
    devices_per_replica: int = _opt(1, "devices per replica (tensor parallel, inside one node)", "int")
    replicas: int = _opt(1, "replicas at the start (ready at time 0)", "int")
    min_replicas: int = _opt(1, "autoscaling: fewest replicas", "int")
    max_replicas: int | None = _opt(None, "autoscaling: most replicas (null: as many as devices allow)", "int?")
    load_bandwidth: float = _opt(5e9, "autoscaling: bytes/s per device at which a new replica loads its weights",
                                 "float")
    mode: str = _opt("continuous-batching", "continuous-batching or fixed-service", "str")
    arrivals: dict[str, Any] = _opt({"process": "poisson", "rate": 5.0},
                                    "arrival process: poisson, gamma {rate, cv}, mmpp, diurnal, piecewise", "mapping")
    requests: int | None = _opt(None, "synthetic: number of requests (or give horizon)", "int?")
    horizon: float | None = _opt(None, "synthetic: generate arrivals up to this time (seconds)", "float?")
    prompt_tokens: dict[str, Any] = _opt({"dist": "lognormal", "median": 1020.0, "sigma": 1.0},
                                         "synthetic prompt-length distribution (tokens)", "mapping")
    output_tokens: dict[str, Any] = _opt({"dist": "lognormal", "median": 129.0, "sigma": 1.0},
                                         "synthetic output-length distribution (tokens)", "mapping")
    trace: str | dict[str, Any] | None = _opt(None, "replay a request trace instead: azure-conv, or {path: FILE, "
                                              "columns: {arrival: ..., prompt_tokens: ..., output_tokens: ...}}",
                                              "trace")
    trace_scale: float = _opt(1.0, "trace replay: divide arrival times by this (rate x k)", "float")
    trace_window: tuple[float, ...] | None = _opt(None, "trace replay: [start, end] seconds of the trace", "list?")
    service_time: dict[str, Any] | None = _opt(None, "fixed-service: service-time distribution (seconds)",
                                               "mapping?")
    dispatch: str = _opt("route", "route (router picks on arrival) or shared-queue (fixed-service only)", "str")
    max_seqs: int = _opt(256, "continuous batching: most sequences in a batch", "int")
    max_batched_tokens: int = _opt(8192, "continuous batching: most tokens computed in one step", "int")
    chunked_prefill: bool = _opt(False, "continuous batching: split prefills into chunks beside decodes", "bool")
    step_model: dict[str, Any] = _opt({}, "step-time factors replacing the device's defaults, e.g. {linear_compute: "
                                      "0.7, step_overhead: 0.002} (defaults: gpusim config; fitted: gpusim "
                                      "calibrate); profile: PATH times steps from a measured table instead",
                                      "mapping")
    kv_reserve: float = _opt(0.10, "fraction of HBM kept off the KV cache (activations, runtime)", "float")
    prefix_cache: dict[str, Any] | bool | None = _opt(
        None, "continuous batching: prefix caching, true or {eviction: lru|fifo, block_tokens: 16} "
        "(sim.serving.prefix_cache); requests need a prefix (a trace's prefix_id and prefix_tokens columns); null: off",
        "any")
    speculative: dict[str, Any] | None = _opt(
        None, "continuous batching: speculative decoding {draft: MODEL | cost fraction in (0, 1), k: draft tokens per "
        "step, acceptance: a in [0, 1)} (sim.serving.speculative); null: none", "mapping?")
    prefill: dict[str, Any] | None = _opt(
        None, "disaggregated serving: the prefill pool {replicas, devices_per_replica, device, min_replicas, "
        "max_replicas, max_seqs, max_batched_tokens, chunked_prefill, router} (sim.serving.disaggregation); with "
        "decode, the pools' replicas replace the service's; null: colocated", "mapping?")
    decode: dict[str, Any] | None = _opt(
        None, "disaggregated serving: the decode pool, keys as prefill (router default: kv-aware); KV caches move "
        "to it over the interconnect", "mapping?")
    context_limit: str = _opt("reject", "a request longer than the model's max_context: reject (reason "
                              "exceeds_max_context), truncate (keep the prompt's last tokens) or allow", "str")
    slo: SloConfig = _opt(SloConfig(), "latency targets a request must meet to count as good", "nested", SloConfig)


@dataclass(frozen=True)
class InferenceConfig:
    services: tuple[ServiceConfig, ...] = _opt((), "inference services (a list)", "list", ServiceConfig)


@dataclass(frozen=True)
class WorkloadConfig:
    training: TrainingConfig = _opt(TrainingConfig(), "training jobs", "nested", TrainingConfig)
    inference: InferenceConfig = _opt(InferenceConfig(), "inference traffic", "nested", InferenceConfig)


@dataclass(frozen=True)
class PolicyConfig:
    scheduler: str | dict[str, Any] = _opt("fifo", "scheduler name, or {name: ..., PARAM: VALUE}", "policy")
    placer: str | dict[str, Any] = _opt("first-fit", "placer name, or {name: ..., PARAM: VALUE}", "policy")
    router: str | dict[str, Any] = _opt("round-robin", "router name for inference requests, or {name: ...}",
                                        "policy")
    autoscaler: str | dict[str, Any] = _opt("static", "autoscaler for every service: static, target-utilization, "
                                            "queue-length, or {name: ..., PARAM: VALUE}", "policy")
    colocation: str | dict[str, Any] = _opt("shared", "training and inference: shared, partitioned {nodes | "
                                            "fraction}, inference-priority", "policy")
    tenant_order: str | dict[str, Any] = _opt("quota-share", "under cluster.quotas, which tenant is scheduled (and "
                                              "borrows) first: quota-share, drf, fair-share", "policy")


@dataclass(frozen=True)
class PreemptionConfig:
    checkpoint_s: float = _opt(30.0, "seconds to checkpoint a preempted job (charged when it resumes)", "float")
    restore_s: float = _opt(30.0, "seconds to restore a job when it resumes", "float")


@dataclass(frozen=True)
class NetworkConfig:
    enabled: bool = _opt(False, "model the interconnect: placement and link contention stretch jobs' communication",
                         "bool")
    comm_fraction: float = _opt(0.1, "default exposed-communication share of a job's step on its reference "
                                "placement (an assumption; see sim.platform.network.model)", "float")
    contention: bool = _opt(True, "share contended links between jobs (weighted max-min); false: static "
                            "oversubscription penalty", "bool")
    demand: str = _opt("peak", "traffic a job offers a shared link: peak (communication phases overlap) or "
                       "average (they interleave)", "str")


@dataclass(frozen=True)
class SimConfig:
    horizon: float | None = _opt(None, "stop at this simulated time (seconds); null runs to the end", "float?")
    preemption: PreemptionConfig = _opt(PreemptionConfig(), "preemption overheads", "nested", PreemptionConfig)
    record_events: bool = _opt(False, "keep the full event log (events.csv)", "bool")
    sample_interval: float = _opt(60.0, "seconds between samples of each replica's queue, batch and KV-cache "
                                  "use (replica_samples.csv)", "float")
    progress: bool = _opt(True, "progress bar on a terminal for runs longer than two seconds", "bool")
    network: NetworkConfig = _opt(NetworkConfig(), "the interconnect model", "nested", NetworkConfig)
    share_fit: str = _opt("best-fit", "which shared device a fractional job goes to: best-fit (least share left) or "
                          "worst-fit (most left); a whole free device only when none has room", "str")
    colocations: str | None = _opt(None, "co-located throughputs for a scheduler that packs jobs (gandiva): a "
                                   "throughputs file in Gavel's format, plain or gzip; null: Gavel's bundled file",
                                   "str?")


@dataclass(frozen=True)
class AccountingConfig:
    power: dict[str, Any] = _opt({}, "per device type {idle_watts, tdp_watts} replacing the catalog's, e.g. {h100: "
                                 "{idle_watts: 90, tdp_watts: '0.7 kW'}} (numbers in watts, or strings with a unit)",
                                 "mapping")
    prices: dict[str, Any] = _opt({}, "per device type price replacing the catalog's, e.g. {h100: 4.5} (USD per "
                                  "device-hour) or {h100: '4.5 USD/h'}", "mapping")
    grid_intensity: float | str | None = _opt(None, "grid carbon intensity, e.g. 400 (gCO2/kWh) or '0.4 kg/kWh'; "
                                              "adds carbon to the accounting", "any")
    training_mfu: float = _opt(0.4, "model FLOP utilization assumed for training jobs' FLOPs (an assumption, "
                               "flagged in the summary)", "float")
    training_utilization: float = _opt(1.0, "power-model utilization of a progressing training job (1: TDP)", "float")
    inference_utilization: float = _opt(1.0, "power-model utilization of a replica while a step runs (1: TDP)",
                                        "float")


@dataclass(frozen=True)
class FailuresConfig:
    mtbf_hours: dict[str, Any] = _opt({}, "per device type, mean hours between failures of one device, e.g. {h100: "
                                      "50000} (a type not named never fails at random)", "mapping")
    mttr_hours: float | dict[str, Any] = _opt(2.0, "mean hours to repair a failed device or node, or "
                                              "per device type, e.g. {h100: 4}", "any")
    node_correlated: bool = _opt(False, "a random failure takes the device's whole node out", "bool")
    trace: str | None = _opt(None, "CSV of outages to replay: header time, node or device, duration (seconds); "
                             "optional kind (sim.failures.trace)", "str?")
    spot: tuple[dict[str, Any], ...] = _opt((), "spot pools that take nodes back after a notice: [{pool: NAME, "
                                            "mean_hours_between: 6, notice_s: 120, duration_hours: 1, nodes: 1}]",
                                            "list")
    restart_s: float | None = _opt(None, "seconds a failed job takes to restart from its checkpoint (null: its "
                                   "restore time, sim.preemption.restore_s)", "float?")
    link_mtbf_hours: dict[str, Any] = _opt({}, "per link class (nic, leaf, pod), mean hours between failures of one "
                                           "physical link, e.g. {leaf: 5000} (needs sim.network; sim.failures.links)",
                                           "mapping")
    link_mttr_hours: float = _opt(2.0, "mean hours to repair a failed link (exponential)", "float")
    distribution: str | dict[str, Any] = _opt("exponential", "time to failure of a device (or node): exponential, "
                                              "{kind: weibull, shape: 0.7} or {kind: lognormal, sigma: 1}, scaled to "
                                              "the MTBF; or per device type, {h100: {kind: weibull, shape: 0.7}} "
                                              "(sim.failures.distributions)", "any")
    repair_distribution: str | dict[str, Any] = _opt("exponential", "time to repair: a distribution as for "
                                                     "distribution, scaled to mttr_hours", "any")
    first_failure: str = _opt("stationary", "a non-exponential unit's first time to failure: stationary (the time "
                              "left to a unit of a long-running cluster) or new (every unit fresh at time 0)", "str")


@dataclass(frozen=True)
class CheckpointConfig:
    interval: float | str | None = _opt(None, "seconds of progress between a training job's checkpoints, young-daly "
                                        "(sqrt(2 * cost * MTBF of the job's gang)), or null: never (a failure "
                                        "loses all its work since it started)", "any")
    cost: float = _opt(0.0, "seconds each checkpoint stops the job (a job's own checkpoint_s replaces it)", "float")


@dataclass(frozen=True)
class PlanConfig:
    devices: tuple[str, ...] = _opt(("h100",), "gpusim plan: device types to try for the service's replicas", "strlist")
    variants: tuple[dict[str, Any], ...] = _opt(
        (), "gpusim plan: variants of the service's model to try, e.g. [{weights: fp8}, {weights: int4, kv_cache: "
        "fp8}, {name: llama-3.2-3b}]; empty: the model as configured", "list")
    layouts: tuple[str, ...] = _opt(
        ("colocated",), "gpusim plan: serving layouts to try: colocated, or P:D for disaggregated prefill and decode "
        "pools in that ratio of replicas (e.g. [colocated, '1:1', '1:2']); the replica count is the two pools' total",
        "strlist")
    min_replicas: int = _opt(1, "gpusim plan: fewest replicas to consider", "int")
    max_replicas: int = _opt(16, "gpusim plan: most replicas to consider", "int")
    target: dict[str, Any] = _opt({"ttft_p99": 0.5, "tpot_p99": 0.05, "attainment": 0.99},
                                  "gpusim plan: p99 TTFT and TPOT (seconds) and the SLO attainment to meet",
                                  "mapping")


@dataclass(frozen=True)
class Config:
    seed: int = _opt(0, "root seed; named random streams are spawned from it", "int")
    cluster: ClusterConfig = _opt(ClusterConfig(), "the cluster", "nested", ClusterConfig)
    workload: WorkloadConfig = _opt(WorkloadConfig(), "what arrives", "nested", WorkloadConfig)
    policy: PolicyConfig = _opt(PolicyConfig(), "scheduling and placement policies", "nested", PolicyConfig)
    sim: SimConfig = _opt(SimConfig(), "engine settings", "nested", SimConfig)
    accounting: AccountingConfig = _opt(AccountingConfig(), "energy, cost and carbon accounting", "nested",
                                        AccountingConfig)
    plan: PlanConfig = _opt(PlanConfig(), "capacity planning (gpusim plan)", "nested", PlanConfig)
    failures: FailuresConfig = _opt(FailuresConfig(), "device and node failures, failure traces, spot pools "
                                    "(sim.failures)", "nested", FailuresConfig)
    checkpoint: CheckpointConfig = _opt(CheckpointConfig(), "how often training jobs checkpoint, and at what cost",
                                        "nested", CheckpointConfig)

    def __post_init__(self) -> None:
        if isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed < 0:
            raise ConfigError(f"config key 'seed' must be a non-negative integer, got {self.seed!r}")


DEFAULT_SCENARIO = Path(__file__).parent.parent / "default_scenario.yaml"


def load_config(source: str | Path | Mapping[str, Any] | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """A ``Config`` from a YAML file, a mapping, or (``None``) the embedded default scenario, with
    ``key.path=value`` overrides (values parsed as YAML) applied first. In a file, relative paths (``PATH_KEYS``)
    are relative to the file's folder."""
    if source is None:
        source = DEFAULT_SCENARIO
    if isinstance(source, Mapping):
        data: Any = _deep_copy(source)
        where = "config"
    else:
        path = Path(source)
        data = _read_yaml(path)
        where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    if not isinstance(source, Mapping):  # a file's relative paths are relative to its folder; --set ones to the cwd
        resolve_paths(data, Path(source).resolve().parent)
    for override in overrides:
        apply_override(data, override)
    return _build(Config, data, "")


class ConfigLoader(yaml.SafeLoader):
    """YAML as ``yaml.safe_load`` reads it, with two changes for configs: a key given twice in one mapping is an
    error (naming both lines) instead of the last one silently winning, and exponent numbers without a dot or
    an exponent sign (``12.85e9``, ``1e-3``, ``50.0e9``), which YAML 1.1 reads as strings, are floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {first}); the second would silently replace "
                    "the first: merge them into one", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class ExponentNumber(float):
    """A number written with an exponent that YAML 1.1 reads as a string (``12.85e9``, ``1e-3``): a float that
    remembers its text, so that a key expecting a string (a Philly virtual cluster named ``6214e9``) gets the text
    back."""

    text: str

    def __new__(cls, text: str) -> ExponentNumber:
        number = super().__new__(cls, text.replace("_", ""))
        number.text = text
        return number


_EXPONENT_TAG = "tag:gpusim,2026:exponent-number"
ConfigLoader.add_implicit_resolver(
    _EXPONENT_TAG, re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
ConfigLoader.add_constructor(_EXPONENT_TAG, lambda loader, node: ExponentNumber(loader.construct_scalar(node)))


def load_yaml(text: str) -> Any:
    """Parse config YAML (``ConfigLoader``); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader


def load_yaml_list(text: str, what: str, hint: str) -> list[Any]:
    """``a, b, c`` or a YAML flow list ``[a, {name: b, x: 1}]`` (config YAML, plain numbers) as a list; errors
    name ``what`` (the option and its text) and end with ``hint``."""
    source = text.strip()
    try:
        parsed = plain_numbers(load_yaml(source if source.startswith("[") else f"[{source}]"))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what}: not valid YAML ({problem}); {hint}") from None
    if not isinstance(parsed, list):
        raise ConfigError(f"{what}: expected a list of values, got {parsed!r}")
    return parsed


def plain_numbers(value: Any) -> Any:
    """``value`` with every ``ExponentNumber`` inside it a plain float (for data that is dumped or compared)."""
    if isinstance(value, ExponentNumber):
        return float(value)
    if isinstance(value, Mapping):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_numbers(v) for v in value)
    return value


PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("workload", "training", "trace", "path"),
    ("workload", "inference", "services", "*", "trace", "path"),
    ("workload", "inference", "services", "*", "step_model", "profile"),
    ("failures", "trace"),
    ("sim", "colocations"),
)
"""Config keys that hold file paths; in a config file, a relative one is relative to the file's folder."""


def resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the relative paths of ``PATH_KEYS`` in ``data`` relative to ``base`` (in place)."""

    def visit(node: Any, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        key, rest = keys[0], keys[1:]
        if key == "*":
            for item in node if isinstance(node, list) else ():
                visit(item, rest)
            return
        if not isinstance(node, dict) or key not in node:
            return
        if not rest:
            value = node[key]
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                node[key] = str(base / Path(value).expanduser())
            return
        visit(node[key], rest)

    for keys in PATH_KEYS:
        visit(data, keys)


def _read_yaml(path: Path) -> Any:
    """Parse a YAML file; every failure is a one-line ``ConfigError`` naming the file (and line)."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read as UTF-8 text: {exc}") from exc
    try:
        return load_yaml(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r}{where}: not valid YAML: {problem}") from exc


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested mapping; a policy given by name becomes ``{name: ...}`` when a
    parameter is set under it."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. policy.scheduler=las")
    try:
        value = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {exc}") from exc
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and parts[: i + 1][0] == "policy":
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, Mapping):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is {child!r}, not a mapping")
        node[part] = child = dict(child)
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r}{did_you_mean(str(key), fields)}; "
                              f"valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(fields)}")
        kwargs[key] = _value(fields[key], value, path)
    return cls(**kwargs)


def _value(f: dataclasses.Field[Any], value: Any, path: str) -> Any:
    kind: str = f.metadata["kind"]
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional or kind in ("trace", "any"):
            return None
        raise ConfigError(f"config key {path!r} may not be null ({f.metadata['help']})")
    if kind == "nested":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
        return _build(f.metadata["nested"], value, path + ".")
    if kind == "list" and f.metadata["nested"] is not None:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {path!r} must be a list, got {value!r}")
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError(f"config key {path}[{i}] must be a mapping, got {item!r}")
            items.append(_build(f.metadata["nested"], item, f"{path}[{i}]."))
        return tuple(items)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {path!r} must be an integer, got {value!r}")
        return value
    if isinstance(value, ExponentNumber) and kind == "str":
        value = value.text
    elif kind == "strlist" and isinstance(value, (list, tuple)):
        value = [v.text if isinstance(v, ExponentNumber) else v for v in value]
    elif isinstance(value, ExponentNumber):
        value = float(value)
    elif isinstance(value, (Mapping, list, tuple)):
        value = plain_numbers(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config key {path!r} must be a finite number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"config key {path!r} must be a string, got {value!r}")
        return value
    if kind == "strlist":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {path!r} must be a list of strings, got {value!r}")
        return tuple(value)
    if kind == "list" and f.metadata["nested"] is None:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {path!r} must be a list, got {value!r}")
        return tuple(value)
    if kind == "mapping":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
        return dict(value)
    if kind in ("policy", "trace"):
        if not isinstance(value, (str, Mapping)):
            raise ConfigError(f"config key {path!r} must be a name or a mapping, got {value!r}")
        return value if isinstance(value, str) else dict(value)
    return value


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain YAML-friendly data."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def describe_config(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every configuration key, for documentation and ``gpusim config``."""
    rows = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.metadata["kind"] == "nested":
            rows.extend(describe_config(f.metadata["nested"], key + "."))
            continue
        if f.metadata["kind"] == "list" and f.metadata["nested"] is not None:
            rows.append((key, [], f.metadata["help"]))
            rows.extend(describe_config(f.metadata["nested"], key + "[]."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((key, _plain(default), f.metadata["help"]))
    return rows
