"""``Simulation``: one run. It builds the kernel, the device ledger, the training and serving subsystems and
the co-location broker between them, runs the kernel to the horizon and returns ``Results``."""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sim import registry
from sim.engine.colocation import ColocationBroker
from sim.engine.kernel import Kernel
from sim.engine.ledger import DeviceLedger
from sim.engine.subsystem import Subsystem
from sim.engine.tables import build_results
from sim.errors import ConfigError
from sim.output.accounting import AccountingOptions
from sim.output.results import Results
from sim.platform.cluster import Cluster
from sim.platform.hardware import get_device
from sim.platform.network.model import NetworkModel, NetworkOptions
from sim.progress import Progress
from sim.random import RandomStreams, SeedLike
from sim.serving.contracts import Autoscaler, Colocation, Router
from sim.serving.kv_transfer import KVTransfers
from sim.serving.service import ServiceRuntime, ServiceSpec
from sim.serving.subsystem import ServingSubsystem
from sim.training.contracts import Placer, Scheduler, TenantOrder
from sim.training.jobs import JobRecord
from sim.training.packing import PackingBook
from sim.training.quotas import Quotas
from sim.training.subsystem import PreemptionCost, TrainingSubsystem, job_sequence
from workloads.jobs import JobTrace, TrainingJob
from workloads.traces.gavel import Colocations


