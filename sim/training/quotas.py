"""Tenant quotas: each tenant (a team, a user, a trace's virtual cluster) has a nominal quota of devices in each
pool, as a Kubernetes Kueue ClusterQueue's ``nominalQuota`` per flavor or a YARN capacity-scheduler queue's
capacity. Three modes, as Kueue and YARN define them (all tenants form one cohort):

- ``hard``: a tenant's jobs never hold more than its nominal quota in a pool.
- ``borrow``: a tenant may also use idle quota of other tenants, up to its ``borrowing_limit`` above its nominal
  quota (Kueue ``borrowingLimit``), and a tenant lends at most ``lending_limit`` of its idle quota (Kueue
  ``lendingLimit``). Devices in no tenant's quota are lent to all. Borrowed devices are kept until the borrowing
  job ends: without reclaim, an owner whose quota is lent waits for the borrowers to finish.
- ``reclaim``: borrowing, and a tenant below its nominal quota whose waiting jobs fit in its unused quota takes
  devices back from borrowing jobs of other tenants (Kueue ``reclaimWithinCohort: Any``, YARN capacity
  preemption): after its scheduler has placed what it could on free devices, it is asked again with the devices
  of borrowers (``TenantState.reclaim_victims``, the most recently started first) shown free, and the borrowers
  whose devices its starts take are preempted, at the checkpoint cost of any preemption. The owner's jobs start
  in the same scheduling pass; a borrower whose devices are not needed keeps running.

Each tenant's waiting jobs are scheduled by its own instance of the run's scheduler, which sees only that
tenant's jobs (its queue, its running jobs, the jobs that entered its queue): fifo is strict within a tenant,
and a tenant at its quota does not hold up another. Tenants are asked one after another within a pass, in the
order of the run's tenant-order policy (``sim.training.contracts.TenantOrder``; default ``quota-share``: the
smallest share of its nominal quota in use first), each decision validated and applied before the next
tenant's view is built, so the order decides who borrows idle devices first. A job may preempt only its own
tenant's jobs (a reclaim is the engine's). A job bigger than its tenant's nominal quota plus borrowing
limit in every pool it may use is ``unschedulable`` on arrival, and so is every job of a tenant without a quota.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.engine.kernel import ask
from sim.errors import ConfigError, PolicyError, UnknownNameError, did_you_mean
from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.platform.hardware import get_device
from sim.random import RandomStreams
from sim.training.contracts import ClusterView, PlacementTrial, Scheduler, TenantOrder, TenantStatus
from sim.training.jobs import JobRecord, JobView

QUOTA_MODES = ("hard", "borrow", "reclaim")
UNLIMITED = 1 << 40
"""A limit that never binds (no ``borrowing_limit`` or ``lending_limit`` given)."""

Limit = int | Mapping[str, int | Mapping[str, int]] | None
"""A borrowing or lending limit: one number of devices for every tenant and pool, or per tenant a number (every
pool) or ``{pool: devices}``; tenants and pools left out have no limit."""


@dataclass(frozen=True)
class TenantQuotas:
    """Quotas resolved on a cluster: per tenant and pool index, its nominal quota, how many devices above it the
    tenant may borrow and how many of its idle quota it may lend; each tenant's weight (fair-share policies);
    devices per pool."""

    nominal: dict[str, list[int]]
    borrowing: dict[str, list[int]]
    lending: dict[str, list[int]]
    reclaim: bool
    weights: dict[str, float]
    capacity: list[int]
    mode: str = "hard"


@dataclass(frozen=True)
class Quotas:
    """Nominal devices per tenant and pool: ``{"vc-a": {"h100": 64, "a100": 16}}``: a pool by its name, or by its
    device type when only one pool has it; or a name of ``NAMED_QUOTAS``. ``mode``: ``hard``, ``borrow`` or
    ``reclaim`` (module docstring); ``borrowing_limit`` and ``lending_limit`` (``Limit``) apply to the last two;
    ``weights``: per tenant, its weight for a fair-share tenant order (default: its nominal devices)."""

    devices: Mapping[str, Mapping[str, int]] | str
    mode: str = "hard"
    borrowing_limit: Limit = None
    lending_limit: Limit = None
    weights: Mapping[str, float] | None = field(default=None)

    @classmethod
    def from_config(cls, value: Any, where: str = "cluster.quotas") -> Quotas:
        """From a config value: nominal quotas (a mapping or a name), or ``{nominal: ..., mode: ...,
        borrowing_limit: ..., lending_limit: ..., weights: ...}``."""
        if isinstance(value, Quotas):
            return value
        if isinstance(value, Mapping) and "nominal" in value:
            keys = ("nominal", "mode", "borrowing_limit", "lending_limit", "weights")
            unknown = [key for key in value if key not in keys]
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}: unknown key{did_you_mean(str(unknown[0]), keys)}; "
                                  f"keys: {', '.join(keys)}")
            return cls(value["nominal"], mode=value.get("mode", "hard"), borrowing_limit=value.get("borrowing_limit"),
                       lending_limit=value.get("lending_limit"), weights=value.get("weights"))
        return cls(value)

    def resolve(self, cluster: Cluster, tenants: Iterable[str]) -> TenantQuotas:
        """The quotas on ``cluster``, checked: pools that exist, non-negative integers, no pool promised beyond
        its devices, tenants that the workload has, a known mode, limits only where they mean something. Errors
        name the tenant, the pool and the field."""
        tenants = list(tenants)
        nominal = self.nominal(cluster, tenants)
        if self.mode not in QUOTA_MODES:
            raise ConfigError(f"quotas.mode: no quota mode {self.mode!r}{did_you_mean(str(self.mode), QUOTA_MODES)}; "
                              f"modes: {', '.join(QUOTA_MODES)}")
        for name, limit in (("borrowing_limit", self.borrowing_limit), ("lending_limit", self.lending_limit)):
            if limit is not None and self.mode == "hard":
                raise ConfigError(f"quotas.{name}: hard quotas neither borrow nor lend; set quotas.mode to borrow or "
                                  "reclaim, or leave the limit out")
        borrowing = _limits(self.borrowing_limit, "borrowing_limit", cluster, nominal)
        lending = _limits(self.lending_limit, "lending_limit", cluster, nominal)
        if self.mode == "hard":
            borrowing = {tenant: [0] * len(row) for tenant, row in nominal.items()}
        weights = {tenant: float(sum(row)) or 1.0 for tenant, row in nominal.items()}
        for tenant, weight in (self.weights or {}).items():
            if tenant not in nominal:
                raise ConfigError(f"quotas.weights.{tenant}: tenant {tenant!r} has no quota"
                                  f"{did_you_mean(str(tenant), nominal)}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise ConfigError(f"quotas.weights.{tenant}: a weight is a number > 0, got {weight!r}")
            weights[tenant] = float(weight)
        return TenantQuotas(nominal, borrowing, lending, self.mode == "reclaim", weights, list(cluster.pool_devices),
                            self.mode)

    def nominal(self, cluster: Cluster, tenants: Iterable[str]) -> dict[str, list[int]]:
        """Per tenant, its nominal quota in each pool of ``cluster`` (by pool index), checked."""
        tenants = list(tenants)
        if isinstance(self.devices, str):
            if self.devices not in NAMED_QUOTAS:
                raise ConfigError(f"quotas: no quotas named {self.devices!r}{did_you_mean(self.devices, NAMED_QUOTAS)}"
                                  f"; named: {', '.join(NAMED_QUOTAS)}, or give {{tenant: {{pool: devices}}}}")
            return Quotas(NAMED_QUOTAS[self.devices](cluster, tenants)).nominal(cluster, tenants)
        if not isinstance(self.devices, Mapping):
            raise ConfigError(f"quotas must map tenants to {{pool: devices}}, got {self.devices!r}")
        pools = [pool.name for pool in cluster.pools]
        known = sorted(set(tenants))
        out: dict[str, list[int]] = {}
        for tenant, per_pool in self.devices.items():
            where = f"quotas.{tenant}"
            if tenant not in known:
                raise ConfigError(f"{where}: no job of the workload has tenant {tenant!r}{did_you_mean(tenant, known)}"
                                  f"; tenants: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}")
            if not isinstance(per_pool, Mapping):
                raise ConfigError(f"{where}: expected {{pool: devices}}, got {per_pool!r}")
            row = [0] * len(pools)
            for pool, count in per_pool.items():
                index = _pool_index(cluster, str(pool))
                if index is None:
                    raise ConfigError(f"{where}.{pool}: the cluster has no pool {pool!r}"
                                      f"{did_you_mean(str(pool), pools)}; pools: {', '.join(pools)}")
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ConfigError(f"{where}.{pool}: a quota is a number of devices >= 0, got {count!r}")
                row[index] = count
            out[str(tenant)] = row
        for p, name in enumerate(pools):
            promised = sum(row[p] for row in out.values())
            if promised > cluster.pool_devices[p]:
                raise ConfigError(f"quotas: pool {name!r} has {cluster.pool_devices[p]} devices, the tenants' quotas "
                                  f"in it add up to {promised} (nominal quotas cannot promise more than there is)")
        return out


def _limits(limit: Limit, name: str, cluster: Cluster, nominal: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """A ``Limit`` per tenant and pool index (``UNLIMITED`` where none is given), checked."""
    pools = len(cluster.pools)

    def count(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: a limit is a number of devices >= 0, got {value!r}")
        return value

    if limit is None or not isinstance(limit, Mapping):
        row = [UNLIMITED if limit is None else count(limit, f"quotas.{name}")] * pools
        return {tenant: list(row) for tenant in nominal}
    out = {tenant: [UNLIMITED] * pools for tenant in nominal}
    for tenant, value in limit.items():
        where = f"quotas.{name}.{tenant}"
        if tenant not in nominal:
            raise ConfigError(f"{where}: tenant {tenant!r} has no quota{did_you_mean(str(tenant), nominal)}")
        if isinstance(value, Mapping):
            for pool, devices in value.items():
                index = _pool_index(cluster, str(pool))
                if index is None:
                    raise ConfigError(f"{where}.{pool}: the cluster has no pool {pool!r}")
                out[tenant][index] = count(devices, f"{where}.{pool}")
        else:
            out[tenant] = [count(value, where)] * pools
    return out


def _pool_index(cluster: Cluster, name: str) -> int | None:
    """The pool named ``name``, or the only pool of device type ``name`` (``h100`` for a pool ``h100-sxm``)."""
    names = [pool.name for pool in cluster.pools]
    if name in names:
        return names.index(name)
    try:
        device = get_device(name).name
    except UnknownNameError:
        return None
    matching = [p for p, pool in enumerate(cluster.pools) if pool.device == device]
    return matching[0] if len(matching) == 1 else None


PHILLY_VC_UNSIZED_NODES = 8
"""Nodes given to each Philly virtual cluster that the Helios artifact does not size (4 VCs, 18 jobs of the
bundled trace): the smallest size Helios gives a VC (ed69ec and 103959 have 8 nodes)."""


def philly_vc_quotas(cluster: Cluster, tenants: Iterable[str]) -> dict[str, dict[str, int]]:
    """Hard quotas for Philly's virtual clusters on ``cluster`` (the ``philly`` preset, any ``scale``).

    Sizes: nodes per VC from the Helios artifact (``workloads/data/helios_philly_vc.csv``, 11 VCs, 352 nodes);
    each VC of ``tenants`` it does not size gets ``PHILLY_VC_UNSIZED_NODES``. Helios counts nodes of one kind,
    Philly has two (321 machines of 2 GPUs, 231 of 8) and the trace does not say which a job used, so a VC's
    quota is its share of the sized nodes (its nodes over all VCs' nodes) of every pool, rounded down; the
    rounding leaves a few devices of each pool to no VC."""
    import csv

    from workloads import bundled_path

    with bundled_path("helios_philly_vc.csv").open(newline="") as handle:
        sized = {row["vc"]: int(row["node num"]) for row in csv.DictReader(handle)}
    nodes = {vc: sized.get(vc, PHILLY_VC_UNSIZED_NODES) for vc in sorted(set(tenants))}
    total = sum(nodes.values())
    return {vc: {pool.name: cluster.pool_devices[p] * n // total for p, pool in enumerate(cluster.pools)}
            for vc, n in nodes.items()}


NAMED_QUOTAS = {"philly-vc": philly_vc_quotas}
"""Quotas by name (config ``cluster.quotas: philly-vc``): each a function of the cluster and the workload's
tenants."""


class TenantState:
    """The engine's per-tenant bookkeeping under quotas: each tenant's waiting and running jobs, its devices in
    use per pool, the device-seconds it held and borrowed, its scheduler instance and the jobs that entered its
    queue since its last pass."""

    def __init__(self, quotas: TenantQuotas, scheduler: Scheduler, order: TenantOrder,
                 streams: RandomStreams | None = None) -> None:
        self.quotas = quotas
        self.streams = streams
        self.rngs: dict[str, np.random.Generator] = {}  # per tenant, its scheduler's stream (``scheduling:TENANT``)
        self.quota = quotas.nominal
        self.nominal = {tenant: tuple(row) for tenant, row in self.quota.items()}  # as TenantStatus gives it
        self.template = scheduler
        self.tenant_order = order
        self.used: dict[str, list[int]] = {tenant: [0] * len(row) for tenant, row in self.quota.items()}
        self.queue: dict[str, dict[int, JobRecord]] = {tenant: {} for tenant in self.quota}
        self.waiting: set[str] = set()  # the tenants whose queue is not empty
        self.running: dict[str, dict[int, JobRecord]] = {tenant: {} for tenant in self.quota}
        self.entered: dict[str, list[JobView]] = {tenant: [] for tenant in self.quota}
        # per tenant and pool: how many of its waiting jobs that may use the pool ask for each gang size
        self.waiting_sizes: dict[str, list[dict[int, int]]] = {tenant: [{} for _ in row]
                                                               for tenant, row in self.quota.items()}
        self.schedulers: dict[str, Scheduler] = {}
        self.unassigned = [capacity - sum(row[p] for row in self.quota.values())
                           for p, capacity in enumerate(quotas.capacity)]
        self.borrows = quotas.mode != "hard"
        self.capacity = tuple(quotas.capacity)  # devices per pool, as the tenant-order policy is given them
        # per tenant and pool, the most devices it may ever hold: its nominal quota plus, borrowing, what all the
        # others may lend and the devices in no quota, up to its borrowing limit
        self.most: dict[str, list[int]] = {
            tenant: [row[p] + min(quotas.borrowing[tenant][p], self.unassigned[p] + sum(
                min(quotas.lending[other][p], nominal[p]) for other, nominal in self.quota.items() if other != tenant))
                     for p in range(len(row))]
            for tenant, row in self.quota.items()}
        self._why_not: dict[tuple[str, int, tuple[int, ...]], str] = {}  # why_not by (tenant, gpus, pools)
        # device-seconds held and held above the nominal quota, up to ``since``: added up when the tenant's devices
        # change (``_hold``) and at the end (``totals``) only, never when they are read (``status``), so each total
        # is the same sum of the same products however often the tenant order asks
        self.attained: dict[str, float] = dict.fromkeys(self.quota, 0.0)
        self.borrowed: dict[str, float] = dict.fromkeys(self.quota, 0.0)
        self.since: dict[str, float] = dict.fromkeys(self.quota, 0.0)
        self.held: dict[str, int] = dict.fromkeys(self.quota, 0)  # devices held, all pools
        self.above: dict[str, int] = dict.fromkeys(self.quota, 0)  # devices held above the nominal quota, all pools
        self.reclaims: dict[str, int] = dict.fromkeys(self.quota, 0)  # jobs of the tenant preempted by a reclaim
        # when a tenant's scheduler must be asked again (``needs_pass``)
        self.changed: set[str] = set()  # a job of the tenant entered its queue or stopped
        self.wake: dict[str, float] = {}  # the wake_at of the tenant's last decision, if it gave one
        self.devices_seen: dict[str, int] = {}  # the free devices' version when the tenant's scheduler last looked
        self.quiet: set[str] = set()  # its scheduler said it would preempt nothing, since its last pass
        # hard quotas: no room for any of its waiting jobs and nothing to preempt, until its own jobs change
        self.settled: set[str] = set()
        self.skip_unchanged = True  # False: every tenant with waiting jobs at every pass (for tests)
        # the scheduler starts nothing while its first waiting job cannot start: room counts for that job only
        self.first_only = ask(scheduler, scheduler.waits_for_first, (), "saying whether it waits for its first job")
        if not isinstance(self.first_only, bool):
            raise PolicyError(f"scheduler {scheduler.name!r}: waits_for_first() returned {self.first_only!r}, "
                              "not a bool")

    def why_not(self, record: JobRecord) -> str:
        """Why a job can never run under its tenant's quota ('' if it can)."""
        tenant = record.spec.tenant
        key = (tenant, record.spec.gpus, record.allowed_pools)
        reason = self._why_not.get(key)
        if reason is None:
            self._why_not[key] = reason = self._reason(*key)
        return reason

    def _reason(self, tenant: str, gpus: int, pools: tuple[int, ...]) -> str:
        if tenant not in self.quota:
            return f"tenant {tenant!r} has no quota"
        most = {p: self.most[tenant][p] for p in pools}
        if all(count < gpus for count in most.values()):
            what = "a quota" if not self.borrows else "a quota plus borrowing limit"
            return (f"tenant {tenant!r} has {what} of at most {max(most.values())} devices in the pools this "
                    f"{gpus}-device job may use")
        return ""

    # the engine tells of every move of a job between queue and devices
    def queued(self, record: JobRecord) -> None:
        tenant = record.spec.tenant
        self.queue[tenant][record.spec.job_id] = record
        self.waiting.add(tenant)
        sizes, gpus = self.waiting_sizes[tenant], record.spec.gpus
        for p in record.allowed_pools:
            sizes[p][gpus] = sizes[p].get(gpus, 0) + 1
        self.entered[tenant].append(record.view)
        self.changed.add(tenant)
        self.settled.discard(tenant)

    def _advance(self, tenant: str, now: float) -> None:
        """Add the device-seconds held and borrowed since the last change of the tenant's devices."""
        seconds = now - self.since[tenant]
        if seconds > 0:
            self.attained[tenant] += seconds * self.held[tenant]
            self.borrowed[tenant] += seconds * self.above[tenant]
        self.since[tenant] = now

    def _hold(self, tenant: str, pool: int, devices: int, now: float) -> int:
        """From ``now`` on the tenant holds ``devices`` more (or fewer, negative) in ``pool`` (the device-seconds
        held and borrowed until now are added first, as ``_advance``); returns the devices it then holds there."""
        seconds = now - self.since[tenant]
        if seconds > 0:
            self.attained[tenant] += seconds * self.held[tenant]
            self.borrowed[tenant] += seconds * self.above[tenant]
        self.since[tenant] = now
        used, quota = self.used[tenant], self.quota[tenant][pool]
        before = used[pool]
        used[pool] = after = before + devices
        self.held[tenant] += devices
        if before > quota or after > quota:  # (otherwise none above the quota before or after)
            self.above[tenant] += max(0, after - quota) - max(0, before - quota)
        return after

    def started(self, record: JobRecord, now: float) -> None:
        """``record`` started on its devices; returns nothing. Its start is borrowing (``record.borrowing_starts``)
        when it leaves its tenant above its nominal quota in the pool."""
        tenant = record.spec.tenant
        queue = self.queue[tenant]
        del queue[record.spec.job_id]
        if not queue:
            self.waiting.discard(tenant)
        sizes, gpus = self.waiting_sizes[tenant], record.spec.gpus
        for p in record.allowed_pools:
            left = sizes[p][gpus] - 1
            if left:
                sizes[p][gpus] = left
            else:
                del sizes[p][gpus]
        self.running[tenant][record.spec.job_id] = record
        pool = record.pool
        if self._hold(tenant, pool, len(record.devices), now) > self.quota[tenant][pool]:
            record.borrowing_starts += 1

    def stopped(self, record: JobRecord, now: float) -> None:
        tenant = record.spec.tenant
        del self.running[tenant][record.spec.job_id]
        self._hold(tenant, record.pool, -len(record.devices), now)
        self.changed.add(tenant)
        self.settled.discard(tenant)

    def totals(self, now: float) -> dict[str, tuple[float, float]]:
        """Per tenant, (device-seconds held, device-seconds held above its nominal quota) up to ``now``."""
        for tenant in self.quota:
            self._advance(tenant, now)
        return {tenant: (self.attained[tenant], self.borrowed[tenant]) for tenant in self.quota}

    def needs_pass(self, tenant: str, now: float, free: FreeDevices) -> bool:
        """Whether the tenant's scheduler may decide anything new: the wake-up it asked for is due, or a job of its
        entered its queue or stopped, or the free devices changed since it last looked. Otherwise its view
        differs from the last one by time alone, which a policy that acts on time alone asks for with ``wake_at``.
        (Its borrowing room changes only with other tenants' devices, so with the free devices.) Not "devices were
        freed": the schedulers' heuristics (EASY's reservation across pools, the preemptive passes' victim
        choice) can start a job with fewer free devices that they did not start with more. A scheduler that never
        preempts (``Scheduler.preemptive`` False) is not asked, whatever changed, while no waiting job of the
        tenant fits its room under its limit (``has_room``: its first waiting job, for a scheduler that waits for
        it): any start would be refused. Nor is a preemptive one while none of its
        jobs entered its queue or stopped, if it says that it would preempt nothing then
        (``Scheduler.preempts_nothing``, asked once between two of its passes: its answer is about time alone, which
        changes nothing for it before the wake-up it asked for): only a start could act, and it would be refused
        too. Under hard quotas its room depends on its own jobs only: such a tenant is settled (not asked, and
        nothing of it looked at) until one of its jobs enters its queue or stops, or its next pass."""
        if not self.skip_unchanged or self.wake.get(tenant, math.inf) <= now:
            return True
        if tenant in self.settled:
            return False
        changed = tenant in self.changed
        if not changed and self.devices_seen.get(tenant) == free.version:
            return False
        if self.has_room(tenant):
            return True
        if self.template.preemptive:
            if changed:
                return True
            if tenant not in self.quiet:
                if not self._preempts_nothing(tenant, now):
                    return True
                self.quiet.add(tenant)  # holds until its next pass (it is asked by then: a job changed, or its wake)
            self.devices_seen[tenant] = free.version  # as if asked: these free devices change nothing for it
        if not self.borrows:
            self.settled.add(tenant)
        return False

    def _preempts_nothing(self, tenant: str, now: float) -> bool:
        """The tenant's scheduler's ``preempts_nothing(now)``, checked to be a bool."""
        scheduler = self.scheduler(tenant)
        answer = ask(scheduler, scheduler.preempts_nothing, (now,),
                     f"at t={{0}} saying whether it would preempt for tenant {tenant!r}")
        if not isinstance(answer, bool):
            raise PolicyError(f"scheduler {scheduler.name!r}: preempts_nothing() returned {answer!r}, not a bool")
        return answer

    def has_room(self, tenant: str) -> bool:
        """Whether the tenant's room under its limit (``limit - used``) in some pool holds one of its waiting jobs
        that may use the pool; its first waiting job, if its scheduler waits for it (``Scheduler.waits_for_first``:
        a tenant's trial places a job only within that room)."""
        limit = self.limit(tenant) if self.borrows else self.quota[tenant]  # (``limit``, without a call for hard ones)
        used = self.used[tenant]
        if self.first_only:
            first = next(iter(self.queue[tenant].values()), None)
            if first is None:
                return False
            gpus = first.spec.gpus
            for p in first.allowed_pools:  # noqa: SIM110 (as below)
                if limit[p] - used[p] >= gpus:
                    return True
            return False
        for p, sizes in enumerate(self.waiting_sizes[tenant]):  # noqa: SIM110 (asked per waiting tenant per pass)
            if sizes and limit[p] - used[p] >= min(sizes):
                return True
        return False

    def looking(self, tenant: str, free: FreeDevices) -> None:
        """The tenant's scheduler is about to be asked: what changed so far is in the view it gets (what its own
        decision changes asks for its next pass)."""
        self.changed.discard(tenant)
        self.quiet.discard(tenant)
        self.settled.discard(tenant)
        self.devices_seen[tenant] = free.version

    def passed(self, tenant: str, wake_at: float | None) -> None:
        """The tenant's decision was applied; ``wake_at`` is when it asked to be asked again."""
        if wake_at is None:
            self.wake.pop(tenant, None)
        else:
            self.wake[tenant] = wake_at

    def next_wake(self) -> float | None:
        """The earliest wake-up any tenant with waiting jobs asked for, or None."""
        earliest, waiting = None, self.waiting
        for tenant, when in self.wake.items():  # a loop, not min() over a generator: asked at every pass
            if tenant in waiting and (earliest is None or when < earliest):
                earliest = when
        return earliest

    def status(self, tenant: str, now: float) -> TenantStatus:
        """The tenant as the tenant-order policy sees it at ``now`` (its device-seconds up to now, not added up)."""
        seconds = now - self.since[tenant]
        attained = self.attained[tenant] + seconds * self.held[tenant] if seconds > 0 else self.attained[tenant]
        return TenantStatus(tenant, self.nominal[tenant], tuple(self.used[tenant]), attained,
                            self.quotas.weights[tenant], len(self.queue[tenant]))

    def limit(self, tenant: str) -> list[int]:
        """Per pool, the most devices ``tenant`` may hold now: its nominal quota, or (borrowing) that plus what it
        may borrow: the idle quota other tenants lend (each up to its lending limit) and the devices in no quota,
        less what is borrowed already, up to its borrowing limit."""
        nominal = self.quota[tenant]
        if not self.borrows:
            return nominal
        quotas, used = self.quotas, self.used
        out = []
        for p, own in enumerate(nominal):
            lendable = self.unassigned[p]
            borrowed = 0
            for other, row in self.quota.items():
                held = used[other][p]
                if held > row[p]:
                    borrowed += held - row[p]
                elif other != tenant and held < row[p]:
                    lendable += min(quotas.lending[other][p], row[p] - held)
            mine = max(0, used[tenant][p] - own)
            out.append(own + min(quotas.borrowing[tenant][p], mine + max(0, lendable - borrowed)))
        return out

    def reclaimable(self, tenant: str, pool: int) -> list[JobRecord]:
        """Running jobs of other tenants borrowing in ``pool`` (above their nominal quota there), most recently
        started first (ties by job id, highest first): the order a reclaim preempts them in."""
        out = [record for other, jobs in self.running.items()
               if other != tenant and self.used[other][pool] > self.quota[other][pool]
               for record in jobs.values() if record.pool == pool]
        out.sort(key=lambda r: (r.run_start, r.spec.job_id), reverse=True)
        return out

    def order(self, now: float) -> list[str]:
        """Tenants with waiting jobs, in the order the tenant-order policy gives (checked). Without asking it when
        all but one of them are settled (``needs_pass``; their wake-ups not due): those are not asked this pass,
        wherever they come, so the order cannot matter; then that one tenant only."""
        if len(self.waiting) <= 1:
            return list(self.waiting)
        settled = self.settled
        if settled:
            wake = self.wake
            live = [tenant for tenant in self.waiting if tenant not in settled or wake.get(tenant, math.inf) <= now]
            if len(live) <= 1:
                return live
        waiting = [tenant for tenant, queue in self.queue.items() if queue]
        statuses = [self.status(tenant, now) for tenant in waiting]
        policy = self.tenant_order
        order = ask(policy, policy.order, (statuses, self.capacity, now), "ordering tenants at t={2}")
        try:
            order = list(order)
            valid = len(order) == len(waiting) and set(order) == self.waiting  # so each tenant once
        except TypeError:  # not iterable, or of unhashable items
            valid = False
        if not valid:
            raise PolicyError(f"tenant order {policy.name!r} must return each of the tenants {sorted(waiting)} "
                              f"once, got {order!r}")
        return order

    def scheduler(self, tenant: str) -> Scheduler:
        """The tenant's own instance of the run's scheduler (its indexes see only the tenant's jobs)."""
        instance = self.schedulers.get(tenant)
        if instance is None:
            instance = self.schedulers[tenant] = copy.deepcopy(self.template)
        return instance

    def view(self, tenant: str, now: float, cluster: Cluster, free: FreeDevices,
             place: Any, run_id: int, nominal_only: bool = False) -> tuple[ClusterView, list[int]]:
        """What the tenant's scheduler sees: its own jobs, the cluster's free devices, placements within its
        limits (``TenantTrial``; ``nominal_only``: its nominal quota, when it reclaims); and those limits per
        pool."""
        entered, self.entered[tenant] = tuple(self.entered[tenant]), []
        used = list(self.used[tenant])
        # reclaiming: up to its nominal quota where it holds less, nothing more where it borrows already
        limit = ([max(q, u) for q, u in zip(self.quota[tenant], used, strict=True)] if nominal_only
                 else self.limit(tenant) if self.borrows else self.quota[tenant])  # (``limit``, without a call)
        rng = self.rngs.get(tenant)
        if rng is None and self.streams is not None:
            rng = self.rngs[tenant] = self.streams[f"scheduling:{tenant}"]
        view = ClusterView(now, cluster, free, self.queue[tenant], self.running[tenant], place, entered, run_id,
                           trial=lambda scratch: TenantTrial(scratch, place, limit, list(used)), rng=rng)
        return view, limit

    def reclaim_victims(self, tenant: str, pool_free: list[int]) -> list[JobRecord]:
        """Under reclaim: the borrowing jobs of other tenants whose devices ``tenant`` may take back, as YARN's
        capacity preemption computes what is owed: in each pool where the tenant holds less than its nominal
        quota, ``min(nominal - used, waiting demand)`` (its waiting jobs that fit in that room, each counted in
        every pool it may use); borrowers are taken, the most recently started first and only while their tenant
        still borrows there, until the free devices and theirs cover what is owed. None in a pool where that
        would not make room for even the smallest such job. Devices are counted per pool, as Kueue and YARN count
        them: a gang that needs them on one node may still find no room."""
        nominal, used = self.quota[tenant], self.used[tenant]
        victims: list[JobRecord] = []
        others: dict[str, list[int]] | None = None
        for p, own in enumerate(nominal):
            room = own - used[p]
            if room <= 0 or pool_free[p] >= room:
                continue
            sizes = {gpus: n for gpus, n in self.waiting_sizes[tenant][p].items() if gpus <= room}
            if not sizes:
                continue
            short = min(room, sum(gpus * n for gpus, n in sizes.items())) - pool_free[p]
            if short <= 0:
                continue
            if others is None:
                others = {other: list(row) for other, row in self.used.items()}
            taken: list[JobRecord] = []
            freed = 0
            for record in self.reclaimable(tenant, p):
                other = record.spec.tenant
                if others[other][p] <= self.quota[other][p]:
                    continue  # its tenant no longer borrows here
                taken.append(record)
                others[other][p] -= len(record.devices)
                freed += len(record.devices)
                if freed >= short:
                    break
            if pool_free[p] + freed >= min(sizes):
                victims += taken
            else:
                for record in taken:
                    others[record.spec.tenant][p] += len(record.devices)
        return victims


class TenantTrial(PlacementTrial):
    """A trial that places a job only in pools where its tenant's limit (its nominal quota, plus what it may borrow
    now) has room, counting the trial's own placements and hypothetical preemptions."""

    __slots__ = ("quota", "used")

    def __init__(self, free: FreeDevices, place: Any, quota: list[int], used: list[int]) -> None:
        super().__init__(free, place)
        self.quota = quota
        self.used = used

    def place(self, job: JobView) -> tuple[int, ...] | None:
        gpus, quota, used, allowed = job.gpus, self.quota, self.used, job.allowed_pools
        if not allowed:
            return None
        seen = job
        for p in allowed:
            if used[p] + gpus > quota[p]:  # some pool has no room: the placer sees the others only
                pools = tuple(q for q in allowed if used[q] + gpus <= quota[q])
                if not pools:
                    return None
                seen = job.with_gang(gpus, pools)  # those pools only, with the gang it asks for (elastic)
                break
        free = self.free
        devices = self._place(seen, free)  # PlacementTrial.place, inline
        if devices is not None:
            free.take(devices)
            cluster = free.cluster
            used[cluster.node_pool[cluster.device_node[devices[0]]]] += gpus
        return devices

    def release(self, job: JobView) -> None:
        super().release(job)
        self.used[self.free.cluster.pool_of_device(job.devices[0])] -= len(job.devices)

    def reclaim(self, job: JobView) -> None:
        super().reclaim(job)
        self.used[self.free.cluster.pool_of_device(job.devices[0])] += len(job.devices)

    def quota_short(self, job: JobView) -> dict[int, int]:
        gpus, quota, used = job.gpus, self.quota, self.used
        return {p: used[p] + gpus - quota[p] for p in job.allowed_pools
                if quota[p] >= gpus and used[p] + gpus > quota[p]}

    def reclaimable(self, job: JobView) -> bool:
        pool = self.free.cluster.pool_of_device(job.devices[0])
        return self.used[pool] + len(job.devices) <= self.quota[pool]
