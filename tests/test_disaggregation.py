"""Disaggregated prefill and decode: KV transfers over the topology (idle and contended), TTFT = prefill + transfer +
one decode step, decode pools short of KV making transfers wait, nothing lost, pools that scale and share devices
with training, and bad input named by service and field."""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from policies.routers import KvAware
from sim import Cluster, ContinuousBatching, PoolSpec, ServicePool, ServiceSpec, Simulation, load_config, run_config
from sim.errors import ConfigError, PolicyError
from sim.experiments.scenario import build_services
from sim.platform.network.collectives import nccl_scale_up_bandwidth, nic_effective_bandwidth
from sim.platform.network.model import NetworkModel, NetworkOptions
from sim.platform.network.specs import NetworkSpec, NodeNetwork
from sim.policy_checks import check_serving_run
from sim.random import RandomStreams
from sim.registry import available
from sim.serving.contracts import Router
from sim.serving.kv_transfer import KVTransfers, kv_path
from workloads import Deterministic, Poisson, generate_sessions, get_model
from workloads.jobs import TrainingJob
from workloads.requests import RequestTrace

MODEL = get_model("llama-3.1-8b")


def _trace(arrival: list[float], prompt: list[int], output: list[int]) -> RequestTrace:
    return RequestTrace(arrival=np.array(arrival, dtype=float), prompt_tokens=np.array(prompt),
                        output_tokens=np.array(output))


def _poisson_trace(n: int, rate: float, seed: int = 0, prompt: tuple[int, int] = (100, 3000),
                   output: tuple[int, int] = (5, 400)) -> RequestTrace:
    rng = np.random.default_rng(seed)
    return _trace(list(np.cumsum(rng.exponential(1 / rate, n))), list(rng.integers(*prompt, n)),
                  list(rng.integers(*output, n)))


def _service(trace: RequestTrace, prefill: dict | None = None, decode: dict | None = None, **kwargs) -> ServiceSpec:
    return ServiceSpec("chat", trace, 1, model=kwargs.pop("model", MODEL), device="h100",
                       prefill=prefill or {"replicas": 1}, decode=decode or {"replicas": 1}, **kwargs)


def _h100(nodes: int) -> Cluster:
    return Cluster([PoolSpec("h100", nodes=nodes, devices_per_node=8)])


# ------------------------------------------------------------------------------------------------ the path
def test_kv_path_is_nvlink_inside_a_node_and_the_nics_across_nodes() -> None:
    cluster = _h100(2)
    topology = cluster.topology
    inside = kv_path(cluster, (0, 1), (2, 3))
    assert inside.links == () and inside.latency == 0.0
    assert inside.bandwidth == 2 * nccl_scale_up_bandwidth(cluster.device_specs[0])  # two shard streams
    across = kv_path(cluster, (0,), (8, 9, 10, 11))
    assert across.links == topology.node_path(0, 1) and across.latency == pytest.approx(topology.path_latency(0, 1))
    assert across.bandwidth == nic_effective_bandwidth(float(topology.node_nic_bandwidth[0]) * 8 / 1e9)  # one stream
    wide = kv_path(cluster, tuple(range(8)), tuple(range(8, 16)))
    assert wide.bandwidth == pytest.approx(8 * across.bandwidth)  # eight streams, one per NIC


@pytest.mark.parametrize("decode_devices", [1, 8])  # beside the prefill replica in node 0, or alone in node 1
def test_an_idle_transfer_takes_bytes_over_bandwidth_plus_latency(decode_devices: int) -> None:
    cluster = _h100(2)
    spec = _service(_trace([0.0], [3000], [20]), decode={"replicas": 1, "devices_per_replica": decode_devices})
    sim = Simulation(cluster, [], services=[spec], network=True)
    row = sim.run().requests.iloc[0]
    prefill, decode = sim.services
    path = kv_path(cluster, prefill.devices[0], decode.devices[0])
    assert (path.links == ()) == (decode_devices == 1)
    assert row["kv_transfer_bytes"] == 3000 * MODEL.kv_bytes_per_token
    assert row["kv_transfer_wait"] == 0.0
    assert row["kv_transfer_seconds"] == pytest.approx(path.latency + row["kv_transfer_bytes"] / path.bandwidth,
                                                       rel=1e-12)


