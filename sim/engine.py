"""The simulation engine: one ``Simulation`` owns a run's clock, cluster state, policies and records.

Event-driven on simpy: the clock jumps from event to event (arrivals, completions, a policy's own
timers) and the scheduler runs once per instant at which something changed. Training jobs progress as
fluids: a running job's completion is one event at ``progress_start + remaining / rate``; a preemption
bumps the job's version so its stale completion event is ignored.

Same-time order (``EventOrder``): completions, then arrivals, then policy timers, then one scheduling
pass; events of one kind at one instant in the order they were created.
"""

from __future__ import annotations

import enum
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from sim import registry
from sim.accounting import AccountingOptions
from sim.allocation import FreeDevices
from sim.cluster import Cluster
from sim.contracts import Assignment, ClusterView, Decision, Placer, Scheduler
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError
from sim.fragmentation import fragmentation, gang_capacity
from sim.hardware import get_device
from sim.job_state import JobRecord, JobStatus, JobView
from sim.network.collectives import GroupShape
from sim.network.model import NetworkModel, NetworkOptions, placed_groups
from sim.progress import Progress
from sim.random import RandomStreams, SeedLike
from sim.results import Results
from sim.serving.contracts import Autoscaler, Colocation, Router, ServiceView
from sim.serving.service import ContextLimitWarning, ServiceRuntime, ServiceSpec
from sim.training_step import Parallelism
from workloads.jobs import JobTrace, TrainingJob


class EventOrder(enum.IntEnum):
    """Priority of same-time events (lower first)."""

    FINISH = 10
    ARRIVAL = 20
    TIMER = 30
    SCHEDULE = 40


