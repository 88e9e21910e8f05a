"""Inference services: what a service is (``ServiceSpec``), its replicas, and the per-request record.

A service runs one model on ``replicas`` replicas of ``devices_per_replica`` devices each (tensor
parallel inside one node). Replicas either batch continuously (``ContinuousBatching``: measured step
times, KV cache from HBM) or serve one request at a time for a drawn service time (``FixedService``,
so the engine can be checked against queueing theory). Requests are routed on arrival by the router
policy, or, with ``dispatch="shared-queue"`` (fixed-service only), wait in one service-wide FIFO queue
that idle replicas take from, as an M/M/c or M/G/1 queue does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError
from sim.platform.hardware import DeviceSpec
from sim.platform.network.collectives import GroupShape
from sim.random import RandomStreams
from sim.serving.disaggregation import PREFILL_REPLICA, REQUEST_COLUMNS, ROLES, ServicePool
from sim.serving.pool_replicas import Clock, DecodeReplica, PrefillReplica
from sim.serving.prefix_cache import PrefixCacheConfig
from sim.serving.profile import load_profile
from sim.serving.profiled_step import ProfiledStepCost
from sim.serving.replica import CACHED_TOKENS, BatchingConfig, BatchingReplica, ReplicaListener
from sim.serving.speculative import SpeculativeDecoding, SpeculativeStepCost
from sim.serving.speculative_replica import SpeculativeReplica
from sim.serving.step_factors import StepFactors, default_step_factors
from sim.serving.step_time import StepCost
from workloads.distributions import Distribution
from workloads.models import LLMSpec
from workloads.requests import RequestTrace

CONTEXT_LIMITS = ("reject", "truncate", "allow")
"""What a service does with a request longer than its model's context (``ServiceSpec.context_limit``)."""

EXCEEDS_MAX_CONTEXT = "exceeds_max_context"
"""The rejection reason of a request longer than the model's context."""