def test_transfers_that_share_a_nic_slow_each_other_to_their_fair_share() -> None:
    # two prefill replicas (nodes 0 and 1) send at once to the decode replica of node 2: its NIC-down link, 400
    # GB/s, carries two transfers that each want 376 GB/s, so each gets 200 GB/s under contention
    cluster = _h100(3)
    trace = _trace([0.0, 0.0], [4000, 4000], [5, 5])
    pools = {"prefill": {"replicas": 2, "devices_per_replica": 8}, "decode": {"replicas": 1, "devices_per_replica": 8}}
    idle = Simulation(cluster, [], services=[_service(trace, **pools)]).run().requests
    contended_sim = Simulation(cluster, [], services=[_service(trace, **pools)], network=True)
    contended = contended_sim.run().requests
    prefill, decode = contended_sim.services
    path = kv_path(cluster, prefill.devices[0], decode.devices[0])
    nbytes = 4000 * MODEL.kv_bytes_per_token
    assert idle["kv_transfer_seconds"].tolist() == pytest.approx([path.seconds(nbytes)] * 2, rel=1e-12)
    shared = cluster.topology.link_capacity[path.links[-1]] / 2
    assert contended["kv_transfer_seconds"].tolist() == pytest.approx([path.latency + nbytes / shared] * 2, rel=1e-9)
    assert (contended["ttft"] > idle["ttft"]).all()


def test_a_transfer_sharing_links_with_a_training_job_is_slower_and_slows_the_job_while_it_lasts() -> None:
    cluster = _h100(2)
    network = NetworkModel(cluster, NetworkOptions())
    job = TrainingJob(0, 0.0, 16, 100.0, comm_fraction=0.5)
    alone = network.start(job, tuple(range(16)), 0, 0.0)  # a ring over both nodes' NICs
    network.update(0.0)
    events: list[tuple[float, int, Callable[[], None]]] = []
    slowdowns: list[tuple[float, float]] = []

    def changed(now: float) -> None:
        slowdowns.extend((now, slowdown) for slowdown in network.update(now).values())

    transfers = KVTransfers(cluster, lambda time, fn: heapq.heappush(events, (time, len(events), fn)), network, changed)
    done: list[float] = []
    source, target = tuple(range(8)), tuple(range(8, 16))
    nbytes = 4000 * MODEL.kv_bytes_per_token
    transfers.start(source, target, nbytes, 1.0, done.append)
    while events:
        heapq.heappop(events)[2]()
    idle = transfers.path(source, target).seconds(nbytes)
    assert done[0] - 1.0 > idle * 1.2
    assert [t for t, _ in slowdowns] == [1.0, done[0]]  # slowed when the transfer started, restored when it ended
    assert slowdowns[0][1] > alone and slowdowns[1][1] == pytest.approx(alone, rel=1e-12)


# ------------------------------------------------------------------------------------------------ timing
def test_ttft_at_low_load_is_prefill_plus_transfer_plus_one_decode_step_exactly() -> None:
    prompt, output = 2500, 40
    spec = _service(_trace([1.0], [prompt], [output]))
    sim = Simulation(_h100(1), [], services=[spec])
    row = sim.run().requests.iloc[0]
    prefill, decode = sim.services
    cost_p, cost_d = prefill.replicas[0].cost, decode.replicas[0].cost
    prefill_step = cost_p.step(prompt, prompt * (prompt + 1) / 2, prompt, 1)
    transfer = kv_path(sim.cluster, prefill.devices[0], decode.devices[0]).seconds(prompt * MODEL.kv_bytes_per_token)
    first_decode = cost_d.decode_run(1, prompt + 1, 1)  # one sequence, its prompt plus the token it writes
    assert row["kv_transfer_seconds"] == pytest.approx(transfer, rel=1e-12)
    assert row["ttft"] == pytest.approx(prefill_step + transfer + first_decode, rel=1e-12)
    # and every token after the first: one decode step each, on a growing context
    assert row["e2e"] == pytest.approx(prefill_step + transfer + cost_d.decode_run(1, prompt + 1, output), rel=1e-12)
    assert row["admitted"] == 1.0 and row["replica"] == 0 and row["prefill_replica"] == 0


def test_coalesced_decode_runs_give_the_step_by_step_answer() -> None:
    trace = _poisson_trace(120, 6.0, seed=3)
    tables = []
    for coalesce in (True, False):
        spec = _service(trace, decode={"replicas": 2})
        tables.append(Simulation(_h100(1), [], services=[spec], coalesce=coalesce).run().requests)
    pd.testing.assert_frame_equal(tables[0], tables[1], rtol=1e-9)


