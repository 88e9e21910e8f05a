"""Issue 15: borrowing, lending limits, reclaim and tenant-order policies. Checked by replaying the event log:
a tenant above its nominal quota only by a start recorded as borrowing, never above its borrowing limit, never
borrowing more than the other tenants lend; under reclaim, a tenant with waiting jobs holds its nominal quota at the
end of every instant; bad limits and a broken tenant order are refused by name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import (
    Cluster,
    ConfigError,
    PolicyError,
    PoolSpec,
    PreemptionCost,
    Quotas,
    Simulation,
    TenantOrder,
    TenantStatus,
    UnknownNameError,
    load_config,
    run_config,
)
from workloads.jobs import TrainingJob

ONE_POOL = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
ONE_NODE = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])
MIXED = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4), PoolSpec("a100", nodes=2, devices_per_node=4)])
SCHEDULERS = ["fifo", "sjf", "srtf", "las", "easy-backfill"]
ORDERS = ["quota-share", "drf", "fair-share"]
INF = 1 << 40


def replay(results, cluster: Cluster):
    """Per instant of the event log, after its last event: devices per (tenant, pool) and waiting jobs per tenant;
    and per start event, (time, job, tenant, pool, usage after it, gang sizes of each tenant's waiting jobs)."""
    tenant = dict(zip(results.jobs["job_id"], results.jobs["tenant"], strict=True))
    gpus = dict(zip(results.jobs["job_id"], results.jobs["gpus"], strict=True))
    held: dict[int, tuple[int, ...]] = {}
    use: dict[tuple[str, int], int] = defaultdict(int)
    waiting: dict[str, set[int]] = defaultdict(set)
    starts, instants = [], []
    events = results.events
    for i, (time, kind, job_id, devices) in enumerate(zip(events["time"], events["event"], events["job_id"],
                                                         events["devices"], strict=True)):
        t = tenant[job_id]
        if kind in ("arrive", "preempt"):
            waiting[t].add(job_id)
        if kind == "start":
            waiting[t].discard(job_id)
            pool = cluster.pool_of_device(devices[0])
            held[job_id] = tuple(devices)
            use[t, pool] += len(devices)
            sizes = {u: [gpus[j] for j in jobs] for u, jobs in waiting.items()}
            starts.append((time, job_id, t, pool, dict(use), sizes))
        elif kind in ("preempt", "finish"):
            devices = held.pop(job_id)
            use[t, cluster.pool_of_device(devices[0])] -= len(devices)
        if i + 1 == len(events) or events["time"].iloc[i + 1] != time:
            instants.append((time, dict(use), {u: len(jobs) for u, jobs in waiting.items()}))
    return starts, instants


jobs_strategy = st.lists(st.tuples(st.floats(0, 300), st.sampled_from([1, 2, 4]), st.floats(5, 300),
                                   st.sampled_from("abc")), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=jobs_strategy, nominal=st.fixed_dictionaries({t: st.tuples(st.integers(0, 2), st.integers(0, 2))
                                                          for t in "abc"}),
       mode=st.sampled_from(["borrow", "reclaim"]), borrow=st.none() | st.integers(0, 6),
       lend=st.none() | st.integers(0, 4), scheduler=st.sampled_from(SCHEDULERS), order=st.sampled_from(ORDERS))
def test_borrowing_stays_within_its_limits_and_every_borrow_is_recorded(rows, nominal, mode, borrow, lend, scheduler,
                                                                        order) -> None:
    present = sorted({t for *_, t in rows})
    quotas = {t: {"h100": nominal[t][0], "a100": nominal[t][1]} for t in present}
    jobs = [TrainingJob(i, a, g, d, tenant=t) for i, (a, g, d, t) in enumerate(rows)]
    results = Simulation(MIXED, jobs, scheduler=scheduler, tenant_order=order, record_events=True,
                         quotas=Quotas(quotas, mode=mode, borrowing_limit=borrow, lending_limit=lend),
                         preemption=PreemptionCost(5.0, 5.0)).run()
    nominal_of = {(t, p): quotas[t][pool] for t in present for p, pool in enumerate(("h100", "a100"))}
    unassigned = [8 - sum(quotas[t][pool] for t in present) for pool in ("h100", "a100")]
    borrow_limit = INF if borrow is None else borrow
    lend_limit = INF if lend is None else lend
    table = results.jobs.set_index("job_id")
    borrowing = defaultdict(int)
    starts, _ = replay(results, MIXED)
    for _time, job_id, tenant, pool, use, waiting in starts:
        over = use[tenant, pool] - nominal_of[tenant, pool]
        assert over <= borrow_limit, (tenant, pool, use)
        if over > 0:
            borrowing[job_id] += 1
            # what all tenants borrow in the pool, at most what the others lend: idle quota (each up to its lending
            # limit) and devices in no quota
            borrowed = sum(max(0, use.get((u, pool), 0) - nominal_of[u, pool]) for u in present)
            lent = unassigned[pool] + sum(min(lend_limit, max(0, nominal_of[u, pool] - use.get((u, pool), 0)))
                                          for u in present if u != tenant)
            assert borrowed <= lent, (tenant, pool, use, waiting)
    assert dict(borrowing) == {j: n for j, n in table["borrowing_starts"].items() if n}
    assert set(table["status"]) <= {"finished", "unschedulable"}
    if mode == "borrow":
        assert table["reclaims"].sum() == 0
    assert (table["reclaims"] <= table["preemptions"]).all()
    summary = results.summary()["jobs"]
    by_tenant = summary["by_tenant"]
    assert sum(t["count"] for t in by_tenant.values()) == summary["count"]
    assert sum(t["completed"] for t in by_tenant.values()) == summary["completed"]
    assert sum(t["quota"]["reclaimed"] for t in by_tenant.values()) == table["reclaims"].sum()


def borrowed_seconds(results, cluster: Cluster, nominal: dict[tuple[str, int], int]) -> dict[str, float]:
    """Device-seconds each tenant held above its nominal quota, integrated over the event log."""
    _, instants = replay(results, cluster)
    out: dict[str, float] = defaultdict(float)
    for (time, use, _), (after, *_rest) in pairwise(instants):
        for (tenant, pool), count in use.items():
            out[tenant] += max(0, count - nominal[tenant, pool]) * (after - time)
    return out


def test_the_summary_gives_the_device_hours_each_tenant_borrowed() -> None:
    jobs = ([TrainingJob(i, 0.0, 1, 1000.0, tenant="a") for i in range(8)]
            + [TrainingJob(8 + i, 100.0, 2, 50.0, tenant="b") for i in range(2)])
    for mode in ("borrow", "reclaim"):
        results = Simulation(ONE_POOL, jobs, record_events=True,
                             quotas={"nominal": {"a": {"h100": 4}, "b": {"h100": 4}}, "mode": mode}).run()
        by_tenant = results.summary()["jobs"]["by_tenant"]
        expected = borrowed_seconds(results, ONE_POOL, {("a", 0): 4, ("b", 0): 4})
        assert by_tenant["a"]["quota"]["borrowed_device_hours"] == pytest.approx(expected["a"] / 3600)
        assert by_tenant["b"]["quota"]["borrowed_device_hours"] == 0.0
    # borrow: a keeps b's idle quota until its jobs end (b waits 900 s); reclaim: b starts at once
    table = results.jobs.set_index("job_id")
    assert table.loc[[8, 9], "first_start"].tolist() == [100.0, 100.0]
    assert table["reclaims"].sum() == 4 and by_tenant["a"]["quota"]["reclaimed"] == 4
    assert expected["a"] == pytest.approx(4 * 100 + 4 * (1000 - 150))  # 4 borrowed before the reclaim, again after


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.floats(0, 300), st.floats(5, 300), st.sampled_from("abc")), min_size=1,
                     max_size=30),
       nominal=st.fixed_dictionaries({t: st.integers(0, 2) for t in "abc"}), scheduler=st.sampled_from(SCHEDULERS),
       order=st.sampled_from(ORDERS))
