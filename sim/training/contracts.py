"""The contracts policies implement and the read-only views they receive.

A scheduler decides which jobs run (``schedule(view) -> Decision``); a placer decides on which devices
(``place(job, free, rng) -> devices | None``). Any scheduler works with any placer: schedulers place
through ``view.trial()``, which calls the simulation's placer on a scratch copy of the free devices.
The engine validates every ``Decision`` before applying any of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.platform.shared_devices import SharedDevices
from sim.training.jobs import JobView
from sim.training.packing import PackingBook


@dataclass(frozen=True, slots=True)
class Assignment:
    """Start (or resume) job ``job_id`` on exactly these devices. ``pack_with``: start it packed with job
    ``pack_with`` on that job's devices (``devices`` must be exactly those): a job running alone and not preempted by
    the same decision, or one this decision starts alone earlier in ``Decision.start``. Only a scheduler that
    says ``packs`` may ask it; the two must be of the same gang, and the run's packing book must measure the pair
    on that device type (``sim.training.packing``)."""

    job_id: int
    devices: tuple[int, ...]
    pack_with: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What a scheduler wants done now: preempt these running jobs, then start these queued ones. A job both
    preempted and started moves to the new devices (a migration: it pays the checkpoint and restore cost).

    ``wake_at`` asks for another scheduling pass at that time even if nothing else happens (a policy's
    own timer, e.g. a priority threshold crossing or a time-slice quantum). Each decision's
    ``wake_at`` replaces the previous one: ``None`` cancels a pending timer.
    """

    start: tuple[Assignment, ...] = ()
    preempt: tuple[int, ...] = ()
    wake_at: float | None = None


NOTHING = Decision()


class Policy:
    """Base of all policies. Subclasses are dataclasses whose fields are their typed parameters."""

    kind: ClassVar[str] = "policy"
    name: ClassVar[str] = ""

    @classmethod
    def parameters(cls) -> dict[str, dataclasses.Field[Any]]:
        if not dataclasses.is_dataclass(cls):
            return {}
        return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}

    def describe(self) -> dict[str, Any]:
        """Name and parameter values, for results metadata."""
        params = {k: getattr(self, k) for k in self.parameters()}
        return {"name": self.name or type(self).__name__, **params}


class Placer(Policy):
    """Chooses devices for one job, or ``None`` if it does not fit in ``free`` now.

    ``splits_gangs``: the placer may split a gang that fits in one node over several nodes of its pool (a
    topology-agnostic placer that only counts devices); the engine then checks the one-pool rule but not the
    one-node rule for the jobs this placer places."""

    kind: ClassVar[str] = "placer"
    splits_gangs: ClassVar[bool] = False

    def place(self, job: JobView, free: FreeDevices, rng: np.random.Generator) -> tuple[int, ...] | None:
        raise NotImplementedError


