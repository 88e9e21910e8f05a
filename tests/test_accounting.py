"""Energy, cost and FLOP accounting (sim.output.accounting): conservation against a per-device time walk over the event
log, idle and fully busy clusters by hand, cost, per-request figures, overrides, linear scaling, bad input."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import Assignment, Cluster, Decision, PoolSpec, PreemptionCost, Scheduler, Simulation
from sim.errors import ConfigError
from sim.output.accounting import TRAINING_MFU_ASSUMED, PowerModel, account
from sim.platform.hardware import get_device
from sim.serving.contracts import Autoscaler, ServiceView
from sim.serving.service import ContextLimitWarning, ServiceSpec
from workloads import RequestTrace, TrainingJob, get_model

KWH = 3.6e6  # joules
MODEL = get_model("llama-3.1-8b")
H100 = {"idle": 175.0, "tdp": 700.0, "price": 4.5, "peak": 989e12}  # catalog: idle assumed 25% of TDP
A100 = {"idle": 100.0, "tdp": 400.0, "price": 3.0, "peak": 312e12}
# devices 0-3 and 4-7: two h100 nodes; 8-11: one a100 node
MIXED = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4), PoolSpec("a100", nodes=1, devices_per_node=4)])
RESTORE = 60.0  # PreemptionCost(30, 30): checkpoint + restore, charged when a job resumes


@dataclass
class Scripted(Scheduler):
    """Preempts and starts exactly what ``script`` says: ``(time, job, devices)``, devices ``None`` = preempt."""

    name = "scripted"
    preemptive = True
    script: tuple[tuple[float, int, tuple[int, ...] | None], ...] = ()

    def schedule(self, view) -> Decision:  # type: ignore[no-untyped-def]
        now = view.now
        queued = {j.job_id for j in view.queued}
        running = {j.job_id for j in view.running}
        preempt = tuple(j for t, j, d in self.script if t == now and d is None and j in running)
        start = tuple(Assignment(j, d) for t, j, d in self.script if t == now and d is not None and j in queued)
        later = [t for t, _, _ in self.script if t > now]
        return Decision(start=start, preempt=preempt, wake_at=min(later) if later else None)


@dataclass
class UpDown(Autoscaler):
    """Two replicas from t=100 to t=300, one otherwise."""

    name = "up-down"
    interval: float = 100.0

    def target(self, view: ServiceView) -> int:
        return 2 if 100 <= view.now < 300 else 1


def chat_trace(until: float = 400.0, step: float = 5.0, copies: int = 1) -> RequestTrace:
    times = np.repeat(np.arange(0.0, until, step), copies)
    n = len(times)
    return RequestTrace(arrival=times, prompt_tokens=np.full(n, 200), output_tokens=np.full(n, 20))


def mixed_run(record_events: bool = True) -> tuple[Simulation, object]:
    """Training with restores cut short by a preemption and by the horizon, a job that resumes on the other
    device type, and a service scaling 1 -> 2 -> 1 replicas. Replica 0 takes device 0 at t=0, replica 1
    device 5 at t=100 (loads for 1 s); it retires after t=300."""
    script = (
        (0.0, 0, (1, 2)), (0.0, 1, (3,)), (50.0, 2, (8, 9)), (60.0, 3, (4,)),
        (100.0, 0, None), (101.0, 0, (10, 11)),  # job 0 resumes on the a100s: restores 101..161 ...
        (130.0, 0, None), (131.0, 0, (1, 2)),  # ... but is preempted at 130 (29 s restored), back on h100s
        (1950.0, 3, None), (1951.0, 3, (6,)),  # job 3 resumes at 1951; the horizon cuts its restore at 49 s
    )
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 0.0, 1, 500.0), TrainingJob(2, 50.0, 2, 800.0),
            TrainingJob(3, 60.0, 1, 3000.0),
            TrainingJob(9, 0.0, 1, 10.0)]  # never started: the engine asks the scheduler only while a job waits
    service = ServiceSpec("chat", chat_trace(), replicas=1, model=MODEL, device="h100", max_replicas=2,
                          load_bandwidth=16.06e9)
    sim = Simulation(MIXED, jobs, scheduler=Scripted(script=script), services=[service], autoscaler=UpDown(),
                     preemption=PreemptionCost(30.0, 30.0), horizon=2000.0, record_events=record_events)
    return sim, sim.run()


def brute_force_joules(sim: Simulation, results, watts: dict[str, tuple[float, float]], u_train: float,
                       u_infer: float) -> float:
    """Integral of every device's power over [0, end], walking each device through time: free (idle), held by a
    training run (idle while it restores, the RESTORE seconds after each resume, else busy), held by a replica
    (idle, plus ``u_infer`` of the span for its busy seconds)."""
    cluster, end = sim.cluster, results.run["end_time"]

    def power(device: int, u: float) -> float:
        idle, tdp = watts[cluster.device_specs[cluster.pool_of_device(device)].name]
        return idle + (tdp - idle) * u

    held: dict[int, list[tuple[float, float, float]]] = {d: [] for d in range(cluster.num_devices)}
    starts: dict[int, int] = {}
    running: dict[int, tuple[float, tuple[int, ...], float]] = {}

    def stop(job: int, t1: float) -> None:
        t0, devices, restore = running.pop(job)
        mid = min(t0 + restore, t1)
        for d in devices:
            held[d] += [(t0, mid, power(d, 0.0)), (mid, t1, power(d, u_train))]

    for t, kind, job, devices in results.events.itertuples(index=False):
        if kind == "start":
            starts[job] = starts.get(job, 0) + 1
            running[job] = (t, devices, RESTORE if starts[job] > 1 else 0.0)
        elif kind in ("preempt", "finish"):
            stop(job, t)
    for job in list(running):
        stop(job, end)
    busy_joules = 0.0
    for runtime in sim.services:
        for r, replica in enumerate(runtime.replicas):
            retired = runtime.retired[r]
            until = end if math.isnan(retired) else retired
            assert replica.busy_seconds <= until - runtime.ready[r] + 1e-9
            for d in runtime.devices[r]:
                held[d].append((runtime.created[r], until, power(d, 0.0)))
                busy_joules += (power(d, u_infer) - power(d, 0.0)) * replica.busy_seconds
    joules = 0.0
    for d, spans in held.items():
        clock = 0.0
        for t0, t1, w in sorted(spans):
            assert t0 >= clock - 1e-9 and t1 <= end + 1e-9, f"device {d} held twice at {t0}"
            joules += power(d, 0.0) * (t0 - clock) + w * (t1 - t0)
            clock = t1
        joules += power(d, 0.0) * (end - clock)
    return joules + busy_joules


# ----------------------------------------------------------------------------- conservation


def test_energy_is_the_integral_of_every_devices_power() -> None:
    sim, results = mixed_run()
    assert results.run["end_time"] == 2000.0
    default = {"h100-sxm": (H100["idle"], H100["tdp"]), "a100-sxm-80gb": (A100["idle"], A100["tdp"])}
    expected = brute_force_joules(sim, results, default, 1.0, 1.0)
    assert results.summary()["energy"]["kwh"] * KWH == pytest.approx(expected, rel=1e-9)

    # other utilizations and watts: the same walk, the same answer
    power = PowerModel(training_utilization=0.8, inference_utilization=0.6,
                       overrides={"a100": {"idle_watts": 60.0, "tdp_watts": 350.0}})
    other = {"h100-sxm": (H100["idle"], H100["tdp"]), "a100-sxm-80gb": (60.0, 350.0)}
    expected = brute_force_joules(sim, results, other, 0.8, 0.6)
    summary = account(results, MIXED, power=power).summary()
    assert summary["energy"]["kwh"] * KWH == pytest.approx(expected, rel=1e-9)
    parts = summary["training"]["energy"]["kwh"] + summary["inference"]["energy"]["kwh"] + summary["energy"]["idle_kwh"]
    assert parts == pytest.approx(summary["energy"]["kwh"], rel=1e-12)


def test_restores_are_exact_from_the_event_log_and_overstated_without_it() -> None:
    # job 0: restores 29 s (preempted at 130) then 60 s, on 2 devices; job 3: 49 s (horizon) on 1 device
    _, results = mixed_run()
    jobs = account(results, MIXED).jobs.set_index("job_id")
    assert jobs.loc[0, "restore_device_seconds"] == pytest.approx(2 * 29 + 2 * 60, rel=1e-12)
    assert jobs.loc[3, "restore_device_seconds"] == pytest.approx(49, rel=1e-12)
    assert jobs.loc[0, "device_seconds"] == pytest.approx(2 * 100 + 2 * 29 + 2 * (1091 - 131), rel=1e-12)
    table = account(results, MIXED).table.set_index(["device_type", "side"])
    assert table.loc[("a100-sxm-80gb", "training"), "device_hours"] == pytest.approx((2 * 800 + 2 * 29) / 3600)
    # without the log, the engine's overhead_seconds (the restore time spent, cut short by a preemption or the
    # horizon) gives the same: 2 x (29 + 60) and 49
    _, blind = mixed_run(record_events=False)
    jobs = account(blind, MIXED).jobs.set_index("job_id")
    assert jobs.loc[0, "restore_device_seconds"] == 178 and jobs.loc[3, "restore_device_seconds"] == 49


def test_without_the_log_a_resumed_job_counts_on_its_last_device_type() -> None:
    # job 0 runs 900 s on the a100 and resumes on the h100 (60 s restore + 100 s); jobs 1 and 3 fill the h100
    # before and after (job 3 until the horizon), job 2 the a100: all of job 0 on the h100 overfills it
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=1), PoolSpec("a100", nodes=1, devices_per_node=1)])
    script = ((0.0, 0, (1,)), (0.0, 1, (0,)), (900.0, 0, None), (900.0, 2, (1,)), (901.0, 0, (0,)),
              (1061.0, 3, (0,)))
    jobs = [TrainingJob(0, 0.0, 1, 1000.0), TrainingJob(1, 0.0, 1, 900.0), TrainingJob(2, 0.0, 1, 1100.0),
            TrainingJob(3, 0.0, 1, 2000.0), TrainingJob(9, 0.0, 1, 1.0)]

    def run(record_events: bool):  # type: ignore[no-untyped-def]
        return Simulation(cluster, jobs, scheduler=Scripted(script=script), preemption=PreemptionCost(30.0, 30.0),
                          record_events=record_events, horizon=2061.0).run()

    exact, blind = run(True), run(False)
    assert exact.run["end_time"] == blind.run["end_time"] == 2061.0
    assert exact.summary()["training"]["device_time_exact"] is True
    assert blind.summary()["training"]["device_time_exact"] is False
    table = blind.accounting.set_index(["device_type", "side"])
    assert table.loc[("h100-sxm", "training"), "device_hours"] == pytest.approx((900 + 1060 + 1000) / 3600)
    assert table.loc[("h100-sxm", "free"), "device_hours"] == 0  # floored, not negative
    table = exact.accounting.set_index(["device_type", "side"])
    assert table.loc[("a100-sxm-80gb", "training"), "device_hours"] == pytest.approx((900 + 1100) / 3600)
    assert table.loc[("h100-sxm", "free"), "device_hours"] == pytest.approx(1 / 3600)
    for results in (exact, blind):
        assert results.summary()["training"]["device_hours"]["allocated"] * 3600 == pytest.approx(
            results.summary()["allocated_device_seconds"], rel=1e-12)


# ----------------------------------------------------------------------------- by hand


def test_idle_cluster_draws_idle_power_times_time() -> None:
    # the only job arrives after the horizon: every device is free for the whole 1,000 s
    results = Simulation(MIXED, [TrainingJob(0, 5000.0, 1, 10.0)], horizon=1000.0).run()
    summary = results.summary()
    idle = (8 * H100["idle"] + 4 * A100["idle"]) * 1000 / KWH
    assert summary["energy"]["kwh"] == summary["energy"]["idle_kwh"] == pytest.approx(idle, rel=1e-12)
    assert summary["training"]["energy"]["kwh"] == summary["inference"]["energy"]["kwh"] == 0
    assert summary["cost"]["usd"] == pytest.approx((8 * H100["price"] + 4 * A100["price"]) * 1000 / 3600, rel=1e-12)
    # a tiny job: the rest of the cluster still draws exactly its idle power
    results = Simulation(MIXED, [TrainingJob(0, 0.0, 1, 10.0)]).run()
    assert results.summary()["energy"]["idle_kwh"] == pytest.approx(
        (7 * H100["idle"] + 4 * A100["idle"]) * 10 / KWH, rel=1e-12)


def test_fully_busy_job_draws_its_utilizations_power() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])
    results = Simulation(cluster, [TrainingJob(0, 0.0, 8, 1000.0)]).run()
    summary = results.summary()
    assert summary["energy"]["kwh"] == pytest.approx(H100["tdp"] * 8 * 1000 / KWH, rel=1e-12)
    assert summary["energy"]["idle_kwh"] == 0 and summary["training"]["device_hours"]["busy"] == 8000 / 3600
    half = account(results, cluster, power=PowerModel(training_utilization=0.5)).summary()
    watts = H100["idle"] + (H100["tdp"] - H100["idle"]) * 0.5
    assert half["training"]["energy"]["kwh"] == pytest.approx(watts * 8 * 1000 / KWH, rel=1e-12)
    # power overrides take effect, and the catalog is untouched
    power = PowerModel(overrides={"H100": {"idle_watts": 100.0, "tdp_watts": 600.0}})
    assert account(results, cluster, power=power).summary()["energy"]["kwh"] == pytest.approx(600 * 8000 / KWH)
    idle = PowerModel(training_utilization=0.0, overrides={"h100-sxm": {"idle_watts": 90.0}})
    assert account(results, cluster, power=idle).summary()["energy"]["kwh"] == pytest.approx(90 * 8000 / KWH)
    assert results.summary()["energy"]["kwh"] == summary["energy"]["kwh"]
    assert pickle.loads(pickle.dumps(power)) == power  # sweeps on a process pool pickle it


def test_flops_and_mfu() -> None:
    sim, results = mixed_run()
    acc = account(results, MIXED)
    summary = acc.summary()
    jobs = acc.jobs
    busy = jobs["busy_device_seconds"].to_numpy()
    peak = np.where(jobs["device_type"] == "h100-sxm", H100["peak"], A100["peak"])
    # every job ran on one device type except job 0 (100 s + 960 s on h100, none busy on a100)
    assert summary["training"]["compute"]["flops_assumed"] is True
    assert summary["training"]["compute"]["flops"] == pytest.approx(TRAINING_MFU_ASSUMED * (peak * busy).sum())
    # MFU over the device time held: restores (and job 0's a100 stint, all restore) count against it
    table = acc.table[acc.table["side"] == "training"]
    held = (table["device_hours"] * 3600 * table["device_type"].map({"h100-sxm": H100["peak"],
                                                                      "a100-sxm-80gb": A100["peak"]})).sum()
    assert summary["training"]["compute"]["mfu"] == pytest.approx(
        TRAINING_MFU_ASSUMED * (peak * busy).sum() / held, rel=1e-12)
    assert summary["training"]["compute"]["mfu"] < TRAINING_MFU_ASSUMED
    # inference: the replicas' own FLOP counters, recovered from the replicas table's mfu
    counted = sum(replica.flops for replica in sim.services[0].replicas)
    assert counted > 0
    assert summary["inference"]["compute"]["flops"] == pytest.approx(counted, rel=1e-9)
    inference_held = acc.replicas["held_device_seconds"].sum()
    assert summary["inference"]["compute"]["mfu"] == pytest.approx(counted / (H100["peak"] * inference_held))
    total = summary["training"]["compute"]["flops"] + counted
    assert summary["compute"]["flops"] == pytest.approx(total, rel=1e-12)


def test_cost_is_price_times_device_hours() -> None:
    _, results = mixed_run()
    summary = results.summary()
    end = results.run["end_time"]
    assert summary["cost"]["usd"] == pytest.approx((8 * H100["price"] + 4 * A100["price"]) * end / 3600, rel=1e-12)
    table = results.accounting
    np.testing.assert_allclose(table["cost_usd"], table["usd_per_hour"] * table["device_hours"], rtol=1e-12)
    # the device time training held is what the engine counts as allocated
    assert summary["training"]["device_hours"]["allocated"] * 3600 == pytest.approx(
        summary["allocated_device_seconds"], rel=1e-12)
    parts = summary["training"]["cost"]["usd"] + summary["inference"]["cost"]["usd"] + summary["cost"]["idle_usd"]
    assert parts == pytest.approx(summary["cost"]["usd"], rel=1e-12)
    # the replicas' held device-hours at the h100 price
    replicas = results.replicas
    held = (replicas["devices"] * (replicas["retired"].fillna(end) - replicas["created"])).sum()
    assert summary["inference"]["cost"]["usd"] == pytest.approx(H100["price"] * held / 3600, rel=1e-12)
    cheaper = account(results, MIXED, prices={"a100": 1.0}).summary()
    assert cheaper["cost"]["usd"] == pytest.approx((8 * H100["price"] + 4 * 1.0) * end / 3600, rel=1e-12)


def test_per_request_and_per_token_figures_by_hand() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=5)])
    trace = chat_trace(until=200.0, step=2.0)
    prompts = trace.prompt_tokens.copy()
    prompts[7] = 2_000_000  # more KV cache than a replica has: rejected, not counted
    trace = RequestTrace(arrival=trace.arrival, prompt_tokens=prompts, output_tokens=trace.output_tokens)
    spec = ServiceSpec("chat", trace, replicas=2, model=MODEL, device="h100", devices_per_replica=2)
    sim = Simulation(cluster, [], services=[spec])
    with pytest.warns(ContextLimitWarning, match="1 of 100 requests"):
        results = sim.run()
    replicas, requests = results.replicas, results.requests
    end = results.run["end_time"]
    life = replicas["retired"].fillna(end) - replicas["created"]
    busy = replicas["busy_seconds"]
    joules = (replicas["devices"] * (H100["idle"] * life + (H100["tdp"] - H100["idle"]) * busy)).sum()
    usd = H100["price"] * (replicas["devices"] * life).sum() / 3600
    done = requests[requests["status"] == "finished"]
    assert len(done) == len(requests) - 1
    tokens = done["output_tokens"].sum()
    inference = results.summary()["inference"]
    assert inference["energy"]["kwh"] == pytest.approx(joules / KWH, rel=1e-12)
    assert inference["energy"]["kwh_per_1k_requests"] == pytest.approx(joules / KWH / len(done) * 1000, rel=1e-12)
    assert inference["energy"]["kwh_per_million_tokens"] == pytest.approx(joules / KWH / tokens * 1e6, rel=1e-12)
    assert inference["cost"]["usd_per_1k_requests"] == pytest.approx(usd / len(done) * 1000, rel=1e-12)
    assert inference["cost"]["usd_per_million_tokens"] == pytest.approx(usd / tokens * 1e6, rel=1e-12)
    # the fifth device was free all along
    assert results.summary()["energy"]["idle_kwh"] == pytest.approx(H100["idle"] * end / KWH, rel=1e-12)
    # FLOPs: the replicas' own counters (tensor parallel over 2 devices)
    counted = sum(replica.flops for replica in sim.services[0].replicas)
    assert inference["compute"]["flops"] == pytest.approx(counted, rel=1e-9)
    assert inference["compute"]["mfu"] == pytest.approx(counted / (H100["peak"] * 2 * life.sum()), rel=1e-9)
    # per service, and carbon from a grid intensity (none without one)
    assert "carbon" not in results.summary()
    acc = account(results, cluster, grid_intensity=400.0)
    service = acc.services.set_index("service").loc["chat"]
    assert service["kwh_per_1k_requests"] == pytest.approx(inference["energy"]["kwh_per_1k_requests"], rel=1e-12)
    assert service["completed"] == len(done) and service["output_tokens"] == tokens
    carbon = acc.summary()["carbon"]
    assert carbon["kg"] == pytest.approx(results.summary()["energy"]["kwh"] * 0.4, rel=1e-12)
    assert acc.summary()["inference"]["carbon"]["kg_per_1k_requests"] == pytest.approx(
        inference["energy"]["kwh_per_1k_requests"] * 0.4, rel=1e-12)


def test_duplicated_run_on_twice_the_devices_costs_twice() -> None:
    # the same training and serving, side by side: twice the nodes, every job and request twice
    def run(copies: int):  # type: ignore[no-untyped-def]
        cluster = Cluster([PoolSpec("h100", nodes=2 * copies, devices_per_node=4)])
        jobs = [TrainingJob(c * 10 + i, 100.0 * i, 4, 700.0 + 50 * i) for i in range(4) for c in range(copies)]
        jobs.sort(key=lambda j: (j.arrival, j.job_id))
        spec = ServiceSpec("chat", chat_trace(copies=copies), replicas=copies, model=MODEL, device="h100")
        return Simulation(cluster, jobs, scheduler="fifo", placer="first-fit", services=[spec]).run().summary()

    one, two = run(1), run(2)
    for key in ("energy.kwh", "energy.idle_kwh", "cost.usd", "compute.flops", "training.energy.kwh",
                "inference.energy.kwh", "inference.cost.usd", "inference.compute.flops"):
        a, b = lookup(one, key), lookup(two, key)
        assert b == pytest.approx(2 * a, rel=1e-9), key
    for key in ("inference.energy.kwh_per_1k_requests", "inference.cost.usd_per_million_tokens", "compute.mfu"):
        assert lookup(two, key) == pytest.approx(lookup(one, key), rel=1e-9), key


def lookup(summary: dict, dotted: str) -> float:
    node = summary
    for part in dotted.split("."):
        node = node[part]
    return node  # type: ignore[return-value]


def test_summary_keys_and_saved_table(tmp_path: Path) -> None:
    _, results = mixed_run()
    out = results.save(tmp_path / "run")
    assert "accounting.csv" in results.written_files
    saved = pd.read_csv(out / "accounting.csv")
    assert len(saved) == 2 * 3 and set(saved["side"]) == {"training", "inference", "free"}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("energy.kwh", "energy.idle_kwh", "cost.usd", "compute.flops", "compute.mfu",
                *(f"{side}.{key}" for side in ("training", "inference")
                  for key in ("energy.kwh", "cost.usd", "compute.flops", "compute.mfu"))):
        value = lookup(summary, key)
        assert isinstance(value, float) and value > 0, key


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("make", "key"), [
    (lambda: PowerModel(overrides={"h100": {"idle_watts": -5.0}}), "power.overrides.h100.idle_watts"),
    (lambda: PowerModel(overrides={"h100": {"tdp_watts": 0}}), "power.overrides.h100.tdp_watts"),
    (lambda: PowerModel(overrides={"h100": {"tdp_watts": "700"}}), "power.overrides.h100.tdp_watts.*missing its unit"),
    (lambda: PowerModel(overrides={"h100": {"tdp_watts": "700 V"}}), "power.overrides.h100.tdp_watts.*unknown unit"),
    (lambda: PowerModel(overrides={"h100": {"idle_watts": "-5 W"}}), "power.overrides.h100.idle_watts"),
    (lambda: PowerModel(overrides={"h100": {"watts": 700}}), "power.overrides.h100.watts"),
    (lambda: PowerModel(overrides={"h900": {"idle_watts": 90}}), "power.overrides.h900"),
    (lambda: PowerModel(overrides={"a100": {"idle_watts": 500}}), "idle_watts 500.0 exceeds tdp_watts 400"),
    (lambda: PowerModel(overrides={"a100": {"tdp_watts": 50}}), "idle_watts 100.0 exceeds tdp_watts 50.0"),
    (lambda: PowerModel(overrides={"h100": {}, "h100-sxm": {}}), "overridden twice"),
    (lambda: PowerModel(training_utilization=1.5), "power.training_utilization"),
    (lambda: PowerModel(inference_utilization=-0.1), "power.inference_utilization"),
    (lambda: PowerModel(training_utilization=float("nan")), "power.training_utilization"),
])
def test_bad_power_model_names_the_key(make, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=key):
        make()


@pytest.mark.parametrize(("options", "key"), [
    ({"prices": {"h100": -1.0}}, "prices.h100"),
    ({"prices": {"h100": "4.5"}}, "prices.h100.*missing its unit"),
    ({"prices": {"h100": "4.5 EUR/h"}}, "prices.h100.*unknown unit"),
    ({"grid_intensity": "400"}, "grid_intensity.*missing its unit"),
    ({"prices": {"k90": 1.0}}, "prices.k90"),
    ({"grid_intensity": -3.0}, "grid_intensity"),
    ({"training_mfu": 0.0}, "training_mfu"),
])
def test_bad_accounting_options_name_the_key(options: dict, key: str) -> None:
    results = Simulation(MIXED, [TrainingJob(0, 0.0, 1, 10.0)]).run()
    with pytest.raises(ConfigError, match=key):
        account(results, MIXED, **options)
    with pytest.raises(ConfigError, match="the cluster the run used"):
        account(results, Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)]))


def test_amounts_with_units_convert_to_the_canonical_unit() -> None:
    assert PowerModel(overrides={"h100": {"tdp_watts": "0.7 kW"}}).tdp_watts(get_device("h100")) == 700.0
    assert PowerModel(overrides={"h100": {"idle_watts": "90 W"}}).idle_watts(get_device("h100")) == 90.0
    results = Simulation(MIXED, [TrainingJob(0, 0.0, 1, 3600.0)]).run()
    plain = account(results, MIXED, prices={"h100": 4.5}, grid_intensity=400).table
    units = account(results, MIXED, prices={"h100": "$4.5/h"}, grid_intensity="0.4 kg/kWh").table
    pd.testing.assert_frame_equal(plain, units)
    per_minute = account(results, MIXED, prices={"h100": "0.075 USD/min"}).table
    assert per_minute["cost_usd"].sum() == pytest.approx(plain["cost_usd"].sum())


def test_model_jobs_count_the_flops_of_the_steps_they_ran() -> None:
    from sim.platform.network.model import NetworkModel, model_job

    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=8)])
    parallelism = {"tensor": 8, "pipeline": 1, "micro_batch": 1, "global_batch": 16}
    job = model_job(cluster, 0, 0.0, "llama-3.1-8b", 16, 50, parallelism)
    step = NetworkModel(cluster).reference_step(job, 0)
    finished = Simulation(cluster, [job], network=True).run()
    assert finished.jobs.loc[0, "model_flops"] == pytest.approx(50 * step.model_flops)
    summary = finished.summary()["training"]["compute"]
    assert not summary["flops_assumed"]
    assert summary["flops"] == pytest.approx(50 * step.model_flops)
    # alone on its reference placement: the run's training MFU is the step model's
    assert summary["mfu"] == pytest.approx(step.mfu)
    assert finished.jobs.loc[0, "mfu"] == pytest.approx(step.mfu)
    # cut by the horizon after 20 steps: 20 steps' FLOPs
    cut = Simulation(cluster, [job], network=True, horizon=20 * step.total).run()
    assert cut.jobs.loc[0, "model_flops"] == pytest.approx(20 * step.model_flops)
    # a job without a model next to it keeps the assumed MFU, and the summary says so
    mixed = Simulation(cluster, [job, TrainingJob(1, 0.0, 1, 100.0)], network=True).run()
    assert mixed.summary()["training"]["compute"]["flops_assumed"]
    assert list(mixed.jobs["flops_assumed"]) == [False, True]