class _CheckedKvAware(Router):
    """kv-aware decode routing that checks, at every hand-off, each decode replica's ``kv_free_bytes_bounds`` against
    its exact ``kv_free_bytes``, and the choice against the exact figures'. It counts on the class: the run routes
    with a copy of the instance given."""

    name = "checked-kv-aware"
    routes = ranged = 0

    def route(self, request, replicas, rng) -> int:  # type: ignore[no-untyped-def, override]
        bounds = [r.kv_free_bytes_bounds for r in replicas]  # first: reading the exact figure narrows them
        exact = [(r.kv_free_bytes, bounds[i], r.outstanding, i) for i, r in enumerate(replicas) if r.accepting]
        for free, (low, high), _, _ in exact:
            assert low <= free <= high
            _CheckedKvAware.ranged += low < high
        chosen = KvAware().route(request, replicas, rng)
        assert chosen == min(exact, key=lambda e: (-e[0], e[2], e[3]))[3]
        _CheckedKvAware.routes += 1
        return chosen


def test_decode_replicas_bound_their_free_kv_and_kv_aware_chooses_on_the_exact_figures() -> None:
    _CheckedKvAware.routes = _CheckedKvAware.ranged = 0
    spec = _service(_poisson_trace(400, 12.0, seed=5), decode={"replicas": 3, "router": _CheckedKvAware()})
    res = Simulation(_h100(1), [], services=[spec]).run()
    assert _CheckedKvAware.routes == len(res.requests) == 400
    assert _CheckedKvAware.ranged > 400  # mid-run bounds were ranges, not only exact figures


def test_same_seed_same_table() -> None:
    def run() -> pd.DataFrame:
        spec = _service(_poisson_trace(150, 8.0, seed=5), prefill={"replicas": 2}, decode={"replicas": 2})
        return Simulation(_h100(2), [TrainingJob(0, 0.0, 8, 30.0)], services=[spec], router="random",
                          seed=11).run().requests

    pd.testing.assert_frame_equal(run(), run())


# ------------------------------------------------------------------------------------------------ nothing lost
def test_a_decode_pool_short_of_kv_makes_transfers_wait_and_drops_nothing() -> None:
    # llama-3.1-70b on 4 x H100 per decode replica: about 170 GB for KV, half a million tokens... so take long
    # prompts and a heavy reserve so that the decode replica's cache fills while prefill keeps going
    trace = _poisson_trace(150, 20.0, seed=1, prompt=(3000, 6000), output=(200, 600))
    spec = _service(trace, prefill={"replicas": 2}, decode={"replicas": 1},
                    mode=ContinuousBatching(kv_reserve=0.75))
    sim = Simulation(_h100(1), [], services=[spec], record_events=True)
    res = sim.run()
    requests = res.requests
    assert (requests["status"] == "finished").all()
    assert (requests["kv_transfer_wait"] > 0).sum() > 10  # the decode replica's cache was short, often
    assert sim.services[1].replicas[0].transfers_waited > 10
    check_serving_run(sim, res)


@pytest.mark.parametrize("horizon", [3.0, 5.0])
def test_completed_rejected_and_unfinished_add_up_to_arrived_at_a_horizon(horizon: float) -> None:
    trace = _poisson_trace(300, 40.0, seed=2, prompt=(100, 9000))
    spec = _service(trace, prefill={"replicas": 1, "max_batched_tokens": 4096, "chunked_prefill": True},
                    decode={"replicas": 1}, model=get_model({"name": "llama-3.1-8b"}),
                    mode=ContinuousBatching(kv_reserve=0.7))
    sim = Simulation(_h100(1), [], services=[spec], horizon=horizon, record_events=True)
    res = sim.run()
    status = res.requests["status"].value_counts().to_dict()
    arrived = sim.services[0].log.arrived
    assert status.get("finished", 0) + status.get("rejected", 0) + status.get("waiting", 0) == arrived
    assert status.get("not_arrived", 0) == len(trace) - arrived > 0
    assert status.get("waiting", 0) > 0
    check_serving_run(sim, res, complete=False)