class PlacementTrial:
    """A scratch copy of the free devices on which a scheduler tries placements and preemptions.

    A fractional job (``gpu_fraction`` < 1) is placed on a shared device with room (the share book's ``choose``:
    best-fit by default) before the placer is asked for one whole free device to open; ``shared`` is the trial's
    copy of the share book (made on first use)."""

    __slots__ = ("_base_shared", "_place", "_shared", "free")

    def __init__(self, free: FreeDevices, place: Callable[[JobView, FreeDevices], tuple[int, ...] | None],
                 shared: SharedDevices | None = None) -> None:
        self.free = free
        self._place = place
        self._base_shared = shared
        self._shared: SharedDevices | None = None

    @property
    def shared(self) -> SharedDevices | None:
        """The trial's share book (None in a run without one)."""
        if self._shared is None and self._base_shared is not None:
            self._shared = self._base_shared.copy()
        return self._shared

    def place(self, job: JobView) -> tuple[int, ...] | None:
        """Ask the placer for devices; if it finds some, they are taken in this trial."""
        fraction = job.spec.gpu_fraction
        if fraction != 1.0 and self._base_shared is not None:
            return self._place_share(job, fraction)
        devices = self._place(job, self.free)
        if devices is not None:
            self.free.take(devices)
        return devices

    def _place_share(self, job: JobView, fraction: float) -> tuple[int, ...] | None:
        shared = self.shared
        assert shared is not None
        device = shared.choose(fraction, job.allowed_pools)
        if device is None:
            devices = self._place(job, self.free)
            if devices is None:
                return None
            self.free.take(devices)
            device = devices[0]
        shared.add(device, job.job_id, fraction)
        return (device,)

    def unplace(self, job: JobView, devices: tuple[int, ...]) -> None:
        """Undo this trial's placement of ``job`` on ``devices``."""
        if job.spec.gpu_fraction != 1.0 and self._base_shared is not None:
            self._leave_share(devices[0], job.job_id)
        else:
            self.free.give(devices)

    def _leave_share(self, device: int, job_id: int) -> None:
        shared = self.shared
        assert shared is not None
        if shared.remove(device, job_id):
            self.free.give((device,))

    def release(self, job: JobView) -> None:
        """Free a running job's devices in this trial (a hypothetical preemption); a fractional job frees its
        share, and its device only if no other job shares it."""
        if job.spec.gpu_fraction != 1.0 and self._base_shared is not None:
            self._leave_share(job.devices[0], job.job_id)
        else:
            self.free.give(job.devices)

    def reclaim(self, job: JobView) -> None:
        """Undo ``release``."""
        fraction = job.spec.gpu_fraction
        if fraction != 1.0 and self._base_shared is not None:
            shared = self.shared
            assert shared is not None
            device = job.devices[0]
            if not shared.is_shared(device):
                self.free.take((device,))
            shared.add(device, job.job_id, fraction)
        else:
            self.free.take(job.devices)

    def quota_short(self, job: JobView) -> dict[int, int]:
        """Per allowed pool where only a quota keeps ``job`` out, how many of its tenant's devices must be freed
        there first: none here (no quotas)."""
        return {}

    def reclaimable(self, job: JobView) -> bool:
        """Whether ``reclaim(job)`` keeps this trial within its limits: always here; under tenant quotas, only
        while the tenant's quota has room for the job again (a released job whose release made the room a
        placement used must be preempted, even if the placement used other devices)."""
        return True


