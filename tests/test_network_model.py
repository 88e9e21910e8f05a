"""The engine's network model: placement and contention stretch the communication share of jobs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sim import Simulation
from sim.errors import ConfigError
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.network.collectives import nccl_scale_up_bandwidth, nic_effective_bandwidth
from sim.platform.network.model import NetworkOptions
from sim.platform.network.specs import Fabric, default_network
from sim.training.contracts import Placer
from workloads import TrainingJob

H100 = PoolSpec("h100", nodes=4, devices_per_node=8)
SCALE_UP = nccl_scale_up_bandwidth(Cluster([H100]).device_specs[0])  # 370.8 GB/s
NIC = nic_effective_bandwidth(400.0)  # one 400 Gb/s NIC, effective


def cluster(oversubscription: float = 4.0) -> Cluster:
    """4 DGX H100 nodes, 2 per leaf: a leaf's uplink bundle is 2 x 400 GB/s / oversubscription."""
    base = Cluster([H100])
    network = default_network(base, fabric=Fabric(kind="fat-tree", nodes_per_leaf=2, oversubscription=oversubscription))
    return Cluster([H100], network=network)


@dataclass
class Pinned(Placer):
    """Puts each job on the devices the test names."""

    name = "pinned"
    where: dict[int, tuple[int, ...]]

    def place(self, job, free, rng):
        devices = self.where[job.job_id]
        return devices if all(free.is_free(d) for d in devices) else None


def nodes(*ids: int, per_node: int = 8) -> tuple[int, ...]:
    return tuple(8 * n + k for n in ids for k in range(per_node))


def run(jobs, where, **network):
    sim = Simulation(cluster(), jobs, placer=Pinned(where), network=network or True)
    return sim, sim.run()


def test_jobs_inside_one_node_are_never_slowed() -> None:
    jobs = [TrainingJob(0, 0.0, 8, 1000.0, comm_fraction=0.5), TrainingJob(1, 0.0, 4, 500.0, comm_fraction=0.5)]
    _, results = run(jobs, {0: nodes(0), 1: nodes(1, per_node=4)})
    assert list(results.jobs["jct"]) == [1000.0, 500.0]
    assert list(results.jobs["placement_level"]) == ["node", "node"]
    assert list(results.jobs["comm_slowdown"]) == [1.0, 1.0]


def test_a_gang_split_unevenly_over_nodes_communicates_at_its_thinnest_node() -> None:
    # 16 GPUs as 8 + 4 + 4 on one leaf... nodes 0 (8) and 1, 2 (4 each): nodes 1 and 2 sit on different
    # leaves, but the leaf bundles (200 GB/s) are not what binds here: the 4-rank nodes drive only 4 NICs.
    f, duration = 0.3, 1000.0
    where = {0: nodes(0) + nodes(1, per_node=4) + tuple(16 + k for k in range(4))}
    _, results = run([TrainingJob(0, 0.0, 16, duration, comm_fraction=f)], where, contention=False)
    reference = min(SCALE_UP, 8 * NIC)  # two whole nodes under one leaf
    placed = min(SCALE_UP, 4 * NIC) / 4.0  # thinnest node: 4 ranks, 4 NICs; crosses leaves: / oversubscription
    slowdown = (1 - f) + f * reference / placed
    assert results.jobs.loc[0, "comm_slowdown"] == pytest.approx(slowdown, rel=1e-12)
    assert results.jobs.loc[0, "jct"] == pytest.approx(duration * slowdown, rel=1e-12)