class Simulation:
    """A cluster, a set of training jobs, inference services and the policies that schedule them; ``run()``
    returns ``Results``.

    ``scheduler`` and ``placer`` (and ``router``, ``autoscaler``, ``colocation``) are registered names
    (``"las"``), mappings with parameters (``{"name": "las", "thresholds": [3600]}``) or policy instances.
    ``seed`` is an int, a ``SeedSequence`` or a ``Generator``; policies draw from named streams
    (``placement``), never from the workload's, so compared policies see the same jobs.

    ``quotas`` (``{tenant: {pool: devices}}``, a name such as ``"philly-vc"``, or a ``Quotas`` with a mode:
    ``hard``, ``borrow`` or ``reclaim``; ``sim.training.quotas``) gives each tenant a nominal quota of devices per
    pool; each tenant's jobs are then scheduled by their own instance of ``scheduler``, tenants in the order of
    ``tenant_order`` (``quota-share``, ``drf``, ``fair-share``, or a ``TenantOrder``).

    ``subsystems`` plugs in more kinds of work (node failures, batch inference): each a callable that is given
    the assembled ``Simulation`` (its ``kernel``, ``ledger``, ``broker``, ``training``, ``streams``) and returns a
    ``sim.engine.subsystem.Subsystem``. They start after training and serving, in the order given, and
    training's starvation check waits while any of them ``may_free_devices()``.

    Jobs with a ``gpu_fraction`` below 1 share devices (``sim.platform.shared_devices``); ``share_fit``
    (``best-fit`` or ``worst-fit``) says which shared device with room such a job goes to. They do not run under
    ``quotas`` (a ``ConfigError``).

    A scheduler that ``packs`` (``gandiva``) runs pairs of jobs on the same devices at the co-located speeds of
    ``colocations`` (``workloads.traces.gavel.load_gavel_colocations``; default Gavel's bundled file), drawing its
    choices from the ``packing`` stream (``sim.training.packing``). It does not run with the network model, quotas,
    inference services or plugged-in subsystems (a ``ConfigError``).
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
        subsystems: Sequence[Callable[[Simulation], Subsystem]] = (),
        quotas: Quotas | Mapping[str, Any] | str | None = None,
        tenant_order: str | Mapping[str, Any] | TenantOrder = "quota-share",
        share_fit: str = "best-fit",
        colocations: Colocations | None = None,
    ) -> None:
        self.cluster = cluster
        if accounting is not None and not isinstance(accounting, AccountingOptions):
            raise ConfigError(f"accounting must be a sim.AccountingOptions, got {type(accounting).__name__}")
        self.accounting = accounting or AccountingOptions()
        self.network: NetworkModel | None = None
        if network is not None and network is not False:
            options = (network if isinstance(network, NetworkOptions) else NetworkOptions() if network is True
                       else NetworkOptions(**network))
            self.network = NetworkModel(cluster, options)
        # fragmentation of the free devices at every timeline record (default: with the network model)
        self.track_fragmentation = self.network is not None if fragmentation is None else bool(fragmentation)
        self.streams = RandomStreams(seed)
        self.scheduler: Scheduler = registry.create("scheduler", scheduler, where="policy.scheduler")  # type: ignore[assignment]
        self.placer: Placer = registry.create("placer", placer, where="policy.placer")  # type: ignore[assignment]
        self.preemption = preemption or PreemptionCost()
        if horizon is not None and not (isinstance(horizon, (int, float)) and horizon > 0):
            raise ConfigError(f"sim.horizon must be a positive number of seconds, got {horizon!r}")
        self.horizon = math.inf if horizon is None else float(horizon)
        self.metadata = dict(metadata or {})
        if not sample_interval > 0:
            raise ConfigError(f"sim.sample_interval must be positive seconds, got {sample_interval!r}")
        self.sample_interval = float(sample_interval)

        self.trace = jobs if isinstance(jobs, JobTrace) else None
        specs = job_sequence(self.trace.jobs if self.trace is not None else jobs)
        self.jobs = specs
        if self.network is not None:
            for spec in specs:
                if spec.model is not None:  # a model job no pool can run: a ConfigError naming it, before the run
                    allowed = None if spec.allowed_devices is None else {get_device(d).name
                                                                         for d in spec.allowed_devices}
                    for p, pool in enumerate(cluster.pools):
                        if cluster.pool_devices[p] >= spec.gpus and (allowed is None or pool.device in allowed):
                            self.network.reference_step(spec, p)
        self.quotas = None if quotas is None else Quotas.from_config(quotas, "quotas")
        if self.quotas is not None:
            fractional = next((spec for spec in specs if spec.gpu_fraction != 1.0), None)
            if fractional is not None:
                raise ConfigError(f"job {fractional.job_id}: gpu_fraction {fractional.gpu_fraction:g} with quotas: "
                                  "fractional jobs do not run under tenant quotas")
        resolved = None if self.quotas is None else self.quotas.resolve(cluster, (spec.tenant for spec in specs))
        self.quota_devices = None if resolved is None else {  # per tenant: its quota per pool name, for the results
            tenant: {pool.name: row[p] for p, pool in enumerate(cluster.pools) if row[p]}
            for tenant, row in resolved.nominal.items()}
        self.tenant_order: TenantOrder | None = None if resolved is None else registry.create(  # type: ignore[assignment]
            "tenant_order", tenant_order, where="policy.tenant_order")
        self.packing: PackingBook | None = None
        if self.scheduler.packs:
            self.packing = _packing_book(self, services, subsystems, colocations)
        elif colocations is not None:
            raise ConfigError(f"colocations (sim.colocations): scheduler {self.scheduler.name!r} does not pack jobs, "
                              "so co-located throughputs would go unused; they are for a scheduler that packs "
                              "(gandiva)")
        self.kernel = Kernel(record_events)
        self.ledger = DeviceLedger(cluster, share_fit)
        self.training = TrainingSubsystem(
            self.kernel, self.ledger, specs, scheduler=self.scheduler, placer=self.placer,
            placement_rng=self.streams["placement"], preemption=self.preemption, network=self.network,
            track_fragmentation=self.track_fragmentation, max_idle_passes=max_idle_passes, quotas=resolved,
            tenant_order=self.tenant_order, packing=self.packing, streams=self.streams)
        self.router: Router = registry.create("router", router, where="policy.router")  # type: ignore[assignment]
        self.colocation: Colocation = registry.create("colocation", colocation, where="policy.colocation")  # type: ignore[assignment]
        self.broker = ColocationBroker(self.kernel, self.ledger, self.training, self.colocation)
        autoscalers: list[Autoscaler] = [  # one per service, or per pool of a disaggregated service
            registry.create("autoscaler", autoscaler, where="policy.autoscaler")  # type: ignore[misc]
            for spec in services for _ in range(2 if spec.disaggregated else 1)]
        transfers = KVTransfers(cluster, self.kernel.at_time, self.network,
                                self.training.network_changed if self.network is not None else None)
        self.serving = ServingSubsystem(
            self.kernel, self.broker, services, router=self.router, autoscalers=autoscalers, streams=self.streams,
            sample_interval=self.sample_interval, coalesce=coalesce, transfers=transfers)
        if services:
            self.training.before_pass.append(lambda: self.broker.top_up_headroom(self.serving.services))
            self.training.others_may_free_devices.append(self.serving.may_free_devices)
        extra = tuple(build(self) for build in subsystems)
        for subsystem in extra:
            for method in ("start", "stop", "may_free_devices"):
                if not callable(getattr(subsystem, method, None)):
                    raise ConfigError(f"subsystem {type(subsystem).__name__} has no {method}() method: a subsystem "
                                      "implements start, stop and may_free_devices (sim.engine.subsystem)")
            self.training.others_may_free_devices.append(subsystem.may_free_devices)
        self.subsystems: tuple[Subsystem, ...] = (self.training, self.serving, *extra)
        self._progress = Progress(len(specs), enabled=progress)
        self._has_run = False
        self._wall = 0.0
        self._over = False
        self._finished = False
        self.events = 0
        self.end_time = 0.0

    def run(self) -> Results:
        """Run to the last event (or the horizon) and return the results."""
        self.start()
        while self.advance():
            pass
        return self.finish()

    def start(self) -> None:
        """Begin the run without running it (the subsystems' first events). ``run()`` is ``start()``, then
        ``advance()`` until it returns False, then ``finish()``; an environment that pauses the kernel at each
        decision (``sim.gym``) calls them itself."""
        if self._has_run:
            raise RuntimeError("a Simulation runs once; build a new one for another run")
        self._has_run = True
        self._wall = time.perf_counter()
        for subsystem in self.subsystems:
            subsystem.start()

    def advance(self) -> bool:
        """Run on until a policy pauses the kernel (``kernel.pause()``): True; or until the run is over: False."""
        if not self._has_run:
            raise RuntimeError("start() the Simulation before advancing it")
        progress, training = self._progress, self.training
        self.end_time = self.kernel.run(self.horizon, lambda: progress.update(training.finished))
        self._over = not self.kernel.paused
        return not self._over

    def finish(self) -> Results:
        """End the run (once ``advance()`` returned False): account the work in progress and return the results."""
        if not self._over or self._finished:
            raise RuntimeError("finish() a Simulation once, after advance() has returned False")
        self._finished = True
        self._progress.close(self.training.finished)
        self.events = self.kernel.events
        for subsystem in self.subsystems:
            subsystem.stop(self.end_time)
        return build_results(self, wall_seconds=time.perf_counter() - self._wall)

    # What the tables (sim.engine.tables.FinishedRun) and tests read of a finished run.
    @property
    def env(self) -> Any:
        return self.kernel.env

    @property
    def event_log(self) -> list[tuple[float, str, int, tuple[int, ...]]] | None:
        return self.kernel.event_log

    @property
    def records(self) -> list[JobRecord]:
        return self.training.records

    @property
    def queue(self) -> dict[int, JobRecord]:
        return self.training.queue

    @property
    def running(self) -> dict[int, JobRecord]:
        return self.training.running

    @property
    def free(self) -> Any:
        return self.ledger.free

    @property
    def timeline(self) -> tuple[array[float], array[int], array[int], array[int]]:
        """(time, allocated, queued, running) after each scheduling pass."""
        return self.training.timeline

    @property
    def timeline_idle_share(self) -> array[float]:
        """Per timeline row: the shares of shared devices that no fractional job holds."""
        return self.training.timeline_idle_share

    @property
    def scheduler_report(self) -> dict[str, float]:
        return self.training.scheduler_report()

    @property
    def fragmentation_samples(self) -> list[tuple[float, dict[int, int]]]:
        return self.training.fragmentation_samples

    @property
    def not_arrived(self) -> Sequence[TrainingJob]:
        """The workload's jobs that had not arrived when the run stopped (at the horizon), in arrival order."""
        return self.training.not_arrived

    @property
    def services(self) -> list[ServiceRuntime]:
        return self.serving.services

    @property
    def replica_timeline(self) -> list[tuple[float, str, int, int, int]]:
        return self.serving.replica_timeline

    @property
    def replica_samples(self) -> list[tuple[float, str, int, int, int, float]]:
        return self.serving.replica_samples

    @property
    def autoscaler(self) -> str:
        """The autoscaler's name (every service has its own instance of the same policy)."""
        return self.serving.autoscalers[0].name if self.serving.autoscalers else "static"

    @property
    def scale_ups_blocked(self) -> int:
        """Scale-ups the autoscalers asked for that found no devices, over all services."""
        return sum(state.blocked for state in self.serving.scaling)

    @property
    def training_preemptions_caused(self) -> int:
        return self.broker.training_preemptions_caused

    @property
    def quota_record(self) -> dict[str, Any] | None:
        """Under quotas: the mode, the tenant order and, per tenant, the device-seconds it held above its nominal
        quota (borrowed) and how many of its jobs' preemptions were reclaims; None without quotas."""
        tenants = self.training.tenants
        if tenants is None or self.quotas is None:
            return None
        totals = tenants.totals(self.end_time)
        return {"mode": tenants.quotas.mode, "tenant_order": tenants.tenant_order.describe(),
                "borrowed_device_seconds": {t: borrowed for t, (_, borrowed) in totals.items()},
                "reclaims": dict(tenants.reclaims)}


def _packing_book(sim: Simulation, services: Sequence[ServiceSpec], subsystems: Sequence[object],
                  colocations: Colocations | None) -> PackingBook:
    """The packing book of a run whose scheduler packs, after checking that nothing else in the run assumes one job
    per device."""
    name = sim.scheduler.name
    others = [what for what, present in (("the network model (sim.network)", sim.network is not None),
                                         ("tenant quotas (cluster.quotas)", sim.quotas is not None),
                                         ("inference services", bool(services)),
                                         ("plugged-in subsystems such as failures", bool(subsystems))) if present]
    if others:
        raise ConfigError(f"policy.scheduler: {name!r} packs jobs on shared devices, which does not run with "
                          f"{', '.join(others)}")
    return PackingBook(sim.streams["packing"], colocations)

