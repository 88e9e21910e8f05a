"""Finish-time fairness (Themis' rho) between tenants, by hand on three jobs, and its edge cases."""

from __future__ import annotations

import math

import pytest

from sim import Cluster, ConfigError, PoolSpec
from sim.experiments.fairness import finish_time_fairness, share_of
from workloads.jobs import TrainingJob

TWO_GPUS = Cluster([PoolSpec("h100", nodes=2, devices_per_node=1)])


def test_rho_by_hand_on_three_jobs() -> None:
    # shared (fifo, 2 GPUs): A's two 100 s jobs run 0..100 on both GPUs; B's 50 s job (arrives at 10) waits
    # for them and runs 100..150. A: T_shared = 100. B: T_shared = 150 - 10 = 140.
    # alone on half the cluster (1 GPU): A runs its jobs one after the other, 0..200 (T = 200); B runs 10..60
    # (T = 50). rho: A 100 / 200 = 0.5, B 140 / 50 = 2.8.
    jobs = [TrainingJob(0, 0.0, 1, 100.0, tenant="A"), TrainingJob(1, 0.0, 1, 100.0, tenant="A"),
            TrainingJob(2, 10.0, 1, 50.0, tenant="B")]
    report = finish_time_fairness(TWO_GPUS, jobs, scheduler="fifo")
    table = report.table.set_index("tenant")
    assert table.loc["A", ["t_shared", "t_independent", "rho", "devices"]].tolist() == [100.0, 200.0, 0.5, 1]
    assert table.loc["B", ["t_shared", "t_independent", "rho"]].tolist() == [140.0, 50.0, 2.8]
    summary = report.summary()
    assert summary["rho"] == {"max": 2.8, "median": pytest.approx(1.65)} and summary["tenants"] == 2
    assert summary["jain_rho"] == pytest.approx((0.5 + 2.8) ** 2 / (2 * (0.25 + 7.84)))
    assert len(report.shared.jobs) == 3


def test_shares_given_and_a_tenant_whose_share_cannot_host_its_job() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=4, devices_per_node=2)])
    jobs = [TrainingJob(0, 0.0, 4, 100.0, tenant="big"), TrainingJob(1, 0.0, 2, 100.0, tenant="small")]
    even = finish_time_fairness(cluster, jobs).table.set_index("tenant")
    assert even.loc["big", "devices"] == 4 and even.loc["big", "rho"] == 1.0  # 2 of 4 nodes: room for 4 GPUs
    tight = finish_time_fairness(cluster, jobs, shares={"big": 0.25, "small": 0.75}).table.set_index("tenant")
    assert math.isnan(tight.loc["big", "rho"]) and "cannot run" in tight.loc["big", "reason"]
    assert tight.loc["small", "rho"] == 1.0
    with pytest.raises(ConfigError, match=r"no share for tenant.*'small'"):
        finish_time_fairness(cluster, jobs, shares={"big": 0.5})


def test_a_share_keeps_at_least_one_node_of_every_pool() -> None:
    mixed = Cluster([PoolSpec("h100", nodes=10, devices_per_node=8), PoolSpec("a100", nodes=2, devices_per_node=8)])
    part = share_of(mixed, 0.25)
    assert [p.nodes for p in part.pools] == [2, 1]
    assert [p.device for p in part.pools] == [p.device for p in mixed.pools]
    with pytest.raises(ConfigError, match="share must be a fraction"):
        share_of(mixed, 0.0)


def test_a_shared_run_given_under_quotas_is_used_as_is() -> None:
    # Under hard quotas of one GPU each, A's two jobs run one after the other (0..200) and B's runs 10..60:
    # T_shared is then what the alone runs give, rho 1 for both (the quotas are the shares).
    from sim import Simulation

    jobs = [TrainingJob(0, 0.0, 1, 100.0, tenant="A"), TrainingJob(1, 0.0, 1, 100.0, tenant="A"),
            TrainingJob(2, 10.0, 1, 50.0, tenant="B")]
    quotas = {"A": {"h100": 1}, "B": {"h100": 1}}
    shared = Simulation(TWO_GPUS, jobs, scheduler="fifo", quotas=quotas).run()
    table = finish_time_fairness(TWO_GPUS, jobs, shared=shared, scheduler="fifo").table.set_index("tenant")
    assert table.loc["A", ["t_shared", "t_independent", "rho"]].tolist() == [200.0, 200.0, 1.0]
    assert table.loc["B", ["t_shared", "t_independent", "rho"]].tolist() == [50.0, 50.0, 1.0]
    with pytest.raises(ConfigError, match="shared run has 3 jobs, not the 2"):
        finish_time_fairness(TWO_GPUS, jobs[:2], shared=shared, scheduler="fifo")