def test_contention_on_a_leaf_bundle_is_shared_and_released_when_a_job_ends() -> None:
    # A (nodes 0, 2) and B (nodes 1, 3) both cross between the two leaves; each leaf's uplink bundle is
    # 2 x 400 GB/s / 4 = 200 GB/s, and each ring offers it 370.8 GB/s (peak demand). Equal weights: each
    # gets 100 GB/s while both run; B alone gets the whole 200 GB/s after A finishes.
    f = 0.3
    jobs = [TrainingJob(0, 0.0, 16, 1000.0, comm_fraction=f), TrainingJob(1, 0.0, 16, 2000.0, comm_fraction=f)]
    _, results = run(jobs, {0: nodes(0, 2), 1: nodes(1, 3)})
    demand = min(SCALE_UP, 8 * NIC)
    both = (1 - f) + f / (100e9 / demand)
    alone = (1 - f) + f / (200e9 / demand)
    a_end = 1000.0 * both
    b_end = a_end + (2000.0 - a_end / both) * alone
    jct = results.jobs.set_index("job_id")["jct"]
    assert jct[0] == pytest.approx(a_end, rel=1e-9)
    assert jct[1] == pytest.approx(b_end, rel=1e-9)
    assert list(results.jobs["placement_level"]) == ["pod", "pod"]
    bundle = results.links[results.links["kind"] == "leaf-up"]
    assert bundle["peak_utilization"].max() == pytest.approx(1.0)
    assert results.summary()["network"]["recomputes"] >= 3


def test_jobs_on_disjoint_links_do_not_affect_each_other() -> None:
    f = 0.3
    alone = [TrainingJob(0, 0.0, 16, 1000.0, comm_fraction=f)]
    pair = [*alone, TrainingJob(1, 0.0, 16, 1000.0, comm_fraction=f)]
    _, one = run(alone, {0: nodes(0, 1)})
    _, two = run(pair, {0: nodes(0, 1), 1: nodes(2, 3)})  # one leaf each: no shared link
    assert one.jobs.loc[0, "jct"] == two.jobs.loc[0, "jct"] == 1000.0  # same leaf as the reference
    assert two.jobs.loc[1, "jct"] == 1000.0


def test_contention_never_speeds_a_job_up_and_respects_capacity() -> None:
    jobs = [TrainingJob(i, 10.0 * i, 16, 500.0 + 100 * i, comm_fraction=0.2 + 0.1 * (i % 3)) for i in range(6)]
    where = {i: nodes(*[(0, 2), (1, 3), (0, 3), (1, 2), (0, 2), (1, 3)][i]) for i in range(6)}
    _, results = run(jobs, where)
    done = results.jobs
    assert (done["jct"] - done["queueing_delay"] >= done["duration"] - 1e-9).all()
    assert (results.links["peak_utilization"] <= 1 + 1e-9).all()


def test_default_comm_fraction_and_bad_options() -> None:
    job = [TrainingJob(0, 0.0, 16, 1000.0)]
    _, results = run(job, {0: nodes(0, 2)}, comm_fraction=0.0)
    assert results.jobs.loc[0, "jct"] == 1000.0  # no communication share: placement does not matter
    _, default = run(job, {0: nodes(0, 2)})
    assert default.jobs.loc[0, "jct"] > 1000.0  # the default share (0.1) is stretched
    with pytest.raises(ConfigError, match=r"sim\.network\.comm_fraction"):
        NetworkOptions(comm_fraction=1.5)
    with pytest.raises(ConfigError, match=r"sim\.network\.demand"):
        NetworkOptions(demand="sometimes")


def test_config_builds_the_fabric_and_the_network_model() -> None:
    from sim.experiments.config import load_config
    from sim.experiments.scenario import build_cluster, build_simulation

    config = load_config({
        "cluster": {"preset": None, "pools": [{"device": "h100", "nodes": 4, "devices_per_node": 8,
                                              "network": {"nics": 4}}],
                    "fabric": {"kind": "fat-tree", "nodes_per_leaf": 2, "oversubscription": 2.0}},
        "workload": {"training": {"jobs": 5, "comm_fraction": 0.25}},
        "sim": {"network": {"enabled": True, "contention": False}},
    })
    topology = build_cluster(config.cluster).topology
    assert topology.num_leaves == 2 and topology.fabric.oversubscription == 2.0
    assert list(topology.node_nics) == [4, 4, 4, 4]
    sim = build_simulation(config)
    assert sim.network is not None and sim.network.options.contention is False
    assert {job.comm_fraction for job in sim.jobs} == {0.25}


