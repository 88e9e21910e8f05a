"""Issue 15: hard tenant quotas. A tenant never holds more than its quota in a pool, whatever the scheduler; a
tenant at its quota does not hold up another; jobs that cannot fit their tenant's quota are unschedulable with a
reason; bad quotas are refused naming tenant, pool and field; a scheduler that breaks the rules gets a PolicyError.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.tenant_orders import QuotaShare
from sim import (
    Assignment,
    Cluster,
    ClusterView,
    ConfigError,
    Decision,
    PolicyError,
    PoolSpec,
    PreemptionCost,
    Scheduler,
    Simulation,
    load_config,
    preset,
    run_config,
)
from workloads.jobs import TrainingJob

MIXED = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4), PoolSpec("a100", nodes=2, devices_per_node=4)])
SCHEDULERS = ["fifo", "sjf", "srtf", "las", "easy-backfill"]


def usage_over_time(results, cluster: Cluster) -> list[dict[tuple[str, int], int]]:
    """Devices each (tenant, pool) holds after every event of the run's log."""
    tenant = dict(zip(results.jobs["job_id"], results.jobs["tenant"], strict=True))
    held: dict[int, tuple[int, ...]] = {}
    use: dict[tuple[str, int], int] = defaultdict(int)
    states = []
    for kind, job_id, devices in zip(results.events["event"], results.events["job_id"], results.events["devices"],
                                     strict=True):
        if kind == "start":
            held[job_id] = tuple(devices)
            use[tenant[job_id], cluster.pool_of_device(devices[0])] += len(devices)
        elif kind in ("preempt", "finish"):
            devices = held.pop(job_id)
            use[tenant[job_id], cluster.pool_of_device(devices[0])] -= len(devices)
        states.append(dict(use))
    return states


jobs_strategy = st.lists(st.tuples(st.floats(0, 500), st.sampled_from([1, 2, 4, 8]), st.floats(5, 400),
                                   st.sampled_from("abc")), min_size=1, max_size=30)
quota_strategy = st.fixed_dictionaries({t: st.tuples(st.integers(0, 3), st.integers(0, 3)) for t in "abc"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=jobs_strategy, quota=quota_strategy, scheduler=st.sampled_from(SCHEDULERS))
def test_no_tenant_ever_holds_more_than_its_quota(rows, quota, scheduler) -> None:
    # quotas in units of 2 devices per pool, at most 6 of each pool's 8 per tenant; a+b+c may not exceed 8
    per_pool = [[2 * quota[t][p] for t in "abc"] for p in range(2)]
    for p in range(2):
        while sum(per_pool[p]) > 8:
            per_pool[p][per_pool[p].index(max(per_pool[p]))] -= 2
    present = {t for *_, t in rows}
    quotas = {t: {"h100": per_pool[0][i], "a100": per_pool[1][i]} for i, t in enumerate("abc") if t in present}
    jobs = [TrainingJob(i, a, g, d, tenant=t) for i, (a, g, d, t) in enumerate(rows)]
    results = Simulation(MIXED, jobs, scheduler=scheduler, quotas=quotas, record_events=True,
                         preemption=PreemptionCost(5.0, 5.0)).run()
    limit = {(t, p): quotas[t][pool] for t in quotas for p, pool in enumerate(("h100", "a100"))}
    for state in usage_over_time(results, MIXED):
        for key, count in state.items():
            assert count <= limit[key], (key, count, limit[key])
    table = results.jobs
    # every job ends: finished, or unschedulable because no pool's quota can hold its gang
    assert set(table["status"]) <= {"finished", "unschedulable"}
    for _, job in table[table["status"] == "unschedulable"].iterrows():
        assert max(quotas[job["tenant"]].values()) < job["gpus"] and "quota" in job["reason"]


def test_a_tenant_at_its_quota_does_not_hold_up_another() -> None:
    # tenant a queues four 4-GPU jobs at t=0; tenant b's 4-GPU job arrives at 1. Pooled fifo runs a's first two
    # jobs on the two h100 nodes and makes b wait behind a's queue; with quotas of 4 each, b starts at once.
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(i, 0.0, 4, 100.0, tenant="a") for i in range(4)] + [TrainingJob(4, 1.0, 4, 10.0, tenant="b")]
    pooled = Simulation(cluster, jobs).run().jobs.set_index("job_id")
    assert pooled.loc[4, "first_start"] == 200.0
    shared = Simulation(cluster, jobs, quotas={"a": {"h100": 4}, "b": {"h100": 4}}).run().jobs.set_index("job_id")
    assert shared.loc[4, "first_start"] == 1.0
    assert shared.loc[[0, 1, 2, 3], "first_start"].tolist() == [0.0, 100.0, 200.0, 300.0]  # a: one at a time


