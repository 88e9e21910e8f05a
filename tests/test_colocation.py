"""Training and inference on one cluster under each co-location policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from helpers import StepUp

from sim import Cluster, PoolSpec, Simulation
from sim.errors import PolicyError
from sim.serving.contracts import Colocation
from sim.serving.service import ServiceSpec
from workloads import RequestTrace, TrainingJob, get_model

MODEL = get_model("llama-3.1-8b")
CLUSTER = Cluster([PoolSpec("h100", nodes=2, devices_per_node=2)])  # devices 0,1 on node 0; 2,3 on node 1


def trace(until: float = 400.0) -> RequestTrace:
    times = np.arange(0.0, until, 5.0)
    n = len(times)
    return RequestTrace(arrival=times, prompt_tokens=np.full(n, 200), output_tokens=np.full(n, 20))


def run(colocation, jobs, **kwargs):
    spec = ServiceSpec("chat", trace(), replicas=1, model=MODEL, device="h100", max_replicas=2, load_bandwidth=16.06e9)
    sim = Simulation(CLUSTER, jobs, services=[spec], autoscaler=StepUp(), colocation=colocation,
                     scheduler="fifo", placer="first-fit", record_events=True, **kwargs)
    return sim, sim.run()


def training_devices(results) -> set[int]:
    return {d for devices in results.events[results.events["event"] == "start"]["devices"] for d in devices}


def test_inference_priority_preempts_training_for_a_scale_up() -> None:
    # Replica 0 takes device 0 at t=0; job 0 (2 GPUs) takes node 1 (devices 2, 3), job 1 (1 GPU) device 1.
    # At t=100 the autoscaler wants a second replica: no device is free, so the job with the least attained
    # service on the cheapest node is preempted: job 1 (1 device on node 0). The replica loads for 1 s.
    jobs = [TrainingJob(0, 0.0, 2, 10_000.0), TrainingJob(1, 10.0, 1, 10_000.0)]
    _, results = run("inference-priority", jobs)
    preempts = results.events[results.events["event"] == "preempt"]
    assert list(zip(preempts["time"], preempts["job_id"], strict=True))[:1] == [(100.0, 1)]
    replica = results.replicas.set_index("replica").loc[1]
    assert (replica["created"], replica["ready"]) == (100.0, 101.0)
    assert results.jobs.set_index("job_id").loc[1, "preemptions"] >= 1
    assert results.summary()["replicas"]["scale_ups_blocked"] == 0


def test_shared_never_preempts_and_reports_blocked_scale_ups() -> None:
    jobs = [TrainingJob(0, 0.0, 2, 100_000.0), TrainingJob(1, 10.0, 1, 100_000.0)]
    _, results = run("shared", jobs)
    assert (results.events["event"] != "preempt").all()
    blocked = results.summary()["replicas"]["scale_ups_blocked"]
    assert blocked > 0
    # the second replica never fits while the jobs run: the autoscaler gives up ticking after its traffic ended
    assert len(results.replicas) == 1 and blocked <= 4 + 100
    assert results.replica_timeline["time"].max() < 100 * (4 + 100 + 1)


def test_partitioned_keeps_training_off_the_inference_nodes_even_when_idle() -> None:
    # The last node (devices 2, 3) is for inference; training gets node 0 minus nothing: 2 devices.
    jobs = [TrainingJob(0, 0.0, 1, 50.0), TrainingJob(1, 0.0, 1, 50.0), TrainingJob(2, 0.0, 1, 50.0)]
    sim, results = run({"name": "partitioned", "nodes": 1}, jobs)
    assert training_devices(results) <= {0, 1}
    assert {d for devices in sim.services[0].devices for d in devices} <= {2, 3}
    starts = results.jobs.set_index("job_id")["first_start"]
    assert starts[2] == 50.0  # waits although device 3 sits idle until the second replica at t=100
    held = sum(len(d) for d, retired in zip(sim.services[0].devices, sim.services[0].retired, strict=True)
               if retired != retired)  # NaN: still held
    assert sim.free.total == 2 and sim.ledger.partition.total + held == 2  # training's node free, partition intact


def test_a_colocation_policy_that_frees_nothing_gets_a_policy_error() -> None:
    @dataclass
    class Useless(Colocation):
        name = "useless"

        def victims(self, pool, count, free, running, cluster, now):
            return (999,)  # not a running job

    jobs = [TrainingJob(0, 0.0, 1, 10_000.0), TrainingJob(1, 0.0, 1, 10_000.0), TrainingJob(2, 0.0, 1, 10_000.0)]
    with pytest.raises(PolicyError, match="co-location 'useless' preempts job 999, which is not running"):
        run(Useless(), jobs)


def test_headroom_keeps_a_reserve_that_scale_ups_take_without_preempting() -> None:
    # Replica 0 on device 0; the reserve (one replica-sized set) takes device 1, the tightest fit. Job 0
    # (2 GPUs) gets node 1; job 1 (1 GPU, t=10) waits: device 1 is idle but reserved. At t=100 the
    # second replica takes the reserved device at once -- no training job is preempted.
    jobs = [TrainingJob(0, 0.0, 2, 10_000.0), TrainingJob(1, 10.0, 1, 50.0)]
    sim, results = run({"name": "headroom", "slots": 1}, jobs)
    assert (results.events["event"] != "preempt").all()
    assert sim.services[0].devices[1] == (1,)
    assert results.replicas.set_index("replica").loc[1, "created"] == 100.0
    # job 1 waits while the service runs; when its traffic is over the service ends and the reserve goes back
    last_finish = results.requests["finish"].max()
    assert last_finish < 10_000.0
    assert results.jobs.set_index("job_id").loc[1, "first_start"] == last_finish
    assert results.summary()["replicas"]["training_preemptions_caused"] == 0


def test_a_service_whose_traffic_is_over_gives_every_device_back() -> None:
    # Job 0 wants all 4 devices: it cannot start while the service holds one. Once the last request has
    # finished, the service ends, its replicas retire at that moment, and the job starts then.
    jobs = [TrainingJob(0, 0.0, 4, 100.0)]
    sim, results = run("shared", jobs)
    last_finish = results.requests["finish"].max()
    assert results.summary()["requests"]["completed"] == len(results.requests)
    assert results.jobs.loc[0, "first_start"] == last_finish
    assert (results.replicas["retired"] == last_finish).all()
    assert results.replica_timeline["ready"].iloc[-1] == 0
    assert sim.free.total == 4 and sim.ledger.reserved == 0


@pytest.mark.parametrize(("colocation", "victim", "preemptions"), [
    ("inference-priority", 2, 2),  # least attained: job 2, which (queue 0) then preempts job 0 to restart
    ("scheduler-aware", 0, 1),  # las ranks job 0 (queue 1) lowest: it waits its turn, no second preemption
])
def test_scheduler_aware_preempts_what_the_scheduler_ranks_lowest(colocation, victim, preemptions) -> None:
    # Replica 0 on device 0. Job 0 (t=0) runs on device 1 and passes the 60 s threshold into las queue 1;
    # jobs 1 and 2 (t=50, 60) run on node 1, still in queue 0 at t=100 when the second replica needs a
    # device. Each node would cost one device.
    jobs = [TrainingJob(0, 0.0, 1, 10_000.0), TrainingJob(1, 50.0, 1, 10_000.0), TrainingJob(2, 60.0, 1, 10_000.0)]
    spec = ServiceSpec("chat", trace(), replicas=1, model=MODEL, device="h100", max_replicas=2, load_bandwidth=16.06e9)
    sim = Simulation(CLUSTER, jobs, services=[spec], autoscaler=StepUp(), colocation=colocation,
                     scheduler={"name": "las", "thresholds": [60.0]}, placer="first-fit", record_events=True)
    results = sim.run()
    preempts = results.events[(results.events["event"] == "preempt") & (results.events["time"] == 100.0)]
    assert preempts["job_id"].iloc[0] == victim
    assert len(preempts) == preemptions
    assert results.summary()["replicas"]["training_preemptions_caused"] == 1


def test_scheduler_priority_orders_running_jobs_for_the_colocation_policy() -> None:
    seen = []

    @dataclass
    class Spy(Colocation):
        name = "spy"

        def victims(self, pool, count, free, running, cluster, now):
            seen.append([job.job_id for job in running])
            return ()

    jobs = [TrainingJob(0, 0.0, 1, 10_000.0), TrainingJob(1, 50.0, 1, 10_000.0), TrainingJob(2, 60.0, 1, 10_000.0)]
    spec = ServiceSpec("chat", trace(), replicas=1, model=MODEL, device="h100", max_replicas=2, load_bandwidth=16.06e9)
    Simulation(CLUSTER, jobs, services=[spec], autoscaler=StepUp(), colocation=Spy(),
               scheduler={"name": "las", "thresholds": [60.0]}, placer="first-fit").run()
    assert seen[0] == [0, 2, 1]  # queue 1 first, then queue 0 latest arrival first
