"""Link failures (sim.failures.links): a leaf uplink losing one of its physical links slows exactly the jobs crossing
it by the contention solver's answer and restores them on repair; a NIC link failure takes its node out as a node
failure does; random link failures arrive at the rate the model implies; bad input gives clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sim import CheckpointPolicy, FailureModel, Simulation, failures, load_config, run_config
from sim.engine.kernel import EventOrder
from sim.errors import ConfigError
from sim.failures.link_topology import physical_links
from sim.output.trace_events import trace_events
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.network.contention import ContentionSolver
from sim.platform.network.specs import Fabric, default_network
from workloads.jobs import TrainingJob

H100 = "h100"
OVERSUBSCRIPTION = 4.0


def cluster(nodes: int = 6, oversubscription: float = OVERSUBSCRIPTION) -> Cluster:
    """Nodes of 8 H100s (8 NICs each), two nodes a leaf, spine uplinks ``oversubscription`` times thinner."""
    pools = [PoolSpec(H100, nodes=nodes, devices_per_node=8, nodes_per_rack=2)]
    return Cluster(pools, network=default_network(Cluster(pools), Fabric(oversubscription=oversubscription)))


class Probe:
    """A subsystem that looks at the network at given times: link capacities, running jobs' slowdowns and devices,
    the solver's rates, and a fresh solver's rates on the same jobs with the capacities a test expects."""

    def __init__(self, simulation: Simulation, times: tuple[float, ...]) -> None:
        self.simulation, self.times = simulation, times
        self.seen: list[dict] = []

    def start(self) -> None:
        for t in self.times:
            self.simulation.kernel.at(t, EventOrder.ARRIVAL, self.look)

    def look(self) -> None:
        sim = self.simulation
        assert sim.network is not None
        solver = sim.network._solver
        assert solver is not None
        self.seen.append({"time": sim.kernel.now, "capacity": sim.network.link_capacity.copy(),
                          "slowdown": {j: r.slowdown for j, r in sim.training.running.items()},
                          "devices": {j: r.devices for j, r in sim.training.running.items()},
                          "rates": solver.rates(),
                          "jobs": {j: (job.links, job.demands, job.weight) for j, job in solver._jobs.items()}})

    def stop(self, end_time: float) -> None:
        pass

    def may_free_devices(self) -> bool:
        return False


def fresh_rates(seen: dict, capacity: np.ndarray) -> dict:
    solver = ContentionSolver(capacity)
    for job_id, (links, demands, weight) in seen["jobs"].items():
        solver.add(job_id, links, demands, weight)
    solver.update()
    return solver.rates()


def test_a_leaf_uplink_losing_one_link_slows_exactly_the_jobs_crossing_it(tmp_path: Path) -> None:
    c = cluster()
    topology = c.topology
    up, down = int(topology.leaf_up[0]), int(topology.leaf_down[0])
    # leaf 0: 2 nodes x 8 NICs of 400 Gb/s under it, uplinks 4x thinner: 16 / 4 = 4 physical uplinks of the same speed
    k = 2 * 8 / OVERSUBSCRIPTION
    assert physical_links(topology, up) == physical_links(topology, down) == k
    trace = tmp_path / "links.csv"
    trace.write_text("time,link,duration\n1000,leaf-up leaf 0,2000\n")
    f = 0.3
    # job 0 takes nodes 0-3 (first fit) and crosses leaf 0's and leaf 1's uplinks; job 1 stays under leaf 2
    specs = [TrainingJob(0, 0.0, 32, 10_000.0, comm_fraction=f), TrainingJob(1, 0.0, 16, 10_000.0, comm_fraction=f)]
    probes: list[Probe] = []

    def probe(simulation: Simulation) -> Probe:
        probes.append(Probe(simulation, (500.0, 1500.0, 3500.0)))
        return probes[-1]

    results = Simulation(c, specs, network=True, record_events=True,
                         subsystems=[failures(FailureModel(trace=trace)), probe]).run()
    before, during, after = probes[0].seen
    assert {int(topology.device_node[d]) for d in during["devices"][0]} == {0, 1, 2, 3}
    nominal = topology.link_capacity
    reduced = nominal.copy()
    reduced[[up, down]] *= (k - 1) / k
    np.testing.assert_array_equal(before["capacity"], nominal)
    np.testing.assert_array_equal(during["capacity"], reduced)
    np.testing.assert_array_equal(after["capacity"], nominal)  # repaired: exactly the nominal capacity again
    # the live rates are a from-scratch solve on the capacities of the moment, bit for bit
    assert before["rates"] == fresh_rates(before, nominal) and after["rates"] == before["rates"]
    assert during["rates"] == fresh_rates(during, reduced)
    x0, x1 = before["rates"][0], during["rates"][0]
    assert x0 < 1 and x1 < x0  # contended before, more so with a link down
    assert during["rates"][1] == 1.0 and during["slowdown"][1] == before["slowdown"][1] == 1.0  # job 1: untouched
    # slowdown = (1 - f) + f * ratio / x: the ratio from before, the slowdown during from the solver's answer
    s0 = before["slowdown"][0]
    ratio = (s0 - (1 - f)) * x0 / f
    s1 = (1 - f) + f * ratio / x1
    assert during["slowdown"][0] == pytest.approx(s1, rel=1e-12) and after["slowdown"][0] == s0
    # job 0 progresses at 1/s0, then 1/s1 during the 2000 s outage, then 1/s0 again: its finish follows
    finish = results.jobs.set_index("job_id")["finish"]
    assert finish[0] == pytest.approx(3000.0 + s0 * (10_000.0 - 1000.0 / s0 - 2000.0 / s1), rel=1e-9)
    row = results.failures.iloc[0]
    assert (row["kind"], row["node"], row["devices"], row["link"], row["jobs_interrupted"]) == (
        "link", -1, (), "leaf-up leaf 0", 0)
    assert results.jobs["interruptions"].sum() == 0
    marks = [e for e in trace_events(results)["traceEvents"] if e["ph"] == "i" and e["cat"] == "failure"]
    assert [(m["s"], m["ts"], m["args"]["link"]) for m in marks] == [("g", 1e9, "leaf-up leaf 0")]  # one global mark


def test_a_nic_link_failure_is_a_node_failure(tmp_path: Path) -> None:
    # a 16-device job on nodes 0 and 1 saving every 300 s: a NIC link of node 1 failing at t = 1000 interrupts it,
    # losing the 100 s since its save at 900, exactly as node 1 failing does
    c = cluster(nodes=2, oversubscription=1.0)
    by_link, by_node = tmp_path / "link.csv", tmp_path / "node.csv"
    by_link.write_text("time,link,duration\n1000,nic-down node 1,500\n")
    by_node.write_text("time,node,duration\n1000,1,500\n")

    def run(trace: Path):
        return Simulation(c, [TrainingJob(0, 0.0, 16, 3000.0, comm_fraction=0.2)], network=True, subsystems=[
            failures(FailureModel(trace=trace, restart_s=0.0), CheckpointPolicy(interval=300.0))]).run()

    link, node = run(by_link), run(by_node)
    job = link.jobs.iloc[0]
    assert job["interruptions"] == 1 and job["lost_work_seconds"] == pytest.approx(100.0)
    assert job["status"] == "finished" and job["finish"] == pytest.approx(1500.0 + 3000.0 - 900.0)  # after repair
    columns = [c for c in node.jobs.columns if c not in ("wall_seconds",)]
    assert link.jobs[columns].equals(node.jobs[columns])
    row = link.failures.iloc[0]
    assert (row["kind"], row["node"], row["devices"], row["link"], row["jobs_interrupted"]) == (
        "link", 1, tuple(range(8, 16)), "nic-up node 1", 1)
    assert node.failures.iloc[0]["link"] == ""


def test_random_link_failures_arrive_at_the_implied_rate() -> None:
    # leaf bundles fail at (k - 1 - down) / MTBF each, NIC links at (NICs) / MTBF per node; with repairs a thousand
    # times shorter than the MTBF, the counts over the run are Poisson with the nominal rates (99.9% intervals)
    c = cluster(nodes=4, oversubscription=2.0)  # 2 leaves of k = 16 / 2 = 8 uplinks; 4 nodes of 8 NICs
    leaf_h, nic_h = 2.0, 4.0
    specs = [TrainingJob(i, i * 3600.0, 8, 3000.0, comm_fraction=0.1) for i in range(300)]
    results = Simulation(c, specs, seed=4, network=True, subsystems=[failures(FailureModel(
        link_mtbf_hours={"leaf": leaf_h, "nic": nic_h}, link_mttr_hours=0.001, restart_s=0.0))]).run()
    active = float(results.jobs["finish"].max()) / 3600.0  # hours: failures stop once every job is done
    rows = results.failures
    leaf = int(rows["link"].str.startswith("leaf-up").sum())
    nic = int(rows["link"].str.startswith("nic-up").sum())
    assert len(rows) == leaf + nic and set(rows["kind"]) == {"link"}
    for count, rate in ((leaf, 2 * (8 - 1) / leaf_h), (nic, 4 * 8 / nic_h)):
        low, high = stats.poisson.ppf([0.0005, 0.9995], rate * active)
        assert low <= count <= high, (count, rate * active)
    hit = rows[rows["link"].str.startswith("nic-up")]
    assert (hit["node"] >= 0).all() and results.jobs["interruptions"].sum() == hit["jobs_interrupted"].sum()
    assert (results.jobs["status"] == "finished").all()


def test_runs_without_link_failures_draw_no_links_stream() -> None:
    # the same device failures with and without an (empty) link model give the same run
    specs = [TrainingJob(i, i * 600.0, 8, 5000.0) for i in range(30)]

    def run(model: FailureModel):
        return Simulation(cluster(nodes=4), specs, seed=9, network=True, subsystems=[failures(model)]).run()

    plain = run(FailureModel(mtbf_hours={H100: 50.0}))
    same = run(FailureModel(mtbf_hours={H100: 50.0}, link_mttr_hours=7.0))
    assert plain.jobs.equals(same.jobs) and plain.failures.equals(same.failures) and len(plain.failures) > 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, words", [
    ({"link_mtbf_hours": {"leaf": -5}}, r"failures\.link_mtbf_hours\.leaf must be a finite number > 0, got -5"),
    ({"link_mtbf_hours": {"leaf": 0}}, r"failures\.link_mtbf_hours\.leaf must be a finite number > 0"),
    ({"link_mtbf_hours": {"spine": 100}}, r"failures\.link_mtbf_hours\.spine: unknown link class; known: nic, leaf"),
    ({"link_mtbf_hours": [100]}, r"failures\.link_mtbf_hours must map link classes"),
    ({"link_mttr_hours": -1}, r"failures\.link_mttr_hours must be a finite number > 0")])
def test_bad_link_model(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        FailureModel(**kwargs)


def simulate(model: FailureModel, network: object = True, nodes: int = 4, oversubscription: float = 2.0) -> None:
    Simulation(cluster(nodes, oversubscription), [TrainingJob(0, 0.0, 16, 100.0)], network=network,
               subsystems=[failures(model)]).run()


def test_link_failures_need_the_network_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"failures\.link_mtbf_hours: link failures need the network model"):
        simulate(FailureModel(link_mtbf_hours={"nic": 1000}), network=None)
    trace = tmp_path / "t.csv"
    trace.write_text("time,node,link,duration\n5,0,,10\n9,,leaf-up leaf 1,10\n")
    with pytest.raises(ConfigError, match=rf"{trace}:3: a link outage needs the network model"):
        simulate(FailureModel(trace=trace), network=None)
    with pytest.raises(ConfigError, match=r"link_mtbf_hours\.leaf: .*needs the contention model"):
        simulate(FailureModel(link_mtbf_hours={"leaf": 1000}), network={"contention": False})
    simulate(FailureModel(link_mtbf_hours={"nic": 1000}), network={"contention": False})  # a NIC: a node outage


@pytest.mark.parametrize("text, words", [
    ("time,link,duration\n5,leaf-up leaf 9,10\n", r":2: link 'leaf-up leaf 9' is not a shared link of the cluster"),
    ("time,link,duration\n5,99,10\n", r":2: link 99 is not a shared link id of the cluster \(0\.\.11\)"),
    ("time,node,link,duration\n5,1,nic-up node 1,10\n", r":2: give one of node, device or link"),
    ("time,link,duration\n5,nic-up node 1,-3\n", r":2: duration '-3' must be a finite number > 0")])
def test_bad_link_trace(tmp_path: Path, text: str, words: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(text)
    with pytest.raises(ConfigError, match=words):
        simulate(FailureModel(trace=trace))


def test_a_trace_taking_a_bundles_last_link_is_an_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"  # leaf 0 has 16 / 8 = 2 uplinks: one can fail, not both
    trace.write_text("time,link,duration\n5,leaf-up leaf 0,100\n6,leaf-down leaf 0,100\n")
    with pytest.raises(ConfigError, match=rf"{trace}:3: the outage would take the last working physical link of "
                                          r"leaf-up leaf 0 \(2 in all\)"):
        simulate(FailureModel(trace=trace), oversubscription=8.0)


def test_config_keys(tmp_path: Path) -> None:
    base = {"seed": 3, "cluster": {"preset": "dgx-h100", "nodes": 4}, "sim": {"progress": False},
            "workload": {"training": {"jobs": 30, "interarrival": {"dist": "exponential", "mean": 600}}}}
    with pytest.raises(ConfigError, match=r"failures\.link_mtbf_hours: link failures need the network model"):
        run_config(load_config({**base, "failures": {"link_mtbf_hours": {"nic": 500}}}))
    results = run_config(load_config({**base, "sim": {"progress": False, "network": {"enabled": True}},
                                      "failures": {"link_mtbf_hours": {"nic": 20}, "link_mttr_hours": 0.5}}))
    assert set(results.failures["kind"]) == {"link"} and results.summary()["failures"]["outages"] > 0
    assert results.run["failures"]["link_mtbf_hours"] == {"nic": 20}
    assert not math.isnan(results.summary()["failures"]["goodput"])