def test_a_request_no_decode_replica_can_hold_is_rejected_with_the_reason() -> None:
    mode = ContinuousBatching(kv_reserve=0.75)
    capacity = Simulation(_h100(1), [], services=[_service(_trace([0.0], [5], [5]), mode=mode)]).services[1].kv_tokens
    # the second prompt fits a prefill replica (capacity - 5 + 1 tokens), its whole context no decode replica
    spec = _service(_trace([0.0, 0.5], [500, capacity - 5], [10, 10]), mode=mode)
    requests = Simulation(_h100(1), [], services=[spec]).run().requests
    assert requests["status"].tolist() == ["finished", "rejected"]
    assert requests["reason"].iloc[1] == f"exceeds_kv_cache: needs {capacity + 5} KV tokens, a decode replica " \
                                         f"holds {capacity}"


# ------------------------------------------------------------------------------------------------ pools at work
def test_each_pool_scales_on_its_own_and_the_run_checks_out() -> None:
    trace = _poisson_trace(600, 30.0, seed=4)
    spec = _service(trace, prefill={"replicas": 1, "max_replicas": 3}, decode={"replicas": 1, "max_replicas": 4})
    sim = Simulation(_h100(1), [], services=[spec], autoscaler={"name": "target-utilization", "interval": 2.0},
                     record_events=True)
    res = sim.run()
    check_serving_run(sim, res)
    timeline = res.replica_timeline
    assert set(timeline["service"]) == {"chat/prefill", "chat/decode"}
    peak = timeline.groupby("service")["ready"].max()
    assert peak["chat/decode"] > 1  # the decode pool grew
    assert set(res.replicas["role"]) == {"prefill", "decode"}


@pytest.mark.parametrize("colocation", available("colocation"))
def test_colocation_policies_lend_and_take_devices_for_both_pools(colocation: str) -> None:
    trace = _poisson_trace(300, 15.0, seed=6)
    spec = _service(trace, prefill={"replicas": 1, "max_replicas": 3}, decode={"replicas": 1, "max_replicas": 3})
    jobs = [TrainingJob(i, 2.0 * i, 4, 40.0) for i in range(8)]
    sim = Simulation(_h100(2), jobs, services=[spec], colocation=colocation,
                     autoscaler={"name": "target-utilization", "interval": 2.0}, record_events=True)
    res = sim.run()
    check_serving_run(sim, res)
    assert (res.requests["status"] == "finished").all()
    assert (res.jobs["status"] == "finished").all()


def test_prefix_caching_runs_on_the_prefill_pool() -> None:
    trace = generate_sessions(Poisson(0.5), Deterministic(4), Deterministic(5.0), Deterministic(300),
                              Deterministic(60), RandomStreams(0), count=40)
    spec = _service(trace, prefill={"replicas": 2}, decode={"replicas": 2},
                    mode=ContinuousBatching(prefix_cache=True))
    res = Simulation(_h100(1), [], services=[spec], router="prefix-aware").run()
    prefill = res.replicas[res.replicas["role"] == "prefill"]
    assert prefill["prefix_hits"].sum() > 0
    assert res.replicas.loc[res.replicas["role"] == "decode", "prefix_hits"].isna().all()
    assert prefill["prefill_tokens_saved"].sum() == res.requests["cached_tokens"].sum()
    # the whole prompt's KV cache moves, cached part included
    assert (res.requests["kv_transfer_bytes"] == res.requests["prompt_tokens"] * MODEL.kv_bytes_per_token).all()


def test_accounting_splits_both_replicas_over_the_requests() -> None:
    spec = _service(_poisson_trace(80, 5.0, seed=8), prefill={"replicas": 1}, decode={"replicas": 2})
    res = Simulation(_h100(1), [], services=[spec]).run()
    replicas, requests = res.replicas, res.requests
    for column, share in (("energy_kwh", "energy_kwh"), ("cost_usd", "cost_usd"),
                          ("held_device_seconds", "device_seconds")):
        assert requests[share].sum() == pytest.approx(replicas[column].sum(), rel=1e-9)
    assert res.services["replicas"].tolist() == [3]
    assert res.services["energy_kwh"].iloc[0] == pytest.approx(replicas["energy_kwh"].sum(), rel=1e-12)


