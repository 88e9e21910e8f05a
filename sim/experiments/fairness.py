"""Finish-time fairness between tenants, as Themis defines it (Mahajan et al., "Themis: Fair and Efficient GPU
Cluster Scheduling", NSDI 2020, section 3): ``rho = T_shared / T_independent``, the time a tenant's work takes on
the shared cluster over the time it would take alone on its own share of it. ``rho <= 1``: sharing did not slow
the tenant down; Themis gives devices to the tenants with the largest ``rho``.

Here a tenant's work is its jobs and its time is from its first job's arrival to its last job's finish (Themis'
app finish time: an app is a set of jobs). ``T_independent`` comes from running the tenant's jobs alone, with the
same policies and seed, on its share of the cluster: ``1/N`` of every pool's nodes for ``N`` tenants (or the
shares given), rounded down to whole nodes and at least one node per pool. A tenant with a job its share cannot
host, or with work unfinished in either run, has no ``rho`` (NaN, and the table says why).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.engine.simulation import Simulation
from sim.errors import ConfigError
from sim.output.results import Results, jain_index
from sim.platform.cluster import Cluster
from workloads.jobs import JobTrace, TrainingJob


def share_of(cluster: Cluster, fraction: float) -> Cluster:
    """``cluster`` with ``floor(nodes * fraction)`` nodes in every pool (at least one), same devices and network."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ConfigError(f"a tenant's share must be a fraction in (0, 1], got {fraction!r}")
    pools = [dataclasses.replace(pool, nodes=max(1, math.floor(pool.nodes * fraction + 1e-9)))
             for pool in cluster.pools]
    return Cluster(pools, name=f"{cluster.name} x{fraction:.3g}", network=cluster.network)


@dataclass(frozen=True)
class FinishTimeFairness:
    """``table``: one row per tenant (``tenant``, ``jobs``, ``share``, ``devices``, ``t_shared``,
    ``t_independent``, ``rho``, ``reason``); ``shared``: the shared run's results."""

    table: pd.DataFrame
    shared: Results

    def summary(self) -> dict[str, Any]:
        """``rho.max``, ``rho.median`` (over tenants that have one), ``tenants`` counted, and Jain's index of the
        rhos (1 when every tenant is slowed alike)."""
        rho = self.table["rho"].to_numpy(dtype=float)
        known = rho[~np.isnan(rho)]
        return {"rho": {"max": float(known.max()) if known.size else math.nan,
                        "median": float(np.median(known)) if known.size else math.nan},
                "tenants": int(known.size), "jain_rho": jain_index(known)}


def finish_time_fairness(cluster: Cluster, jobs: JobTrace | Iterable[TrainingJob], *,
                         shares: Mapping[str, float] | None = None, shared: Results | None = None,
                         **simulation: Any) -> FinishTimeFairness:
    """Run ``jobs`` on ``cluster`` and each tenant's jobs alone on its share (module docstring), with the same
    ``Simulation`` keyword arguments (scheduler, placer, seed, preemption ...), and give each tenant's ``rho``.

    ``shares`` maps tenants to fractions of the cluster (every tenant must have one); default ``1/N`` each.
    ``shared``: the shared run's results, if already run (for example under quotas, which the runs alone on a
    share do not have: pass ``quotas`` to it, not here); it must hold the same jobs."""
    specs = list(jobs.jobs if isinstance(jobs, JobTrace) else jobs)
    tenants = sorted({job.tenant for job in specs})
    if shares is None:
        shares = {tenant: 1 / len(tenants) for tenant in tenants} if tenants else {}
    missing = [tenant for tenant in tenants if tenant not in shares]
    if missing:
        raise ConfigError(f"finish_time_fairness: no share for tenant(s) {', '.join(map(repr, missing))}")
    if shared is None:
        shared = Simulation(cluster, specs, **simulation).run()
    elif len(shared.jobs) != len(specs):
        raise ConfigError(f"finish_time_fairness: the shared run has {len(shared.jobs)} jobs, not the {len(specs)} "
                          "given")
    rows = []
    for tenant in tenants:
        own = [job for job in specs if job.tenant == tenant]
        part = share_of(cluster, shares[tenant])
        t_shared, why = _span(shared.jobs[shared.jobs["tenant"] == tenant])
        alone = Simulation(part, own, **simulation).run()
        t_alone, why_alone = _span(alone.jobs)
        reason = why or (f"alone on its share: {why_alone}" if why_alone else "")
        rows.append({"tenant": tenant, "jobs": len(own), "share": float(shares[tenant]),
                     "devices": part.num_devices, "t_shared": t_shared, "t_independent": t_alone,
                     "rho": t_shared / t_alone if not reason and t_alone > 0 else math.nan, "reason": reason})
    return FinishTimeFairness(pd.DataFrame(rows, columns=["tenant", "jobs", "share", "devices", "t_shared",
                                                          "t_independent", "rho", "reason"]), shared)


def _span(jobs: pd.DataFrame) -> tuple[float, str]:
    """From the first arrival to the last finish of ``jobs`` (one tenant's rows of a jobs table), or NaN and why."""
    status = jobs["status"]
    if (status == "unschedulable").any():
        return math.nan, f"{int((status == 'unschedulable').sum())} job(s) cannot run"
    if not (status == "finished").all():
        return math.nan, f"{int((status != 'finished').sum())} job(s) unfinished"
    return float(jobs["finish"].max() - jobs["arrival"].min()), ""