def test_jobs_beyond_their_tenants_quota_are_unschedulable_with_a_reason() -> None:
    jobs = [TrainingJob(0, 0.0, 8, 10.0, tenant="a"), TrainingJob(1, 0.0, 2, 10.0, tenant="stranger"),
            TrainingJob(2, 0.0, 4, 10.0, tenant="a")]
    table = Simulation(MIXED, jobs, quotas={"a": {"h100": 4, "a100": 4}}).run().jobs.set_index("job_id")
    assert table.loc[0, "status"] == "unschedulable" and "quota of at most 4 devices" in table.loc[0, "reason"]
    assert table.loc[1, "status"] == "unschedulable" and table.loc[1, "reason"] == "tenant 'stranger' has no quota"
    assert table.loc[2, "status"] == "finished"


@pytest.mark.parametrize(("quotas", "message"), [
    ({"a": {"h200": 4}}, r"quotas\.a\.h200: the cluster has no pool 'h200'"),
    ({"a": {"h100": -1}}, r"quotas\.a\.h100: a quota is a number of devices >= 0, got -1"),
    ({"a": {"h100": True}}, r"quotas\.a\.h100: a quota is a number of devices"),
    ({"a": {"h100": 6}, "b": {"h100": 4}}, r"pool 'h100-sxm' has 8 devices, the tenants' quotas in it add up to 10"),
    ({"aa": {"h100": 4}}, r"quotas\.aa: no job of the workload has tenant 'aa' \(did you mean 'a'\?\)"),
    ({"a": 4}, r"quotas\.a: expected \{pool: devices\}, got 4"),
])
def test_bad_quotas_are_refused_naming_tenant_pool_and_field(quotas, message) -> None:
    jobs = [TrainingJob(0, 0.0, 1, 10.0, tenant="a"), TrainingJob(1, 0.0, 1, 10.0, tenant="b")]
    with pytest.raises(ConfigError, match=message):
        Simulation(MIXED, jobs, quotas=quotas)


@dataclass
class Greedy(Scheduler):
    """Starts every waiting job it sees on the first free devices, ignoring quotas (and the trial)."""

    name = "greedy"

    def schedule(self, view: ClusterView) -> Decision:
        free = list(view.free.free_on(0)) + list(view.free.free_on(1))
        starts = []
        for job in view.queued:
            if len(free) >= job.gpus:
                starts.append(Assignment(job.job_id, tuple(free[:job.gpus])))
                free = free[job.gpus:]
        return Decision(start=tuple(starts))


def test_a_scheduler_that_ignores_the_quota_gets_a_policy_error_naming_the_tenant() -> None:
    jobs = [TrainingJob(i, 0.0, 2, 10.0, tenant="a") for i in range(3)] + [TrainingJob(3, 0.0, 2, 10.0, tenant="b")]
    with pytest.raises(PolicyError, match=r"gives tenant 'a' 6 devices in pool 'h100-sxm', above its quota of 4"):
        Simulation(MIXED, jobs, scheduler=Greedy(), quotas={"a": {"h100": 4}, "b": {"h100": 4}}).run()


def test_quotas_from_a_config(tmp_path) -> None:
    config = load_config({
        "cluster": {"preset": "dgx-h100", "nodes": 2, "quotas": {"default": {"h100": 8}}},
        "workload": {"training": {"jobs": 40, "interarrival": {"dist": "exponential", "mean": 5},
                                  "duration": {"dist": "exponential", "mean": 100},
                                  "gpus": {"dist": "choice", "values": [1, 2, 4, 8]}}},
        "policy": {"scheduler": "las"}, "sim": {"progress": False, "record_events": True}})
    results = run_config(config)
    assert results.jobs["status"].eq("finished").all()
    assert max(sum(s.values()) for s in usage_over_time(results, preset("dgx-h100", nodes=2))) <= 8
    with pytest.raises(ConfigError, match=r"quotas must map tenants to \{pool: devices\}, got \[1, 2\]"):
        run_config(load_config({"cluster": {"quotas": [1, 2]}, "workload": {"training": {"jobs": 1}},
                                "sim": {"progress": False}}))
    with pytest.raises(ConfigError, match=r"no quotas named 'philly-vcs' \(did you mean 'philly-vc'\?\)"):
        run_config(load_config({"cluster": {"quotas": "philly-vcs"}, "workload": {"training": {"jobs": 1}},
                                "sim": {"progress": False}}))