@dataclass(frozen=True)
class ContinuousBatching:
    """vLLM-like replicas. ``factors`` sets the step-time model's factors: a ``StepFactors``, or a mapping of
    some factor names to values that replace the device's defaults (``sim.serving.step_factors``); None keeps
    the defaults. ``profile`` (a CSV path or a DataFrame of measured steps, ``sim.serving.profile``) makes the
    replicas time their steps from that table, interpolated between its points with the factors' model
    (``sim.serving.profiled_step``). ``kv_reserve`` is the fraction of HBM kept for activations and the
    runtime; the rest after the weights holds the KV cache. ``prefix_cache`` turns on prefix caching
    (``sim.serving.prefix_cache``): True, a ``PrefixCacheConfig`` or a mapping ``{eviction: lru, block_tokens: 16}``;
    off by default. ``speculative`` (a ``SpeculativeDecoding`` or a mapping ``{draft, k, acceptance}``) makes the
    replicas decode speculatively (``sim.serving.speculative``); off by default."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    factors: StepFactors | Mapping[str, float] | None = None
    kv_reserve: float = 0.10
    profile: str | Path | pd.DataFrame | None = field(default=None, compare=False)
    prefix_cache: PrefixCacheConfig | Mapping[str, object] | bool | None = None
    speculative: SpeculativeDecoding | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix_cache", PrefixCacheConfig.of(self.prefix_cache))
        if self.speculative is not None:
            object.__setattr__(self, "speculative", SpeculativeDecoding.from_mapping(self.speculative))
        if self.profile is not None:  # read once, now: errors name the file, line and field before the run
            object.__setattr__(self, "_profile_rows", load_profile(self.profile, purpose="a step-time table"))
        if isinstance(self.factors, Mapping):
            default_step_factors("h100-sxm").replace(self.factors)  # names and values checked now, not mid-run
        elif self.factors is not None and not isinstance(self.factors, StepFactors):
            raise ConfigError(f"step_model: expected a StepFactors or a mapping of factors, got {self.factors!r}")
        if not (isinstance(self.kv_reserve, (int, float)) and 0 <= self.kv_reserve < 1):
            raise ConfigError(f"kv_reserve must be a fraction in [0, 1), got {self.kv_reserve!r}")

    def step_factors(self, device: DeviceSpec) -> StepFactors:
        """The factors a replica on ``device`` uses: the device's defaults with this service's overrides."""
        if isinstance(self.factors, StepFactors):
            return self.factors
        return default_step_factors(device.name).replace(self.factors or {})

    def step_cost(self, model: LLMSpec, device: DeviceSpec, devices: int, *,
                  tp_group: GroupShape | None = None) -> StepCost:
        """The step-time model of a replica of ``model`` on ``devices`` devices of type ``device``."""
        cost = StepCost.for_replica(model, device, devices, self.step_factors(device), tp_group=tp_group)
        if self.profile is None:
            return cost
        source = "a DataFrame" if isinstance(self.profile, pd.DataFrame) else str(self.profile)
        return ProfiledStepCost.from_profile(cost, self._profile_rows, source=source)


@dataclass(frozen=True)
class FixedService:
    """Batch size one; each request takes a time drawn from ``service_time`` (seconds)."""

    service_time: Distribution


@dataclass(frozen=True)
class ServiceSpec:
    """An inference service: its requests, model, replicas and latency targets (SLO).

    ``replicas`` start ready at time 0; an autoscaler may move the count within ``[min_replicas,
    max_replicas]`` (``max_replicas`` None: as many as the devices allow). A new replica loads its
    weights at ``load_bandwidth`` bytes/s per device (its shard in parallel) before it accepts requests.
    A request whose prompt plus output exceeds the model's ``max_context`` is, by ``context_limit``, rejected
    with the reason ``exceeds_max_context`` (as serving engines do), ``truncate``d (the prompt keeps its last
    tokens, the output is cut only if it alone reaches the limit), or ``allow``ed as it is.

    ``prefill`` and ``decode`` (``ServicePool``s or mappings of their fields, both or neither) disaggregate the service
    (``sim.serving.disaggregation``): each pool's own replicas, devices, replica range and batching limits then apply,
    and the service's ``replicas``, ``devices_per_replica``, ``min_replicas`` and ``max_replicas`` are not used.
    """

    name: str
    requests: RequestTrace
    replicas: int
    mode: ContinuousBatching | FixedService = field(default_factory=ContinuousBatching)
    model: LLMSpec | None = None
    device: str | None = None
    devices_per_replica: int = 1
    dispatch: str = "route"
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    load_bandwidth: float = 5e9
    context_limit: str = "reject"
    prefill: ServicePool | Mapping[str, Any] | None = None
    decode: ServicePool | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        where = f"service {self.name!r}"
        self._check_pools(where)
        if self.replicas <= 0 or self.devices_per_replica <= 0:
            raise ConfigError(f"{where}: replicas and devices_per_replica must be positive")
        top = self.replicas if self.max_replicas is None else self.max_replicas
        if not 0 <= self.min_replicas <= self.replicas <= top:
            raise ConfigError(f"{where}: need 0 <= min_replicas ({self.min_replicas}) <= replicas ({self.replicas}) "
                              f"<= max_replicas ({self.max_replicas})")
        if not self.load_bandwidth > 0:
            raise ConfigError(f"{where}: load_bandwidth must be positive bytes/s, got {self.load_bandwidth!r}")
        if self.context_limit not in CONTEXT_LIMITS:
            raise ConfigError(f"{where}: context_limit must be one of {', '.join(CONTEXT_LIMITS)}, got "
                              f"{self.context_limit!r}")
        if self.dispatch not in ("route", "shared-queue"):
            raise ConfigError(f"{where}: dispatch must be 'route' or 'shared-queue', got {self.dispatch!r}")
        if self.dispatch == "shared-queue" and not isinstance(self.mode, FixedService):
            raise ConfigError(f"{where}: dispatch 'shared-queue' is for fixed-service replicas")
        if isinstance(self.mode, ContinuousBatching) and not isinstance(self.model, LLMSpec):
            raise ConfigError(f"{where}: continuous batching needs an LLM model (e.g. llama-3.1-8b)")
        if isinstance(self.mode, ContinuousBatching) and isinstance(self.mode.speculative, SpeculativeDecoding):
            assert isinstance(self.model, LLMSpec)
            self.mode.speculative.check_target(self.model, where)
        for key in ("slo_ttft", "slo_tpot"):
            value = getattr(self, key)
            if value is not None and not (value > 0):
                raise ConfigError(f"{where}: {key} must be positive seconds, got {value!r}")

    def _check_pools(self, where: str) -> None:
        if self.prefill is None and self.decode is None:
            return
        for role in ROLES:
            value = getattr(self, role)
            if value is None:
                other = "decode" if role == "prefill" else "prefill"
                raise ConfigError(f"{where}.{role}: a service with a {other} pool needs a {role} pool too")
            object.__setattr__(self, role, ServicePool.of(value, f"{where}.{role}"))
        if not isinstance(self.mode, ContinuousBatching):
            raise ConfigError(f"{where}.prefill: prefill and decode pools are for continuous-batching services")
        if self.mode.speculative is not None:
            raise ConfigError(f"{where}.speculative: speculative decoding with prefill and decode pools is not "
                              "modelled yet; use one or the other")
        if self.dispatch != "route":
            raise ConfigError(f"{where}.dispatch: a service with prefill and decode pools routes its requests")

    @property
    def disaggregated(self) -> bool:
        """Whether the service runs separate prefill and decode pools."""
        return self.prefill is not None

    def pool_spec(self, role: str) -> ServiceSpec:
        """The spec one pool of a disaggregated service runs as: the pool's replicas, devices and batching limits,
        the service's model, requests and targets (the prefix cache on the prefill pool only)."""
        pool = getattr(self, role)
        assert isinstance(pool, ServicePool) and isinstance(self.mode, ContinuousBatching)
        mode = replace(self.mode, batching=pool.batching(self.mode.batching),
                       prefix_cache=self.mode.prefix_cache if role == "prefill" else None)
        return replace(self, replicas=pool.replicas, devices_per_replica=pool.devices_per_replica,
                       device=pool.device if pool.device is not None else self.device,
                       min_replicas=pool.min_replicas, max_replicas=pool.max_replicas, mode=mode, prefill=None,
                       decode=None)


