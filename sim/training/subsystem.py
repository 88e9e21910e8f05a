"""The training subsystem: jobs arrive, wait, are started and preempted by the scheduler's decisions, and
finish. Progress is fluid: a running job's completion is one event at ``progress_start + remaining / rate``;
a preemption (or a new network slowdown) bumps the job's version so that its stale completion is ignored.

One scheduling pass runs per instant at which something changed (at the end of the instant, after that instant's
completions, arrivals and timers). Every decision is validated whole before any of it is applied.

Fractional jobs (``TrainingJob.gpu_fraction`` < 1) share devices (``sim.platform.shared_devices``). Speed model: a
fractional job's ``duration`` is its run time at its requested share, which is guaranteed and isolated (as the
openb pods and MIG- or HAMi-style quota sharing assume), so it progresses at its normal speed however many jobs
share its device; no interference between them is modelled. It holds ``gpu_fraction`` of the device: its device
time and attained service are that fraction of the time it runs.

A scheduler that ``packs`` may start a job packed with a running one on the same devices
(``Assignment.pack_with``); the cost model (each job re-rated to its co-located speed while the pair lasts, back to
alone when its partner leaves) is stated in ``sim.training.packing``. The event log records a packed start as
``pack`` (with the devices) and the survivor of a pair whose partner left as ``unpack``.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.engine.kernel import EventOrder, Kernel, ask
from sim.engine.ledger import DeviceLedger
from sim.errors import ConfigError, PolicyError, StarvationError
from sim.platform.cluster import Cluster
from sim.platform.fragmentation import fragmentation, gang_capacity
from sim.platform.free_devices import FreeDevices
from sim.platform.hardware import get_device
from sim.platform.network.model import NetworkModel
from sim.platform.shared_devices import EPSILON
from sim.random import RandomStreams
from sim.training.contracts import Assignment, ClusterView, Decision, Placer, Scheduler, TenantOrder
from sim.training.jobs import JobRecord, JobStatus, JobView
from sim.training.packing import PACKED_SHARE, PackingBook
from sim.training.quotas import TenantQuotas, TenantState
from workloads.jobs import TrainingJob

_RUN_IDS = itertools.count(1)  # each run's ClusterView.run_id: never repeats within a process, unlike id()

FRAGMENTATION_SIZE = 8
"""Gang size the timeline's ``fragmentation`` column is measured for (the share of free devices unusable by it)."""


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

    def for_job(self, spec: TrainingJob) -> float:
        """Seconds ``spec`` loses on each resume: its own checkpoint and restore times where it gives them
        (``TrainingJob.checkpoint_s``, ``restore_s``), these otherwise."""
        if spec.checkpoint_s is None and spec.restore_s is None:
            return self.total
        checkpoint = self.checkpoint_s if spec.checkpoint_s is None else spec.checkpoint_s
        restore = self.restore_s if spec.restore_s is None else spec.restore_s
        return float(checkpoint + restore)