@pytest.mark.parametrize(("override", "message"), [
    ({"fabric": {"kind": "fat-tree", "oversubscribed": 2}}, r"cluster\.fabric\.oversubscribed: unknown key.*"
                                                           r"did you mean 'oversubscription'"),
    ({"fabric": {"oversubscription": 0.5}}, r"cluster\.fabric: .*oversubscription must be >= 1"),
    ({"fabric": {"kind": "torus"}}, r"cluster\.fabric: .*kind must be one of"),
])
def test_bad_fabric_keys_and_values_are_named(override, message) -> None:
    from sim.experiments.config import load_config
    from sim.experiments.scenario import build_cluster

    config = load_config({"cluster": {"preset": "dgx-h100", "nodes": 2, **override}})
    with pytest.raises(ConfigError, match=message):
        build_cluster(config.cluster)


def test_bad_pool_network_is_named() -> None:
    from sim.experiments.config import load_config
    from sim.experiments.scenario import build_cluster

    config = load_config({"cluster": {"preset": None, "pools": [
        {"device": "h100", "nodes": 2, "devices_per_node": 8, "network": {"nic_bandwidth": -1}}]}})
    with pytest.raises(ConfigError, match=r"cluster\.pools\[0\]\.network: .*nic_bandwidth"):
        build_cluster(config.cluster)


def test_fragmentation_over_time_is_recorded_per_timeline_row() -> None:
    # Two 8-GPU nodes. t=0: a 4-GPU job takes half of node 0 (4 of 12 free GPUs unusable for an 8-GPU job);
    # t=10: an 8-GPU job takes node 1 (all 4 free GPUs unusable); t=100: the 4-GPU job ends (nothing unusable).
    two = Cluster([PoolSpec("h100", nodes=2, devices_per_node=8)])
    jobs = [TrainingJob(0, 0.0, 4, 100.0), TrainingJob(1, 10.0, 8, 200.0)]
    results = Simulation(two, jobs, fragmentation=True).run()
    tl = results.timeline.set_index("time")
    assert tl.loc[0.0, "fragmentation"] == pytest.approx(4 / 12)
    assert tl.loc[10.0, "fragmentation"] == 1.0
    assert tl.loc[100.0, "fragmentation"] == 0.0
    assert (tl.loc[0.0, "gangs_4"], tl.loc[0.0, "gangs_8"], tl.loc[0.0, "gangs_16"]) == (3, 1, 0)
    # time-weighted: 4/12 for 10 s, 1.0 for 90 s, 0 for the last 110 s (until t=210)
    expected = (4 / 12 * 10 + 1.0 * 90) / 210
    assert results.summary()["fragmentation"]["mean"] == pytest.approx(expected)
    assert "fragmentation" not in Simulation(two, jobs).run().timeline  # off by default without the network model


# ----------------------------------------------------------------------------- jobs that name a model

GPT3 = {"tensor": 8, "pipeline": 8, "micro_batch": 1, "global_batch": 64, "sequence": 2048,
        "sequence_parallel": True, "recomputation": "selective"}