STATUS_WAITING, STATUS_FINISHED, STATUS_REJECTED = 0, 1, 2


class RequestLog:
    """Per-request times of one service as numpy columns (NaN until they happen); ``extra``: the columns replicas
    record by name (``ReplicaListener.record``), which the requests table carries as they are."""

    def __init__(self, n: int) -> None:
        self.admitted = np.full(n, math.nan)
        self.first_token = np.full(n, math.nan)
        self.finish = np.full(n, math.nan)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.kv_evictions = np.zeros(n, dtype=np.int64)
        self.reasons: dict[int, str] = {}
        self.served: dict[int, tuple[int, int]] = {}  # (prompt, output) of requests truncated to the context
        self.over_context = 0  # arrivals longer than the model's context, whatever was done with them
        self.arrived = 0
        self.extra: dict[str, np.ndarray] = {}

    def record(self, request_id: int, column: str, value: float) -> None:
        """Set request ``request_id``'s figure in the extra column ``column`` (created, all NaN, on first use)."""
        values = self.extra.get(column)
        if values is None:
            values = self.extra[column] = np.full(len(self.admitted), math.nan)
        values[request_id] = value

    def reject(self, request_id: int, reason: str) -> None:
        self.status[request_id] = STATUS_REJECTED
        self.reasons[request_id] = reason


class _LogListener(ReplicaListener):
    """Writes one replica's reports into the service's request log."""

    def __init__(self, log: RequestLog, replica_id: int, on_finish: Callable[[float], None],
                 after_finish: Callable[[], None]) -> None:
        self.log = log
        self.replica_id = replica_id
        self.on_finish = on_finish
        self.after_finish = after_finish

    def admitted(self, request_id: int, time: float) -> None:
        if math.isnan(self.log.admitted[request_id]):
            self.log.admitted[request_id] = time
        self.log.replica[request_id] = self.replica_id

    def first_token(self, request_id: int, time: float) -> None:
        self.log.first_token[request_id] = time

    def finished(self, request_id: int, time: float) -> None:
        self.log.finish[request_id] = time
        self.log.status[request_id] = STATUS_FINISHED
        self.on_finish(time)
        self.after_finish()

    def evicted(self, request_id: int, time: float) -> None:
        self.log.kv_evictions[request_id] += 1

    def record(self, request_id: int, column: str, value: float) -> None:
        self.log.record(request_id, column, value)