class ClusterView:
    """What a scheduler sees: the time, the cluster, the free devices and the jobs waiting or running.

    ``queued`` (queue order: arrival, preempted jobs re-enter at the back) and ``running`` are built
    on first access, so a policy pays only for what it reads. ``entered`` holds the jobs that entered the
    queue (arrived, or were preempted) since the previous scheduling pass, in queue order, so that a
    policy can keep its own index of the queue instead of reading all of it at every pass; ``run_id``
    tells one run from another, for a policy instance used in more than one. ``shared`` is the live share book of
    the devices fractional jobs share (read-only, like ``free``), or None. ``packing`` is the run's packing book
    (co-located speeds and the ``packing`` random stream) when the scheduler ``packs``, else None. ``rng`` is the
    scheduler's own random stream (the run's ``scheduling`` stream; under quotas each tenant's instance has its own,
    ``scheduling:TENANT``), for a policy that draws; None in a view built outside a simulation.
    """

    __slots__ = ("_make_trial", "_place", "_queue", "_queued", "_running", "_running_map", "cluster", "entered",
                 "free", "now", "packing", "rng", "run_id", "shared")

    def __init__(self, now: float, cluster: Cluster, free: FreeDevices, queue: Mapping[int, Any],
                 running: Mapping[int, Any], place: Callable[[JobView, FreeDevices], tuple[int, ...] | None],
                 entered: tuple[JobView, ...] = (), run_id: int = 0,
                 trial: Callable[[FreeDevices], PlacementTrial] | None = None,
                 shared: SharedDevices | None = None, packing: PackingBook | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.now = now
        self.rng = rng
        self.shared = shared
        self.packing = packing
        self.cluster = cluster
        self.free = free
        self.entered = entered
        self.run_id = run_id
        self._queue = queue
        self._running_map = running
        self._queued: tuple[JobView, ...] | None = None
        self._running: tuple[JobView, ...] | None = None
        self._place = place
        self._make_trial = trial

    @property
    def queued(self) -> tuple[JobView, ...]:
        if self._queued is None:
            self._queued = tuple(r.view for r in self._queue.values())
        return self._queued

    def queued_lazily(self) -> Iterator[JobView]:
        """``queued``, one job at a time: for a policy that may read only the first few of a long queue."""
        if self._queued is not None:
            return iter(self._queued)
        return (record.view for record in self._queue.values())

    @property
    def running(self) -> tuple[JobView, ...]:
        if self._running is None:
            self._running = tuple(r.view for r in self._running_map.values())
        return self._running

    def trial(self) -> PlacementTrial:
        """A fresh what-if copy of the free devices, placing with the simulation's placer (within the tenant's
        quota when the run has quotas)."""
        if self._make_trial is not None:
            return self._make_trial(self.free.scratch())
        return PlacementTrial(self.free.scratch(), self._place, self.shared)


class Scheduler(Policy):
    """Decides which queued jobs start and which running jobs are preempted.

    ``preemptive`` says whether the scheduler ever preempts (a decision with ``preempt`` from a scheduler that
    says False is a ``PolicyError``). The engine relies on it: under quotas, a tenant whose scheduler never
    preempts and that has no room for any of its waiting jobs is not asked again when only other tenants'
    devices changed (a preemptive one, when ``preempts_nothing`` also says so).

    ``reshapes_running`` says the scheduler may change running jobs' devices while no job waits (an elastic
    policy growing its jobs onto devices a finish freed): the engine then asks it at every pass, not only while
    jobs wait. Without quotas only; under quotas a tenant is asked while it has waiting jobs.

    ``packs`` says the scheduler may start a job packed with a running one (``Assignment.pack_with``); the run then
    gives it a packing book (``ClusterView.packing``). A packing scheduler does not run with the network model,
    tenant quotas, inference services or plugged-in subsystems (failures): their device bookkeeping assumes one
    job per device."""

    kind: ClassVar[str] = "scheduler"
    preemptive: ClassVar[bool] = False
    reshapes_running: ClassVar[bool] = False
    packs: ClassVar[bool] = False

    def schedule(self, view: ClusterView) -> Decision:
        raise NotImplementedError

    def report(self) -> Mapping[str, float]:
        """Figures of the policy's own for the run's summary (``summary()["policy"]``), read when the run ends: for
        example the rounds a round-based scheduler ran. Under tenant quotas the figures of the tenants' instances
        are added up. Empty by default."""
        return {}

    def preempts_nothing(self, now: float) -> bool:
        """Under tenant quotas, asked of a tenant's instance at ``now``, between its passes, when none of its jobs
        entered its queue or stopped since its last decision and the ``wake_at`` of that decision has not come:
        True if a pass now would preempt none of its jobs, whatever the free devices, nor decide or ask to wake
        differently than that decision did for any reason but the free devices (for example: no running job has
        a lower priority than any waiting job, for a scheduler that preempts only for a strictly higher one, and
        no priority changed since). The engine then does not ask it while none of its waiting jobs has room
        under its tenant's limit, as for a scheduler that never preempts. It is asked at most once between two
        passes: a True answer is taken to hold until the next pass (none comes sooner than the ``wake_at`` asked for,
        or one of its jobs entering its queue or stopping), since what differs meanwhile is time alone, which a
        policy acting on time alone asks for with ``wake_at``. Default: ``not preemptive``."""
        return not self.preemptive

    def waits_for_first(self) -> bool:
        """True if a pass starts no job while the first job of its queue (``view.queued``'s order) cannot start:
        strict queue order, head-of-line blocking (fifo's ``blocking``). Under tenant quotas the engine then counts
        a tenant's room for that job only (a tenant whose first waiting job has no room under its limit has no room
        for any start). Read once per run. Default: False."""
        return False

    def priority(self, job: JobView, now: float) -> Any:
        """The job's place in this scheduler's order (smaller runs first), or None if it has none. The
        engine uses it to offer co-location policies the running jobs lowest priority first."""
        return None


@dataclass(frozen=True, slots=True)
class TenantStatus:
    """One tenant with waiting jobs, as a tenant-order policy sees it: its nominal quota and devices held per
    pool (by pool index), the device-seconds its jobs have held so far (``attained``), its weight and how many
    of its jobs wait."""

    name: str
    nominal: tuple[int, ...]
    used: tuple[int, ...]
    attained: float
    weight: float
    waiting: int


class TenantOrder(Policy):
    """Under tenant quotas, the order in which tenants with waiting jobs are scheduled at a pass: the earlier
    tenant places its jobs first and, when quotas borrow, borrows idle devices first."""

    kind: ClassVar[str] = "tenant_order"

    def order(self, tenants: Sequence[TenantStatus], capacity: Sequence[int], now: float) -> Sequence[str]:
        """The names of ``tenants``, each once, first scheduled first (``capacity``: devices per pool)."""
        raise NotImplementedError