def test_a_reclaim_gives_the_owner_its_quota_within_the_pass(rows, nominal, scheduler, order) -> None:
    # one-device jobs on one pool (no fragmentation): at the end of every instant, a tenant with waiting jobs holds
    # at least its nominal quota (or all its jobs run): the borrowers it needed were preempted in that pass
    present = sorted({t for *_, t in rows})
    quotas = {t: {"h100": nominal[t]} for t in present}
    jobs = [TrainingJob(i, a, 1, d, tenant=t) for i, (a, d, t) in enumerate(rows)]
    results = Simulation(ONE_POOL, jobs, scheduler=scheduler, tenant_order=order, record_events=True,
                         quotas={"nominal": quotas, "mode": "reclaim"}, preemption=PreemptionCost(5.0, 5.0)).run()
    _, instants = replay(results, ONE_POOL)
    for time, use, waiting in instants:
        for tenant in present:
            if waiting.get(tenant):
                assert use.get((tenant, 0), 0) >= nominal[tenant], (time, tenant, use, waiting)
    assert set(results.jobs["status"]) <= {"finished", "unschedulable"}


def test_borrowed_devices_are_kept_without_reclaim_and_limits_bind() -> None:
    # b (quota 4, may not borrow) runs a 2-device job and waits with a 4-device one that does not fit its idle 2;
    # a's six one-device jobs arrive at 1: four take a's quota and two borrow b's idle 2, which b then waits for
    b_jobs = [TrainingJob(0, 0.0, 2, 50.0, tenant="b"), TrainingJob(1, 0.0, 4, 100.0, tenant="b")]
    a_jobs = [TrainingJob(2 + i, 1.0, 1, 100.0, tenant="a") for i in range(6)]
    quotas = {"nominal": {"a": {"h100": 4}, "b": {"h100": 4}}, "mode": "borrow", "borrowing_limit": {"b": 0}}
    table = Simulation(ONE_NODE, b_jobs + a_jobs, quotas=quotas).run().jobs.set_index("job_id")
    assert table.loc[list(range(2, 8)), "first_start"].tolist() == [1.0] * 6
    assert table["borrowing_starts"].sum() == 2
    assert table.loc[1, "first_start"] == 101.0  # b's own quota back when a's borrowers end
    # with reclaim, b takes its quota back as soon as its 2-device job ends, preempting a's two borrowers
    table = Simulation(ONE_NODE, b_jobs + a_jobs, quotas={**quotas, "mode": "reclaim"}).run().jobs.set_index("job_id")
    assert table.loc[1, "first_start"] == 50.0
    assert table["reclaims"].sum() == 2 and table.loc[[6, 7], "reclaims"].tolist() == [1, 1]
    # borrowing limit 1 and lending limit 1: at most one borrowed device at a time
    jobs = [TrainingJob(i, 0.0, 1, 10.0, tenant="a") for i in range(7)] + [TrainingJob(7, 500.0, 1, 1.0, tenant="b")]
    for limits, borrowed in (({"borrowing_limit": 1}, 1), ({"lending_limit": {"b": 2}}, 2), ({}, 3)):
        table = Simulation(ONE_POOL, jobs, quotas={"nominal": {"a": {"h100": 4}, "b": {"h100": 4}}, "mode": "borrow",
                                                   **limits}).run().jobs
        assert (table["first_start"] == 0.0).sum() == 4 + borrowed, limits


