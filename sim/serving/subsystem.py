"""The serving subsystem: inference services on the cluster. Requests arrive and are routed to replicas (or a
shared queue); autoscalers add and drain replicas on their own timers; replicas get and give back devices
through the co-location broker (``sim.engine.colocation``), never from training directly.

A service ends once its last request has arrived and nothing is outstanding: its replicas retire and its
devices go back, so training is not left short of devices that serve nobody.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from sim import registry
from sim.engine.colocation import ColocationBroker
from sim.engine.kernel import EventOrder, Kernel, ask
from sim.errors import ConfigError, PolicyError
from sim.platform.hardware import get_device
from sim.platform.network.collectives import GroupShape
from sim.platform.network.model import placed_groups
from sim.random import RandomStreams
from sim.serving.contracts import Autoscaler, Router, ServiceView
from sim.serving.disaggregation import ROLES
from sim.serving.handoff import Handoff
from sim.serving.kv_transfer import KVTransfers, check_pools_connected
from sim.serving.pool_failures import PoolFailures
from sim.serving.routing import RequestView, route
from sim.serving.service import ContextLimitWarning, ServiceRuntime, ServiceSpec
from sim.serving.speculative_replica import SpeculativeReplica
from sim.training.step_time import Parallelism

QUIET_TICKS = 100
"""Once every request of a service has arrived, its autoscaler stops after this many ticks in a row that
changed nothing (a scale-up that can never find devices cannot keep the run alive)."""


class ScalingState:
    """What the serving subsystem remembers between a service's autoscaling ticks."""

    __slots__ = ("blocked", "last_arrivals", "last_busy", "last_tick", "max_replicas", "quiet_ticks", "ticking")

    def __init__(self) -> None:
        self.ticking = False
        self.quiet_ticks = 0
        self.last_tick = 0.0
        self.last_busy = 0.0
        self.last_arrivals = 0
        self.blocked = 0
        self.max_replicas = 0