def test_the_summary_gives_each_tenants_quota_and_how_much_of_it_its_jobs_held() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(0, 0.0, 4, 100.0, tenant="a"), TrainingJob(1, 0.0, 2, 50.0, tenant="b")]
    results = Simulation(cluster, jobs, quotas={"a": {"h100": 4}, "b": {"h100": 4}}).run()
    assert results.run["quotas"] == {"a": {"h100-sxm": 4}, "b": {"h100-sxm": 4}}
    tenants = results.summary()["jobs"]["by_tenant"]
    # 4 devices for all of the 100 s run
    assert tenants["a"]["quota"] == {"devices": 4, "used": 1.0, "borrowed_device_hours": 0.0, "reclaimed": 0}
    assert tenants["b"]["quota"] == {"devices": 4, "used": pytest.approx(2 * 50 / (4 * 100)),
                                     "borrowed_device_hours": 0.0, "reclaimed": 0}
    assert "quota" not in Simulation(cluster, jobs).run().summary()["jobs"]["by_tenant"]["a"]


def test_a_preemption_that_makes_quota_room_is_kept_even_when_the_job_lands_on_other_devices() -> None:
    # one 4-GPU node, tenant a's quota 2: a's two jobs run from 0; a's third arrives at 50, ahead of them under
    # las (threshold 10 GPU-seconds). Preempting one of them makes quota room, and the placer puts the new job on
    # a device that was free anyway: the victim must still be preempted (before the fix it was "reclaimed", and
    # tenant a held 3 devices: a PolicyError).
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=4)])
    jobs = [TrainingJob(0, 0.0, 1, 500.0, tenant="a"), TrainingJob(1, 0.0, 1, 500.0, tenant="a"),
            TrainingJob(2, 50.0, 1, 20.0, tenant="a"), TrainingJob(3, 0.0, 1, 1.0, tenant="b")]
    results = Simulation(cluster, jobs, scheduler={"name": "las", "thresholds": [10]}, record_events=True,
                         quotas={"a": {"h100": 2}, "b": {"h100": 2}}).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[2, "first_start"] == 50.0 and table.loc[[0, 1], "preemptions"].sum() >= 1
    assert max(state.get(("a", 0), 0) for state in usage_over_time(results, cluster)) == 2


@pytest.mark.parametrize("mode", ["hard", "borrow", "reclaim"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("seed", range(8))
def test_tenants_not_asked_again_when_nothing_changed_for_them_decide_as_if_asked(scheduler, seed, mode) -> None:
    # TenantState.needs_pass skips a tenant whose view changed only by time and devices taken: the same log as
    # asking every tenant with waiting jobs at every pass, in every quota mode (borrowing room changes only with
    # other tenants' devices)
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 120
    jobs = [TrainingJob(i, float(t), int(g), float(d), tenant=str(k)) for i, (t, g, d, k) in enumerate(zip(
        np.cumsum(rng.exponential(8, n)), rng.choice([1, 2, 4, 8], n), rng.exponential(200, n),
        rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]), strict=True))]
    quotas = {"a": {"h100": 4, "a100": 4}, "b": {"h100": 2, "a100": 4}, "c": {"h100": 2}}
    logs = []
    for skip in (True, False):
        sim = Simulation(MIXED, jobs, scheduler=scheduler, quotas={"nominal": quotas, "mode": mode},
                         record_events=True, preemption=PreemptionCost(5.0, 5.0))
        sim.training.tenants.skip_unchanged = skip
        logs.append(sim.run().events)
    pd.testing.assert_frame_equal(logs[0], logs[1])


def tenant_a_passes(cluster: Cluster, jobs: list[TrainingJob], scheduler: dict) -> tuple[dict[bool, int], list]:
    """Run under quotas {"a": 4, "b": 4} h100 with tenant passes skipped when unchanged (True) and not (False):
    how often tenant a's scheduler was asked each way, and the two event logs, checked identical."""
    calls = {True: 0, False: 0}
    logs = []
    for skip in (True, False):
        sim = Simulation(cluster, jobs, scheduler=scheduler, record_events=True,
                         quotas={"a": {"h100": 4}, "b": {"h100": 4}})
        sim.training.tenants.skip_unchanged = skip
        tenant_a = sim.training.tenants.scheduler("a")

        def counted(view: ClusterView, schedule=tenant_a.schedule, skip: bool = skip) -> Decision:
            calls[skip] += 1
            return schedule(view)

        tenant_a.schedule = counted
        logs.append(sim.run().events)
    pd.testing.assert_frame_equal(logs[0], logs[1])
    return calls, logs