@dataclass
class Backwards(TenantOrder):
    """Reverse name order (a test policy)."""

    name = "backwards"

    def order(self, tenants, capacity, now):
        return sorted((t.name for t in tenants), reverse=True)


@dataclass
class Forgetful(TenantOrder):
    """Leaves a tenant out: broken."""

    name = "forgetful"

    def order(self, tenants, capacity, now):
        return [t.name for t in tenants][1:]


def test_the_tenant_order_decides_who_borrows_first() -> None:
    # two tenants with no quota room left queue at once; the one ordered first takes the 4 idle devices of c
    jobs = ([TrainingJob(i, 0.0, 1, 100.0, tenant="a") for i in range(6)]
            + [TrainingJob(6 + i, 0.0, 1, 100.0, tenant="b") for i in range(6)]
            + [TrainingJob(12, 1000.0, 1, 1.0, tenant="c")])
    quotas = {"nominal": {"a": {"h100": 2}, "b": {"h100": 2}, "c": {"h100": 4}}, "mode": "borrow"}
    first = {}
    for order in ("quota-share", Backwards()):
        table = Simulation(ONE_POOL, jobs, quotas=quotas, tenant_order=order).run().jobs.set_index("job_id")
        first[getattr(order, "name", order)] = table[table["first_start"] == 0.0]["tenant"].value_counts().to_dict()
    assert first == {"quota-share": {"a": 6, "b": 2}, "backwards": {"b": 6, "a": 2}}
    with pytest.raises(PolicyError, match=r"tenant order 'forgetful' must return each of the tenants \['a', 'b'\]"):
        Simulation(ONE_POOL, jobs, quotas=quotas, tenant_order=Forgetful()).run()