class _PrefillListener(_LogListener):
    """A prefill replica's reports: admission, the prefilled hand-off, and the release of its KV cache."""

    def __init__(self, log: RequestLog, replica_id: int, on_finish: Callable[[float], None],
                 after_finish: Callable[[], None], on_prefilled: Callable[[int, int, int, int, float], None]) -> None:
        super().__init__(log, replica_id, on_finish, after_finish)
        self.on_prefilled = on_prefilled
        self._prefill_replica = log.extra[PREFILL_REPLICA]  # written once per admission: no look-up by name

    def admitted(self, request_id: int, time: float) -> None:
        admitted = self.log.admitted
        if math.isnan(admitted[request_id]):
            admitted[request_id] = time
        self._prefill_replica[request_id] = self.replica_id

    def prefilled(self, request_id: int, prompt: int, output: int, time: float) -> None:
        self.on_prefilled(self.replica_id, request_id, prompt, output, time)

    def released(self, request_id: int, time: float) -> None:
        self.on_finish(time)
        self.after_finish()


class _DecodeListener(_LogListener):
    """A decode replica's reports. Its requests were admitted first by their prefill replica, which recorded the
    time: joining a decode batch records only the replica."""

    def admitted(self, request_id: int, time: float) -> None:
        self.log.replica[request_id] = self.replica_id


class ContextLimitWarning(UserWarning):
    """Some requests of a service exceed its model's context; says how many and what was done with them."""

    @staticmethod
    def describe(service: ServiceRuntime) -> str:
        spec, log = service.spec, service.log
        assert spec.model is not None
        done = {"reject": f"rejected ({EXCEEDS_MAX_CONTEXT})", "truncate": "truncated to fit",
                "allow": "served past the limit (context_limit: allow)"}[spec.context_limit]
        return (f"service {spec.name!r}: {log.over_context} of {log.arrived} requests exceed "
                f"{spec.model.name}'s max_context of {spec.model.max_context} tokens; {done}")


