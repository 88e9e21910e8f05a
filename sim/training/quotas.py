"""Tenant quotas: each tenant (a team, a user, a trace's virtual cluster) may hold at most its nominal quota of
devices in each pool, as a Kubernetes Kueue ClusterQueue's ``nominalQuota`` per flavor, or a YARN capacity
scheduler queue at its capacity with no elasticity.

**Hard quotas** (this module): a tenant's jobs never hold more than its quota in a pool. Each tenant's waiting
jobs are scheduled by its own instance of the run's scheduler, which sees only that tenant's jobs (its queue,
its running jobs, the jobs that entered its queue): fifo is strict within a tenant, and a tenant at its quota
does not hold up another. Tenants are scheduled one after another within a pass, the tenant using the smallest
share of its quota first (ties by name), each decision validated and applied before the next tenant's view is
built. A job may preempt only its own tenant's jobs. A job bigger than its tenant's quota in every pool it may
use is ``unschedulable`` on arrival, and so is every job of a tenant without a quota.

Borrowing of idle quota, its lending limit and reclaim by preemption are not modelled yet.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sim.errors import ConfigError, UnknownNameError, did_you_mean
from sim.platform.cluster import Cluster
from sim.platform.free_devices import FreeDevices
from sim.platform.hardware import get_device
from sim.training.contracts import ClusterView, PlacementTrial, Scheduler
from sim.training.jobs import JobRecord, JobView


@dataclass(frozen=True)
class Quotas:
    """Nominal devices per tenant and pool: ``{"vc-a": {"h100": 64, "a100": 16}}``: a pool by its name, or by its
    device type when only one pool has it."""

    devices: Mapping[str, Mapping[str, int]] | str

    def resolve(self, cluster: Cluster, tenants: Iterable[str]) -> dict[str, list[int]]:
        """Per tenant, its quota in each pool of ``cluster`` (by pool index), checked: pools that exist,
        non-negative integers, no pool promised beyond its devices, tenants that the workload has. Errors name
        the tenant, the pool and the field. ``devices`` may name quotas instead (``NAMED_QUOTAS``)."""
        tenants = list(tenants)
        if isinstance(self.devices, str):
            if self.devices not in NAMED_QUOTAS:
                raise ConfigError(f"quotas: no quotas named {self.devices!r}{did_you_mean(self.devices, NAMED_QUOTAS)}"
                                  f"; named: {', '.join(NAMED_QUOTAS)}, or give {{tenant: {{pool: devices}}}}")
            return Quotas(NAMED_QUOTAS[self.devices](cluster, tenants)).resolve(cluster, tenants)
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
                                  f"in it add up to {promised} (hard quotas cannot promise more than there is)")
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
    use per pool, its scheduler instance and the jobs that entered its queue since its last pass."""

    def __init__(self, quotas: Mapping[str, list[int]], scheduler: Scheduler) -> None:
        self.quota = dict(quotas)
        self.template = scheduler
        self.used: dict[str, list[int]] = {tenant: [0] * len(row) for tenant, row in self.quota.items()}
        self.queue: dict[str, dict[int, JobRecord]] = {tenant: {} for tenant in self.quota}
        self.running: dict[str, dict[int, JobRecord]] = {tenant: {} for tenant in self.quota}
        self.entered: dict[str, list[JobView]] = {tenant: [] for tenant in self.quota}
        self.schedulers: dict[str, Scheduler] = {}
        # when a tenant's scheduler must be asked again (``needs_pass``)
        self.changed: set[str] = set()  # a job of the tenant entered its queue or stopped
        self.wake: dict[str, float] = {}  # the wake_at of the tenant's last decision
        self.devices_seen: dict[str, int] = {}  # the free devices' version when the tenant's scheduler last looked
        self.skip_unchanged = True  # False: every tenant with waiting jobs at every pass (for tests)

    def why_not(self, record: JobRecord) -> str:
        """Why a job can never run under its tenant's quota ('' if it can)."""
        tenant = record.spec.tenant
        row = self.quota.get(tenant)
        if row is None:
            return f"tenant {tenant!r} has no quota"
        if all(row[p] < record.spec.gpus for p in record.allowed_pools):
            return (f"tenant {tenant!r} has a quota of at most {max(row[p] for p in record.allowed_pools)} devices in "
                    f"the pools this {record.spec.gpus}-device job may use")
        return ""

    # the engine tells of every move of a job between queue and devices
    def queued(self, record: JobRecord) -> None:
        tenant = record.spec.tenant
        self.queue[tenant][record.spec.job_id] = record
        self.entered[tenant].append(record.view)
        self.changed.add(tenant)

    def started(self, record: JobRecord) -> None:
        tenant = record.spec.tenant
        del self.queue[tenant][record.spec.job_id]
        self.running[tenant][record.spec.job_id] = record
        self.used[tenant][record.pool] += len(record.devices)

    def stopped(self, record: JobRecord) -> None:
        tenant = record.spec.tenant
        del self.running[tenant][record.spec.job_id]
        self.used[tenant][record.pool] -= len(record.devices)
        self.changed.add(tenant)

    def needs_pass(self, tenant: str, now: float, devices: int) -> bool:
        """Whether the tenant's scheduler may decide anything new: a job of its entered its queue or stopped, the
        wake-up it asked for is due, or the free devices changed (``devices``: their version) since it last
        looked. Otherwise its view differs from the last one by time alone, and a policy that acts on time alone
        asks for it with ``wake_at``."""
        return (not self.skip_unchanged or tenant in self.changed or self.wake.get(tenant, math.inf) <= now
                or self.devices_seen.get(tenant) != devices)

    def looking(self, tenant: str, devices: int) -> None:
        """The tenant's scheduler is about to be asked: what changed so far is in the view it gets (what its own
        decision changes asks for its next pass)."""
        self.changed.discard(tenant)
        self.devices_seen[tenant] = devices

    def passed(self, tenant: str, wake_at: float | None) -> None:
        """The tenant's decision was applied; ``wake_at`` is when it asked to be asked again."""
        self.wake[tenant] = math.inf if wake_at is None else wake_at

    def next_wake(self) -> float | None:
        """The earliest wake-up any tenant with waiting jobs asked for, or None."""
        due = min((self.wake.get(t, math.inf) for t, queue in self.queue.items() if queue), default=math.inf)
        return None if due == math.inf else due

    def order(self) -> list[str]:
        """Tenants with waiting jobs, the smallest share of its quota in use first, ties by name."""
        waiting = [tenant for tenant, queue in self.queue.items() if queue]
        return sorted(waiting, key=lambda t: (sum(self.used[t]) / max(1, sum(self.quota[t])), t))

    def scheduler(self, tenant: str) -> Scheduler:
        """The tenant's own instance of the run's scheduler (its indexes see only the tenant's jobs)."""
        instance = self.schedulers.get(tenant)
        if instance is None:
            instance = self.schedulers[tenant] = copy.deepcopy(self.template)
        return instance

    def view(self, tenant: str, now: float, cluster: Cluster, free: FreeDevices,
             place: Any, run_id: int) -> ClusterView:
        """What the tenant's scheduler sees: its own jobs, the cluster's free devices, placements within its
        quota (``TenantTrial``)."""
        entered, self.entered[tenant] = tuple(self.entered[tenant]), []
        quota, used = self.quota[tenant], list(self.used[tenant])
        return ClusterView(now, cluster, free, self.queue[tenant], self.running[tenant], place, entered, run_id,
                           trial=lambda scratch: TenantTrial(scratch, place, quota, list(used)))

    def over_quota(self, tenant: str) -> list[tuple[int, int, int]]:
        """(pool, devices in use, quota) of the pools where ``tenant`` holds more than its quota."""
        return [(p, used, quota) for p, (used, quota) in enumerate(zip(self.used[tenant], self.quota[tenant],
                                                                       strict=True)) if used > quota]


class _Within(JobView):
    """A job seen by the placer with its allowed pools cut to those where its tenant has room."""

    __slots__ = ("_pools",)

    def __init__(self, job: JobView, pools: tuple[int, ...]) -> None:
        super().__init__(job._r)
        self._pools = pools

    @property
    def allowed_pools(self) -> tuple[int, ...]:
        return self._pools


class TenantTrial(PlacementTrial):
    """A trial that places a job only in pools where its tenant's quota has room, counting the trial's own
    placements and hypothetical preemptions."""

    __slots__ = ("quota", "used")

    def __init__(self, free: FreeDevices, place: Any, quota: list[int], used: list[int]) -> None:
        super().__init__(free, place)
        self.quota = quota
        self.used = used

    def place(self, job: JobView) -> tuple[int, ...] | None:
        gpus, quota, used = job.gpus, self.quota, self.used
        pools = tuple(p for p in job.allowed_pools if used[p] + gpus <= quota[p])
        if not pools:
            return None
        devices = super().place(job if len(pools) == len(job.allowed_pools) else _Within(job, pools))
        if devices is not None:
            used[self.free.cluster.pool_of_device(devices[0])] += gpus
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
