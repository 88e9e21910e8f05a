"""Autoscalers and the engine's scaling mechanics: provisioning delay, draining, devices given back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from sim import Cluster, PoolSpec, Simulation, preset
from sim.errors import PolicyError
from sim.serving.contracts import Autoscaler, ServiceView
from sim.serving.service import ServiceSpec
from workloads import RequestTrace, TrainingJob, get_model
from workloads.arrivals import MMPP

MODEL = get_model("llama-3.1-8b")


def bursty(seed: int = 0, horizon: float = 900.0) -> RequestTrace:
    times = MMPP(rates=(1.0, 40.0), mean_sojourns=(200.0, 60.0)).times(np.random.default_rng(seed), horizon=horizon)
    n = len(times)
    return RequestTrace(arrival=times, prompt_tokens=np.full(n, 800), output_tokens=np.full(n, 200))


def service(trace: RequestTrace, **kwargs) -> ServiceSpec:
    options = {"replicas": 1, "model": MODEL, "device": "h100", "max_replicas": 8, "load_bandwidth": 4e9} | kwargs
    return ServiceSpec("chat", trace, **options)


def view(**kwargs) -> ServiceView:
    options = {"name": "s", "now": 1000.0, "replicas": (), "ready": 4, "provisioning": 0, "num_queued": 0,
               "outstanding": 0, "arrivals": 0, "busy_fraction": 0.5, "min_replicas": 1, "max_replicas": 10}
    return ServiceView(**(options | kwargs))


def test_queue_length_scales_up_in_a_burst_and_back_down() -> None:
    trace = bursty()
    results = Simulation(preset("dgx-h100", nodes=1), [], services=[service(trace)], router="least-outstanding",
                         autoscaler={"name": "queue-length", "per_replica": 16.0, "interval": 10.0,
                                     "cooldown": 30.0}).run()
    timeline = results.replica_timeline
    assert timeline["ready"].max() > 1  # it scaled up
    last_finish = results.requests["finish"].max()
    before_end = timeline[timeline["time"] < last_finish]
    assert before_end["ready"].iloc[-1] == 1  # and back down to min_replicas before the traffic was over
    assert timeline["ready"].iloc[-1] == 0  # then the service ended: every replica retired
    assert results.summary()["requests"]["completed"] == len(trace)  # no request lost while scaling
    replicas = results.replicas
    added = replicas[replicas["created"] > 0]
    # a new replica loads 16.06 GB of weights at 4 GB/s before it accepts requests
    assert np.allclose(added["ready"] - added["created"], MODEL.weight_bytes / 4e9)
    assert (replicas["retired"] < last_finish).sum() == len(replicas) - 1  # scaled down while serving
    assert replicas["retired"].max() == last_finish  # the last one retired when the service ended


def test_drained_replicas_give_devices_back_to_training() -> None:
    # 1 node x 2 H100: a replica takes one device, a 2-GPU training job waits. Static autoscaler with
    # min_replicas 0 is not enough: a custom autoscaler scales to 0 between t=50 and t=250 when idle, and
    # back to 1 for a last request at t=300.
    @dataclass
    class ToZero(Autoscaler):
        name = "to-zero"
        interval: float = 5.0

        def target(self, v: ServiceView) -> int:
            return 0 if v.outstanding == 0 and 50 < v.now < 250 else 1

    trace = RequestTrace(arrival=np.array([0.0, 1.0, 300.0]), prompt_tokens=np.array([100, 100, 100]),
                         output_tokens=np.array([10, 10, 10]))
    cluster = Cluster([PoolSpec("h100", 1, 2)])
    spec = service(trace, min_replicas=0, max_replicas=1)
    sim = Simulation(cluster, [TrainingJob(0, 0.0, 2, 100.0)], services=[spec], autoscaler=ToZero(),
                     record_events=True)
    results = sim.run()
    start = float(results.jobs.loc[0, "first_start"])
    retired = float(results.replicas.loc[0, "retired"])
    assert start == retired == 55.0  # the first tick after t=50 drains the idle replica; the job starts then
    assert results.replicas.loc[1, "created"] == 250.0  # after the job (55..155), a new replica at the tick
    assert results.summary()["requests"]["completed"] == 3
    assert sim.free.total == 2 and sim.ledger.reserved == 0


def test_an_autoscaler_asking_beyond_the_bounds_gets_a_policy_error() -> None:
    @dataclass
    class Greedy(Autoscaler):
        name = "greedy"
        interval: float = 1.0

        def target(self, v: ServiceView) -> int:
            return v.max_replicas + 1

    with pytest.raises(PolicyError, match=r"autoscaler 'greedy' asks for 9 replicas.*allowed: 1\.\.8"):
        Simulation(preset("dgx-h100", nodes=1), [], services=[service(bursty())], autoscaler=Greedy()).run()


def test_static_keeps_the_initial_replicas_until_the_traffic_is_over() -> None:
    results = Simulation(preset("dgx-h100", nodes=1), [], services=[service(bursty(), replicas=3)]).run()
    timeline, last_finish = results.replica_timeline, results.requests["finish"].max()
    assert set(timeline[timeline["time"] < last_finish]["ready"]) == {3}
    assert timeline["ready"].iloc[-1] == 0 and timeline["time"].iloc[-1] == last_finish
    assert (results.replicas["retired"] == last_finish).all()


def test_target_utilization_rule_and_cooldown() -> None:
    from sim.registry import create

    scaler = create("autoscaler", {"name": "target-utilization", "utilization": 0.5, "cooldown": 100.0})
    assert scaler.target(view(ready=4, busy_fraction=0.9)) == math.ceil(4 * 0.9 / 0.5)  # 8
    assert scaler.target(view(now=1050.0, ready=8, busy_fraction=0.1)) == 8  # within the cool-down
    assert scaler.target(view(now=1101.0, ready=8, busy_fraction=0.1)) == 2
    assert scaler.target(view(now=2000.0, ready=2, busy_fraction=1.0, max_replicas=3)) == 3  # clamped


def test_scale_ups_wait_only_for_their_own_cooldown() -> None:
    from sim.registry import create

    scaler = create("autoscaler", {"name": "queue-length", "per_replica": 10.0, "cooldown": 300.0})
    assert scaler.target(view(now=1000.0, ready=4, outstanding=60)) == 6
    assert scaler.target(view(now=1010.0, ready=6, outstanding=95)) == 10  # up again at once (default 0 s)
    assert scaler.target(view(now=1020.0, ready=10, outstanding=5)) == 10  # down waits 300 s after a change
    assert scaler.target(view(now=1311.0, ready=10, outstanding=5)) == 1
    held = create("autoscaler", {"name": "queue-length", "per_replica": 10.0, "scale_up_cooldown": 60.0})
    assert held.target(view(now=1000.0, ready=4, outstanding=60)) == 6
    assert held.target(view(now=1030.0, ready=6, outstanding=95)) == 6  # within the scale-up cool-down
    assert held.target(view(now=1061.0, ready=6, outstanding=95)) == 10
    with pytest.raises(ValueError, match="scale_up_cooldown"):
        create("autoscaler", {"name": "queue-length", "scale_up_cooldown": -1.0})


def test_queue_length_rule() -> None:
    from sim.registry import create

    scaler = create("autoscaler", {"name": "queue-length", "per_replica": 10.0, "cooldown": 0.0})
    assert scaler.target(view(outstanding=95)) == 10
    assert scaler.target(view(outstanding=0, now=2000.0)) == 1  # never below min_replicas


def test_an_autoscaler_that_never_scales_down_cannot_keep_the_run_alive() -> None:
    @dataclass
    class Hold(Autoscaler):
        name = "hold"
        interval: float = 10.0

        def target(self, v: ServiceView) -> int:
            return v.max_replicas

    trace = RequestTrace(arrival=np.array([0.0, 25.0]), prompt_tokens=np.array([10, 10]),
                         output_tokens=np.array([5, 5]))
    sim = Simulation(preset("dgx-h100", nodes=1), [], services=[service(trace, max_replicas=3)], autoscaler=Hold())
    results = sim.run()
    assert results.replica_timeline["ready"].max() == 3  # it scaled up at the first tick
    last_finish = results.requests["finish"].max()
    assert sim.end_time == last_finish < 30.0  # the service ended with its last request
    assert (results.replicas["retired"] == last_finish).all()


def test_default_max_replicas_counts_only_the_service_pool() -> None:
    cluster = Cluster([PoolSpec("h100", 1, 8), PoolSpec("a100", 4, 8)])
    sim = Simulation(cluster, [], services=[service(bursty(), max_replicas=None)])
    assert sim.serving.scaling[0].max_replicas == 8  # the 8 H100s, not all 40 devices
    part = Simulation(preset("dgx-h100", nodes=4), [], services=[service(bursty(), max_replicas=None)],
                      colocation={"name": "partitioned", "nodes": 1})
    assert part.serving.scaling[0].max_replicas == 8  # the one partition node