class TrainingSubsystem:
    """Training jobs on the cluster, scheduled by a ``Scheduler`` and placed by a ``Placer``.

    Hooks a broker connects: ``before_pass`` runs at the start of each scheduling pass (co-location refills
    inference headroom before training sees the freed devices); ``others_may_free_devices`` tells the
    starvation check whether another subsystem may still give devices back.
    """

    def __init__(self, kernel: Kernel, ledger: DeviceLedger, jobs: Sequence[TrainingJob], *, scheduler: Scheduler,
                 placer: Placer, placement_rng: np.random.Generator, preemption: PreemptionCost,
                 network: NetworkModel | None, track_fragmentation: bool, max_idle_passes: int,
                 quotas: TenantQuotas | None = None, tenant_order: TenantOrder | None = None,
                 packing: PackingBook | None = None, streams: RandomStreams | None = None) -> None:
        self.kernel = kernel
        self.packing = packing
        self.ledger = ledger
        self.cluster: Cluster = ledger.cluster
        self.jobs = jobs
        self.scheduler = scheduler
        self.placer = placer
        self.preemption = preemption
        self.network = network
        self.track_fragmentation = track_fragmentation
        self.max_idle_passes = max_idle_passes
        self._run_id = next(_RUN_IDS)
        if quotas is not None and tenant_order is None:
            raise ConfigError("quotas need a tenant order (the Simulation gives quota-share by default)")
        # the scheduler's own random stream (ClusterView.rng); under quotas each tenant's instance has its own
        self._scheduling_rng = None if streams is None else streams["scheduling"]
        self.tenants = None if quotas is None else TenantState(quotas, scheduler, tenant_order, streams)  # type: ignore[arg-type]
        self.before_pass: list[Callable[[], None]] = []
        self.on_start: list[Callable[[JobRecord, int], None]] = []
        """Called with the record and its pool as a job starts, before its rate is set (checkpointing sets
        ``record.efficiency`` here)."""
        self.others_may_free_devices: list[Callable[[], bool]] = []
        self.records: list[JobRecord] = []
        self.queue: dict[int, JobRecord] = {}
        self.running: dict[int, JobRecord] = {}
        self.finished = 0
        self.fragmentation_samples: list[tuple[float, dict[int, int]]] = []
        # time, allocated, queued, running after each pass: typed arrays, 8 bytes an entry rather than a list's
        # pointer and a Python number each (two entries a job)
        self.timeline: tuple[array[float], array[int], array[int], array[int]] = (
            array("d"), array("q"), array("q"), array("q"))
        self._timeline_last = math.nan
        self.timeline_idle_share: array[float] = array("d")
        """Per timeline row: shares of shared devices no fractional job holds (allocated devices not in use)."""
        self._entered: list[JobView] = []  # jobs that entered the queue since the last scheduling pass
        self._placement_rng = placement_rng
        self._device_names: dict[str, str] = {}
        self._fits: dict[tuple[object, ...], tuple[tuple[int, ...], dict[int, float], str]] = {}
        self._next_job = 0
        self._pass_pending = False
        self._timer_token = 0
        self._timer_pending = False
        self._idle_passes = 0
        self._at_end_of_instant, self._pass = kernel.at_end_of_instant, self._scheduling_pass  # bound once: per event

    # ----------------------------------------------------------------------------- subsystem
    def start(self) -> None:
        self._schedule_next_arrival()

    def scheduler_report(self) -> dict[str, float]:
        """The scheduler's own figures (``Scheduler.report``), checked; under quotas the tenants' instances added
        up."""
        instances = [self.scheduler] if self.tenants is None or not self.tenants.schedulers else list(
            self.tenants.schedulers.values())
        out: dict[str, float] = {}
        for instance in instances:
            report = ask(instance, instance.report, (), "reporting its figures")
            try:
                items = list(report.items())
            except AttributeError:
                raise PolicyError(f"scheduler {instance.name!r}: report() returned {report!r}, not a mapping") from None
            for key, value in items:
                if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise PolicyError(f"scheduler {instance.name!r}: report() maps {key!r} to {value!r}; figures are "
                                      "numbers by name")
                out[key] = out.get(key, 0) + value
        return out

    def stop(self, end_time: float) -> None:
        """Jobs still running at the end: their device time and attained service up to it. Jobs left waiting
        when no event is left at all were starved (a pass may not have followed the last arrival)."""
        if self.kernel.exhausted and self.queue:
            raise self._starvation()
        for record in self.queue.values():  # still waiting: the wait so far
            record.waited += end_time - record.queued_since
        for record in self.running.values():
            if record.partner is not None:  # packed at the end: its stretch so far
                self._close_stretch(record, end_time)
            held = end_time - record.run_start
            if end_time < record.progress_start:
                record.overhead_total -= record.progress_start - end_time
            fraction = record.spec.gpu_fraction
            used = held * len(record.devices) if fraction == 1.0 else held * fraction
            record.device_seconds += used
            record.attained += used

    def may_free_devices(self) -> bool:
        return bool(self.running)

    @property
    def not_arrived(self) -> Sequence[TrainingJob]:
        """The workload's jobs that had not arrived when the run stopped (at the horizon), in arrival order."""
        return self.jobs[self._next_job:]

    @property
    def all_arrived(self) -> bool:
        return self._next_job >= len(self.jobs)

    # ----------------------------------------------------------------------------- arrivals
    def _schedule_next_arrival(self) -> None:
        if self._next_job < len(self.jobs):
            spec = self.jobs[self._next_job]
            self.kernel.at(max(0.0, spec.arrival - self.kernel.now), EventOrder.ARRIVAL, self._arrive)

    def _arrive(self) -> None:
        kernel = self.kernel
        spec = self.jobs[self._next_job]
        self._next_job += 1
        kernel.last_change = kernel.now
        record = self.new_record(spec)
        self.records.append(record)
        if kernel.event_log is not None:  # (the log's checks at each arrival, start and finish: no call without one)
            kernel.log("arrive", spec.job_id)
        tenants = self.tenants
        if tenants is not None and record.allowed_pools:
            record.reason = tenants.why_not(record)
        if not record.allowed_pools or record.reason:
            record.status = JobStatus.UNSCHEDULABLE
            kernel.log("unschedulable", spec.job_id)
        else:
            self.queue[spec.job_id] = record
            self._entered.append(record.view)
            if tenants is not None:
                tenants.queued(record)
            self.request_pass()
        self._schedule_next_arrival()

    def canonical(self, device: str) -> str:
        """The catalog name of a device type as a job or service spells it (cached)."""
        name = self._device_names.get(device)
        if name is None:
            name = self._device_names[device] = get_device(device).name
        return name

    def new_record(self, spec: TrainingJob) -> JobRecord:
        """Which pools the job may use, and its speed on each relative to its reference device (worked out once
        per kind of job: gang, allowed devices, reference device, precision and throughputs)."""
        fit = self._cached_fit(spec, spec.throughputs)
        if spec.phases is None:
            pools, speeds, reason = fit
            record = JobRecord(spec, pools, speeds)
        else:  # a phased job may use the pools every phase may use, at each phase's speeds there
            fits = [self._cached_fit(spec, phase.throughputs or spec.throughputs) for phase in spec.phases]
            allowed = set.intersection(*(set(pools) for pools, _, _ in fits))
            pools = tuple(p for p in fits[0][0] if p in allowed)
            reason = next((why for _, _, why in fits if why), "" if pools else "no pool that every phase may use")
            record = JobRecord(spec, pools, fit[1], tuple({p: speeds[p] for p in pools} for _, speeds, _ in fits))
        record.reason = reason
        return record

    def _cached_fit(self, spec: TrainingJob,
                    throughputs: Mapping[str, float] | None) -> tuple[tuple[int, ...], dict[int, float], str]:
        key = (spec.gpus, spec.allowed_devices, spec.reference_device, spec.precision,
               None if throughputs is None else tuple(throughputs.items()))
        fit = self._fits.get(key)
        if fit is None:
            fit = self._fits[key] = self._fit(spec, throughputs)
        return fit

    def _fit(self, spec: TrainingJob,
             throughputs: Mapping[str, float] | None) -> tuple[tuple[int, ...], dict[int, float], str]:
        allowed = None if spec.allowed_devices is None else {self.canonical(d) for d in spec.allowed_devices}
        throughputs = None if throughputs is None else {self.canonical(k): v for k, v in throughputs.items()}
        reference = None if spec.reference_device is None else self.canonical(spec.reference_device)
        pools: list[int] = []
        speeds: dict[int, float] = {}
        largest = 0
        cluster = self.cluster
        for p, pool in enumerate(cluster.pools):
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
                speed = cluster.device_specs[p].peak(precision) / get_device(reference).peak(precision)
            largest = max(largest, cluster.pool_devices[p])
            if cluster.pool_devices[p] >= spec.gpus:
                pools.append(p)
                speeds[p] = speed
        reason = ""
        if not pools:
            reason = (f"gang of {spec.gpus} is larger than any allowed pool (largest {largest})" if largest
                      else "no pool of an allowed device type")
        return tuple(pools), speeds, reason

    # ----------------------------------------------------------------------------- job life
    def _start(self, record: JobRecord, devices: tuple[int, ...], pool: int, host: JobRecord | None = None) -> None:
        """Start ``record`` on ``devices`` of ``pool``; with ``host``, packed with that running job on its devices."""
        kernel = self.kernel
        now = kernel.now
        overhead = record.pending_overhead
        record.pending_overhead = 0.0
        record.devices = devices
        record.pool = pool
        record.status = JobStatus.RUNNING
        record.run_start = now
        # without an overhead (a first start), and at a gang speed-up of 1, the record keeps the floats it has (the
        # same values: x + 0.0 and x * 1.0 are x) rather than a new float object each: 72 bytes a job, a million jobs
        if overhead:
            record.overhead_total += overhead
            record.progress_start = now + overhead
        else:
            record.progress_start = now
        if record.spec.max_gpus is not None:  # an elastic job: its speed on this gang
            record.gang_speedup = record.spec.gang_speedup(len(devices))
        for hook in self.on_start:
            hook(record, pool)
        rate = record.speeds[pool]  # times the gang speed-up and the checkpointing efficiency, each when not 1
        if record.gang_speedup != 1.0:
            rate = rate * record.gang_speedup
        if record.efficiency != 1.0:
            rate = rate * record.efficiency
        factors = None
        if host is not None:
            factors = self.packing.factors(record.spec, host.spec, self.cluster.pools[pool].device)  # type: ignore[union-attr]
            assert factors is not None  # checked by _validate_pack
            record.packing = factors[0]
            rate = rate * record.packing
        record.rate = rate
        network = self.network
        if network is not None:
            slowdown = network.start(record.spec, devices, pool, now)
            record.network_level = network.level(record.spec.job_id)
            record.slowdown, record.slowdown_since = slowdown, now
            record.rate /= slowdown
        if math.isnan(record.first_start):
            record.first_start = now
        waited = now - record.queued_since
        if waited:  # a job started as it arrived keeps its 0.0 (no float object of its own)
            record.waited += waited
        if record.spec.gpu_fraction != 1.0:
            self.ledger.take_share(devices[0], record.spec.job_id, record.spec.gpu_fraction)
        elif host is None:
            self.ledger.take_for_job(devices)
        del self.queue[record.spec.job_id]
        self.running[record.spec.job_id] = record
        if self.tenants is not None:
            self.tenants.started(record, now)
        self._schedule_completion(record, overhead + (record.remaining - record.phase_end) / record.rate)
        if host is not None:
            assert factors is not None
            record.partner, host.partner = host, record
            record.packed_since = host.packed_since = now
            self._rerate(host, now, factors[1])
        if kernel.event_log is not None:
            kernel.log("start" if host is None else "pack", record.spec.job_id, devices)
        if network is not None:
            self.network_changed(now)

    def network_changed(self, now: float) -> None:
        """Contention re-solved after a start or a stop (of a job, or of a KV transfer): jobs whose slowdown changed
        get a new rate and a rescheduled completion (the old one is ignored by its version)."""
        assert self.network is not None
        for job_id, slowdown in self.network.update(now).items():
            record = self.running[job_id]
            record.slowdown_seconds += record.slowdown * (now - record.slowdown_since)
            record.network_seconds += now - record.slowdown_since
            record.slowdown, record.slowdown_since = slowdown, now
            if now > record.progress_start:
                record.remaining = record.remaining_at(now)
                record.progress_start = now
            record.rate = (record.speeds[record.pool] * record.gang_speedup * record.efficiency / slowdown
                           * record.packing)
            self._schedule_completion(
                record, record.progress_start - now + (record.remaining - record.phase_end) / record.rate)

    def _schedule_completion(self, record: JobRecord, delay: float) -> None:
        """The end of the job's current phase (its finish in the last phase) ``delay`` seconds from now; an end
        scheduled before is ignored from now on (by the record's version)."""
        record.version += 1
        version = record.version

        def done() -> None:
            if record.version == version:
                if record.phase_end > 0.0:
                    self._next_phase(record)
                else:
                    self._finish(record)

        self.kernel.at(delay, EventOrder.FINISH, done)

    def _next_phase(self, record: JobRecord) -> None:
        """A running job enters its next phase: same devices, that phase's speed on them."""
        record.remaining = record.phase_end
        record.phase += 1
        record.phase_end = record.phase_ends[record.phase]
        record.speeds = record.phase_speeds[record.phase]  # type: ignore[index]
        record.progress_start = self.kernel.now
        record.rate = (record.speeds[record.pool] * record.gang_speedup * record.efficiency / record.slowdown
                       * record.packing)
        self._schedule_completion(record, (record.remaining - record.phase_end) / record.rate)
        self.kernel.log("phase", record.spec.job_id)

    def _rerate(self, record: JobRecord, now: float, packing: float) -> None:
        """A running job's packing factor changes now (a partner came or left): bank its progress, new rate, new
        completion."""
        if now > record.progress_start:
            record.remaining = record.remaining_at(now)
            record.progress_start = now
        record.packing = packing
        record.rate = (record.speeds[record.pool] * record.gang_speedup * record.efficiency / record.slowdown
                       * packing)
        self._schedule_completion(record, record.progress_start - now + (record.remaining - record.phase_end)
                                  / record.rate)

    @staticmethod
    def _close_stretch(record: JobRecord, now: float) -> None:
        """End ``record``'s packed stretch at ``now``: count it, and take the half of its devices' time it does not
        charge off its device time and attained service."""
        stretch = now - record.packed_since
        record.packed_seconds += stretch
        unused = PACKED_SHARE * stretch * len(record.devices)
        record.device_seconds -= unused
        record.attained -= unused
        record.packed_since = now

    def _unpair(self, record: JobRecord, now: float) -> None:
        """``record`` leaves its pair: both stretches end, its partner goes back to its alone speed on the devices."""
        partner = record.partner
        assert partner is not None
        self._close_stretch(record, now)
        self._close_stretch(partner, now)
        record.partner = partner.partner = None
        record.packed_since = partner.packed_since = math.nan
        self._rerate(partner, now, 1.0)
        record.packing = 1.0
        self.kernel.log("unpack", partner.spec.job_id, partner.devices)

    def _release(self, record: JobRecord) -> None:
        now = self.kernel.now
        packed = record.partner is not None
        if packed:
            self._unpair(record, now)
        if self.tenants is not None:
            self.tenants.stopped(record, now)
        held = now - record.run_start
        if now < record.progress_start:  # stopped while restoring: only the restore time spent counts
            record.overhead_total -= record.progress_start - now
        fraction = record.spec.gpu_fraction
        # a fractional job: its share of the time; x * 1 is x: no new float for one device
        used = held * fraction if fraction != 1.0 else held if len(record.devices) == 1 else held * len(record.devices)
        if record.device_seconds == 0.0 and record.attained == 0.0:  # the first run: one float for both (0.0 + used)
            record.device_seconds = record.attained = used
        else:
            record.device_seconds += used
            record.attained += used
        record.last_run = held
        if fraction != 1.0:
            self.ledger.give_share(record.devices[0], record.spec.job_id)
        elif not packed:  # (a packed job's partner keeps the devices)
            self.ledger.give_from_job(record.devices)
        del self.running[record.spec.job_id]
        record.devices = ()
        record.version += 1
        if self.network is not None:
            record.slowdown_seconds += record.slowdown * (now - record.slowdown_since)
            record.network_seconds += now - record.slowdown_since
            self.network.stop(record.spec.job_id, now)
            self.network_changed(now)

    def _finish(self, record: JobRecord) -> None:
        self._release(record)
        kernel = self.kernel
        record.remaining = 0.0
        record.finish = kernel.last_change = kernel.now
        record.status = JobStatus.FINISHED
        self.finished += 1
        if kernel.event_log is not None:
            kernel.log("finish", record.spec.job_id)
        self.request_pass()

    def preempt(self, record: JobRecord) -> None:
        """Stop a running job; it re-enters the queue at the back and pays the checkpoint/restore cost later."""
        now = self.kernel.now
        record.remaining = record.remaining_at(now)
        self._release(record)
        record.status = JobStatus.PREEMPTED
        record.preemptions += 1
        record.pending_overhead = self.preemption.for_job(record.spec)
        self._requeue(record, now, "preempt")

    def fail(self, record: JobRecord, lost_work: float, restart_s: float) -> float:
        """A running job hit by a failure: it stops, loses ``lost_work`` (reference-seconds done since its last
        checkpoint, capped at the work done in its current phase), re-enters the queue at the back with status
        queued, and pays ``restart_s`` (restore from the checkpoint) when it starts again. Returns the work lost."""
        now = self.kernel.now
        remaining = record.remaining_at(now)
        ceiling = record.phase_ends[record.phase - 1] if record.phase > 0 else float(record.spec.duration)
        self._release(record)
        record.remaining = min(ceiling, remaining + max(0.0, lost_work))
        record.status = JobStatus.QUEUED
        record.pending_overhead = restart_s
        self._requeue(record, now, "fail")
        self.request_pass()
        return record.remaining - remaining

    def _requeue(self, record: JobRecord, now: float, event: str) -> None:
        """A stopped job (preempted or failed) re-enters the queue at the back; ``event`` goes to the event log."""
        record.queued_since = now
        self.queue[record.spec.job_id] = record
        self._entered.append(record.view)
        if self.tenants is not None:
            self.tenants.queued(record)
        self.kernel.log(event, record.spec.job_id)

    # ----------------------------------------------------------------------------- scheduling
    def request_pass(self) -> None:
        """A scheduling pass at this instant, after its completions, arrivals and timers (one per instant)."""
        if not self._pass_pending:
            self._pass_pending = True
            self._at_end_of_instant(self._pass)

    def _place(self, job: JobView, free: FreeDevices) -> tuple[int, ...] | None:
        """The placer's answer for ``job`` on ``free``, checked to be distinct free device ids."""
        placer = self.placer
        devices = ask(placer, placer.place, (job, free, self._placement_rng), "placing job {0.job_id}")
        if devices is None:
            return None
        name = placer.name
        try:
            devices = tuple(devices)
        except TypeError as exc:
            raise PolicyError(f"placer {name!r} returned {devices!r} for job {job.job_id}, not devices") from exc
        cluster = self.cluster
        device_node, first_device, mask = cluster.device_node, cluster.node_first_device, free.mask
        n = len(device_node)
        for d in devices:
            if (type(d) is not int and (isinstance(d, bool) or not isinstance(d, (int, np.integer)))) or not 0 <= d < n:
                raise PolicyError(f"placer {name!r} placed job {job.job_id} on {d!r}, not a device id of this cluster")
            node = device_node[d]
            if not mask[node] >> (d - first_device[node]) & 1:  # free.is_free(d), without a call per device
                raise PolicyError(f"placer {name!r} placed job {job.job_id} on device {d}, which is not free")
        if len(set(devices)) != len(devices):
            raise PolicyError(f"placer {name!r} placed job {job.job_id} on {devices}: a device given twice")
        if self.network is not None and job.spec.model is not None and len(devices) == job.gpus and (
                not self.network.fits(job.spec, devices)):
            return None  # splits a tensor-parallel group across nodes, which the job forbids: no room here
        return devices

    def _scheduling_pass(self) -> None:
        self._pass_pending = False
        now = self.kernel.now
        for hook in self.before_pass:
            hook()
        if self.queue and self.tenants is not None:
            self._entered.clear()
            self._tenant_passes(now)
            self._check_starvation()
        elif self.queue or (self.running and self.scheduler.reshapes_running):
            view = ClusterView(now, self.cluster, self.ledger.free, self.queue, self.running, self._place,
                               tuple(self._entered), self._run_id, shared=self.ledger.shared, packing=self.packing,
                               rng=self._scheduling_rng)
            self._entered.clear()  # jobs preempted by this decision enter after the snapshot, for the next pass
            scheduler = self.scheduler
            decision = ask(scheduler, scheduler.schedule, (view,), "at t={0.now}")
            if not self.ledger.consistent():
                raise PolicyError(f"scheduler {scheduler.name!r} changed the cluster's free devices directly;"
                                  " view.free is read-only, try placements on view.trial()")
            self._apply(decision)
            if self.running:  # the first case of _check_starvation, without the call: jobs run, so none starves
                self._idle_passes = 0
            else:
                self._check_starvation()
        else:
            self._entered.clear()
        self._record_timeline(now)

    def _timer(self, token: int) -> Callable[[], None]:
        def fire() -> None:
            if token == self._timer_token:
                self._timer_pending = False
                self.request_pass()
        return fire

    def _tenant_passes(self, now: float) -> None:
        """Under quotas: each tenant with waiting jobs in turn (``TenantState.order``), its own scheduler on its own
        jobs, each decision validated and applied before the next tenant's view is built; a tenant whose situation
        has not changed since its last pass is not asked again (``TenantState.needs_pass``); one wake-up, the
        earliest any waiting tenant's scheduler asked for."""
        tenants = self.tenants
        assert tenants is not None
        ledger = self.ledger
        for tenant in tenants.order(now):
            if not tenants.needs_pass(tenant, now, ledger.free):
                continue
            tenants.looking(tenant, ledger.free)
            wake_at = self._tenant_pass(tenant, now, ledger.free)
            if tenants.quotas.reclaim and tenants.queue[tenant]:
                victims = tenants.reclaim_victims(tenant, ledger.free.pool_free)
                if victims:  # asked again, with the borrowers' devices shown free
                    shown = ledger.free.scratch()
                    for record in victims:
                        shown.give(record.devices)
                    wake_at = self._tenant_pass(tenant, now, shown, victims)
            tenants.passed(tenant, wake_at)
        self._set_timer(tenants.next_wake())

    def _tenant_pass(self, tenant: str, now: float, free: FreeDevices,
                     reclaimable: list[JobRecord] | None = None) -> float | None:
        """Ask ``tenant``'s scheduler (its view shows ``free``) and apply its decision; ``reclaimable``: borrowers of
        other tenants whose devices ``free`` shows free, preempted if a start takes them (the tenant may then reach
        its nominal quota, not borrow)."""
        tenants = self.tenants
        assert tenants is not None
        view, limit = tenants.view(tenant, now, self.cluster, free, self._place, self._run_id,
                                   nominal_only=reclaimable is not None)
        scheduler = tenants.scheduler(tenant)
        decision = ask(scheduler, scheduler.schedule, (view,), f"at t={{0.now}} for tenant {tenant!r}")
        if not self.ledger.consistent():
            raise PolicyError(f"scheduler {scheduler.name!r} changed the cluster's free devices directly;"
                              " view.free is read-only, try placements on view.trial()")
        return self._apply(decision, tenant=tenant, limit=limit, set_timer=False, reclaimable=reclaimable)

    def _set_timer(self, wake_at: float | None) -> None:
        """A pass at ``wake_at`` (None: none), replacing any earlier request."""
        self._timer_token += 1
        self._timer_pending = wake_at is not None
        if wake_at is not None:
            self.kernel.at(wake_at - self.kernel.env.now, EventOrder.TIMER, self._timer(self._timer_token))

    def _check_quota(self, tenant: str, limit: list[int], victims: list[JobRecord],
                     starts: list[tuple[JobRecord, tuple[int, ...], int, JobRecord | None]]) -> None:
        """Under quotas: the decision of ``tenant``'s scheduler touches only its jobs and keeps it within its limit
        (its nominal quota, plus what it may borrow now) in every pool."""
        tenants = self.tenants
        assert tenants is not None
        name = self.scheduler.name
        used = list(tenants.used[tenant])
        nominal = tenants.quota[tenant]
        for record in victims:
            if record.spec.tenant != tenant:
                raise PolicyError(f"scheduler {name!r} for tenant {tenant!r} preempts job {record.spec.job_id} of "
                                  f"tenant {record.spec.tenant!r}: under quotas a tenant preempts only its own jobs")
            used[record.pool] -= len(record.devices)
        for record, devices, pool, _ in starts:
            if record.spec.tenant != tenant:
                raise PolicyError(f"scheduler {name!r} for tenant {tenant!r} starts job {record.spec.job_id} of "
                                  f"tenant {record.spec.tenant!r}")
            used[pool] += len(devices)
        for p, count in enumerate(used):
            most = limit[p]
            if count > most:
                what = (f"quota of {most}" if most == nominal[p]
                        else f"quota of {nominal[p]} plus the {most - nominal[p]} it may borrow now")
                raise PolicyError(f"scheduler {name!r} gives tenant {tenant!r} {count} devices in pool "
                                  f"{self.cluster.pools[p].name!r}, above its {what}")

    def _apply(self, decision: Decision, *, tenant: str | None = None, limit: list[int] | None = None,
               set_timer: bool = True, reclaimable: list[JobRecord] | None = None) -> float | None:
        """Validate the whole decision, then carry it out; nothing changes if any part is invalid. Returns the
        decision's ``wake_at``; sets the timer for it unless ``set_timer`` is False. ``reclaimable``: running jobs
        of other tenants whose devices the starts may take (a reclaim): those whose devices they take are
        preempted first."""
        name = self.scheduler.name
        now = self.kernel.now
        if not isinstance(decision, Decision):
            raise PolicyError(f"scheduler {name!r} returned {type(decision).__name__}, not a Decision")
        if not decision.start and not decision.preempt:  # nothing to validate or carry out but the wake-up
            wake_at = self._checked_wake(decision.wake_at, now)
            if set_timer:
                self._set_timer(wake_at)
            return wake_at
        victims = []
        freed: set[int] = set()
        released: dict[int, float] = {}  # per shared device: the share its preempted fractional jobs give back
        leaving: dict[int, set[int]] = {}
        if decision.preempt and not self.scheduler.preemptive:
            raise PolicyError(f"scheduler {name!r} preempts jobs {list(decision.preempt)[:5]} but does not say it "
                              "preempts: set the class attribute preemptive = True")
        for job_id in decision.preempt:
            record = self.running.get(job_id)
            if record is None:
                raise PolicyError(f"scheduler {name!r} preempts job {job_id}, which is not running")
            if record in victims:
                raise PolicyError(f"scheduler {name!r} preempts job {job_id} twice")
            victims.append(record)
            if record.partner is not None and record.partner.spec.job_id not in decision.preempt:
                pass  # its partner stays on the devices
            elif record.spec.gpu_fraction != 1.0:
                device = record.devices[0]
                released[device] = released.get(device, 0.0) + record.spec.gpu_fraction
                leaving.setdefault(device, set()).add(job_id)
            else:
                freed.update(record.devices)
        for device, ids in leaving.items():  # a shared device all of whose jobs are preempted is freed whole
            if ids.issuperset(self.ledger.shared.jobs[device]):
                freed.add(device)
        if reclaimable:
            for record in reclaimable:
                freed.update(record.devices)
        moving = {record.spec.job_id: record for record in victims}  # preempted and started again: a migration
        starts = []
        claimed: set[int] = set()
        shares: dict[int, float] = {}  # per device: the share fractional starts of this decision put on it
        started: set[int] = set()
        alone: dict[int, tuple[JobRecord, tuple[int, ...]]] = {}  # jobs this decision starts alone (packing hosts)
        hosts: dict[int, JobRecord] = {}
        for assignment in decision.start:
            host = None
            if isinstance(assignment, Assignment) and assignment.pack_with is not None:
                record, devices, pool, host = self._validate_pack(assignment, moving, victims, alone, hosts)
            else:
                record, devices, pool = self._validate_start(assignment, freed, claimed, moving, shares, released)
                alone[record.spec.job_id] = (record, devices)
            if record.spec.job_id in started:
                raise PolicyError(f"scheduler {name!r} starts job {record.spec.job_id} twice")
            started.add(record.spec.job_id)
            starts.append((record, devices, pool, host))
        wake_at = self._checked_wake(decision.wake_at, now)
        if tenant is not None:
            assert limit is not None
            self._check_quota(tenant, limit, victims, starts)
            for record in reclaimable or ():
                if not claimed.isdisjoint(record.devices):
                    record.reclaims += 1
                    self.tenants.reclaims[record.spec.tenant] += 1  # type: ignore[union-attr]
                    self.preempt(record)
        for record in victims:
            self.preempt(record)
        for record, devices, pool, host in starts:
            self._start(record, devices, pool, host)
        if set_timer:
            self._set_timer(wake_at)  # a decision's wake_at replaces any earlier request
        return wake_at

    def _checked_wake(self, wake_at: Any, now: float) -> float | None:
        if wake_at is not None and not (isinstance(wake_at, (int, float)) and wake_at > now
                                        and math.isfinite(wake_at)):
            raise PolicyError(f"scheduler {self.scheduler.name!r} asks to wake at {wake_at!r}, not a finite time "
                              f"after now ({now})")
        return wake_at

    def _validate_start(self, assignment: Assignment, freed: set[int], claimed: set[int],
                        moving: dict[int, JobRecord], shares: dict[int, float] | None = None,
                        released: dict[int, float] | None = None) -> tuple[JobRecord, tuple[int, ...], int]:
        name = self.scheduler.name
        if not isinstance(assignment, Assignment):
            raise PolicyError(f"scheduler {name!r}: Decision.start holds {assignment!r}, not an Assignment")
        job_id, devices = assignment.job_id, tuple(assignment.devices)

        def what() -> str:  # built only for an error message
            return f"scheduler {name!r} (placer {self.placer.name!r}) starts job {job_id} on devices {devices}"

        record = self.queue.get(job_id) or moving.get(job_id)
        if record is None:
            raise PolicyError(f"{what()}, but the job is not waiting (nor preempted by the same decision)")
        gpus = len(devices)
        if record.spec.max_gpus is None:
            if gpus != record.spec.gpus:
                raise PolicyError(f"{what()}: the gang needs exactly {record.spec.gpus} devices, got {gpus}")
        else:
            low, high = record.spec.gang_range
            if not low <= gpus <= high:
                raise PolicyError(f"{what()}: the elastic job runs on {low} to {high} devices, got {gpus}")
        cluster = self.cluster
        device_node, first_device, mask = cluster.device_node, cluster.node_first_device, self.ledger.free.mask
        count = len(device_node)
        nodes = set()
        fraction = record.spec.gpu_fraction
        for d in devices:
            if type(d) is not int and (isinstance(d, bool) or not isinstance(d, (int, np.integer))):
                raise PolicyError(f"{what()}: {d!r} is not a device id of this cluster")
            if not 0 <= d < count:
                raise PolicyError(f"{what()}: {d!r} is not a device id of this cluster")
            if d in claimed or (shares and fraction == 1.0 and d in shares):
                raise PolicyError(f"{what()}: device {d} is given twice")
            node = device_node[d]
            if fraction != 1.0:
                self._claim_share(d, fraction, mask[node] >> (d - first_device[node]) & 1 or d in freed,
                                  shares, released, what)
            else:
                if not (mask[node] >> (d - first_device[node]) & 1 or d in freed):
                    raise PolicyError(f"{what()}: device {d} is busy" + (
                        " (shared by fractional jobs)" if self.ledger.shared.is_shared(d) else ""))
                claimed.add(d)
            nodes.add(node)
        node_pool = cluster.node_pool
        if len(nodes) == 1:  # most gangs: one node, so one pool
            pool = node_pool[node]
        else:
            pools = {node_pool[n] for n in nodes}
            if len(pools) != 1:
                raise PolicyError(f"{what()}: a gang must sit in one pool, got pools {sorted(pools)}")
            pool = pools.pop()
        if pool not in record.allowed_pools:
            raise PolicyError(f"{what()}: pool {cluster.pools[pool].name!r} is not allowed for this job")
        if len(nodes) > 1 and gpus <= cluster.pools[pool].devices_per_node and not self.placer.splits_gangs:
            raise PolicyError(f"{what()}: a gang of {gpus} fits in one node of {cluster.pools[pool].devices_per_node}"
                              f" but was split over nodes {sorted(nodes)}")
        return record, devices, pool

    def _validate_pack(self, assignment: Assignment, moving: dict[int, JobRecord], victims: list[JobRecord],
                       alone: dict[int, tuple[JobRecord, tuple[int, ...]]], hosts: dict[int, JobRecord],
                       ) -> tuple[JobRecord, tuple[int, ...], int, JobRecord]:
        """A packed start (``Assignment.pack_with``): the job waits (or is preempted by this decision), its host runs
        alone and stays (or this decision starts it alone earlier), the devices are exactly the host's, the gangs
        are the same and the packing book measures the pair on that device type."""
        name = self.scheduler.name
        job_id, host_id, devices = assignment.job_id, assignment.pack_with, tuple(assignment.devices)

        def what() -> str:
            return f"scheduler {name!r} starts job {job_id} packed with job {host_id} on devices {devices}"

        if not self.scheduler.packs or self.packing is None:
            raise PolicyError(f"{what()} but does not say it packs: set the class attribute packs = True")
        record = self.queue.get(job_id) or moving.get(job_id)
        if record is None:
            raise PolicyError(f"{what()}, but the job is not waiting (nor preempted by the same decision)")
        if host_id == job_id:
            raise PolicyError(f"{what()}: a job cannot be packed with itself")
        if host_id in hosts:
            raise PolicyError(f"{what()}: job {host_id} is already given a partner by this decision (two jobs at "
                              "most on a device)")
        host = self.running.get(host_id)  # type: ignore[arg-type]
        if host is not None and host not in victims:
            if host.partner is not None and host.partner not in victims:
                raise PolicyError(f"{what()}: job {host_id} already runs packed with job {host.partner.spec.job_id} "
                                  "(two jobs at most on a device)")
            host_devices = host.devices
        elif host_id in alone:
            host, host_devices = alone[host_id]  # type: ignore[index]
        else:
            raise PolicyError(f"{what()}: job {host_id} is not running (nor started alone earlier in this decision)")
        if devices != host_devices:
            raise PolicyError(f"{what()}: a packed job runs on exactly its partner's devices {host_devices}")
        if record.spec.gpus != host.spec.gpus or record.spec.max_gpus is not None or host.spec.max_gpus is not None:
            raise PolicyError(f"{what()}: packed jobs are rigid gangs of the same size, got {record.spec.gpus} and "
                              f"{host.spec.gpus} devices" + (" (an elastic job)" if record.spec.max_gpus is not None
                                                             or host.spec.max_gpus is not None else ""))
        pool = self.cluster.pool_of_device(devices[0])
        if pool not in record.allowed_pools:
            raise PolicyError(f"{what()}: pool {self.cluster.pools[pool].name!r} is not allowed for job {job_id}")
        device = self.cluster.pools[pool].device
        if self.packing.factors(record.spec, host.spec, device) is None:
            raise PolicyError(f"{what()}: the pair ({record.spec.job_type!r}, {host.spec.job_type!r}, gang "
                              f"{record.spec.gpus}) is not measured packed on {device} in "
                              f"{self.packing.table.source} (no job type, unmeasured, or [0, 0]): run it alone")
        hosts[host_id] = record
        return record, devices, pool, host

    def _claim_share(self, device: int, fraction: float, whole_free: bool, shares: dict[int, float] | None,
                     released: dict[int, float] | None, what: Callable[[], str]) -> None:
        """A fractional start's device: a shared device, or a whole free one, with room for ``fraction`` once the
        decision's preemptions gave their shares back and its earlier fractional starts took theirs."""
        if shares is None:
            raise PolicyError(f"{what()}: a fractional job cannot be started here")
        shared = self.ledger.shared
        room = shared.room(device) if shared.is_shared(device) else 1.0 if whole_free else 0.0
        room += (released or {}).get(device, 0.0) - shares.get(device, 0.0)
        if fraction > room + EPSILON:
            raise PolicyError(f"{what()}: the job asks for {fraction:g} of a device and device {device} has "
                              f"{max(room, 0.0):.6g} free")
        shares[device] = shares.get(device, 0.0) + fraction

    def _check_starvation(self) -> None:
        """Devices idle, jobs waiting, and nothing left that could change that: stop with a clear error."""
        if (self.running or self._next_job < len(self.jobs) or not self.queue
                or any(hook() for hook in self.others_may_free_devices)):
            self._idle_passes = 0
            return
        self._idle_passes += 1
        if self._timer_pending and self._idle_passes <= self.max_idle_passes:
            return
        raise self._starvation()

    def _starvation(self) -> StarvationError:
        waiting = list(self.queue.values())[:5]
        names = ", ".join(f"job {r.spec.job_id} ({r.spec.gpus} gpus)" for r in waiting)
        return StarvationError(
            f"at t={self.kernel.now:.6g}: scheduler {self.scheduler.name!r} with placer {self.placer.name!r} "
            f"starts nothing while {len(self.queue)} jobs wait ({names}{', ...' if len(self.queue) > 5 else ''}) "
            f"and {self.ledger.free.total} devices are free; no arrival or completion is left to change that")

    def running_by_priority(self) -> list[JobView]:
        """Running jobs, lowest scheduling priority first when the scheduler ranks jobs (else start order)."""
        now = self.kernel.now
        running = [r.view for r in self.running.values()]
        scheduler = self.scheduler

        def ranked() -> list[JobView]:
            keys = [scheduler.priority(job, now) for job in running]
            if not keys or keys[0] is None:
                return running
            return [running[i] for i in sorted(range(len(running)), key=keys.__getitem__, reverse=True)]

        return ask(scheduler, ranked, (), "ranking running jobs")

    def _record_timeline(self, now: float) -> None:
        times, allocated, queued, running = self.timeline
        same = now == self._timeline_last  # times[-1] (NaN before the first), without making a float of it
        shared = self.ledger.shared
        idle = shared.idle_share() if shared else 0.0
        if same:
            allocated[-1], queued[-1], running[-1] = self.ledger.allocated, len(self.queue), len(self.running)
            self.timeline_idle_share[-1] = idle
        else:
            self._timeline_last = now
            times.append(now)
            allocated.append(self.ledger.allocated)
            queued.append(len(self.queue))
            running.append(len(self.running))
            self.timeline_idle_share.append(idle)
        if self.track_fragmentation:
            sample = (fragmentation(self.ledger.free, FRAGMENTATION_SIZE), gang_capacity(self.ledger.free))
            if same and self.fragmentation_samples:
                self.fragmentation_samples[-1] = sample
            else:
                self.fragmentation_samples.append(sample)


def job_sequence(jobs: Iterable[TrainingJob]) -> list[TrainingJob]:
    """The jobs in arrival order (stable), with unique ids checked."""
    specs = sorted(jobs, key=lambda j: j.arrival)
    ids = [j.job_id for j in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("workload: job ids must be unique")
    return specs