def a100_cluster(nodes: int = 8) -> Cluster:
    base = Cluster([PoolSpec("a100", nodes=nodes, devices_per_node=8)])
    return Cluster(base.pools, network=default_network(
        base, fabric=Fabric(kind="fat-tree", nodes_per_leaf=nodes // 2, oversubscription=2.0)))


def test_a_model_job_takes_its_step_time_from_the_model() -> None:
    from sim.platform.network.model import model_job

    job = model_job(a100_cluster(), 0, 0.0, "gpt3-175b", 64, 10, GPT3)
    assert job.duration / 10 == pytest.approx(13.75, rel=0.10)  # Korthikanti et al. 2022, Table 5
    results = Simulation(a100_cluster(), [job], placer="consolidate", network=True).run()
    assert results.jobs.loc[0, "jct"] == pytest.approx(job.duration, rel=1e-12)  # whole nodes: the reference


def test_a_data_parallel_model_job_split_across_leaves_pays_the_oversubscription() -> None:
    from sim.platform.network.collectives import GroupShape, all_reduce_time
    from sim.platform.network.model import model_job
    from sim.training.step_time import DEFAULT_DP_OVERLAP, DEFAULT_GRAD_BYTES
    from workloads import get_model

    par = {"tensor": 1, "pipeline": 1, "micro_batch": 1, "global_batch": 16, "sequence": 2048}
    cluster = a100_cluster()
    job = model_job(cluster, 0, 0.0, "llama-3.1-8b", 16, 10, par)
    sim = Simulation(cluster, [job], placer=Pinned({0: tuple(range(8)) + tuple(range(32, 40))}),
                     network={"contention": False})
    results = sim.run()
    # nodes 0 and 4 sit on different leaves (4 nodes per leaf): the gradient all-reduce crosses the 2:1 uplinks
    a100 = cluster.device_specs[0]
    gradients = get_model("llama-3.1-8b").params * DEFAULT_GRAD_BYTES
    same_leaf = GroupShape.on_device(a100, 16, nodes=2, nics_per_node=8, nic_gbps=200)
    across = GroupShape.on_device(a100, 16, nodes=2, nics_per_node=8, nic_gbps=200, oversubscription=2.0, leaves=2)
    extra = (1 - DEFAULT_DP_OVERLAP) * (all_reduce_time(across, gradients) - all_reduce_time(same_leaf, gradients))
    step = job.duration / 10
    assert results.jobs.loc[0, "comm_slowdown"] == pytest.approx((step + extra) / step, rel=1e-9)
    assert results.jobs.loc[0, "placement_level"] == "pod"


def test_a_tensor_parallel_group_across_nodes_is_no_room_unless_allowed() -> None:
    from sim.errors import StarvationError
    from sim.platform.network.model import model_job

    split = {0: tuple(range(4)) + tuple(range(8, 20))}  # 4 + 8 + 4 GPUs: the first TP group of 8 spans 2 nodes
    par = {"tensor": 8, "pipeline": 1, "micro_batch": 1, "global_batch": 16, "sequence": 2048}
    job = model_job(a100_cluster(), 0, 0.0, "llama-3.1-8b", 16, 10, par)
    with pytest.raises(StarvationError, match="job 0"):
        Simulation(a100_cluster(), [job], placer=Pinned(split), network=True).run()
    allowed = model_job(a100_cluster(), 0, 0.0, "llama-3.1-8b", 16, 10, {**par, "tensor_across_nodes": True})
    results = Simulation(a100_cluster(), [allowed], placer=Pinned(split), network=True).run()
    # each TP all-reduce now runs over 4 NICs per node instead of NVSwitch: several times slower
    assert results.jobs.loc[0, "comm_slowdown"] > 1.1


def test_a_model_job_the_cluster_cannot_hold_is_a_config_error_naming_it() -> None:
    job = TrainingJob(7, 0.0, 16, 100.0, model="llama-3.1-8b",
                      parallelism={"tensor": 16, "global_batch": 16, "sequence": 2048})
    with pytest.raises(ConfigError, match=r"job 7 .*tensor \(16\) exceeds devices_per_node \(8\)"):
        Simulation(a100_cluster(), [job], network=True)
    with pytest.raises(ConfigError, match=r"job 8: .*pipeline \(3\) does not divide"):
        Simulation(a100_cluster(), [TrainingJob(8, 0.0, 16, 100.0, model="llama-3.1-8b",
                                                parallelism={"pipeline": 3})], network=True)


def test_config_gives_every_job_a_model_and_names_a_job_it_cannot_hold() -> None:
    from sim.experiments.config import load_config
    from sim.experiments.scenario import build_simulation, run_config

    base = {
        "cluster": {"preset": "dgx-a100", "nodes": 4, "fabric": {"nodes_per_leaf": 2, "oversubscription": 2.0}},
        "workload": {"training": {"jobs": 20, "gpus": {"dist": "choice", "values": [8, 16]},
                                  "model": {"params": 7e9, "n_layers": 32, "d_model": 4096,
                                            "parallelism": {"tensor": 8, "global_batch": 32, "sequence": 2048}}}},
        "policy": {"placer": "topology"},
        "sim": {"network": {"enabled": True}, "progress": False},
    }
    results = run_config(load_config(base))
    assert results.summary()["jobs"]["completed"] == 20
    assert (results.jobs["comm_slowdown"] >= 1.0 - 1e-12).all()
    bad = load_config(base, ["workload.training.model.parallelism.tensor=3"])
    with pytest.raises(ConfigError, match=r"job \d+: parallelism\.tensor \(3\) does not divide the device count"):
        build_simulation(bad)
