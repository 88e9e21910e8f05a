"""Tiresias' policies in gpusim: the ``count`` and ``whole-nodes`` placers and the time-only (1D) LAS, on small
cases checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from policies.placers import Count, WholeNodes
from policies.schedulers import LeastAttainedService
from sim.engine import PreemptionCost, Simulation
from sim.errors import ConfigError
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.free_devices import FreeDevices
from sim.policy_checks import InvariantViolation, check_placer, check_run
from sim.training.contracts import Placer
from sim.training.jobs import JobRecord
from workloads.jobs import TrainingJob

RNG = np.random.default_rng(0)

# One pool of 4 nodes x 4 devices: node n holds devices 4n..4n+3. Free after the setup below:
#   node 0: 2, 3 (2 free)   node 1: 7 (1 free)   node 2: 8..11 (4 free)   node 3: 14, 15 (2 free)
CLUSTER = Cluster([PoolSpec("h100", 4, 4)])


def free_devices() -> FreeDevices:
    free = FreeDevices(CLUSTER)
    free.take([0, 1, 4, 5, 6, 12, 13])
    return free


def job(gpus: int, pools: tuple[int, ...] = (0,)):
    return JobRecord(TrainingJob(0, 0.0, gpus, 10.0), allowed_pools=pools, speeds=dict.fromkeys(pools, 1.0)).view


def place(placer: Placer, gpus: int) -> tuple[int, ...] | None:
    return placer.place(job(gpus), free_devices(), RNG)


# ------------------------------------------------------------------------------------------ count
@pytest.mark.parametrize(("gpus", "devices"), [
    (1, (2,)),
    (3, (2, 3, 7)),  # the lowest free devices, over nodes 0 and 1, although node 2 alone holds 3
    (9, (2, 3, 7, 8, 9, 10, 11, 14, 15)),  # every free device
    (10, None),  # 9 free
])
def test_count_takes_the_lowest_free_devices_whatever_their_nodes(gpus, devices):
    assert place(Count(), gpus) == devices


def test_count_takes_one_pool_the_first_allowed_with_room():
    cluster = Cluster([PoolSpec("h100", 2, 2), PoolSpec("a100", 2, 2)])  # devices 0-3 and 4-7
    free = FreeDevices(cluster)
    free.take([0, 1, 2, 4])  # h100: 3 free; a100: 5, 6, 7
    both = JobRecord(TrainingJob(0, 0.0, 2, 10.0), allowed_pools=(0, 1), speeds={0: 1.0, 1: 1.0}).view
    assert Count().place(both, free, RNG) == (5, 6)  # h100 has 1 free: the a100 pool, over its two nodes


def test_count_splits_a_gang_and_the_engine_and_checks_accept_it():
    # 2 nodes x 2 devices. job 0 (1 GPU) takes device 0; job 1 (2 GPUs) arrives just after: count gives it
    # devices 1 and 2, one on each node (first-fit would give node 1). A placer declares the relaxation with
    # splits_gangs; check_run skips the one-node rule for it, and only for it.
    cluster = Cluster([PoolSpec("h100", 2, 2)])
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 1.0, 2, 50.0), TrainingJob(2, 2.0, 1, 10.0)]
    res = Simulation(cluster, jobs, scheduler="fifo", placer=Count(), record_events=True).run()
    started = {int(j): tuple(d) for _, e, j, d in res.events.itertuples(index=False) if e == "start"}
    assert started == {0: (0,), 1: (1, 2), 2: (3,)}
    assert Count.splits_gangs and not WholeNodes.splits_gangs
    check_run(cluster, jobs, PreemptionCost(), res, gangs_may_split=True)
    with pytest.raises(InvariantViolation, match="one-node"):
        check_run(cluster, jobs, PreemptionCost(), res, gangs_may_split=False)


# ------------------------------------------------------------------------------------------ whole-nodes
@pytest.mark.parametrize(("gpus", "devices"), [
    (1, (2,)),  # a gang that fits a node: the first node with room (first-fit)
    (2, (2, 3)),
    (3, (8, 9, 10)),
    (5, (8, 9, 10, 11, 2)),  # one whole free node (node 2), then the first other node with room for 1 (node 0)
    (6, (8, 9, 10, 11, 2, 3)),  # node 2, then the first other node with room for 2 (node 0)
    (8, None),  # two whole free nodes needed, only node 2 is free (first-fit would take 8 of the 9 free devices)
])
def test_whole_nodes_gives_large_gangs_whole_free_nodes(gpus, devices):
    assert place(WholeNodes(), gpus) == devices


def test_whole_nodes_tries_the_next_pool_when_the_first_has_no_whole_node():
    cluster = Cluster([PoolSpec("h100", 2, 2), PoolSpec("a100", 2, 2)])  # devices 0-3 and 4-7
    free = FreeDevices(cluster)
    free.take([0, 2])  # h100: one free device on each node, none whole
    both = JobRecord(TrainingJob(0, 0.0, 3, 10.0), allowed_pools=(0, 1), speeds={0: 1.0, 1: 1.0}).view
    assert WholeNodes().place(both, free, RNG) == (4, 5, 6)


@pytest.mark.parametrize("placer", [Count(), WholeNodes()], ids=["count", "whole-nodes"])
def test_tiresias_placers_keep_the_invariants(placer):
    # Random small scenarios (gangs of 1-4 and larger than a node, several pools) with every built-in scheduler.
    check_placer(placer, examples=4)


# ------------------------------------------------------------------------------------------ 1D LAS
def test_las_defaults_are_tiresias_dlas_gpu():
    las = LeastAttainedService()
    assert (las.thresholds, las.promote_knob, las.measure) == ((3250.0, 7200.0), 0.0, "gpu-time")
    with pytest.raises(ValueError, match="measure"):
        LeastAttainedService(measure="gpus")
    with pytest.raises(ConfigError):
        Simulation(CLUSTER, [], scheduler={"name": "las", "measure": "wall"})


@pytest.mark.parametrize(("measure", "crossing"), [("gpu-time", 50.0), ("time", 100.0)])
def test_time_only_las_demotes_after_seconds_run_not_device_seconds(measure, crossing):
    # 1 node x 2 GPUs, one threshold at 100, no starvation rule, checkpoint 5 + restore 5.
    #   job 0 (2 GPUs, 1000 s) starts at 0; job 1 (1 GPU, 50 s) arrives at 10 and waits (same queue, later).
    #   gpu-time: job 0 holds 2 devices, so it reaches 100 device-seconds at 50; time: 100 seconds run at 100.
    #   Then job 1 preempts it and runs 50 s; job 0 resumes with 10 s of overhead and its work left.
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 10.0, 1, 50.0)]
    las = LeastAttainedService(thresholds=(100.0,), measure=measure)
    res = Simulation(cluster, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0), record_events=True).run()
    events = [(float(t), e, int(j)) for t, e, j, _ in res.events.itertuples(index=False)
              if e in ("start", "preempt", "finish")]
    resume = crossing + 50.0
    assert events == [(0.0, "start", 0), (crossing, "preempt", 0), (crossing, "start", 1), (resume, "finish", 1),
                      (resume, "start", 0), (resume + 10.0 + 1000.0 - crossing, "finish", 0)]


def test_time_only_las_ranks_a_wide_job_by_its_time_alone():
    # 1 node x 4 GPUs, threshold 150. job 0 (4 GPUs, 1000 s) starts at 0; job 1 (1 GPU, 20 s) arrives at 10.
    # gpu-time: job 0 passes 150 device-seconds at 37.5 and job 1 preempts it then. time: job 0 is still in
    # the first queue at 100 s run; job 1 preempts it only at 150 and ends at 170.
    cluster = Cluster([PoolSpec("h100", 1, 4)])
    jobs = [TrainingJob(0, 0.0, 4, 1000.0), TrainingJob(1, 10.0, 1, 20.0)]
    for measure, start in (("gpu-time", 37.5), ("time", 150.0)):
        las = LeastAttainedService(thresholds=(150.0,), measure=measure)
        res = Simulation(cluster, jobs, scheduler=las, preemption=PreemptionCost(0.0, 0.0)).run()
        first = dict(zip(res.jobs["job_id"], res.jobs["first_start"], strict=True))
        assert first[1] == pytest.approx(start)