def test_a_preemptive_tenant_that_would_preempt_nothing_is_not_asked_while_it_has_no_room() -> None:
    # issue 15 item 8: tenant a's quota is full of jobs in las' first queue and its waiting job is in it too (las
    # preempts only for a strictly lower queue), so tenant b's jobs changing the free devices at every pass cannot
    # make a act: a is asked when its own jobs arrive or finish only, and the log is the one of asking it at every
    # pass
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(i, 0.0, 1, 10_000.0, tenant="a") for i in range(4)] + [TrainingJob(4, 1.0, 1, 50.0, tenant="a")]
    jobs += [TrainingJob(5 + i, 2.0 + 10.0 * i, 1, 5.0, tenant="b") for i in range(30)]
    calls, _ = tenant_a_passes(cluster, jobs, {"name": "las", "thresholds": [1e9]})
    assert calls[True] == 3  # t=0, t=1 and t=10,000 (its first jobs finish, its waiting job starts)
    assert calls[False] >= 60  # also at each of b's 30 starts and 30 finishes


def test_a_preemptive_tenant_is_asked_whether_it_would_preempt_once_between_its_passes() -> None:
    # the same cluster as above: b's 60 starts and finishes each change the free devices, and tenant a (no room,
    # would preempt nothing) is asked ``preempts_nothing`` at the first of them after each of its passes only: its
    # answer is about time alone, which changes nothing for it before its next pass (Scheduler.preempts_nothing)
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(i, 0.0, 1, 10_000.0, tenant="a") for i in range(4)] + [TrainingJob(4, 1.0, 1, 50.0, tenant="a")]
    jobs += [TrainingJob(5 + i, 2.0 + 10.0 * i, 1, 5.0, tenant="b") for i in range(30)]
    sim = Simulation(cluster, jobs, scheduler={"name": "las", "thresholds": [1e9]},
                     quotas={"a": {"h100": 4}, "b": {"h100": 4}})
    tenant_a, kernel = sim.training.tenants.scheduler("a"), sim.training.kernel
    asked: list[tuple[str, float]] = []

    def schedule(view: ClusterView, inner=tenant_a.schedule) -> Decision:
        asked.append(("pass", view.now))
        return inner(view)

    def preempts_nothing(now: float, inner=tenant_a.preempts_nothing) -> bool:
        answer = inner(now)
        asked.append((str(answer), kernel.now))
        return answer

    tenant_a.schedule, tenant_a.preempts_nothing = schedule, preempts_nothing
    sim.run()
    assert asked == [("pass", 0.0), ("pass", 1.0), ("True", 2.0), ("pass", 10_000.0)]


@pytest.mark.parametrize("blocking", [True, False])
def test_a_strict_fifo_tenant_whose_first_job_has_no_room_is_not_asked(blocking) -> None:
    # tenant a holds 2 of its 4 devices; its first waiting job needs 4, a 1-device job waits behind it. Strict fifo
    # (``waits_for_first``) starts nothing until the first job has room, so a is asked only when that job may
    # start, not at its jobs' arrivals nor at each of b's 60 starts and finishes; fifo without blocking starts the
    # small job. Both give the log of asking every tenant at every pass.
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(0, 0.0, 2, 10_000.0, tenant="a"), TrainingJob(1, 1.0, 4, 50.0, tenant="a"),
            TrainingJob(2, 2.0, 1, 500.0, tenant="a")]
    jobs += [TrainingJob(3 + i, 3.0 + 10.0 * i, 1, 5.0, tenant="b") for i in range(30)]
    calls, logs = tenant_a_passes(cluster, jobs, {"name": "fifo", "blocking": blocking})
    assert calls[False] >= 60
    if blocking:
        assert calls[True] == 3  # t=0 (job 0 starts), 10,000 (it finishes: job 1 starts), 10,050 (job 2 starts)
    else:
        assert logs[0].query("event == 'start' and job_id == 2")["time"].tolist() == [2.0]