# ------------------------------------------------------------------------------------------------ config
def test_a_config_runs_a_disaggregated_service() -> None:
    config = load_config({
        "cluster": {"preset": "dgx-h100", "nodes": 1}, "sim": {"progress": False},
        "workload": {"inference": {"services": [{
            "name": "chat", "requests": 100, "arrivals": {"process": "poisson", "rate": 5.0},
            "prefill": {"replicas": 1, "max_batched_tokens": 4096},
            "decode": {"replicas": 2, "router": "least-outstanding"}}]}}})
    res = run_config(config)
    assert (res.requests["status"] == "finished").all()
    assert res.replicas["role"].tolist() == ["prefill", "decode", "decode"]


@pytest.mark.parametrize(("pools", "match"), [
    ({"prefill": {"replicas": 1}}, r"services\[0\]\.decode: .*needs both"),
    ({"prefill": {"replicas": 1, "gpus": 2}, "decode": {}}, r"services\[0\]\.prefill: unknown key 'gpus'"),
    ({"prefill": {"replicas": 0}, "decode": {}}, r"services\[0\]\.prefill\.replicas: expected an integer >= 1"),
    ({"prefill": {}, "decode": {"replicas": 2, "max_replicas": 1}}, r"services\[0\]\.decode: need min_replicas"),
    ({"prefill": {}, "decode": "big"}, r"services\[0\]\.decode' must be a mapping"),
])
def test_bad_pools_in_a_config_are_named_by_key(pools: dict, match: str) -> None:
    service = {"name": "chat", "requests": 10, **pools}
    with pytest.raises(ConfigError, match=match):
        config = load_config({"cluster": {"preset": "dgx-h100", "nodes": 1},
                              "workload": {"inference": {"services": [service]}}})
        build_services(config.workload.inference.services, 0)


def test_a_pool_that_does_not_fit_its_model_is_named() -> None:
    spec = _service(_trace([0.0], [10], [2]), model=get_model("llama-3.1-70b"),
                    prefill={"replicas": 1, "devices_per_replica": 4}, decode={"replicas": 1, "devices_per_replica": 1})
    with pytest.raises(ConfigError, match=r"service 'chat', decode pool: model llama-3.1-70b .* does not fit"):
        Simulation(_h100(1), [], services=[spec])


def test_pools_with_no_network_path_between_them_are_refused() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8), PoolSpec("h200", nodes=1, devices_per_node=8)],
                      network=NetworkSpec((NodeNetwork(nics=0), NodeNetwork())))
    spec = ServiceSpec("chat", _trace([0.0], [10], [2]), 1, model=MODEL, prefill={"device": "h100"},
                       decode={"device": "h200"})
    with pytest.raises(ConfigError, match=r"service 'chat': no network path between its prefill pool \(h100-sxm\) "
                                          r"and its decode pool \(h200-sxm\).*unreachable.*nics > 0"):
        Simulation(cluster, [], services=[spec])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prefill": {"replicas": 1}}, r"service 'chat'\.decode: a service with a prefill pool needs a decode pool"),
    ({"prefill": ServicePool(), "decode": ServicePool(), "mode": ContinuousBatching(
        speculative={"draft": "llama-3.2-1b", "k": 3, "acceptance": 0.7})}, r"service 'chat'\.speculative"),
    ({"prefill": ServicePool(), "decode": ServicePool(max_seqs=0)}, r"service 'chat'\.decode\.max_seqs"),
])
def test_bad_pools_in_python_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServiceSpec("chat", _trace([0.0], [10], [2]), 1, model=MODEL, **kwargs)


class _Stubborn(Router):
    """A decode router that always picks replica 1, there or not."""

    name = "stubborn"

    def route(self, request: object, replicas: object, rng: object) -> int:  # type: ignore[override]
        return 1


def test_a_decode_router_choosing_a_replica_that_is_not_there_is_a_policy_error() -> None:
    spec = _service(_trace([0.0], [100], [5]), decode={"replicas": 1, "router": _Stubborn()})
    with pytest.raises(PolicyError, match=r"router 'stubborn' chose 1 for request 0: not a replica index of service "
                                          r"'chat'"):
        Simulation(_h100(1), [], services=[spec]).run()


def test_nan_free_figures_for_finished_requests() -> None:
    res = Simulation(_h100(1), [], services=[_service(_poisson_trace(50, 3.0))]).run()
    done = res.requests[res.requests["status"] == "finished"]
    for column in ("ttft", "tpot", "kv_transfer_bytes", "kv_transfer_wait", "kv_transfer_seconds", "prefill_replica"):
        assert not done[column].isna().any(), column
    assert (done["ttft"] >= done["kv_transfer_seconds"] + done["kv_transfer_wait"]).all()