def test_tenant_orders_rank_by_their_measure() -> None:
    from policies.tenant_orders import DominantResourceFairness, FairShare, QuotaShare

    tenants = [TenantStatus("a", (4, 0), (4, 0), attained=100.0, weight=1.0, waiting=1),
               TenantStatus("b", (2, 2), (1, 3), attained=300.0, weight=4.0, waiting=1),
               TenantStatus("c", (8, 8), (2, 2), attained=50.0, weight=1.0, waiting=2)]
    capacity = (8, 4)
    assert QuotaShare().order(tenants, capacity, 0.0) == ["c", "a", "b"]  # 0.25, 1.0, 1.0 (a before b by name)
    assert DominantResourceFairness().order(tenants, capacity, 0.0) == ["b", "a", "c"]  # 0.75/4, then 0.5 and 0.5
    assert FairShare().order(tenants, capacity, 0.0) == ["c", "b", "a"]  # 50, 75, 100


@pytest.mark.parametrize(("quotas", "message"), [
    ({"nominal": {"a": {"h100": 4}}, "mode": "lend"}, r"quotas\.mode: no quota mode 'lend'"),
    ({"nominal": {"a": {"h100": 4}}, "mode": "borrow", "borrowing_limit": -1},
     r"quotas\.borrowing_limit: a limit is a number of devices >= 0, got -1"),
    ({"nominal": {"a": {"h100": 4}}, "mode": "borrow", "lending_limit": {"a": {"h100": -2}}},
     r"quotas\.lending_limit\.a\.h100: a limit is a number of devices >= 0, got -2"),
    ({"nominal": {"a": {"h100": 4}}, "mode": "borrow", "lending_limit": {"zz": 2}},
     r"quotas\.lending_limit\.zz: tenant 'zz' has no quota"),
    ({"nominal": {"a": {"h100": 4}}, "borrowing_limit": 2}, r"quotas\.borrowing_limit: hard quotas neither borrow"),
    ({"nominal": {"a": {"h100": 4}}, "mode": "borrow", "weights": {"a": 0}},
     r"quotas\.weights\.a: a weight is a number > 0, got 0"),
    ({"nominal": {"a": {"h100": 4}}, "mode": "borrow", "borowing_limit": 2},
     r"quotas\.borowing_limit: unknown key \(did you mean 'borrowing_limit'\?\)"),
])
def test_bad_quota_modes_and_limits_are_refused_by_name(quotas, message) -> None:
    jobs = [TrainingJob(0, 0.0, 1, 10.0, tenant="a"), TrainingJob(1, 0.0, 1, 10.0, tenant="b")]
    with pytest.raises(ConfigError, match=message):
        Simulation(MIXED, jobs, quotas=quotas)


def test_quota_modes_and_tenant_order_from_a_config() -> None:
    config = {"cluster": {"preset": "philly", "scale": 0.33,
                          "quotas": {"nominal": "philly-vc", "mode": "reclaim", "borrowing_limit": 64}},
              "workload": {"training": {"trace": "philly", "window": {"start": "2017-10-23", "days": 1}}},
              "policy": {"scheduler": "fifo", "tenant_order": "drf"}, "sim": {"progress": False}}
    results = run_config(load_config(config))
    assert results.run["quota_mode"]["mode"] == "reclaim"
    assert results.run["quota_mode"]["tenant_order"] == {"name": "drf"}
    assert {"borrowing_starts", "reclaims"} <= set(results.jobs.columns)
    with pytest.raises(UnknownNameError, match=r"unknown tenant_order 'fair' \(did you mean 'fair-share'\?\)"):
        run_config(load_config({**config, "policy": {"scheduler": "fifo", "tenant_order": "fair"}}))