@dataclass
class Unsure(Scheduler):
    """las that answers ``preempts_nothing`` with ``answer`` (a broken policy)."""

    name = "unsure"
    preemptive = True
    answer: object = "no"

    def __post_init__(self) -> None:
        from policies.schedulers.las import LeastAttainedService

        self.inner = LeastAttainedService(thresholds=(1e9,))

    def schedule(self, view: ClusterView) -> Decision:
        return self.inner.schedule(view)

    def preempts_nothing(self, now: float) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize(("answer", "message"), [
    ("no", r"scheduler 'unsure': preempts_nothing\(\) returned 'no', not a bool"),
    (KeyError(3), r"unsure.*raised KeyError\(3\) at t=12.0 saying whether it would preempt for tenant 'a'")])
def test_a_preempts_nothing_that_is_not_a_bool_gets_a_policy_error(answer, message) -> None:
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(i, 0.0, 1, 100.0, tenant="a") for i in range(5)] + [TrainingJob(5, 12.0, 1, 5.0, tenant="b")]
    with pytest.raises(PolicyError, match=message):
        Simulation(cluster, jobs, scheduler=Unsure(answer), quotas={"a": {"h100": 4}, "b": {"h100": 4}}).run()


@pytest.mark.parametrize("seed", range(3))
def test_device_seconds_do_not_depend_on_how_often_they_are_read(seed) -> None:
    # the device-seconds each tenant held and borrowed are added up when its devices change, not when the tenant
    # order reads them (TenantState.status), so the tenant order may be asked more or less often (here: every
    # tenant read again at every pass) and the totals are the same floats, to the bit
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 120
    jobs = [TrainingJob(i, float(t), int(g), float(d), tenant=str(k)) for i, (t, g, d, k) in enumerate(zip(
        np.cumsum(rng.exponential(8, n)), rng.choice([1, 2, 4], n), rng.exponential(200, n),
        rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]), strict=True))]
    quotas = {"a": {"h100": 4, "a100": 4}, "b": {"h100": 2, "a100": 4}, "c": {"h100": 2}}
    records, totals = [], []
    for read_often in (False, True):
        sim = Simulation(MIXED, jobs, scheduler="fifo", quotas={"nominal": quotas, "mode": "borrow"},
                         tenant_order="fair-share", preemption=PreemptionCost(5.0, 5.0))
        tenants, kernel = sim.training.tenants, sim.training.kernel
        if read_often:
            sim.training.before_pass.append(lambda tenants=tenants, kernel=kernel: [
                tenants.status(tenant, kernel.now) for tenant in quotas])
        sim.run()
        records.append(sim.quota_record["borrowed_device_seconds"])
        totals.append(tenants.totals(sim.end_time))
    assert records[0] == records[1] and any(borrowed > 0 for borrowed in records[0].values())
    assert totals[0] == totals[1]


@dataclass
class CountedQuotaShare(QuotaShare):
    """quota-share, counting its calls."""

    name = "counted-quota-share"
    calls: int = 0

    def order(self, tenants, capacity, now):
        self.calls += 1
        return super().order(tenants, capacity, now)


@pytest.mark.parametrize("scheduler", ["fifo", {"name": "las", "thresholds": [1e9]}])
def test_the_tenant_order_is_not_asked_while_all_tenants_but_one_are_settled(scheduler) -> None:
    # hard quotas: tenant a's quota is full and its waiting job has no room (settled until its jobs change), while
    # b's 4-device jobs queue behind each other: the order is asked at most once (las: the first pass at which b
    # waits comes before a is found settled again after its own pass at t = 1), and the log is the one of asking
    # every tenant (and the order) at every pass
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(i, 0.0, 1, 10_000.0, tenant="a") for i in range(4)] + [TrainingJob(4, 1.0, 1, 50.0, tenant="a")]
    jobs += [TrainingJob(5 + i, 2.0 + 10.0 * i, 4, 15.0, tenant="b") for i in range(30)]
    logs, calls = [], []
    for skip in (True, False):
        sim = Simulation(cluster, jobs, scheduler=scheduler, record_events=True, tenant_order=CountedQuotaShare(),
                         quotas={"a": {"h100": 4}, "b": {"h100": 4}})
        sim.training.tenants.skip_unchanged = skip
        logs.append(sim.run().events)
        calls.append(sim.training.tenants.tenant_order.calls)
    pd.testing.assert_frame_equal(logs[0], logs[1])
    assert calls[0] <= 1 and calls[1] >= 30  # (b waits only between t = 2 and a's finishes at 10,000)