def test_the_timeline_names_each_pool_s_replicas_apart() -> None:
    from sim.output.trace_events import device_intervals

    spec = _service(_poisson_trace(30, 3.0), prefill={"replicas": 1, "devices_per_replica": 2}, decode={"replicas": 2})
    res = Simulation(_h100(1), [], services=[spec]).run()
    intervals = device_intervals(res)
    assert sorted(intervals["label"]) == ["chat/decode/0", "chat/decode/1", "chat/prefill/0", "chat/prefill/0"]
    assert intervals["device"].is_unique


def test_a_decode_replica_counts_what_is_on_its_way_as_queued() -> None:
    trace = _poisson_trace(150, 20.0, seed=1, prompt=(3000, 6000), output=(200, 600))
    spec = _service(trace, prefill={"replicas": 2}, decode={"replicas": 1}, mode=ContinuousBatching(kv_reserve=0.75))
    sim = Simulation(_h100(1), [], services=[spec], sample_interval=0.5)
    res = sim.run()
    samples = res.replica_samples[res.replica_samples["service"] == "chat/decode"]
    assert samples["queued_requests"].max() > 5  # offers waiting for KV room show up in the decode pool's queue
    decode = sim.services[1].replicas[0]
    assert decode.num_queued == 0 and decode.outstanding == 0  # and all of it drained at the end


def test_a_decode_pool_scaled_to_nothing_sees_the_prefilled_requests_waiting_for_it() -> None:
    # a burst, a long quiet spell in which the queue-length autoscaler drains the decode pool to nothing, another
    # burst: its prefilled requests wait for a decode replica (nothing is dropped), and the decode pool's autoscaler,
    # which counts them as queued, brings one up
    first, second = _poisson_trace(30, 6.0, seed=9), _poisson_trace(30, 6.0, seed=10)
    trace = _trace(list(first.arrival) + list(second.arrival + 300.0), list(first.prompt_tokens) +
                   list(second.prompt_tokens), list(first.output_tokens) + list(second.output_tokens))
    spec = _service(trace, prefill={"replicas": 1}, decode={"replicas": 1, "min_replicas": 0, "max_replicas": 2})
    sim = Simulation(_h100(1), [], services=[spec], record_events=True,
                     autoscaler={"name": "queue-length", "per_replica": 4, "interval": 1.0, "cooldown": 5.0})
    res = sim.run()
    assert (res.requests["status"] == "finished").all()
    timeline = res.replica_timeline[res.replica_timeline["service"] == "chat/decode"]
    gone = timeline[(timeline["ready"] == 0) & (timeline["provisioning"] == 0)]["time"]
    assert ((gone > 30) & (gone < 300)).any()  # drained in the quiet spell
    late = res.requests[res.requests["arrival"] >= 300]
    assert late["kv_transfer_wait"].iloc[0] > 1.0  # waited for a new decode replica to load
    assert timeline[timeline["time"] > 300]["ready"].max() >= 1
    check_serving_run(sim, res)


def test_prefilled_requests_no_decode_replica_will_take_are_left_unfinished_and_the_run_ends() -> None:
    # the decode pool drains to nothing in a quiet spell, training takes its device, and its scale-ups then find no
    # device until the autoscaler gives up: the second burst's requests stay unfinished (counted, not lost) and the
    # run ends, rather than waiting forever
    first, second = _poisson_trace(20, 6.0, seed=11), _poisson_trace(20, 6.0, seed=12)
    trace = _trace(list(first.arrival) + list(second.arrival + 300.0), list(first.prompt_tokens) +
                   list(second.prompt_tokens), list(first.output_tokens) + list(second.output_tokens))
    spec = _service(trace, prefill={"replicas": 1}, decode={"replicas": 1, "min_replicas": 0, "max_replicas": 1})
    job = TrainingJob(0, 200.0, 7, 5000.0)
    sim = Simulation(_h100(1), [job], services=[spec], record_events=True,
                     autoscaler={"name": "queue-length", "per_replica": 4, "interval": 1.0, "cooldown": 5.0})
    res = sim.run()
    status = res.requests["status"]
    assert (status.iloc[:20] == "finished").all() and (status.iloc[20:] == "waiting").all()
    assert res.jobs["status"].iloc[0] == "finished"
    assert sim.scale_ups_blocked > 0
    check_serving_run(sim, res, complete=False)