class ServingSubsystem:
    """Inference services, each with its own autoscaler, sharing one router policy and the broker's devices.

    ``services`` holds one runtime per service, or two for a disaggregated service (its prefill pool, then its
    decode pool, ``ServiceRuntime.role``), each with its own autoscaler (``autoscalers``: one per runtime, in that
    order) and replicas; only prefill and colocated runtimes take arrivals. ``transfers`` moves disaggregated
    services' KV caches (built here, without contention, if not given).
    """

    def __init__(self, kernel: Kernel, broker: ColocationBroker, specs: Sequence[ServiceSpec], *, router: Router,
                 autoscalers: Sequence[Autoscaler], streams: RandomStreams, sample_interval: float,
                 coalesce: bool, transfers: KVTransfers | None = None) -> None:
        self.kernel = kernel
        self.broker = broker
        self.cluster = broker.ledger.cluster
        self.router = router
        self.autoscalers = list(autoscalers)
        runtimes = sum(2 if spec.disaggregated else 1 for spec in specs)
        if len(self.autoscalers) != runtimes:
            raise ConfigError(f"serving: {len(self.autoscalers)} autoscalers for {runtimes} service pools")
        self.transfers = transfers if transfers is not None else KVTransfers(self.cluster, kernel.at_time)
        self.routers: list[Router] = []  # per runtime: who routes to its replicas
        self.handoffs: dict[int, Handoff] = {}  # by the index of a disaggregated service's prefill runtime
        self.pool_failures: PoolFailures | None = None  # with a failures subsystem (prepare_failures)
        self.partner: dict[int, int] = {}  # a prefill runtime's decode runtime, and back
        self.sample_interval = sample_interval
        self.services: list[ServiceRuntime] = []
        self.scaling: list[ScalingState] = []
        self.replica_timeline: list[tuple[float, str, int, int, int]] = []
        self.replica_samples: list[tuple[float, str, int, int, int, float]] = []
        self._next_request: list[int] = []
        # each service's request columns as Python lists (arrival, prompt tokens, output tokens), made at start:
        # reading a numpy element costs a scalar object per read, several per request
        self._columns: list[tuple[list[float], list[int], list[int]]] = []
        self._prefixes: list[tuple[list[int], list[int]] | None] = []  # (prefix id, prefix tokens) when it has any
        self._arrivers: list[Callable[[], None]] = []  # each service's arrival callback, made once
        self._routing_rng = streams["routing"]
        pool_specs = [item for spec in specs for item in (
            [(spec.pool_spec(role), role, getattr(spec, role).router) for role in ROLES] if spec.disaggregated
            else [(spec, "", None)])]
        if specs:
            pools = []
            for spec, _, _ in pool_specs:
                wanted = None if spec.device is None else get_device(spec.device).name
                pools += [p for p, pool in enumerate(self.cluster.pools) if wanted is None or pool.device == wanted]
            broker.set_partition(sorted(set(pools)))
        for spec, role, router_setting in pool_specs:
            self._add_service(spec, streams, coalesce, role, router_setting)
            state = self.scaling[-1]
            state.max_replicas = spec.max_replicas if spec.max_replicas is not None else (
                broker.devices_for_inference(self.services[-1].pool) // spec.devices_per_replica)
            self._record_replicas(self.services[-1])
            if role == "decode":
                self._connect(len(self.services) - 2, len(self.services) - 1, streams)
        if specs:
            broker.top_up_headroom(self.services)

    # ----------------------------------------------------------------------------- subsystem
    def start(self) -> None:
        at = self.kernel.at
        if self.services:
            at(0.0, EventOrder.TIMER, self._sample_replicas)
        for s, runtime in enumerate(self.services):
            requests = runtime.spec.requests
            if runtime.role == "decode":  # its requests arrive from its prefill pool
                self._columns.append(([], [], []))
                self._prefixes.append(None)
            else:
                self._columns.append((requests.arrival.tolist(), requests.prompt_tokens.tolist(),
                                      requests.output_tokens.tolist()))
                ids, shared = requests.prefix_columns()
                self._prefixes.append((ids.tolist(), shared.tolist()) if requests.has_prefixes else None)
            self._arrivers.append(lambda s=s: self._request_arrive(s))
        for s in range(len(self.services)):
            self._schedule_next_request(s)
            if not self._columns[s][0] and self.services[s].role != "decode":
                at(0.0, EventOrder.TIMER, lambda s=s: self._end_service(s))
            if self.autoscalers[s].name != "static":
                self.scaling[s].ticking = True
                at(self.autoscalers[s].interval, EventOrder.TIMER, lambda s=s: self._autoscale(s))

    def stop(self, end_time: float) -> None:
        for service in self.services:
            for replica in service.replicas:
                if isinstance(replica, SpeculativeReplica):
                    replica.record_counts()
            if service.log.over_context:
                warnings.warn(ContextLimitWarning.describe(service), ContextLimitWarning, stacklevel=3)

    def may_free_devices(self) -> bool:
        """Whether services still have work or scaling ahead (replicas may yet give devices back). Prefilled requests
        waiting for a decode pool that has no replica and will get none (its autoscaler has stopped) are stranded:
        they stay unfinished and do not keep the run going."""
        for s, runtime in enumerate(self.services):
            if self.scaling[s].ticking or self._next_request[s] < len(self._columns[s][0]) or runtime.shared:
                return True
            stranded = self._stranded(s) if runtime.role == "prefill" else 0
            if sum(r.outstanding for r in runtime.replicas) > stranded:
                return True
        return False

    def _stranded(self, s: int) -> int:
        """Prefilled requests of prefill runtime ``s`` waiting for a decode replica that nothing will bring."""
        pending = len(self.handoffs[s].pending)
        decode = self.partner[s]
        if not pending or self.scaling[decode].ticking or any(
                r.state in ("new", "provisioning", "ready") for r in self.services[decode].replicas):
            return 0
        return pending

    # ----------------------------------------------------------------------------- services and replicas
    def _add_service(self, spec: ServiceSpec, streams: RandomStreams, coalesce: bool, role: str = "",
                     router: object = None) -> None:
        """Pick the service's (or pool's) cluster pool, place its initial replicas (first fit, one node each), ready at
        time 0."""
        cluster, kernel = self.cluster, self.kernel
        wanted = None if spec.device is None else get_device(spec.device).name
        pools = [p for p, pool in enumerate(cluster.pools)
                 if (wanted is None or pool.device == wanted) and pool.devices_per_node >= spec.devices_per_replica]
        where = f"service {spec.name!r}" + (f", {role} pool" if role else "")
        if not pools:
            raise ConfigError(f"{where}: no pool of {wanted or 'any device'} with "
                              f"{spec.devices_per_replica} devices in a node on cluster {cluster.name!r}")
        free = self.broker.ledger.free
        pool = max(pools, key=lambda p: free.pool_free[p]) if wanted is None else pools[0]

        index = len(self.services)
        # replica step ends and readiness: FINISH events at a time (kernel.at_time's default order)
        prefill = self.services[-1] if role == "decode" else None
        runtime = ServiceRuntime(spec, cluster.device_specs[pool], kernel.at_time, streams[f"service-time:{spec.name}"],
                                 partial(self._request_finished, index),
                                 self._replica_drained, coalesce=coalesce,
                                 tp_group=lambda devices: self._tensor_group(pool, devices), streams=streams,
                                 role=role, log=prefill.log if prefill is not None else None,
                                 on_prefilled=self._unconnected,
                                 clock=kernel)
        runtime.pool = pool
        if role == "decode" and router is None:
            router = "kv-aware"  # least loaded by KV cache
        self.routers.append(self.router if router is None else registry.create(  # type: ignore[arg-type]
            "router", router, where=f"{where}: router"))
        for r in range(spec.replicas):
            devices = self.broker.replica_devices(pool, spec.devices_per_replica)
            if devices is None:
                raise ConfigError(f"{where}: no room for replica {r} ({spec.devices_per_replica} x "
                                  f"{cluster.pools[pool].device} in one node) on cluster {cluster.name!r}")
            runtime.add_replica(devices, 0.0, 0.0)
        self.services.append(runtime)
        self._next_request.append(0)
        self.scaling.append(ScalingState())

    def _tensor_group(self, pool: int, devices: tuple[int, ...]) -> GroupShape:
        """Where a tensor-parallel replica's ranks sit on the interconnect (its all-reduces' links)."""
        group = placed_groups(self.cluster.topology, self.cluster.device_specs[pool],
                              Parallelism(tensor=len(devices)), devices, static=True).tensor
        assert group is not None
        return group

    def _connect(self, prefill: int, decode: int, streams: RandomStreams) -> None:
        """The hand-off between a disaggregated service's two pools; a ``ConfigError`` if no path joins them."""
        a, b = self.services[prefill], self.services[decode]
        check_pools_connected(self.cluster, a.spec.name, a.pool, b.pool)
        handoff = self.handoffs[prefill] = Handoff(a, b, self.routers[decode],
                                                   streams[f"routing:{a.spec.name}/decode"], self.transfers)
        a.hand_off_to(handoff.prefilled)
        self.partner[prefill], self.partner[decode] = decode, prefill

    @staticmethod
    def _unconnected(*report: object) -> None:
        raise AssertionError(f"a prefill pool handed off {report} before its hand-off was made")

    def _replica_drained(self, runtime: ServiceRuntime, r: int) -> None:
        """A drained replica gives its devices back (to training, or to a later replica)."""
        self.broker.give_back(runtime.devices[r])
        runtime.retired[r] = self.kernel.now
        self._record_replicas(runtime)

    def prepare_failures(self) -> PoolFailures:
        """Replicas may fail (a failures subsystem): a disaggregated service's requests then get the columns of
        ``sim.serving.pool_failures``, and its prefill pool stays up until its decode pool is done (a request whose
        KV cache a decode failure takes is prefilled again)."""
        if self.pool_failures is None:
            self.pool_failures = PoolFailures(self)
        return self.pool_failures

    def fail_replica(self, s: int, r: int) -> tuple[int, int]:
        """Replica ``r`` of runtime ``s`` is lost with its devices (a failure): it retires at once, its devices go
        back through the broker (the failures subsystem then takes the failed ones), and its requests are routed
        again to the service's replicas that accept them, or rejected with the reason ``replica_failed``. Returns
        (requests re-routed, requests rejected). A pool of a disaggregated service: ``sim.serving.pool_failures``."""
        if self.services[s].role:
            return self.prepare_failures().replica_lost(s, r)
        return self.route_again(s, self.lose_replica(s, r), self.kernel.now)

    def lose_replica(self, s: int, r: int) -> list[tuple[int, int, int, int, int]]:
        """Replica ``r`` of runtime ``s`` aborts (``BatchingReplica.abort``: its requests handed back), retires now and
        gives its devices back through the broker."""
        runtime, now = self.services[s], self.kernel.now
        replica = runtime.replicas[r]
        lost = replica.abort(now)
        replica.state = "retired"
        runtime.retired[r] = now
        self.broker.give_back(runtime.devices[r])
        self._record_replicas(runtime)
        return lost

    def route_again(self, s: int, lost: Sequence[tuple[int, int, int, int, int]], now: float) -> tuple[int, int]:
        """Route requests a failed replica handed back, as (request, prompt, output, prefix id, prefix tokens), to the
        replicas of runtime ``s`` that accept them, or reject them with the reason ``replica_failed``. Returns
        (requests re-routed, requests rejected)."""
        runtime = self.services[s]
        rerouted = rejected = 0
        arrival = self._columns[s][0]
        for request_id, prompt, output, prefix_id, prefix_tokens in lost:
            if runtime.spec.dispatch == "shared-queue":
                runtime.dispatch_shared(request_id, prompt, output, now)
                rerouted += 1
                continue
            view = RequestView(request_id, arrival[request_id], prompt, output, prefix_id, prefix_tokens)
            choice = route(self.routers[s], view, runtime.replicas, self._routing_rng, runtime.spec.name)
            if choice == -1:
                runtime.log.reject(request_id, "replica_failed")
                rejected += 1
            else:
                runtime.replicas[choice].arrive(request_id, prompt, output, now, prefix_id, prefix_tokens)
                rerouted += 1
        if rejected:
            self._request_finished(s, now)  # the service may be over now
        return rerouted, rejected

    def prefix_of(self, s: int, i: int) -> tuple[int, int]:
        """Request ``i`` of runtime ``s``'s prefix (id, tokens) as it was served: (-1, 0) without one, or when its
        prompt was truncated to the context."""
        prefixes = self._prefixes[s]
        served = self.services[s].log.served.get(i)
        if prefixes is None or (served is not None and served[0] != self._columns[s][1][i]):
            return -1, 0
        return prefixes[0][i], prefixes[1][i]

    def fail_slot(self, s: int, devices: tuple[int, ...]) -> None:
        """A headroom set of runtime ``s`` holding a failed device is given back (to be taken out of service)."""
        runtime = self.services[s]
        runtime.slots.remove(devices)
        self.broker.give_back(devices)

    # ----------------------------------------------------------------------------- autoscaling
    def _autoscale(self, s: int) -> None:
        runtime, scaler, state = self.services[s], self.autoscalers[s], self.scaling[s]
        if runtime.ended:
            return
        spec, now = runtime.spec, self.kernel.now
        waiting = len(runtime.shared)  # in the service's queue: shared-queue dispatch, or prefilled with no decoder
        if runtime.role == "decode":
            waiting = len(self.handoffs[self.partner[s]].pending)
        outstanding = sum(r.outstanding for r in runtime.replicas) + waiting
        ready = [r for r in runtime.replicas if r.state == "ready"]
        busy = sum(r.busy_seconds for r in runtime.replicas)
        elapsed = now - state.last_tick
        fraction = (busy - state.last_busy) / (elapsed * len(ready)) if ready and elapsed > 0 else 0.0
        view = ServiceView(
            name=runtime.label, now=now, replicas=runtime.replicas, ready=len(ready), provisioning=runtime.provisioning,
            num_queued=sum(r.num_queued for r in runtime.replicas) + waiting, outstanding=outstanding,
            arrivals=runtime.log.arrived - state.last_arrivals, busy_fraction=min(1.0, max(0.0, fraction)),
            min_replicas=spec.min_replicas, max_replicas=state.max_replicas)
        state.last_tick, state.last_busy, state.last_arrivals = now, busy, runtime.log.arrived
        target = ask(scaler, scaler.target, (view,), "for service {0.name!r}")
        if (isinstance(target, bool) or not isinstance(target, (int, np.integer))
                or not spec.min_replicas <= target <= state.max_replicas):
            raise PolicyError(f"autoscaler {scaler.name!r} asks for {target!r} replicas of service {runtime.label!r}; "
                              f"allowed: {spec.min_replicas}..{state.max_replicas}")
        changed = self._scale_to(runtime, int(target), state)
        source = self.partner[s] if runtime.role == "decode" else s  # a decode pool's requests come via prefill
        arrived = self._next_request[source] >= len(spec.requests)
        state.quiet_ticks = state.quiet_ticks + 1 if arrived and not changed else 0
        if state.quiet_ticks >= QUIET_TICKS:
            state.ticking = False  # every request is in and nothing changes any more (or nothing can)
            return
        self.kernel.at(scaler.interval, EventOrder.TIMER, lambda: self._autoscale(s))

    def _scale_to(self, runtime: ServiceRuntime, target: int, state: ScalingState) -> bool:
        """Add or drain replicas towards ``target``; whether anything changed."""
        now, spec = self.kernel.now, runtime.spec
        live = [r for r in runtime.replicas if r.state in ("new", "provisioning", "ready")]
        before = len(runtime.replicas), sum(r.state == "draining" for r in runtime.replicas)
        if target > len(live):
            model = spec.model
            delay = 0.0 if model is None else model.weight_bytes / (spec.devices_per_replica * spec.load_bandwidth)
            for _ in range(target - len(live)):
                devices = self.broker.replica_devices(runtime.pool, spec.devices_per_replica, runtime)
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

    # ----------------------------------------------------------------------------- records
    def _sample_replicas(self) -> None:
        """Every ``sample_interval`` while serving goes on: each live replica's queue, batch and KV use."""
        now = self.kernel.now
        for runtime in self.services:
            for replica in runtime.replicas:
                if replica.state in ("ready", "draining"):
                    capacity = getattr(replica, "kv_capacity", 0)
                    kv = replica.kv_used / capacity if capacity else math.nan  # type: ignore[union-attr]
                    self.replica_samples.append((now, runtime.label, replica.replica_id, replica.num_queued,
                                                 replica.num_running, kv))
        if self.may_free_devices():
            self.kernel.at(self.sample_interval, EventOrder.TIMER, self._sample_replicas)

    def _record_replicas(self, runtime: ServiceRuntime) -> None:
        counts = {"ready": 0, "provisioning": 0, "draining": 0}
        for r in runtime.replicas:
            if r.state in counts:
                counts[r.state] += 1
        row = (self.kernel.now, runtime.label, counts["ready"], counts["provisioning"], counts["draining"])
        timeline = self.replica_timeline
        if timeline and timeline[-1][:2] == row[:2]:
            timeline[-1] = row  # one row per service and time: the state once that moment's changes are done
        else:
            timeline.append(row)

    # ----------------------------------------------------------------------------- requests
    def _request_finished(self, s: int, time: float) -> None:
        kernel = self.kernel
        if time > kernel.last_change:  # (not max: once per request, twice for a disaggregated one)
            kernel.last_change = time
        if self.services[s].role == "decode":  # its requests come from its prefill pool: in once that has ended
            prefill = self.partner[s]
            arrived = self.services[prefill].ended
            if not arrived and self.pool_failures is not None and self._next_request[prefill] >= len(
                    self._columns[prefill][0]):
                kernel.at(0.0, EventOrder.TIMER, lambda: self._end_service(prefill))  # it waited for this pool
        else:
            arrived = self._next_request[s] >= len(self._columns[s][0])
        if arrived:
            kernel.at(0.0, EventOrder.TIMER, lambda: self._end_service(s))

    def _end_service(self, s: int) -> None:
        """The service is over once its last request has arrived and nothing is outstanding."""
        runtime = self.services[s]
        if runtime.ended or runtime.shared or any(r.outstanding for r in runtime.replicas):
            return
        if runtime.role == "decode":  # its requests come from the prefill pool: over once that is over
            prefill = self.partner[s]
            if not self.services[prefill].ended or self.handoffs[prefill].pending:
                return
        elif runtime.role == "prefill" and self.pool_failures is not None and any(
                r.outstanding for r in self.services[self.partner[s]].replicas):
            return  # a decode failure may send requests back here to be prefilled again
        runtime.ended = True
        self.scaling[s].ticking = False
        for replica in runtime.replicas:
            if replica.state in ("new", "provisioning", "ready"):
                runtime.drain(replica.replica_id, self.kernel.now)  # nothing outstanding: retires at once
        for devices in runtime.slots:
            self.broker.give_back(devices)
        runtime.slots.clear()
        self._record_replicas(runtime)
        if runtime.role == "prefill":
            self.kernel.at(0.0, EventOrder.TIMER, lambda: self._end_service(self.partner[s]))
        self.broker.training.request_pass()

    def _schedule_next_request(self, s: int) -> None:
        arrival = self._columns[s][0]
        i = self._next_request[s]
        if i < len(arrival):
            delay = max(0.0, arrival[i] - self.kernel.now)
            self.kernel.at(delay, EventOrder.ARRIVAL, self._arrivers[s])

    def _request_arrive(self, s: int) -> None:
        kernel = self.kernel
        service = self.services[s]
        log = service.log
        arrival, prompts, outputs = self._columns[s]
        i = self._next_request[s]
        self._next_request[s] = i + 1
        log.arrived += 1
        now = kernel.last_change = kernel.now
        prompt, output = prompts[i], outputs[i]
        self._schedule_next_request(s)
        if i == len(arrival) - 1:
            kernel.at(0.0, EventOrder.TIMER, lambda: self._end_service(s))
        served = service.fit_context(i, prompt, output)
        if served is None:
            return
        prefixes, prefix_id, prefix_tokens = self._prefixes[s], -1, 0
        if prefixes is not None and served[0] == prompt:  # a prompt truncated to the context loses its first tokens
            prefix_id, prefix_tokens = prefixes[0][i], prefixes[1][i]
        prompt, output = served
        replicas = service.replicas
        if not self._fits(s, i, prompt, output):
            return
        if service.spec.dispatch == "shared-queue":
            service.dispatch_shared(i, prompt, output, now)
            return
        view = RequestView(i, arrival[i], prompt, output, prefix_id, prefix_tokens)
        choice = route(self.routers[s], view, replicas, self._routing_rng, service.spec.name)
        if choice == -1:
            log.reject(i, "no_replica_accepting")
            return
        replicas[choice].arrive(i, prompt, output, now, prefix_id, prefix_tokens)

    def _fits(self, s: int, i: int, prompt: int, output: int) -> bool:
        """Whether request ``i`` of runtime ``s`` can ever be served (its KV cache fits a replica: for a disaggregated
        service, its prompt a prefill replica's and its whole context a decode replica's); if not, it is rejected
        with the reason ``exceeds_kv_cache``."""
        service = self.services[s]
        if service.role != "prefill":
            replica = service.replicas[0]
            if replica.fits(prompt, output):
                return True
            need, capacity, where = prompt + output, replica.kv_capacity, "a replica"  # type: ignore[union-attr]
        else:
            decode = self.services[self.partner[s]]
            if service.kv_tokens < prompt + 1:
                need, capacity, where = prompt + 1, service.kv_tokens, "a prefill replica"
            elif decode.kv_tokens < prompt + output:
                need, capacity, where = prompt + output, decode.kv_tokens, "a decode replica"
            else:
                return True
        service.log.reject(i, f"exceeds_kv_cache: needs {need} KV tokens, {where} holds {capacity}")
        return False