class FixedServiceReplica:
    """One request at a time; others wait in the replica's FIFO queue (or the service's shared queue)."""

    kv_free_bytes = math.inf
    kv_free_bytes_bounds = (math.inf, math.inf)
    kv_capacity_bytes = math.inf
    prefix = None

    def __init__(self, replica_id: int, draw: Callable[[], float], listener: ReplicaListener,
                 call_at: Callable[[float, Callable[[], None]], None],
                 take_next: Callable[[], tuple[int, int, int] | None] | None = None) -> None:
        self.replica_id = replica_id
        self.draw = draw
        self.listener = listener
        self.call_at = call_at
        self.take_next = take_next
        self.waiting: deque[tuple[int, int, int]] = deque()
        self.current: int | None = None
        self.accepting = True
        self.state = "new"  # new, provisioning, ready, draining, retired
        self.outstanding = 0  # waiting here + in service
        self.busy_seconds = 0.0
        self._serving: tuple[int, int, int] | None = None  # the request in service, with its tokens
        self._version = 0  # bumped by abort: the end of the request in service is then ignored

    @property
    def num_queued(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return 0 if self.current is None else 1

    def abort(self, now: float) -> list[tuple[int, int, int, int, int]]:
        """The replica is lost: its request in service and its queue are handed back as (request_id, prompt,
        output, -1, 0), the one in service first, to be routed again."""
        self._version += 1
        lost = ([] if self.current is None or self._serving is None else [self._serving]) + list(self.waiting)
        self.waiting.clear()
        self.current, self._serving, self.outstanding, self.accepting = None, None, 0, False
        return [(request_id, prompt, output, -1, 0) for request_id, prompt, output in lost]

    def fits(self, prompt: int, output: int) -> bool:
        return True

    def cached_prefix_tokens(self, prefix_id: int) -> int:
        """No KV cache, no prefix cache: 0."""
        return 0

    def arrive(self, request_id: int, prompt: int, output: int, now: float, prefix_id: int = -1,
               prefix_tokens: int = 0) -> None:
        self.waiting.append((request_id, prompt, output))
        self.outstanding += 1
        if self.current is None:
            self._start_next(now)

    def _start_next(self, now: float) -> None:
        if self.waiting:
            nxt: tuple[int, int, int] | None = self.waiting.popleft()
        else:
            nxt = self.take_next() if self.take_next and self.accepting else None
            if nxt is not None:
                self.outstanding += 1
        if nxt is None:
            self.current = None
            return
        request_id = nxt[0]
        self.current = request_id
        self._serving = nxt
        duration = self.draw()
        self.listener.admitted(request_id, now)
        end = now + duration
        version = self._version

        def done() -> None:
            if version != self._version:  # the replica was lost meanwhile
                return
            self.busy_seconds += duration
            self.outstanding -= 1
            self.listener.first_token(request_id, end)
            self.listener.finished(request_id, end)
            self._start_next(end)

        self.call_at(end, done)


class ServiceRuntime:
    """A service's replicas and request log inside one simulation.

    Replicas are numbered in the order they were created and never renumbered: a drained replica stays
    in ``replicas`` (not accepting) so request and replica tables keep their ids.

    One pool of a disaggregated service is a runtime of its own (``role`` ``prefill`` or ``decode``, ``spec`` the
    pool's, ``ServiceSpec.pool_spec``); the two share one request log (``log``), and a prefill runtime hands each
    prefilled request to ``on_prefilled(replica, request, prompt, output, time)`` (``hand_off_to``).
    """

    def __init__(self, spec: ServiceSpec, device: DeviceSpec, call_at: Callable[[float, Callable[[], None]], None],
                 rng: np.random.Generator, on_finish: Callable[[float], None],
                 on_drained: Callable[[ServiceRuntime, int], None], *, coalesce: bool = True,
                 tp_group: Callable[[tuple[int, ...]], GroupShape] | None = None,
                 streams: RandomStreams | None = None, role: str = "", log: RequestLog | None = None,
                 on_prefilled: Callable[[int, int, int, int, float], None] | None = None,
                 clock: Clock | None = None) -> None:
        self.spec = spec
        self.device = device
        self.role = role
        self.label = f"{spec.name}/{role}" if role else spec.name
        """The service's name, with the pool's role for a pool of a disaggregated service (``chat/prefill``)."""
        self.log = log if log is not None else RequestLog(len(spec.requests))
        self.on_prefilled = on_prefilled
        self._clock = clock
        self.on_ready: list[Callable[[float], None]] = []  # called when a replica becomes ready
        self.shared: deque[tuple[int, int, int]] = deque()
        self.replicas: list[BatchingReplica | FixedServiceReplica] = []
        self.devices: list[tuple[int, ...]] = []
        self.created: list[float] = []  # when each replica got its devices
        self.ready: list[float] = []  # when it started accepting requests
        self.retired: list[float] = []  # when it gave its devices back (NaN while it holds them)
        self._call_at = call_at
        self._on_finish = on_finish
        self._on_drained = on_drained
        self._coalesce = coalesce
        self.pool = -1  # the cluster pool its replicas live on (set by the engine)
        self.slots: list[tuple[int, ...]] = []  # reserved free device sets for scale-ups (headroom co-location)
        self.ended = False  # the last request arrived and finished: replicas retired, devices given back
        mode = spec.mode
        self.cost: StepCost | None = None  # on one scale-up domain; a replica elsewhere gets its own
        self.factors: StepFactors | None = None
        self._tp_group = tp_group
        self._costs: dict[GroupShape, StepCost] = {}
        self._speculative_costs: dict[GroupShape | None, SpeculativeStepCost] = {}
        self.speculation_key = 0  # the key of the service's acceptance draws (``speculative:NAME`` stream)
        self.kv_tokens = 0
        self._draw: Callable[[], float] | None = None
        if isinstance(mode, FixedService):
            def draw() -> float:
                value = float(mode.service_time.sample(rng, 1)[0])
                if not (value >= 0 and math.isfinite(value)):
                    raise ConfigError(f"service {spec.name!r}: service_time drew {value!r}")
                return value

            self._draw = draw
        else:
            model = spec.model
            assert isinstance(model, LLMSpec)
            self.factors = mode.step_factors(device)
            self.cost = mode.step_cost(model, device, spec.devices_per_replica)
            hbm = device.memory_bytes * spec.devices_per_replica
            weights, per_token, what = model.weight_bytes, model.kv_bytes_per_token, f"model {model.name}"
            draft = mode.speculative.draft_model if mode.speculative is not None else None
            if draft is not None:  # the draft's weights and its own KV cache share the replica's HBM
                weights, per_token = weights + draft.weight_bytes, per_token + draft.kv_bytes_per_token
                what = f"model {model.name} with its draft {draft.name}"
            kv_bytes = hbm * (1 - mode.kv_reserve) - weights
            if kv_bytes <= per_token:
                raise ConfigError(
                    f"service {spec.name!r}{f', {role} pool' if role else ''}: {what} ({weights / 1e9:.1f} GB of "
                    f"weights) does "
                    f"not fit in a replica of {spec.devices_per_replica} x {device.name} "
                    f"({hbm / 1e9:.1f} GB HBM, {mode.kv_reserve:.0%} reserved)")
            self.kv_tokens = int(kv_bytes // per_token)
            if mode.prefix_cache is not None:  # the column is there even if no request gets admitted
                self.log.extra[CACHED_TOKENS] = np.full(len(spec.requests), math.nan)
            if role:  # so are the disaggregation columns
                for column in REQUEST_COLUMNS:
                    self.log.extra.setdefault(column, np.full(len(spec.requests), math.nan))
            if mode.speculative is not None:
                stream = streams[f"speculative:{spec.name}"] if streams is not None else rng
                self.speculation_key = int(stream.integers(0, 2**63))

    def fit_context(self, request_id: int, prompt: int, output: int) -> tuple[int, int] | None:
        """The (prompt, output) a request is served with under ``context_limit``, or None when it is rejected
        (recorded with the reason ``exceeds_max_context``)."""
        model = self.spec.model
        if model is None or not isinstance(self.spec.mode, ContinuousBatching) or prompt + output <= model.max_context:
            return prompt, output
        self.log.over_context += 1
        policy = self.spec.context_limit
        if policy == "allow":
            return prompt, output
        if policy == "reject":
            self.log.reject(request_id, EXCEEDS_MAX_CONTEXT)
            return None
        limit = model.max_context
        output = min(output, limit - 1)  # at least one prompt token stays
        prompt = min(prompt, limit - output)
        self.log.served[request_id] = (prompt, output)
        return prompt, output

    @property
    def active(self) -> int:
        """Replicas accepting requests."""
        return sum(1 for r in self.replicas if r.accepting)

    @property
    def provisioning(self) -> int:
        """Replicas that hold devices but are still loading weights."""
        return sum(1 for r in self.replicas if r.state == "provisioning")

    def add_replica(self, devices: tuple[int, ...], now: float,
                    ready_at: float) -> BatchingReplica | FixedServiceReplica:
        """A new replica on ``devices``; it accepts requests from ``ready_at`` on."""
        r = len(self.replicas)
        listener: _LogListener
        drained = partial(self._check_drained, r)
        if self.role == "prefill":
            assert self.on_prefilled is not None
            listener = _PrefillListener(self.log, r, self._on_finish, drained, self.on_prefilled)
        else:
            kind = _DecodeListener if self.role == "decode" else _LogListener
            listener = kind(self.log, r, self._on_finish, drained)
        replica: BatchingReplica | FixedServiceReplica
        if self._draw is not None:
            take = self._take_shared if self.spec.dispatch == "shared-queue" else None
            replica = FixedServiceReplica(r, self._draw, listener, self._call_at, take)
        else:
            mode = self.spec.mode
            assert isinstance(mode, ContinuousBatching) and self.cost is not None
            if isinstance(mode.speculative, SpeculativeDecoding):
                replica = SpeculativeReplica(r, self._speculative_cost_on(devices), self.kv_tokens, mode.batching,
                                             listener, self._call_at, acceptance=mode.speculative.acceptance,
                                             key=self.speculation_key, coalesce=self._coalesce,
                                             prefix_cache=mode.prefix_cache)  # type: ignore[arg-type]
            else:
                kind = {"prefill": PrefillReplica, "decode": DecodeReplica}.get(self.role, BatchingReplica)
                replica = kind(r, self._cost_on(devices), self.kv_tokens, mode.batching, listener,
                               self._call_at, coalesce=self._coalesce,
                               prefix_cache=mode.prefix_cache)  # type: ignore[arg-type]
                if isinstance(replica, DecodeReplica) and self._clock is not None:
                    replica.clock = self._clock
        self.replicas.append(replica)
        self.devices.append(devices)
        self.created.append(now)
        self.ready.append(ready_at)
        self.retired.append(math.nan)
        if ready_at <= now:
            self._make_ready(r, now)
        else:
            replica.accepting = False
            replica.state = "provisioning"
            self._call_at(ready_at, lambda: self._make_ready(r, ready_at))
        return replica

    def hand_off_to(self, on_prefilled: Callable[[int, int, int, int, float], None]) -> None:
        """Where this prefill pool's replicas, present and future, hand their prefilled requests (the hand-off to the
        decode pool, made once both pools exist)."""
        self.on_prefilled = on_prefilled
        for replica in self.replicas:
            assert isinstance(replica.listener, _PrefillListener)
            replica.listener.on_prefilled = on_prefilled

    def _cost_on(self, devices: tuple[int, ...]) -> StepCost:
        """The step cost of a replica on ``devices``: its tensor-parallel all-reduces run on their links."""
        assert self.cost is not None and self.factors is not None and isinstance(self.spec.model, LLMSpec)
        if self._tp_group is None or len(devices) < 2:
            return self.cost
        group = self._tp_group(devices)
        if group not in self._costs:
            self._costs[group] = self.spec.mode.step_cost(self.spec.model, self.device, len(devices), tp_group=group)
        return self._costs[group]

    def _speculative_cost_on(self, devices: tuple[int, ...]) -> SpeculativeStepCost:
        """The step cost of a speculative replica on ``devices``: the target's, and the draft's on the same links."""
        mode = self.spec.mode
        assert isinstance(mode, ContinuousBatching) and isinstance(mode.speculative, SpeculativeDecoding)
        assert self.factors is not None
        group = self._tp_group(devices) if self._tp_group is not None and len(devices) > 1 else None
        cost = self._speculative_costs.get(group)
        if cost is None:
            option = mode.speculative
            draft = None if option.draft_model is None else StepCost.for_replica(
                option.draft_model, self.device, len(devices), self.factors, tp_group=group)
            cost = self._speculative_costs[group] = SpeculativeStepCost.build(self._cost_on(devices), draft, option)
        return cost

    def _make_ready(self, r: int, now: float) -> None:
        replica = self.replicas[r]
        if replica.state == "provisioning" or replica.state == "new":
            replica.state = "ready"
            replica.accepting = True
            if self.spec.dispatch == "shared-queue" and replica.outstanding == 0 and self.shared:
                request_id, prompt, output = self.shared.popleft()
                replica.arrive(request_id, prompt, output, now)
            for hook in self.on_ready:
                hook(now)

    def drain(self, r: int, now: float) -> None:
        """Stop routing to replica ``r``; it gives its devices back once its requests are done."""
        replica = self.replicas[r]
        replica.accepting = False
        replica.state = "draining"
        self._check_drained(r)

    def _check_drained(self, r: int) -> None:
        replica = self.replicas[r]
        if replica.state == "draining" and replica.outstanding == 0:
            replica.state = "retired"
            self._on_drained(self, r)

    def _take_shared(self) -> tuple[int, int, int] | None:
        return self.shared.popleft() if self.shared else None

    def dispatch_shared(self, request_id: int, prompt: int, output: int, now: float) -> None:
        """Shared-queue dispatch: an idle replica takes the request now, else it joins the service queue."""
        for replica in self.replicas:
            if replica.accepting and replica.outstanding == 0:
                replica.arrive(request_id, prompt, output, now)
                return
        self.shared.append((request_id, prompt, output))
