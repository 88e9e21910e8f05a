"""Tenant-order policies: which tenant is scheduled next under quotas (``sim.training.contracts.TenantOrder``).

- ``quota-share``: the smallest share of its nominal quota in use first (Kueue's and YARN's capacity ordering:
  the queue furthest below its guarantee goes first).
- ``drf``: dominant resource fairness over device pools (Ghodsi et al., NSDI'11): a tenant's dominant share is
  its largest share of any pool's devices, divided by its weight; the smallest goes first.
- ``fair-share``: weighted fair share by attained service: the device-seconds a tenant's jobs have held,
  divided by its weight (default weight: its nominal devices), smallest first; Gavel's and Themis' "least
  attained service per tenant" form, without decay.

Ties go by tenant name in all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.training.contracts import TenantOrder, TenantStatus


@dataclass
class QuotaShare(TenantOrder):
    """Smallest share of its nominal quota in use first (a tenant without quota counts one device)."""

    name = "quota-share"

    def order(self, tenants: Sequence[TenantStatus], capacity: Sequence[int], now: float) -> list[str]:
        return [t.name for t in sorted(tenants, key=lambda t: (sum(t.used) / max(1, sum(t.nominal)), t.name))]


@dataclass
class DominantResourceFairness(TenantOrder):
    """Smallest weighted dominant share first: ``max over pools of used / pool devices``, over the weight."""

    name = "drf"

    def order(self, tenants: Sequence[TenantStatus], capacity: Sequence[int], now: float) -> list[str]:
        def dominant(t: TenantStatus) -> float:
            return max((u / c for u, c in zip(t.used, capacity, strict=True) if c), default=0.0) / t.weight

        return [t.name for t in sorted(tenants, key=lambda t: (dominant(t), t.name))]


@dataclass
class FairShare(TenantOrder):
    """Least attained device-seconds per unit of weight first."""

    name = "fair-share"

    def order(self, tenants: Sequence[TenantStatus], capacity: Sequence[int], now: float) -> list[str]:
        return [t.name for t in sorted(tenants, key=lambda t: (t.attained / t.weight, t.name))]
