"""The failures subsystem: devices and nodes go out of service (at random, from a trace, or taken back from a spot
pool) and come back after a repair time. A device out of service is in the ledger's ``failed`` category: no one is
given it until it is back. A training job on a device that fails stops, loses the work since its last checkpoint
(``sim.failures.checkpoint``), and re-queues (``TrainingSubsystem.fail``); an inference replica on one is lost and
its requests are routed again or rejected (``ServingSubsystem.fail_replica``; a disaggregated service's requests
whose KV cache it held are prefilled again, ``sim.serving.pool_failures``). The subsystem counts, per job, its
interruptions, the work and device time lost, and reports a ``failures`` table (one row per outage).

Random failures are exponential by default: a pool whose device type has an MTBF fails at a rate of (devices in
service) / MTBF; the unit that fails is a device, or with ``node_correlated`` a node (at the rate of its devices),
drawn uniformly among those in service. Being memoryless, the next failure is drawn again whenever a pool's units in
service change. With another distribution (``FailureModel.distribution``: Weibull, lognormal) each unit has its own
clock: it draws its time to failure when it enters service (at the start, as a unit of a long-running cluster or a
new one, ``FailureModel.first_failure``; and when repaired), one kernel event per unit. Repair times are drawn from
``FailureModel.repair_distribution``. Failures stop once every job has arrived and none is waiting or running. Links
of the network (with the network model) fail as ``sim.failures.links`` describes: a node's NIC link takes its node
out, a leaf's or pod's uplink bundle loses a share of its capacity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.engine.kernel import EventOrder, Kernel
from sim.engine.ledger import DeviceLedger
from sim.errors import ConfigError
from sim.failures.checkpoint import CheckpointPolicy, efficiency, last_save
from sim.failures.links import LinkFailures
from sim.failures.model import HOUR, FailureModel
from sim.failures.trace import load_failure_trace
from sim.platform.hardware import get_device
from sim.serving.subsystem import ServingSubsystem
from sim.training.jobs import JobRecord, JobStatus
from sim.training.subsystem import PreemptionCost, TrainingSubsystem

if TYPE_CHECKING:
    from sim.engine.simulation import Simulation
    from sim.output.results import Results
    from sim.platform.network.model import NetworkModel

FAILURE_COLUMNS = ("time", "kind", "node", "devices", "duration", "jobs_interrupted", "replicas_lost", "link")


class _JobLoss:
    """What failures cost one job: interruptions, work redone (reference-seconds), device-seconds lost."""

    __slots__ = ("interruptions", "interval", "lost_device_seconds", "lost_work", "restarting")

    def __init__(self) -> None:
        self.interruptions = 0
        self.lost_work = 0.0
        self.lost_device_seconds = 0.0
        self.interval = math.nan
        self.restarting = 0.0  # the restart it will pay at its next start, after a failure


class FailureSubsystem:
    """Devices and nodes failing and coming back, on the kernel's clock (``sim.engine.subsystem.Subsystem``)."""

    def __init__(self, kernel: Kernel, ledger: DeviceLedger, training: TrainingSubsystem, model: FailureModel,
                 checkpoint: CheckpointPolicy | None, rng: np.random.Generator, spot_rng: np.random.Generator,
                 preemption: PreemptionCost, serving: ServingSubsystem | None = None,
                 network: NetworkModel | None = None, link_rng: np.random.Generator | None = None) -> None:
        self.kernel, self.ledger, self.training = kernel, ledger, training
        self.cluster = ledger.cluster
        self.model, self.checkpoint = model, checkpoint
        self._rng, self._spot_rng = rng, spot_rng
        self.preemption = preemption
        cluster = self.cluster
        self._down = [0] * cluster.num_devices  # outages covering each device
        self._pending_repairs = 0
        self.rows: list[tuple[float, str, int, tuple[int, ...], float, int, int, str]] = []
        self.serving = serving
        self.replicas_lost = self.requests_rerouted = self.requests_rejected = 0
        self.losses: dict[int, _JobLoss] = {}
        # per running job: its progress start, remaining work then, checkpoint interval and cost, restart charged
        self._runs: dict[int, tuple[float, float, float, float, float]] = {}
        self._mtbf = [model.mtbf_seconds(pool.device) for pool in cluster.pools]
        self._mttr = [model.mttr_seconds(pool.device) if math.isfinite(m) else math.inf
                      for pool, m in zip(cluster.pools, self._mtbf, strict=True)]
        self._ttf = [model.failure_distribution(pool.device) for pool in cluster.pools]
        self._ttr = [model.repair_time_distribution(pool.device) for pool in cluster.pools]
        self._units: list[list[tuple[int, ...]]] = []  # per pool: its units (devices or nodes) in service
        self._version = [0] * len(cluster.pools)
        for p in range(len(cluster.pools)):
            nodes = [n for n in range(cluster.num_nodes) if cluster.node_pool[n] == p]
            if model.node_correlated:
                self._units.append([tuple(cluster.devices_of_node(n)) for n in nodes])
            else:
                self._units.append([(d,) for n in nodes for d in cluster.devices_of_node(n)])
        self._trace = [] if model.trace is None else load_failure_trace(model.trace, cluster)
        names = {pool.device: p for p, pool in enumerate(cluster.pools)}  # a device type names its pool ...
        names.update({pool.name: p for p, pool in enumerate(cluster.pools)})  # ... a pool's name first
        self._spot_pools = []
        for spot in model.spot:
            pool = spot.pool
            if pool not in names:
                with contextlib.suppress(ValueError):  # not a device type either: the error below names it
                    pool = get_device(pool).name
            if pool not in names:
                raise ConfigError(f"failures.spot: pool {spot.pool!r} is not a pool of the cluster "
                                  f"({', '.join(names)})")
            self._spot_pools.append(names[pool])
        self._noticed: set[int] = set()
        self.links = LinkFailures(kernel, cluster, model, network, link_rng, self._trace, outage=self._outage,
                                  active=self._active, rows=self.rows, network_changed=training.network_changed)
        training.on_start.append(self._started)

    # ----------------------------------------------------------------------------- subsystem
    def start(self) -> None:
        for p in range(len(self.cluster.pools)):
            if self._ttf[p].memoryless:
                self._schedule_failure(p)
            else:
                self._start_clocks(p)
        for record in self._trace:
            if record.link < 0:
                self.kernel.at(record.time, EventOrder.ARRIVAL,
                               lambda r=record: self._outage(r.devices, r.duration, r.kind, r.node))
        self.links.start()
        for i in range(len(self.model.spot)):
            self._schedule_spot(i)

    def stop(self, end_time: float) -> None:
        """Nothing is in progress to account: losses are counted as failures happen."""

    def may_free_devices(self) -> bool:
        """Devices out of service come back later (a repair is pending)."""
        return self._pending_repairs > 0

    def _active(self) -> bool:
        """Whether a failure may still matter: some job has yet to arrive, waits or runs, or a service has work."""
        training, serving = self.training, self.serving
        return (not training.all_arrived or bool(training.queue) or bool(training.running)
                or (serving is not None and serving.may_free_devices()))

    # ----------------------------------------------------------------------------- checkpoints
    def _started(self, record: JobRecord, pool: int) -> None:
        """A job starts: its checkpoint interval on this pool sets its efficiency; its segment starts here."""
        loss = self.losses.setdefault(record.spec.job_id, _JobLoss())
        interval, cost = math.inf, 0.0
        if self.checkpoint is not None:
            interval, cost = self.checkpoint.for_job(record.spec.job_id, record.spec.gpus, record.spec.checkpoint_s,
                                                     self._mtbf[pool])
        record.efficiency = efficiency(interval, cost)
        loss.interval = interval
        restart = loss.restarting
        loss.lost_device_seconds += restart * len(record.devices) * record.spec.gpu_fraction
        loss.restarting = 0.0
        self._runs[record.spec.job_id] = (record.progress_start, record.remaining, interval, cost, restart)

    def restart_seconds(self, record: JobRecord) -> float:
        """Seconds a failed job spends restarting from its checkpoint."""
        if self.model.restart_s is not None:
            return self.model.restart_s
        spec = record.spec
        return float(self.preemption.restore_s if spec.restore_s is None else spec.restore_s)

    def _interrupt(self, record: JobRecord, warned: bool) -> None:
        now = self.kernel.now
        start, remaining, interval, cost, restart = self._runs[record.spec.job_id]
        loss = self.losses[record.spec.job_id]
        gpus = len(record.devices) * record.spec.gpu_fraction  # device-equivalents held (a fractional job: its share)
        if now < start:  # failed while restoring: the part of a failure's restart not spent was not lost
            loss.lost_device_seconds -= min(restart, start - now) * gpus
            saved_at, lost = now, 0.0
        elif warned and math.isfinite(interval):  # saved within the notice
            saved_at, lost = now, 0.0
        else:
            saved_at = last_save(start, now, interval, cost)
            done = remaining - record.remaining_at(now)
            lost = done * (now - saved_at) / (now - start) if now > start else 0.0
        restart = self.restart_seconds(record)
        loss.interruptions += 1
        loss.lost_device_seconds += (now - saved_at) * gpus
        loss.restarting = restart
        loss.lost_work += self.training.fail(record, lost, restart)

    # ----------------------------------------------------------------------------- outages
    def _outage(self, devices: tuple[int, ...], duration: float, kind: str, node: int,
                on_repair: Callable[[], None] | None = None, warned: frozenset[int] = frozenset(),
                link: str = "") -> None:
        """``devices`` go out of service for ``duration`` seconds; jobs on them are interrupted. ``link``: the link
        whose failure took them (a node's NIC link), named."""
        down = self._down
        newly = tuple(d for d in devices if down[d] == 0)
        for d in devices:
            down[d] += 1
        interrupted = lost_replicas = rerouted = rejected = 0
        if newly:
            hit = set(newly)
            for record in [r for r in self.training.running.values() if not hit.isdisjoint(r.devices)]:
                self._interrupt(record, record.spec.job_id in warned)
                interrupted += 1
            serving = self.serving
            for s, runtime in enumerate(serving.services if serving is not None else ()):
                for r, replica in enumerate(runtime.replicas):
                    if replica.state != "retired" and not hit.isdisjoint(runtime.devices[r]):
                        moved, dropped = serving.fail_replica(s, r)  # type: ignore[union-attr]
                        lost_replicas, rerouted, rejected = lost_replicas + 1, rerouted + moved, rejected + dropped
                for slot in [slot for slot in runtime.slots if not hit.isdisjoint(slot)]:
                    serving.fail_slot(s, slot)  # type: ignore[union-attr]
            self.ledger.take_failed(newly)
        self.replicas_lost += lost_replicas
        self.requests_rerouted += rerouted
        self.requests_rejected += rejected
        self._pending_repairs += 1
        self.rows.append((self.kernel.now, kind, node, tuple(devices), duration, interrupted, lost_replicas, link))
        self.kernel.at(duration, EventOrder.FINISH, lambda: self._repair(devices, on_repair))

    def _repair(self, devices: tuple[int, ...], on_repair: Callable[[], None] | None) -> None:
        down = self._down
        back = []
        for d in devices:
            down[d] -= 1
            if down[d] == 0:
                back.append(d)
        self._pending_repairs -= 1
        if back:
            self.ledger.give_repaired(tuple(back))
            if self.training.queue:
                self.training.request_pass()
        if on_repair is not None:
            on_repair()

    # ----------------------------------------------------------------------------- random failures
    def _schedule_failure(self, p: int) -> None:
        """The pool's next failure, drawn again from now (its units in service changed)."""
        self._version[p] += 1
        units = self._units[p]
        if not units or not math.isfinite(self._mtbf[p]) or not self._active():
            return
        rate = len(units) * len(units[0]) / self._mtbf[p]
        version = self._version[p]
        self.kernel.at(float(self._rng.exponential(1.0 / rate)), EventOrder.ARRIVAL,
                       lambda: self._random_failure(p, version))

    def _random_failure(self, p: int, version: int) -> None:
        if version != self._version[p] or not self._active():
            return
        units = self._units[p]
        i = int(self._rng.integers(len(units)))
        unit = units[i]
        units[i] = units[-1]
        units.pop()
        duration = self._repair_time(p)
        node = self.cluster.device_node[unit[0]]

        def repaired() -> None:
            units.append(unit)
            self._schedule_failure(p)

        self._outage(unit, duration, "node" if self.model.node_correlated else "device", node, repaired)
        self._schedule_failure(p)

    def _repair_time(self, p: int) -> float:
        if self._ttr[p].memoryless:
            return float(self._rng.exponential(self._mttr[p]))
        return float(self._ttr[p].sample(self._rng, self._mttr[p]))

    # ----------------------------------------------------------------------------- per-unit clocks
    def _start_clocks(self, p: int) -> None:
        """Every unit of the pool draws its first time to failure (a non-exponential distribution: each unit ages
        on its own clock, one pending event each)."""
        units = self._units[p]
        if not units or not math.isfinite(self._mtbf[p]) or not self._active():
            return
        dist, mean = self._ttf[p], self._mtbf[p] / len(units[0])
        draw = dist.sample_residual if self.model.first_failure == "stationary" else dist.sample
        delays = draw(self._rng, mean, len(units))
        for unit, delay in zip(units, delays.tolist(), strict=True):
            self.kernel.at(delay, EventOrder.ARRIVAL, partial(self._unit_failure, p, unit))

    def _unit_failure(self, p: int, unit: tuple[int, ...]) -> None:
        """A unit's clock ran out: it goes out of service until repaired, then draws its next time to failure."""
        if not self._active():
            return
        node = self.cluster.device_node[unit[0]]
        self._outage(unit, self._repair_time(p), "node" if self.model.node_correlated else "device", node,
                     partial(self._unit_repaired, p, unit))

    def _unit_repaired(self, p: int, unit: tuple[int, ...]) -> None:
        if self._active():
            delay = float(self._ttf[p].sample(self._rng, self._mtbf[p] / len(unit)))
            self.kernel.at(delay, EventOrder.ARRIVAL, partial(self._unit_failure, p, unit))

    # ----------------------------------------------------------------------------- spot pools
    def _schedule_spot(self, i: int) -> None:
        spot = self.model.spot[i]
        delay = float(self._spot_rng.exponential(spot.mean_hours_between * HOUR))
        self.kernel.at(delay, EventOrder.ARRIVAL, lambda: self._spot_notice(i))

    def _spot_notice(self, i: int) -> None:
        if not self._active():
            return
        spot, p, cluster = self.model.spot[i], self._spot_pools[i], self.cluster
        down = self._down
        candidates = [n for n in range(cluster.num_nodes) if cluster.node_pool[n] == p and n not in self._noticed
                      and not any(down[d] for d in cluster.devices_of_node(n))]
        self._schedule_spot(i)
        if not candidates:
            return
        count = min(spot.nodes, len(candidates))
        chosen = [candidates[int(k)] for k in self._spot_rng.choice(len(candidates), size=count, replace=False)]
        self._noticed.update(chosen)
        devices = {d for n in chosen for d in cluster.devices_of_node(n)}
        warned = frozenset(r.spec.job_id for r in self.training.running.values() if not devices.isdisjoint(r.devices)
                           and self._runs[r.spec.job_id][3] <= spot.notice_s)
        for n in chosen:
            self.rows.append((self.kernel.now, "spot-notice", n, tuple(cluster.devices_of_node(n)), spot.notice_s, 0,
                              0, ""))
        self._pending_repairs += 1  # the nodes will be back: nothing starves meanwhile

        def reclaim() -> None:
            self._pending_repairs -= 1
            for n in chosen:
                self._noticed.discard(n)
                duration = float(self._spot_rng.exponential(spot.duration_hours * HOUR))
                self._outage(tuple(cluster.devices_of_node(n)), duration, "spot-reclaim", n, warned=warned)

        self.kernel.at(spot.notice_s, EventOrder.ARRIVAL, reclaim)

    # ----------------------------------------------------------------------------- results
    def table(self) -> pd.DataFrame:
        """The ``failures`` table: one row per outage (and per spot notice)."""
        return pd.DataFrame(self.rows, columns=list(FAILURE_COLUMNS))

    def add_results(self, results: Results, end_time: float) -> None:
        """Add the ``failures`` table, the jobs' failure columns and the run record's failure settings."""
        records = {r.spec.job_id: r for r in self.training.records}
        jobs = results.jobs
        columns: dict[str, list[Any]] = {"interruptions": [], "lost_work_seconds": [], "lost_device_seconds": [],
                                         "checkpoint_interval": [], "goodput": []}
        for job_id, gpus, held in zip(jobs["job_id"], jobs["gpus"] * jobs["gpu_fraction"], jobs["device_seconds"],
                                      strict=True):
            loss = self.losses.get(int(job_id)) or _JobLoss()
            record = records.get(int(job_id))
            columns["interruptions"].append(loss.interruptions)
            columns["lost_work_seconds"].append(loss.lost_work)
            columns["lost_device_seconds"].append(loss.lost_device_seconds)
            columns["checkpoint_interval"].append(loss.interval)
            kept = math.nan
            if record is not None and held > 0:
                left = 0.0 if record.status is JobStatus.FINISHED else record.remaining_at(end_time)
                kept = (record.spec.duration - left) * gpus / held
            columns["goodput"].append(kept)
        results.add_columns("jobs", pd.DataFrame(columns, index=jobs.index))
        results.failures = self.table()
        model = self.model
        results.run["failures"] = {
            "mtbf_hours": dict(model.mtbf_hours), "mttr_hours": (dict(model.mttr_hours) if isinstance(
                model.mttr_hours, dict) else model.mttr_hours), "node_correlated": model.node_correlated,
            "trace": None if model.trace is None else str(model.trace),
            "spot": [dataclasses.asdict(spot) for spot in model.spot],
            "link_mtbf_hours": dict(model.link_mtbf_hours), "link_mttr_hours": model.link_mttr_hours,
            "distribution": _describe(model.distribution), "repair_distribution": _describe(model.repair_distribution),
            "first_failure": model.first_failure,
            "checkpoint": None if self.checkpoint is None else {"interval": self.checkpoint.interval,
                                                                "cost": self.checkpoint.cost},
            "replicas_lost": self.replicas_lost, "requests_rerouted": self.requests_rerouted,
            "requests_rejected": self.requests_rejected, "requests_reprefilled": self._reprefilled()}

    def _reprefilled(self) -> int:
        """Requests of disaggregated services whose KV cache a failure took (``sim.serving.pool_failures``)."""
        pools = self.serving.pool_failures if self.serving is not None else None
        return 0 if pools is None else pools.reprefilled


def _describe(value: Any) -> Any:
    """A model's distribution setting in its config form (one, or per device type)."""
    return value.describe() if hasattr(value, "describe") else {k: v.describe() for k, v in value.items()}


def failures(model: FailureModel | None = None,
             checkpoint: CheckpointPolicy | None = None) -> Callable[[Simulation], FailureSubsystem]:
    """The builder to give ``Simulation(..., subsystems=[failures(model, checkpoint)])``: failures as ``model``
    says (none by default), training jobs checkpointing as ``checkpoint`` says. Its random draws come from the
    run's ``failures`` and ``spot`` streams. A replica on a failed device is lost (``ServingSubsystem.fail_replica``;
    of a disaggregated service, ``sim.serving.pool_failures``)."""
    model = model or FailureModel()

    def build(simulation: Simulation) -> FailureSubsystem:
        if any(runtime.role for runtime in simulation.services):
            simulation.serving.prepare_failures()
        return FailureSubsystem(simulation.kernel, simulation.ledger, simulation.training, model, checkpoint,
                                simulation.streams["failures"], simulation.streams["spot"], simulation.preemption,
                                simulation.serving, simulation.network,
                                simulation.streams["links"] if model.link_mtbf_hours else None)

    return build
