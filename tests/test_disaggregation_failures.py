"""Failures of a disaggregated service's replicas (sim.serving.pool_failures): a hand-built case per failure point,
each request's fate and timing accounted for exactly; a cancelled transfer's flow freeing its link; lost replicas
replaced by each pool's autoscaler; random failures on an Azure slice with nothing lost, the run's invariants holding
and the same seed giving the same table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import Cluster, ContinuousBatching, FailureModel, PoolSpec, ServiceSpec, Simulation, failures
from sim.policy_checks import check_serving_run
from sim.serving.contracts import Router
from sim.serving.kv_transfer import kv_path
from workloads import get_model, load_request_trace
from workloads.requests import RequestTrace

MODEL = get_model("llama-3.1-8b")
PROMPT, OUTPUT = 2500, 40


def _trace(arrival: list[float], prompt: list[int], output: list[int]) -> RequestTrace:
    return RequestTrace(arrival=np.array(arrival, dtype=float), prompt_tokens=np.array(prompt),
                        output_tokens=np.array(output))


def _service(trace: RequestTrace, prefill: dict | None = None, decode: dict | None = None, **kwargs) -> ServiceSpec:
    return ServiceSpec("chat", trace, 1, model=MODEL, device="h100", prefill=prefill or {"replicas": 2},
                       decode=decode or {"replicas": 2}, **kwargs)


def _h100(nodes: int) -> Cluster:
    return Cluster([PoolSpec("h100", nodes=nodes, devices_per_node=8)])


Outage = tuple[str, int, float]  # ("device" or "node", which, when): out of service for good from then


def _run(tmp_path: Path, spec: ServiceSpec, outage: Outage | None = None, nodes: int = 1,
         **kwargs) -> tuple[Simulation, object]:
    """Run ``spec`` with ``outage`` (a failure trace of one line), check the run and count its requests."""
    subsystems = []
    if outage is not None:
        path = tmp_path / "outages.csv"
        kind, which, time = outage
        path.write_text(f"time,{kind},duration\n{float(time)!r},{which},1e6\n")
        subsystems = [failures(FailureModel(trace=path))]
    sim = Simulation(_h100(nodes), [], services=[spec], subsystems=subsystems, record_events=True, **kwargs)
    res = sim.run()
    check_serving_run(sim, res)
    counts = res.summary()["requests"]
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] == counts["count"] == len(spec.requests)
    assert sim.ledger.consistent()
    return sim, res


def _times(sim: Simulation, prefill: int, decode: int, prompt: int = PROMPT) -> tuple[float, float, float]:
    """(prefill step alone, KV transfer on an idle network, first decode step alone) from prefill replica
    ``prefill`` to decode replica ``decode``."""
    p, d = sim.services
    step = p.replicas[prefill].cost.step(prompt, prompt * (prompt + 1) / 2, prompt, 1)
    transfer = kv_path(sim.cluster, p.devices[prefill], d.devices[decode]).seconds(prompt * MODEL.kv_bytes_per_token)
    return step, transfer, d.replicas[decode].cost.decode_run(1, prompt + 1, 1)


def _one_request(tmp_path: Path, outage: Outage | None = None) -> tuple[Simulation, pd.Series, dict]:
    sim, res = _run(tmp_path, _service(_trace([1.0], [PROMPT], [OUTPUT])), outage)
    return sim, res.requests.iloc[0], res.summary().get("failures", {})


def _counts(figures: dict) -> tuple[int, ...]:
    return tuple(figures[k] for k in ("replicas_lost", "requests_rerouted", "requests_rejected",
                                      "requests_reprefilled"))


# ------------------------------------------------------------------------------------------------ each failure point
def test_a_prefill_replica_failing_mid_prefill_hands_the_prompt_to_another(tmp_path: Path) -> None:
    sim, row, _ = _one_request(tmp_path)
    assert row["prefill_replica"] == 0 and row["replica"] == 0  # devices 0 and 2
    step, transfer, first = _times(sim, 1, 0)
    fail = 1.0 + step / 2
    sim, row, figures = _one_request(tmp_path, ("device", 0, fail))
    assert row["status"] == "finished" and row["prefill_replica"] == 1
    # prefilled anew on the other replica from the failure on
    assert row["ttft"] == pytest.approx(fail - 1.0 + step + transfer + first, rel=1e-12)
    assert row["kv_losses"] == 0 and row["kv_lost_tokens"] == 0  # its prompt was not computed yet: nothing counted
    assert _counts(figures) == (1, 1, 0, 0)


def test_a_prefill_replica_failing_mid_transfer_loses_the_kv_cache_and_frees_the_reservation(tmp_path: Path) -> None:
    sim, _, _ = _one_request(tmp_path)
    step, transfer, first = _times(sim, 0, 0)
    fail = 1.0 + step + transfer / 2
    sim, row, figures = _one_request(tmp_path, ("device", 0, fail))
    assert row["status"] == "finished" and row["prefill_replica"] == 1 and row["replica"] == 0
    step1, transfer1, _ = _times(sim, 1, 0)
    assert row["ttft"] == pytest.approx(fail - 1.0 + step1 + transfer1 + first, rel=1e-12)
    assert row["kv_transfer_seconds"] == pytest.approx(transfer1, rel=1e-12)  # the second transfer, whole
    assert row["kv_losses"] == 1 and row["kv_lost_tokens"] == PROMPT
    assert _counts(figures) == (1, 1, 0, 1)
    decode = sim.services[1].replicas[0]
    assert decode.kv_used == 0 and decode.num_queued == 0  # the cancelled transfer's room was given back


def test_a_decode_replica_failing_mid_decode_sends_the_request_back_to_be_prefilled(tmp_path: Path) -> None:
    sim, row, _ = _one_request(tmp_path)
    step, transfer, _ = _times(sim, 0, 0)
    cost = sim.services[1].replicas[0].cost
    k = 10  # fail between its 10th and 11th decode steps
    start = 1.0 + step + transfer
    fail = start + (cost.decode_run(1, PROMPT + 1, k) + cost.decode_run(1, PROMPT + 1, k + 1)) / 2
    sim, row, figures = _one_request(tmp_path, ("device", 2, fail))
    step, transfer, first = _times(sim, int(row["prefill_replica"]), 1)  # either prefill replica is idle
    assert row["status"] == "finished" and row["replica"] == 1
    assert row["kv_losses"] == 1 and row["kv_lost_tokens"] == PROMPT + k  # its prompt and the k tokens decoded
    # it starts over from its prompt: a new first token, and all its output decoded on the other replica
    assert row["ttft"] == pytest.approx(fail - 1.0 + step + transfer + first, rel=1e-12)
    assert row["e2e"] == pytest.approx(fail - 1.0 + step + transfer + cost.decode_run(1, PROMPT + 1, OUTPUT),
                                       rel=1e-12)
    assert _counts(figures) == (1, 1, 0, 1)


def test_a_decode_replica_failing_while_a_transfer_to_it_is_in_flight(tmp_path: Path) -> None:
    sim, _, _ = _one_request(tmp_path)
    step, transfer, first = _times(sim, 0, 0)
    fail = 1.0 + step + transfer / 2
    sim, row, figures = _one_request(tmp_path, ("device", 2, fail))
    assert row["status"] == "finished" and row["replica"] == 1
    step, transfer, first = _times(sim, int(row["prefill_replica"]), 1)
    assert row["ttft"] == pytest.approx(fail - 1.0 + step + transfer + first, rel=1e-12)  # prefilled again at once
    assert row["kv_losses"] == 1 and row["kv_lost_tokens"] == PROMPT
    assert _counts(figures) == (1, 1, 0, 1)
    source = sim.services[0].replicas[0]
    assert source.kv_used == 0 and not source.held  # the source freed what it was sending


class _FirstAccepting(Router):
    """A decode router that sends everything to the first replica that accepts requests."""

    name = "first-accepting"

    def route(self, request: object, replicas: list, rng: object) -> int:  # type: ignore[override]
        return next((k for k, replica in enumerate(replicas) if replica.accepting), -1)


def _waiting_for_room(tmp_path: Path) -> tuple[ServiceSpec, list[int], float, pd.DataFrame]:
    """Two requests sent to decode replica 0 (device 2) whose KV cache holds one only: the first (prefilled on
    replica 0) decodes, the second (prefilled on replica 1) waits for room from the end of its prefill until the first
    finishes. Returns the service, the prompts, when the second's prefill ends, and the requests with no failure."""
    mode = ContinuousBatching(kv_reserve=0.78)  # a small KV cache: the second prompt cannot join the first's replica
    capacity = Simulation(_h100(1), [], services=[_service(_trace([0.0], [5], [5]), mode=mode)]).services[1].kv_tokens
    prompts, outputs = [capacity // 2, capacity * 6 // 10], [400, 20]
    spec = _service(_trace([0.0, 0.01], prompts, outputs), mode=mode,
                    decode={"replicas": 2, "router": _FirstAccepting()})
    sim, res = _run(tmp_path, spec)
    before = res.requests
    assert before["replica"].tolist() == [0, 0] and before["prefill_replica"].tolist() == [0, 1]
    assert before["kv_transfer_wait"].iloc[1] > 1.0  # it waited for the first to finish
    prefilled = 0.01 + sim.services[0].replicas[1].cost.step(prompts[1], prompts[1] * (prompts[1] + 1) / 2,
                                                             prompts[1], 1)
    return spec, prompts, prefilled, before


def test_requests_waiting_for_room_on_a_failed_decode_replica_go_to_another_with_their_kv_cache(tmp_path: Path) -> None:
    spec, prompts, prefilled, _ = _waiting_for_room(tmp_path)
    fail = prefilled + 0.5  # the second waits for room on decode replica 0 (device 2), the first decodes there
    _, res = _run(tmp_path, spec, ("device", 2, fail))
    a, b = (row for _, row in res.requests.iterrows())
    assert (a["status"], b["status"]) == ("finished", "finished")
    assert a["kv_losses"] == 1 and a["kv_lost_tokens"] > prompts[0] and a["replica"] == 1  # decoding: prefilled again
    assert b["kv_losses"] == 0 and b["replica"] == 1 and b["prefill_replica"] == 1  # moved on with its KV cache
    assert b["kv_transfer_wait"] == pytest.approx(fail - prefilled, rel=1e-12)  # its transfer began at the failure
    assert _counts(res.summary()["failures"]) == (1, 2, 0, 1)


def test_a_prefill_replica_failing_while_its_request_waits_for_decode_room_withdraws_the_offer(tmp_path: Path) -> None:
    spec, prompts, prefilled, before = _waiting_for_room(tmp_path)
    fail = prefilled + 0.5  # prefill replica 1 (device 1) holds the second's KV cache while it waits for room
    sim, res = _run(tmp_path, spec, ("device", 1, fail))
    a, b = (row for _, row in res.requests.iterrows())
    timing = ["admitted", "first_token", "finish", "replica", "prefill_replica", "kv_transfer_wait",
              "kv_transfer_seconds"]
    pd.testing.assert_series_equal(a[timing], before.iloc[0][timing])  # the first decodes on, untouched
    assert a["kv_losses"] == 0
    assert b["status"] == "finished" and b["kv_losses"] == 1 and b["kv_lost_tokens"] == prompts[1]
    assert b["prefill_replica"] == 0 and b["replica"] == 0
    # prefilled again while the first still decodes, it waits for room as before: its transfer starts when the first
    # finishes, either way, so its first token comes when it did without the failure
    step = sim.services[0].replicas[0].cost.step(prompts[1], prompts[1] * (prompts[1] + 1) / 2, prompts[1], 1)
    assert b["kv_transfer_wait"] == pytest.approx(a["finish"] - (fail + step), rel=1e-12)
    assert b["ttft"] == pytest.approx(before["ttft"].iloc[1], rel=1e-12)
    assert _counts(res.summary()["failures"]) == (1, 1, 0, 1)
    decode = sim.services[1].replicas[0]
    assert decode.kv_used == 0 and decode.num_queued == 0 and decode.outstanding == 0


# ------------------------------------------------------------------------------------------------ contention
def test_a_cancelled_transfer_leaves_its_link_to_the_one_still_moving(tmp_path: Path) -> None:
    # two prefill replicas (nodes 0 and 1) send at once to the decode replica of node 2, sharing its NIC-down link
    # half and half; node 0 fails halfway through: its flow leaves, and the other transfer finishes at full speed
    pools = {"prefill": {"replicas": 2, "devices_per_replica": 8}, "decode": {"replicas": 1, "devices_per_replica": 8}}
    spec = _service(_trace([0.0, 0.0], [4000, 4000], [5, 5]), **pools)
    sim, res = _run(tmp_path, spec, nodes=3, network=True)
    prefill, decode = sim.services
    path = kv_path(sim.cluster, prefill.devices[1], decode.devices[0])
    nbytes = 4000 * MODEL.kv_bytes_per_token
    shared = sim.cluster.topology.link_capacity[path.links[-1]] / 2
    assert res.requests["kv_transfer_seconds"].tolist() == pytest.approx([path.latency + nbytes / shared] * 2,
                                                                         rel=1e-9)
    start = prefill.replicas[1].cost.step(4000, 4000 * 4001 / 2, 4000, 1)
    fail = start + path.latency + nbytes / shared / 2
    sim, res = _run(tmp_path, spec, ("node", 0, fail), nodes=3, network=True)
    lost, kept = (row for _, row in res.requests.iterrows())
    assert kept["kv_losses"] == 0 and kept["prefill_replica"] == 1
    assert kept["kv_transfer_seconds"] == pytest.approx(fail - start + nbytes / 2 / path.bandwidth, rel=1e-9)
    assert kept["kv_transfer_seconds"] < path.latency + nbytes / shared
    assert lost["kv_losses"] == 1 and lost["prefill_replica"] == 1 and lost["status"] == "finished"


# ------------------------------------------------------------------------------------------------ autoscalers
@pytest.mark.parametrize("device, pool", [(0, "prefill"), (1, "decode")])
def test_each_pool_s_autoscaler_replaces_its_lost_replica(tmp_path: Path, device: int, pool: str) -> None:
    rng = np.random.default_rng(2)
    n = 120
    trace = _trace(list(np.linspace(0.0, 30.0, n)), list(rng.integers(100, 2000, n)), list(rng.integers(5, 100, n)))
    spec = _service(trace, prefill={"replicas": 1, "max_replicas": 2}, decode={"replicas": 1, "max_replicas": 2})
    _, res = _run(tmp_path, spec, ("device", device, 10.0), autoscaler={"name": "target-utilization",
                                                                        "interval": 1.0})
    replicas = res.replicas[res.replicas["role"] == pool]
    lost = replicas[replicas["device_indexes"].map(lambda d: device in d)]
    assert len(lost) == 1 and lost["retired"].iloc[0] == 10.0
    later = replicas[replicas["created"] >= 10.0]
    assert len(later) >= 1 and (later["ready"] < 30.0).any()  # a replacement, serving before the last arrival
    requests = res.requests
    after = requests[requests["arrival"] > later["ready"].min()]
    assert (after["status"] == "finished").all()
    if pool == "decode":  # the prefill pool kept going: nothing was rejected, what it held was prefilled again
        assert (requests["status"] == "finished").all() and requests["kv_losses"].sum() > 0


def test_a_request_prefilled_again_on_a_replacement_replica_passes_the_run_checks(tmp_path: Path) -> None:
    # the prefill replica fails at 10 s and is replaced; the decode replica fails at 25 s while the early requests
    # (2,000 tokens each) still decode: they are prefilled again on the replacement, created after they were first
    # admitted (the run checks in _run must not take that for a request served before its replica was ready)
    n = 120
    arrival = np.linspace(0.0, 30.0, n)
    trace = _trace(list(arrival), [1000] * n, list(np.where(arrival < 9, 2000, 300)))
    spec = _service(trace, prefill={"replicas": 1, "max_replicas": 2}, decode={"replicas": 1, "max_replicas": 2})
    path = tmp_path / "outages.csv"
    path.write_text("time,device,duration\n10,0,1e6\n25,1,1e6\n")
    sim = Simulation(_h100(1), [], services=[spec], record_events=True, subsystems=[failures(FailureModel(trace=path))],
                     autoscaler={"name": "target-utilization", "interval": 1.0})
    res = sim.run()
    check_serving_run(sim, res)
    requests = res.requests
    again = requests[requests["kv_losses"] > 0]
    replacement = sim.services[0].ready[1]
    assert (again["status"] == "finished").all() and (again["admitted"] < replacement).any()
    assert (again["prefill_replica"] == 1).all()
    rejected = requests[requests["status"] != "finished"]  # only those that came while no prefill replica was up
    assert (rejected["reason"] == "no_replica_accepting").all()
    assert rejected["arrival"].between(10.0, replacement).all()


# ------------------------------------------------------------------------------------------------ random failures
def _azure(seed: int) -> tuple[Simulation, object]:
    trace = load_request_trace("azure-conv", window=(0, 60))
    spec = _service(trace, prefill={"replicas": 2, "max_replicas": 4}, decode={"replicas": 2, "max_replicas": 4})
    sim = Simulation(_h100(2), [], services=[spec], seed=seed, record_events=True,
                     autoscaler={"name": "target-utilization", "interval": 2.0},
                     subsystems=[failures(FailureModel(mtbf_hours={"h100": 0.02}, mttr_hours=0.01))])
    return sim, sim.run()


def test_random_failures_on_an_azure_slice_lose_nothing_and_keep_the_invariants() -> None:
    sim, res = _azure(3)
    check_serving_run(sim, res)
    assert sim.ledger.consistent()
    figures, counts = res.summary()["failures"], res.summary()["requests"]
    assert figures["replicas_lost"] >= 2 and figures["requests_reprefilled"] > 0
    arrived = sim.services[0].log.arrived
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] == counts["count"] == arrived
    requests = res.requests
    assert requests["kv_losses"].sum() == figures["requests_reprefilled"]
    assert set(requests.loc[requests["status"] == "rejected", "reason"]) <= {"replica_failed", "no_replica_accepting"}
    # no replica got a device while it was out of service
    outages = res.failures[res.failures["kind"] != "spot-notice"]
    for created, retired, devices in zip(res.replicas["created"], res.replicas["retired"],
                                         res.replicas["device_indexes"], strict=True):
        for t0, gone, duration in zip(outages["time"], outages["devices"], outages["duration"], strict=True):
            if set(devices) & set(gone):
                assert created >= t0 + duration or (not np.isnan(retired) and retired <= t0), (created, devices, t0)


def test_same_seed_same_table_with_failures() -> None:
    pd.testing.assert_frame_equal(_azure(5)[1].requests, _azure(5)[1].requests)