@dataclass(frozen=True)
class PreemptionCost:
    """Seconds a preempted job loses: checkpoint on preemption plus restore, both charged when it resumes."""

    checkpoint_s: float = 30.0
    restore_s: float = 30.0

    def __post_init__(self) -> None:
        for key in ("checkpoint_s", "restore_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"sim.preemption.{key} must be a finite number >= 0, got {value!r}")

    @property
    def total(self) -> float:
        return float(self.checkpoint_s + self.restore_s)


class _At(Event):
    """An already-triggered simpy event at ``now + delay`` with an explicit same-time priority."""

    def __init__(self, env: simpy.Environment, delay: float, order: EventOrder, callback: Callable[[Event], None]):
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        env.schedule(self, order, delay)


# Once every request of a service has arrived, its autoscaler stops after this many ticks in a row that
# changed nothing (a scale-up that can never find devices cannot keep the run alive). The service itself
# ends when its last request finishes.
QUIET_TICKS = 100

FRAGMENTATION_SIZE = 8
"""Gang size the timeline's ``fragmentation`` column is measured for (the share of free devices unusable by it)."""


def _tightest_node(free: FreeDevices, pool: int, count: int) -> int | None:
    """The node of ``pool`` with the fewest free devices that still has ``count`` (lowest id on ties), so
    replicas fill partly used nodes and leave whole nodes to large training gangs."""
    for k in range(count, free.cluster.pools[pool].devices_per_node + 1):
        node = free.lowest_node_with(pool, k)
        if node >= 0:
            return node
    return None


class _ScalingState:
    """What the engine remembers between a service's autoscaling ticks."""

    __slots__ = ("blocked", "last_arrivals", "last_busy", "last_tick", "max_replicas", "quiet_ticks", "ticking")

    def __init__(self) -> None:
        self.ticking = False
        self.quiet_ticks = 0
        self.last_tick = 0.0
        self.last_busy = 0.0
        self.last_arrivals = 0
        self.blocked = 0
        self.max_replicas = 0


class _RequestView:
    """What a router sees of the request it routes."""

    __slots__ = ("arrival", "output_tokens", "prompt_tokens", "request_id")

    def __init__(self, request_id: int, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.request_id = request_id
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens


class Simulation:
    """A cluster, a set of training jobs and the policies that schedule them; ``run()`` returns ``Results``.

    ``scheduler`` and ``placer`` are registered names (``"las"``), mappings with parameters
    (``{"name": "las", "thresholds": [3600]}``) or policy instances. ``seed`` is an int, a
    ``SeedSequence`` or a ``Generator``; policies draw from named streams (``placement``), never from
    the workload's, so compared policies see the same jobs.
    """

    def __init__(
        self,
        cluster: Cluster,
        jobs: JobTrace | Iterable[TrainingJob],
        *,
        scheduler: str | Mapping[str, Any] | Scheduler = "fifo",
        placer: str | Mapping[str, Any] | Placer = "first-fit",
        seed: SeedLike = 0,
        preemption: PreemptionCost | None = None,
        horizon: float | None = None,
        record_events: bool = False,
        progress: bool = False,
        max_idle_passes: int = 10_000,
        metadata: Mapping[str, Any] | None = None,
        services: Sequence[ServiceSpec] = (),
        router: str | Mapping[str, Any] | Router = "round-robin",
        autoscaler: str | Mapping[str, Any] | Autoscaler = "static",
        colocation: str | Mapping[str, Any] | Colocation = "shared",
        sample_interval: float = 60.0,
        coalesce: bool = True,
        network: NetworkOptions | Mapping[str, Any] | bool | None = None,
        fragmentation: bool | None = None,
        accounting: AccountingOptions | None = None,
    ) -> None:
        self.cluster = cluster
        if accounting is not None and not isinstance(accounting, AccountingOptions):
            raise ConfigError(f"accounting must be a sim.accounting.AccountingOptions, got {type(accounting).__name__}")
        self.accounting = accounting or AccountingOptions()
        self.network: NetworkModel | None = None
        if network is not None and network is not False:
            options = (network if isinstance(network, NetworkOptions) else NetworkOptions() if network is True
                       else NetworkOptions(**network))
            self.network = NetworkModel(cluster, options)
        # fragmentation of the free devices at every timeline record (default: with the network model)
        self.track_fragmentation = self.network is not None if fragmentation is None else bool(fragmentation)
        self.fragmentation_samples: list[tuple[float, dict[int, int]]] = []
        self.env = simpy.Environment()
        self.streams = RandomStreams(seed)
        self.scheduler: Scheduler = registry.create("scheduler", scheduler, where="policy.scheduler")  # type: ignore[assignment]
        self.placer: Placer = registry.create("placer", placer, where="policy.placer")  # type: ignore[assignment]
        self.preemption = preemption or PreemptionCost()
        if horizon is not None and not (isinstance(horizon, (int, float)) and horizon > 0):
            raise ConfigError(f"sim.horizon must be a positive number of seconds, got {horizon!r}")
        self.horizon = math.inf if horizon is None else float(horizon)
        self.metadata = dict(metadata or {})
        self.max_idle_passes = max_idle_passes

        trace = jobs if isinstance(jobs, JobTrace) else None
        specs = list(trace.jobs if trace is not None else jobs)
        specs.sort(key=lambda j: j.arrival)
        ids = [j.job_id for j in specs]
        if len(set(ids)) != len(ids):
            raise ConfigError("workload: job ids must be unique")
        self.trace = trace
        self.jobs = specs
        if self.network is not None:
            for spec in specs:
                if spec.model is not None:  # a model job no pool can run: a ConfigError naming it, before the run
                    allowed = None if spec.allowed_devices is None else {get_device(d).name
                                                                         for d in spec.allowed_devices}
                    for p, pool in enumerate(cluster.pools):
                        if cluster.pool_devices[p] >= spec.gpus and (allowed is None or pool.device in allowed):
                            self.network.reference_step(spec, p)
        self.records: list[JobRecord] = []
        self.queue: dict[int, JobRecord] = {}
        self._entered: list[JobView] = []  # jobs that entered the queue since the last scheduling pass
        self.running: dict[int, JobRecord] = {}
        self.free = FreeDevices(cluster)
        self._placement_rng = self.streams["placement"]
        self._device_names: dict[str, str] = {}
        self._next_job = 0
        self._pass_pending = False
        self._timer_token = 0
        self._timer_pending = False
        self._idle_passes = 0
        self._finished = 0
        self._last_change = 0.0
        self._allocated = 0
        self._has_run = False
        self.events = 0
        self.end_time = 0.0
        self.timeline: tuple[list[float], list[int], list[int], list[int]] = ([], [], [], [])
        self.event_log: list[tuple[float, str, int, tuple[int, ...]]] | None = [] if record_events else None
        self._progress = Progress(len(specs), enabled=progress)
        self.router: Router = registry.create("router", router, where="policy.router")  # type: ignore[assignment]
        self._autoscaler_spec = autoscaler
        self._autoscalers: list[Autoscaler] = []
        self._scaling: list[_ScalingState] = []
        self.replica_timeline: list[tuple[float, str, int, int, int]] = []
        if not sample_interval > 0:
            raise ConfigError(f"sim.sample_interval must be positive seconds, got {sample_interval!r}")
        self.sample_interval = float(sample_interval)
        self.replica_samples: list[tuple[float, str, int, int, int, float]] = []
        self._routing_rng = self.streams["routing"]
        self._reserved = 0
        self.services: list[ServiceRuntime] = []
        self._next_request: list[int] = []
        self.colocation: Colocation = registry.create("colocation", colocation, where="policy.colocation")  # type: ignore[assignment]
        self._partition: FreeDevices | None = None
        self._partition_nodes: tuple[int, ...] = ()
        self.preempted_for_inference = 0
        if services:
            self._set_partition(services)
        for spec in services:
            self._add_service(spec, coalesce)
            scaler: Autoscaler = registry.create("autoscaler", autoscaler, where="policy.autoscaler")  # type: ignore[assignment]
            self._autoscalers.append(scaler)
            state = self._scaling[-1]
            state.max_replicas = spec.max_replicas if spec.max_replicas is not None else (
                self._devices_for_inference(self.services[-1].pool) // spec.devices_per_replica)
            self._record_replicas(self.services[-1])
        if services:
            self._top_up_headroom()

    # ----------------------------------------------------------------------------- running
    def run(self) -> Results:
        """Run to the last event (or the horizon) and return the results."""
        if self._has_run:
            raise RuntimeError("a Simulation runs once; build a new one for another run")
        self._has_run = True
        wall = time.perf_counter()
        self._schedule_next_arrival()
        if self.services:
            self._at(0.0, EventOrder.TIMER, self._sample_replicas)
        for s in range(len(self.services)):
            self._schedule_next_request(s)
            if not len(self.services[s].spec.requests):
                self._at(0.0, EventOrder.TIMER, lambda _event, s=s: self._end_service(s))
            if self._autoscalers[s].name != "static":
                self._scaling[s].ticking = True
                self._at(self._autoscalers[s].interval, EventOrder.TIMER, lambda _event, s=s: self._autoscale(s))
        env, horizon, progress = self.env, self.horizon, self._progress
        step, peek = env.step, env.peek
        events = 0
        while True:
            t = peek()
            if t > horizon or t == math.inf:
                break
            step()
            events += 1
            if not events & 0x3FFF:
                progress.update(self._finished)
        progress.close(self._finished)
        self.events = events
        self.end_time = horizon if peek() != math.inf else self._last_change
        for record in self.running.values():  # still running at the horizon: account up to it
            held = self.end_time - record.run_start
            if self.end_time < record.progress_start:
                record.overhead_total -= record.progress_start - self.end_time
            record.device_seconds += held * len(record.devices)
            record.attained += held * len(record.devices)
        for service in self.services:
            if service.log.over_context:
                warnings.warn(ContextLimitWarning.describe(service), ContextLimitWarning, stacklevel=2)
        return Results.from_simulation(self, wall_seconds=time.perf_counter() - wall)

    @property
    def not_arrived(self) -> list[TrainingJob]:
        """The workload's jobs that had not arrived when the run stopped (at the horizon), in arrival order."""
        return self.jobs[self._next_job:]

    # ----------------------------------------------------------------------------- serving
    def _add_service(self, spec: ServiceSpec, coalesce: bool) -> None:
        """Pick the service's pool, place its initial replicas (first fit, one node each), ready at time 0."""
        wanted = None if spec.device is None else self._canonical(spec.device)
        pools = [p for p, pool in enumerate(self.cluster.pools)
                 if (wanted is None or pool.device == wanted) and pool.devices_per_node >= spec.devices_per_replica]
        if not pools:
            raise ConfigError(f"service {spec.name!r}: no pool of {wanted or 'any device'} with "
                              f"{spec.devices_per_replica} devices in a node on cluster {self.cluster.name!r}")
        pool = max(pools, key=lambda p: self.free.pool_free[p]) if wanted is None else pools[0]

        def call_at(time: float, fn: Callable[[], None]) -> None:
            self._at(time - self.env.now, EventOrder.FINISH, lambda _event: fn())

        index = len(self.services)
        runtime = ServiceRuntime(spec, self.cluster.device_specs[pool], call_at,
                                 self.streams[f"service-time:{spec.name}"],
                                 lambda time: self._request_finished(index, time),
                                 self._replica_drained, coalesce=coalesce,
                                 tp_group=lambda devices: self._tensor_group(pool, devices))
        runtime.pool = pool
        for r in range(spec.replicas):
            devices = self._replica_devices(pool, spec.devices_per_replica)
            if devices is None:
                raise ConfigError(f"service {spec.name!r}: no room for replica {r} ({spec.devices_per_replica} x "
                                  f"{self.cluster.pools[pool].device} in one node) on cluster {self.cluster.name!r}")
            runtime.add_replica(devices, 0.0, 0.0)
        self.services.append(runtime)
        self._next_request.append(0)
        self._scaling.append(_ScalingState())

    def _tensor_group(self, pool: int, devices: tuple[int, ...]) -> GroupShape:
        """Where a tensor-parallel replica's ranks sit on the interconnect (its all-reduces' links)."""
        group = placed_groups(self.cluster.topology, self.cluster.device_specs[pool],
                              Parallelism(tensor=len(devices)), devices, static=True).tensor
        assert group is not None
        return group

    def _devices_for_inference(self, pool: int) -> int:
        """Devices of ``pool`` replicas could ever use: the pool, or its part of the inference partition."""
        if self._partition is None:
            return self.cluster.pool_devices[pool]
        return sum(self.cluster.node_size[n] for n in self._partition_nodes if self.cluster.node_pool[n] == pool)

    def _set_partition(self, services: Sequence[ServiceSpec]) -> None:
        """Nodes the co-location policy sets aside for inference leave training's free devices for good."""
        pools = []
        for spec in services:
            wanted = None if spec.device is None else self._canonical(spec.device)
            pools += [p for p, pool in enumerate(self.cluster.pools) if wanted is None or pool.device == wanted]
        nodes = self.colocation.inference_nodes(self.cluster, pools)
        if not nodes:
            return
        if len(set(nodes)) != len(nodes) or not all(0 <= n < self.cluster.num_nodes for n in nodes):
            raise PolicyError(f"co-location {self.colocation.name!r} sets aside nodes {nodes}: not distinct node ids")
        partition = FreeDevices(self.cluster)
        partition.take(d for n in range(self.cluster.num_nodes) if n not in set(nodes)
                       for d in self.cluster.devices_of_node(n))
        for n in nodes:
            self.free.take(self.cluster.devices_of_node(n))
            self._reserved += self.cluster.node_size[n]
        self._partition = partition
        self._partition_nodes = tuple(nodes)

    def _replica_devices(self, pool: int, count: int,
                         runtime: ServiceRuntime | None = None) -> tuple[int, ...] | None:
        """Take ``count`` devices in one node of ``pool`` (first fit) for a replica: a reserved headroom
        set if the service has one, else from the inference partition if there is one, else from the free
        devices, preempting training if the co-location policy says so. None if there is no room."""
        if runtime is not None and runtime.slots:
            return runtime.slots.pop()
        free = self._partition or self.free
        node = _tightest_node(free, pool, count)
        if node is None and self._partition is None and self.running:
            self._preempt_for_replica(pool, count)
            node = _tightest_node(free, pool, count)
        if node is None:
            return None
        devices = free.free_on(node)[:count]
        free.take(devices)
        if self._partition is None:
            self._reserved += count
        return devices

    def _preempt_for_replica(self, pool: int, count: int) -> None:
        name = self.colocation.name
        now = self.env.now
        running = [r.view for r in self.running.values()]
        scheduler = self.scheduler
        try:
            keys = [scheduler.priority(job, now) for job in running]
            if keys and keys[0] is not None:  # lowest training priority first
                order = sorted(range(len(running)), key=keys.__getitem__, reverse=True)
                running = [running[i] for i in order]
        except GpusimError:
            raise
        except Exception as exc:
            raise PolicyError(f"scheduler {scheduler.name!r} raised {exc!r} ranking running jobs") from exc
        try:
            victims = tuple(self.colocation.victims(pool, count, self.free, running, self.cluster, now))
        except GpusimError:
            raise
        except Exception as exc:
            raise PolicyError(f"co-location {name!r} raised {exc!r} choosing training jobs to preempt") from exc
        if not victims:
            return
        records = []
        for job_id in victims:
            record = self.running.get(job_id)
            if record is None or record in records:
                raise PolicyError(f"co-location {name!r} preempts job {job_id!r}, which is not running (or twice)")
            records.append(record)
        trial = self.free.copy()
        for record in records:
            trial.give(record.devices)
        if next(trial.nodes_with(pool, count), None) is None:
            raise PolicyError(f"co-location {name!r} preempts jobs {list(victims)}, which frees no node of pool "
                              f"{self.cluster.pools[pool].name!r} with {count} devices for a replica")
        for record in records:
            self._preempt(record)
        self.preempted_for_inference += len(records)
        self._request_pass()

    def _top_up_headroom(self) -> None:
        """Refill each service's reserve of replica-sized free device sets (headroom co-location)."""
        want = self.colocation.headroom_slots()
        if not want or self._partition is not None:
            return
        for runtime in self.services:
            count = runtime.spec.devices_per_replica
            while len(runtime.slots) < want and not runtime.ended:
                node = _tightest_node(self.free, runtime.pool, count)
                if node is None:
                    break
                devices = self.free.free_on(node)[:count]
                self.free.take(devices)
                self._reserved += count
                runtime.slots.append(devices)

    def _replica_drained(self, runtime: ServiceRuntime, r: int) -> None:
        """A drained replica gives its devices back (to training, or to a later replica)."""
        devices = runtime.devices[r]
        if self._partition is not None:
            self._partition.give(devices)
        else:
            self.free.give(devices)
            self._reserved -= len(devices)
        runtime.retired[r] = self.env.now
        self._record_replicas(runtime)
        self._request_pass()

    # ----------------------------------------------------------------------------- autoscaling
    def _autoscale(self, s: int) -> None:
        runtime, scaler, state = self.services[s], self._autoscalers[s], self._scaling[s]
        if runtime.ended:
            return
        spec, now = runtime.spec, self.env.now
        outstanding = sum(r.outstanding for r in runtime.replicas) + len(runtime.shared)
        ready = [r for r in runtime.replicas if r.state == "ready"]
        busy = sum(r.busy_seconds for r in runtime.replicas)
        elapsed = now - state.last_tick
        fraction = (busy - state.last_busy) / (elapsed * len(ready)) if ready and elapsed > 0 else 0.0
        view = ServiceView(
            name=spec.name, now=now, replicas=runtime.replicas, ready=len(ready), provisioning=runtime.provisioning,
            queued=sum(r.queued for r in runtime.replicas) + len(runtime.shared), outstanding=outstanding,
            arrivals=runtime.log.arrived - state.last_arrivals, busy_fraction=min(1.0, max(0.0, fraction)),
            min_replicas=spec.min_replicas, max_replicas=state.max_replicas)
        state.last_tick, state.last_busy, state.last_arrivals = now, busy, runtime.log.arrived
        try:
            target = scaler.target(view)
        except GpusimError:
            raise
        except Exception as exc:
            raise PolicyError(f"autoscaler {scaler.name!r} raised {exc!r} for service {spec.name!r}") from exc
        if (isinstance(target, bool) or not isinstance(target, (int, np.integer))
                or not spec.min_replicas <= target <= state.max_replicas):
            raise PolicyError(f"autoscaler {scaler.name!r} asks for {target!r} replicas of service {spec.name!r}; "
                              f"allowed: {spec.min_replicas}..{state.max_replicas}")
        changed = self._scale_to(runtime, int(target), state)
        arrived = self._next_request[s] >= len(spec.requests)
        state.quiet_ticks = state.quiet_ticks + 1 if arrived and not changed else 0
        if state.quiet_ticks >= QUIET_TICKS:
            state.ticking = False  # every request is in and nothing changes any more (or nothing can)
            return
        self._at(scaler.interval, EventOrder.TIMER, lambda _event: self._autoscale(s))

    def _scale_to(self, runtime: ServiceRuntime, target: int, state: _ScalingState) -> bool:
        """Add or drain replicas towards ``target``; whether anything changed."""
        now, spec = self.env.now, runtime.spec
        live = [r for r in runtime.replicas if r.state in ("new", "provisioning", "ready")]
        before = len(runtime.replicas), sum(r.state == "draining" for r in runtime.replicas)
        if target > len(live):
            model = spec.model
            delay = 0.0 if model is None else model.weight_bytes / (spec.devices_per_replica * spec.load_bandwidth)
            for _ in range(target - len(live)):
                devices = self._replica_devices(runtime.pool, spec.devices_per_replica, runtime)
                if devices is None:
                    state.blocked += 1  # no free devices: the co-location policy decides whether to take some
                    break
                runtime.add_replica(devices, now, now + delay)
        elif target < len(live):
            # drain the ones still loading first, then the least loaded, newest first
            order = sorted(live, key=lambda r: (r.state != "provisioning", r.outstanding, -r.replica_id))
            for replica in order[: len(live) - target]:
                runtime.drain(replica.replica_id, now)
        self._record_replicas(runtime)
        return (len(runtime.replicas), sum(r.state == "draining" for r in runtime.replicas)) != before or (
            target < len(live))

    def _sample_replicas(self, _event: Event) -> None:
        """Every ``sample_interval`` while serving goes on: each live replica's queue, batch and KV use."""
        now = self.env.now
        for runtime in self.services:
            for replica in runtime.replicas:
                if replica.state in ("ready", "draining"):
                    capacity = getattr(replica, "kv_capacity", 0)
                    kv = replica.kv_used / capacity if capacity else math.nan  # type: ignore[union-attr]
                    self.replica_samples.append((now, runtime.spec.name, replica.replica_id, replica.queued,
                                                 replica.running, kv))
        if self._serving_may_free_devices():
            self._at(self.sample_interval, EventOrder.TIMER, self._sample_replicas)

    def _record_replicas(self, runtime: ServiceRuntime) -> None:
        counts = {"ready": 0, "provisioning": 0, "draining": 0}
        for r in runtime.replicas:
            if r.state in counts:
                counts[r.state] += 1
        row = (self.env.now, runtime.spec.name, counts["ready"], counts["provisioning"], counts["draining"])
        timeline = self.replica_timeline
        if timeline and timeline[-1][:2] == row[:2]:
            timeline[-1] = row  # one row per service and time: the state once that moment's changes are done
        else:
            timeline.append(row)

    def _request_finished(self, s: int, time: float) -> None:
        self._last_change = max(self._last_change, time)
        if self._next_request[s] >= len(self.services[s].spec.requests):
            self._at(0.0, EventOrder.TIMER, lambda _event: self._end_service(s))

    def _end_service(self, s: int) -> None:
        """Once a service's last request has arrived and nothing is outstanding, the service is over: its
        replicas retire and its reserved devices go back, so training is not left short of devices that
        serve nobody."""
        runtime = self.services[s]
        if runtime.ended or runtime.shared or any(r.outstanding for r in runtime.replicas):
            return
        runtime.ended = True
        self._scaling[s].ticking = False
        for replica in runtime.replicas:
            if replica.state in ("new", "provisioning", "ready"):
                runtime.drain(replica.replica_id, self.env.now)  # nothing outstanding: retires at once
        for devices in runtime.slots:
            self.free.give(devices)
            self._reserved -= len(devices)
        runtime.slots.clear()
        self._record_replicas(runtime)
        self._request_pass()

    def _schedule_next_request(self, s: int) -> None:
        requests = self.services[s].spec.requests
        i = self._next_request[s]
        if i < len(requests):
            delay = max(0.0, float(requests.arrival[i]) - self.env.now)
            self._at(delay, EventOrder.ARRIVAL, lambda _event: self._request_arrive(s))

    def _request_arrive(self, s: int) -> None:
        service = self.services[s]
        requests, log = service.spec.requests, service.log
        i = self._next_request[s]
        self._next_request[s] = i + 1
        log.arrived += 1
        self._last_change = self.env.now
        prompt, output = int(requests.prompt_tokens[i]), int(requests.output_tokens[i])
        self._schedule_next_request(s)
        if i == len(requests) - 1:
            self._at(0.0, EventOrder.TIMER, lambda _event: self._end_service(s))
        served = service.fit_context(i, prompt, output)
        if served is None:
            return
        prompt, output = served
        replicas = service.replicas
        if not replicas[0].fits(prompt, output):
            capacity = replicas[0].kv_capacity  # type: ignore[union-attr]
            log.reject(i, f"exceeds_kv_cache: needs {prompt + output} KV tokens, a replica holds {capacity}")
            return
        if service.spec.dispatch == "shared-queue":
            service.dispatch_shared(i, prompt, output, self.env.now)
            return
        view = _RequestView(i, float(requests.arrival[i]), prompt, output)
        try:
            choice = self.router.route(view, replicas, self._routing_rng)
        except GpusimError:
            raise
        except Exception as exc:
            raise PolicyError(f"router {self.router.name!r} raised {exc!r} routing request {i}") from exc
        if choice == -1:
            log.reject(i, "no_replica_accepting")
            return
        if isinstance(choice, bool) or not isinstance(choice, (int, np.integer)) or not 0 <= choice < len(replicas):
            raise PolicyError(f"router {self.router.name!r} chose {choice!r} for request {i}: not a replica index "
                              f"of service {service.spec.name!r} (0..{len(replicas) - 1})")
        replicas[choice].arrive(i, prompt, output, self.env.now)

    def _at(self, delay: float, order: EventOrder, callback: Callable[[Event], None]) -> None:
        _At(self.env, delay, order, callback)

    def _log(self, kind: str, job_id: int, devices: tuple[int, ...] = ()) -> None:
        if self.event_log is not None:
            self.event_log.append((self.env.now, kind, job_id, devices))

    def _request_pass(self) -> None:
        if not self._pass_pending:
            self._pass_pending = True
            self._at(0, EventOrder.SCHEDULE, self._scheduling_pass)

    # ----------------------------------------------------------------------------- arrivals
    def _schedule_next_arrival(self) -> None:
        if self._next_job < len(self.jobs):
            spec = self.jobs[self._next_job]
            self._at(max(0.0, spec.arrival - self.env.now), EventOrder.ARRIVAL, self._arrive)

    def _arrive(self, _event: Event) -> None:
        spec = self.jobs[self._next_job]
        self._next_job += 1
        self._last_change = self.env.now
        record = self._new_record(spec)
        self.records.append(record)
        self._log("arrive", spec.job_id)
        if not record.allowed_pools:
            record.status = JobStatus.UNSCHEDULABLE
            self._log("unschedulable", spec.job_id)
        else:
            self.queue[spec.job_id] = record
            self._entered.append(record.view)
            self._request_pass()
        self._schedule_next_arrival()

    def _canonical(self, device: str) -> str:
        name = self._device_names.get(device)
        if name is None:
            name = self._device_names[device] = get_device(device).name
        return name

    def _new_record(self, spec: TrainingJob) -> JobRecord:
        """Which pools the job may use, and its speed on each relative to its reference device."""
        allowed = None if spec.allowed_devices is None else {self._canonical(d) for d in spec.allowed_devices}
        throughputs = None if spec.throughputs is None else {self._canonical(k): v for k, v in spec.throughputs.items()}
        reference = None if spec.reference_device is None else self._canonical(spec.reference_device)
        pools: list[int] = []
        speeds: dict[int, float] = {}
        largest = 0
        for p, pool in enumerate(self.cluster.pools):
            if allowed is not None and pool.device not in allowed:
                continue
            if throughputs is not None:
                if pool.device not in throughputs:
                    continue
                speed = throughputs[pool.device] / (throughputs.get(reference, 1.0) if reference else 1.0)
            elif reference is None:
                speed = 1.0
            else:
                precision = spec.precision or "bf16"
                speed = self.cluster.device_specs[p].peak(precision) / get_device(reference).peak(precision)
            largest = max(largest, self.cluster.pool_devices[p])
            if self.cluster.pool_devices[p] >= spec.gpus:
                pools.append(p)
                speeds[p] = speed
        record = JobRecord(spec, tuple(pools), speeds)
        if not pools:
            record.reason = (f"gang of {spec.gpus} is larger than any allowed pool (largest {largest})" if largest
                             else "no pool of an allowed device type")
        return record

    # ----------------------------------------------------------------------------- job life
    def _start(self, record: JobRecord, devices: tuple[int, ...], pool: int) -> None:
        now = self.env.now
        overhead = record.pending_overhead
        record.pending_overhead = 0.0
        record.overhead_total += overhead
        record.devices = devices
        record.pool = pool
        record.status = JobStatus.RUNNING
        record.run_start = now
        record.progress_start = now + overhead
        record.rate = record.speeds[pool]
        network = self.network
        if network is not None:
            slowdown = network.start(record.spec, devices, pool, now)
            record.network_level = network.level(record.spec.job_id)
            record.slowdown, record.slowdown_since = slowdown, now
            record.rate /= slowdown
        if math.isnan(record.first_start):
            record.first_start = now
        self.free.take(devices)
        self._allocated += len(devices)
        del self.queue[record.spec.job_id]
        self.running[record.spec.job_id] = record
        record.version += 1
        version = record.version
        delay = overhead + record.remaining / record.rate

        def finish(_event: Event) -> None:
            if record.version == version:
                self._finish(record)

        self._at(delay, EventOrder.FINISH, finish)
        self._log("start", record.spec.job_id, devices)
        if network is not None:
            self._network_changed(now)

    def _network_changed(self, now: float) -> None:
        """Contention re-solved after a start or a stop: jobs whose slowdown changed get a new rate and a
        rescheduled completion (the old one is ignored by its version)."""
        assert self.network is not None
        for job_id, slowdown in self.network.update(now).items():
            record = self.running[job_id]
            record.slowdown_seconds += record.slowdown * (now - record.slowdown_since)
            record.network_seconds += now - record.slowdown_since
            record.slowdown, record.slowdown_since = slowdown, now
            if now > record.progress_start:
                record.remaining = record.remaining_at(now)
                record.progress_start = now
            record.rate = record.speeds[record.pool] / slowdown
            record.version += 1
            version = record.version

            def finish(_event: Event, record: JobRecord = record, version: int = version) -> None:
                if record.version == version:
                    self._finish(record)

            self._at(record.progress_start - now + record.remaining / record.rate, EventOrder.FINISH, finish)

    def _release(self, record: JobRecord) -> None:
        held = self.env.now - record.run_start
        if self.env.now < record.progress_start:  # stopped while restoring: only the restore time spent counts
            record.overhead_total -= record.progress_start - self.env.now
        record.device_seconds += held * len(record.devices)
        record.attained += held * len(record.devices)
        record.last_run = held
        self.free.give(record.devices)
        self._allocated -= len(record.devices)
        del self.running[record.spec.job_id]
        record.devices = ()
        record.version += 1
        if self.network is not None:
            now = self.env.now
            record.slowdown_seconds += record.slowdown * (now - record.slowdown_since)
            record.network_seconds += now - record.slowdown_since
            self.network.stop(record.spec.job_id, now)
            self._network_changed(now)

    def _finish(self, record: JobRecord) -> None:
        self._release(record)
        record.remaining = 0.0
        record.finish = self._last_change = self.env.now
        record.status = JobStatus.FINISHED
        self._finished += 1
        self._log("finish", record.spec.job_id)
        self._request_pass()

    def _preempt(self, record: JobRecord) -> None:
        now = self.env.now
        record.remaining = record.remaining_at(now)
        self._release(record)
        record.status = JobStatus.PREEMPTED
        record.preemptions += 1
        record.pending_overhead = self.preemption.total
        record.queued_since = now
        self.queue[record.spec.job_id] = record
        self._entered.append(record.view)
        self._log("preempt", record.spec.job_id)

    # ----------------------------------------------------------------------------- scheduling
    def _place(self, job: JobView, free: FreeDevices) -> tuple[int, ...] | None:
        """The placer's answer for ``job`` on ``free``, checked to be distinct free device ids."""
        name = self.placer.name
        try:
            devices = self.placer.place(job, free, self._placement_rng)
        except GpusimError:
            raise
        except Exception as exc:
            raise PolicyError(f"placer {name!r} raised {exc!r} placing job {job.job_id}") from exc
        if devices is None:
            return None
        try:
            devices = tuple(devices)
        except TypeError as exc:
            raise PolicyError(f"placer {name!r} returned {devices!r} for job {job.job_id}, not devices") from exc
        n = self.cluster.num_devices
        for d in devices:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d < n:
                raise PolicyError(f"placer {name!r} placed job {job.job_id} on {d!r}, not a device id of this cluster")
            if not free.is_free(d):
                raise PolicyError(f"placer {name!r} placed job {job.job_id} on device {d}, which is not free")
        if len(set(devices)) != len(devices):
            raise PolicyError(f"placer {name!r} placed job {job.job_id} on {devices}: a device given twice")
        if self.network is not None and job.spec.model is not None and len(devices) == job.gpus and (
                not self.network.fits(job.spec, devices)):
            return None  # splits a tensor-parallel group across nodes, which the job forbids: no room here
        return devices

    def _scheduling_pass(self, _event: Event) -> None:
        self._pass_pending = False
        now = self.env.now
        if self.services:
            self._top_up_headroom()  # before training sees the devices that became free
        if self.queue:
            view = ClusterView(now, self.cluster, self.free, self.queue, self.running, self._place,
                               tuple(self._entered), id(self))
            self._entered.clear()  # jobs preempted by this decision enter after the snapshot, for the next pass
            try:
                decision = self.scheduler.schedule(view)
            except GpusimError:
                raise
            except Exception as exc:
                raise PolicyError(f"scheduler {self.scheduler.name!r} raised {exc!r} at t={now}") from exc
            if self.free.total != self.cluster.num_devices - self._allocated - self._reserved:
                raise PolicyError(f"scheduler {self.scheduler.name!r} changed the cluster's free devices directly;"
                                  " view.free is read-only, try placements on view.trial()")
            self._apply(decision)
            self._check_starvation()
        else:
            self._entered.clear()
        self._record_timeline(now)

    def _timer(self, token: int) -> Callable[[Event], None]:
        def fire(_event: Event) -> None:
            if token == self._timer_token:
                self._timer_pending = False
                self._request_pass()
        return fire

    def _apply(self, decision: Decision) -> None:
        """Validate the whole decision, then carry it out; nothing changes if any part is invalid."""
        name = self.scheduler.name
        if not isinstance(decision, Decision):
            raise PolicyError(f"scheduler {name!r} returned {type(decision).__name__}, not a Decision")
        victims = []
        freed: set[int] = set()
        for job_id in decision.preempt:
            record = self.running.get(job_id)
            if record is None:
                raise PolicyError(f"scheduler {name!r} preempts job {job_id}, which is not running")
            if record in victims:
                raise PolicyError(f"scheduler {name!r} preempts job {job_id} twice")
            victims.append(record)
            freed.update(record.devices)
        starts = []
        claimed: set[int] = set()
        started: set[int] = set()
        for assignment in decision.start:
            record, devices, pool = self._validate_start(assignment, freed, claimed)
            if record.spec.job_id in started:
                raise PolicyError(f"scheduler {name!r} starts job {record.spec.job_id} twice")
            started.add(record.spec.job_id)
            starts.append((record, devices, pool))
        wake_at = decision.wake_at
        if wake_at is not None and not (isinstance(wake_at, (int, float)) and wake_at > self.env.now
                                        and math.isfinite(wake_at)):
            raise PolicyError(f"scheduler {name!r} asks to wake at {wake_at!r}, not a finite time after "
                              f"now ({self.env.now})")
        for record in victims:
            self._preempt(record)
        for record, devices, pool in starts:
            self._start(record, devices, pool)
        self._timer_token += 1  # a decision's wake_at replaces any earlier request
        self._timer_pending = wake_at is not None
        if wake_at is not None:
            self._at(wake_at - self.env.now, EventOrder.TIMER, self._timer(self._timer_token))

    def _validate_start(self, assignment: Assignment, freed: set[int],
                        claimed: set[int]) -> tuple[JobRecord, tuple[int, ...], int]:
        name = self.scheduler.name
        if not isinstance(assignment, Assignment):
            raise PolicyError(f"scheduler {name!r}: Decision.start holds {assignment!r}, not an Assignment")
        job_id, devices = assignment.job_id, tuple(assignment.devices)
        what = f"scheduler {name!r} (placer {self.placer.name!r}) starts job {job_id} on devices {devices}"
        record = self.queue.get(job_id)
        if record is None:
            raise PolicyError(f"{what}, but the job is not waiting")
        gpus = record.spec.gpus
        if len(devices) != gpus:
            raise PolicyError(f"{what}: the gang needs exactly {gpus} devices, got {len(devices)}")
        cluster = self.cluster
        for d in devices:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d < cluster.num_devices:
                raise PolicyError(f"{what}: {d!r} is not a device id of this cluster")
            if d in claimed:
                raise PolicyError(f"{what}: device {d} is given twice")
            if not (self.free.is_free(d) or d in freed):
                raise PolicyError(f"{what}: device {d} is busy")
            claimed.add(d)
        nodes = {cluster.device_node[d] for d in devices}
        pools = {cluster.node_pool[n] for n in nodes}
        if len(pools) != 1:
            raise PolicyError(f"{what}: a gang must sit in one pool, got pools {sorted(pools)}")
        pool = pools.pop()
        if pool not in record.allowed_pools:
            raise PolicyError(f"{what}: pool {cluster.pools[pool].name!r} is not allowed for this job")
        if len(nodes) > 1 and gpus <= cluster.pools[pool].devices_per_node:
            raise PolicyError(f"{what}: a gang of {gpus} fits in one node of {cluster.pools[pool].devices_per_node}"
                              f" but was split over nodes {sorted(nodes)}")
        return record, devices, pool

    def _serving_may_free_devices(self) -> bool:
        """Whether inference services still have work or scaling ahead (replicas may yet give devices back)."""
        for s, runtime in enumerate(self.services):
            if self._scaling[s].ticking or self._next_request[s] < len(runtime.spec.requests) or runtime.shared:
                return True
            if any(r.outstanding for r in runtime.replicas):
                return True
        return False

    def _check_starvation(self) -> None:
        """Devices idle, jobs waiting, and nothing left that could change that: stop with a clear error."""
        if self.running or self._next_job < len(self.jobs) or not self.queue or self._serving_may_free_devices():
            self._idle_passes = 0
            return
        self._idle_passes += 1
        if self._timer_pending and self._idle_passes <= self.max_idle_passes:
            return
        waiting = list(self.queue.values())[:5]
        names = ", ".join(f"job {r.spec.job_id} ({r.spec.gpus} gpus)" for r in waiting)
        raise StarvationError(
            f"at t={self.env.now:.6g}: scheduler {self.scheduler.name!r} with placer {self.placer.name!r} starts "
            f"nothing while {len(self.queue)} jobs wait ({names}{', ...' if len(self.queue) > 5 else ''}) and "
            f"{self.free.total} devices are free; no arrival or completion is left to change that")

    def _record_timeline(self, now: float) -> None:
        times, allocated, queued, running = self.timeline
        same = bool(times) and times[-1] == now
        if same:
            allocated[-1], queued[-1], running[-1] = self._allocated, len(self.queue), len(self.running)
        else:
            times.append(now)
            allocated.append(self._allocated)
            queued.append(len(self.queue))
            running.append(len(self.running))
        if self.track_fragmentation:
            sample = (fragmentation(self.free, FRAGMENTATION_SIZE), gang_capacity(self.free))
            if same and self.fragmentation_samples:
                self.fragmentation_samples[-1] = sample
            else:
                self.fragmentation_samples.append(sample)
