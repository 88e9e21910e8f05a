"""GPU sharing (sim.sharing): no GPU over-allocated, the FGD measure as the paper's simulator defines it, the
placers' choices on hand-worked cases, FGD's advantage on an openb subsample, tidy results and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from sim.errors import ConfigError, PolicyError, UnknownNameError
from sim.sharing import (
    FGD,
    BestFit,
    PodMix,
    PodRequestError,
    PodRequests,
    RandomFit,
    SharedCluster,
    WorstFit,
    inflate_pods,
    make_placer,
    node_fragmentation,
    replay,
)
from sim.sharing.fragmentation import FragmentationIndex
from workloads.traces.openb import load_openb_nodes, load_openb_pods


def nodes_table(rows: list[tuple[str, int, int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["name", "cpu_milli", "memory_mib", "gpus", "model"])


def pods_table(rows: list[tuple]) -> pd.DataFrame:
    columns = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"]
    return pd.DataFrame([r if len(r) == 6 else (*r, ()) for r in rows], columns=columns)


# --- never more than one GPU per device --------------------------------------------------------------------------

pod_rows = st.lists(st.tuples(st.integers(0, 16_000), st.sampled_from([0, 1, 1, 1, 2, 4]), st.integers(1, 1000)),
                    min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=pod_rows, placer=st.sampled_from(["best-fit", "worst-fit", "random", "fgd"]),
       exact=st.booleans(), seed=st.integers(0, 100))
def test_fractional_allocations_never_exceed_one_gpu_per_device(rows, placer, exact, seed):
    pods = pods_table([(f"p{i}", cpu, 1024, num, 0 if num == 0 else (milli if num == 1 else 1000))
                       for i, (cpu, num, milli) in enumerate(rows)])
    nodes = nodes_table([("a", 32_000, 65_536, 2, "T4"), ("b", 64_000, 131_072, 4, "V100"),
                         ("c", 16_000, 65_536, 1, "T4")])
    requests = PodRequests.from_table(pods)
    result = replay(pods, nodes, make_placer(placer, PodMix.from_pods(requests), seed=seed, quantize=not exact))
    # rebuild each GPU's load from the per-pod table alone, independently of the cluster's own bookkeeping
    load: dict[tuple[str, int], int] = {}
    placed = result.pods[result.pods.placed]
    for node, gpus, milli in zip(placed["node"], placed["gpus"], placed["gpu_milli"], strict=True):
        for gpu in filter(None, gpus.split(",")):
            load[node, int(gpu)] = load.get((node, int(gpu)), 0) + int(milli)
    assert all(0 < share <= 1000 for share in load.values()), load
    assert all(gpu < dict(zip(nodes.name, nodes.gpus, strict=True))[node] for node, gpu in load)
    held = sum(load.values()) / 1000
    assert result.summary["unallocated_gpus"].item() == pytest.approx(7 - held)
    assert (result.nodes["gpu_utilization"].between(0, 1)).all()
    assert len(placed) + result.summary["rejected"].item() == len(pods)


def test_allocate_refuses_to_overfill_a_gpu():
    cluster = SharedCluster(nodes_table([("a", 8000, 8000, 1, "T4")]))
    pods = PodRequests.from_table(pods_table([("p", 1, 1, 1, 600), ("q", 1, 1, 1, 600)]))
    cluster.allocate(pods, 0, 0, (0,))
    with pytest.raises(PolicyError, match="GPU 0 has 400 thousandths free, pod needs 600"):
        cluster.allocate(pods, 1, 0, (0,))
    assert cluster.gpu_left[0, 0] == 400


# --- the fragmentation measure ---------------------------------------------------------------------------------

def reference_node_frag(gpu_left: list[int], cpu_left: int, model: str, mix: PodMix) -> float:
    """A literal reading of the measure (the paper's section 4; the artifact's NodeGpuShareFragAmountScore):
    per pod size, all free GPU share is fragment unless the pod fits, then only the GPUs with less than it asks."""
    total = sum(gpu_left)
    frag = 0.0
    for k in range(len(mix)):
        cpu, milli, num, spec, p = (mix.cpu_milli[k], mix.gpu_milli[k], mix.num_gpu[k], mix.gpu_spec[k],
                                    mix.weight[k])
        if milli == 0 or (spec and model not in spec):
            frag += p * total
            continue
        enough = sum(1 for g in gpu_left if g >= milli) >= num
        if enough and cpu_left >= cpu:
            frag += p * sum(g for g in gpu_left if g < milli)
        else:
            frag += p * total
    return frag


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_node_fragmentation_matches_a_literal_reading(data):
    mix_rows = data.draw(st.lists(st.tuples(st.integers(0, 30_000), st.sampled_from([0, 1, 1, 2, 8]),
                                            st.integers(1, 1000), st.sampled_from([(), ("T4",), ("A10", "V100")])),
                                  min_size=1, max_size=8))
    mix_pods = pods_table([(f"m{i}", cpu, 1, num, 0 if num == 0 else (milli if num == 1 else 1000), spec)
                           for i, (cpu, num, milli, spec) in enumerate(mix_rows)])
    mix = PodMix.from_pods(PodRequests.from_table(mix_pods), coverage=1.0, step=1)
    node_rows = data.draw(st.lists(st.tuples(st.sampled_from(["T4", "V100", "A10"]), st.integers(0, 64_000),
                                             st.lists(st.integers(0, 1000), min_size=1, max_size=8)),
                                   min_size=1, max_size=6))
    cluster = SharedCluster(nodes_table([(f"n{i}", 64_000, 1, len(g), model)
                                         for i, (model, _, g) in enumerate(node_rows)]))
    for i, (_, cpu_left, gpus) in enumerate(node_rows):
        cluster.cpu_left[i] = cpu_left
        cluster.gpu_left[i, :len(gpus)] = gpus
    expected = [reference_node_frag(g, c, m, mix) for m, c, g in node_rows]
    assert node_fragmentation(cluster, mix) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_fragmentation_after_a_placement_is_what_recomputing_gives():
    pods, nodes = load_openb_pods(), load_openb_nodes().iloc[::10].reset_index(drop=True)
    requests = PodRequests.from_table(pods.iloc[:600])
    mix = PodMix.from_pods(PodRequests.from_table(pods))
    cluster, placer = SharedCluster(nodes), FGD(mix)
    for i in range(len(requests)):
        feasible = cluster.feasible(requests, i)
        if not feasible.any():
            continue
        node, gpus = placer.place(cluster, requests, i, feasible)
        index = placer.index(cluster)
        num, milli = int(requests.num_gpu[i]), int(requests.gpu_milli[i])
        if num == 1 and milli < 1000:
            old = cluster.gpu_left[[node], [gpus[0]]]
            predicted = index.after(np.array([node]), int(requests.cpu_milli[i]), milli, old, old - milli)[0]
        else:
            zero = np.zeros(1, np.int64)
            predicted = index.after(np.array([node]), int(requests.cpu_milli[i]), num * milli, zero, zero, num)[0]
        cluster.allocate(requests, i, node, gpus)
        assert predicted == pytest.approx(node_fragmentation(cluster, mix)[node], abs=1e-6)
    fresh = FragmentationIndex(cluster, mix)
    np.testing.assert_allclose(placer.index(cluster).frag, fresh.frag, atol=1e-6)


def test_pod_mix_keeps_the_most_frequent_sizes():
    rows = [("a", 1000, 1, 1, 500)] * 6 + [("b", 1000, 1, 1, 1000)] * 3 + [("c", 0, 1, 0, 0)]
    pods = PodRequests.from_table(pods_table([(f"{n}{i}", *r[1:]) for i, r in enumerate(rows) for n in r[0]]))
    mix = PodMix.from_pods(pods, coverage=0.9, step=1)
    assert mix.gpu_milli.tolist() == [500, 1000] and mix.weight.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert len(PodMix.from_pods(pods, coverage=1.0, step=1)) == 3
    with pytest.raises(ConfigError, match="coverage"):
        PodMix.from_pods(pods, coverage=0)


# --- placers on hand-worked cases ------------------------------------------------------------------------------

def half_used_cluster() -> tuple[pd.DataFrame, pd.DataFrame, PodMix]:
    """Node a's only GPU is half taken, node b's is free; the workload is half 1000 and half 500 thousandths."""
    nodes = nodes_table([("a", 32_000, 65_536, 1, "T4"), ("b", 32_000, 65_536, 1, "T4")])
    mix_pods = pods_table([("w0", 1000, 1, 1, 1000), ("w1", 1000, 1, 1, 500)])
    mix = PodMix.from_pods(PodRequests.from_table(mix_pods), coverage=1.0)
    pods = pods_table([("first", 1000, 1024, 1, 500), ("second", 1000, 1024, 1, 500)])
    return pods, nodes, mix


def test_fragmentation_by_hand():
    """After 500 on node a: a has 500 free, usable by the 500-size pods (half the mix), not by the 1000-size ones:
    fragment 0.5 * 500 = 250; b (1000 free) fits both sizes: 0."""
    pods, nodes, mix = half_used_cluster()
    cluster = SharedCluster(nodes)
    cluster.allocate(PodRequests.from_table(pods), 0, 0, (0,))
    assert node_fragmentation(cluster, mix).tolist() == pytest.approx([250.0, 0.0])


@pytest.mark.parametrize(("placer", "second_on"), [("fgd", "a"), ("best-fit", "a"), ("worst-fit", "b")])
def test_second_half_gpu_goes_where_the_placer_says(placer, second_on):
    """The first pod goes to a (ties to the lowest node). FGD then fills a (fragmentation 250 -> 0; on b it
    would grow 0 -> 250), best-fit takes the tighter node a, worst-fit the emptier b."""
    pods, nodes, mix = half_used_cluster()
    result = replay(pods, nodes, make_placer(placer, mix), mix=mix)
    assert result.pods["node"].tolist() == ["a", second_on]
    assert result.summary["fragmentation_gpus"].item() == pytest.approx(0.0 if second_on == "a" else 0.5)


def test_fgd_prefers_the_gpu_that_the_workload_can_still_use():
    """One node of two GPUs; the workload is all 300-thousandth pods. x (300): both GPUs free, tie, GPU 0 -> 700.
    y (600): on GPU 0 it would leave 100 (too small for a 300 pod: fragment), on GPU 1 it leaves 400: GPU 1.
    z (300): on GPU 1 it would leave 100 (fragment), on GPU 0 it leaves 400: GPU 0. Best-fit takes the tightest
    GPU each time and strands 100 thousandths."""
    nodes = nodes_table([("a", 32_000, 65_536, 2, "T4")])
    mix = PodMix.from_pods(PodRequests.from_table(pods_table([("w", 1000, 1, 1, 300)])))
    pods = pods_table([("x", 1, 1, 1, 300), ("y", 1, 1, 1, 600), ("z", 1, 1, 1, 300)])
    for quantize in (False, True):
        result = replay(pods, nodes, FGD(mix, quantize=quantize), mix=mix)
        assert result.pods["gpus"].tolist() == ["0", "1", "0"]
        assert result.summary["fragmentation_gpus"].item() == 0.0
    tight = replay(pods, nodes, BestFit(), mix=mix)
    assert tight.pods["gpus"].tolist() == ["0", "0", "1"]
    assert tight.summary["fragmentation_gpus"].item() == pytest.approx(0.1)


def test_random_is_seeded():
    _, nodes, _ = half_used_cluster()
    many = pods_table([(f"p{i}", 100, 1, 1, 100) for i in range(12)])
    runs = [replay(many, nodes, RandomFit(seed)).pods["node"].tolist() for seed in (1, 1, 2, 3)]
    assert runs[0] == runs[1]
    assert any(run != runs[0] for run in runs[2:])


# --- the paper's direction on a subsample ----------------------------------------------------------------------

def test_fgd_leaves_fewer_gpus_unallocated_than_best_fit_and_random_on_an_openb_subsample():
    """Every 6th GPU node of openb (203 nodes, 1,016 GPUs) and five workloads, each the first 1,866 pods of the
    shuffled trace (asking about 130% of those GPUs, as the paper's protocol does on the whole cluster): FGD's
    paired advantage in unallocated GPUs must be positive with 95% confidence. The paper (the artifact's expected
    results, whole cluster, 130%): FGD 286, best-fit 430, random 778 unallocated GPUs."""
    pods, nodes = load_openb_pods(), load_openb_nodes().iloc[::6].reset_index(drop=True)
    mix = PodMix.from_pods(PodRequests.from_table(pods))
    capacity = int(nodes["gpus"].sum())
    left: dict[str, list[float]] = {"fgd": [], "best-fit": [], "random": []}
    for seed in range(5):
        workload = inflate_pods(pods, capacity, 1.3, seed=seed).iloc[:int(1.4 * len(pods) * capacity / 6212)]
        for name in left:
            result = replay(workload, nodes, make_placer(name, mix, seed=seed), mix=mix)
            left[name].append(result.summary["unallocated_gpus"].item())
    for baseline in ("best-fit", "random"):
        gain = np.array(left[baseline]) - np.array(left["fgd"])
        low = gain.mean() - stats.t.ppf(0.975, len(gain) - 1) * stats.sem(gain)
        assert low > 0, (baseline, left)


# --- tables ------------------------------------------------------------------------------------------------------

def test_results_are_tidy_tables():
    pods, nodes = load_openb_pods().iloc[:400], load_openb_nodes().iloc[:60]
    result = replay(pods, nodes, BestFit())
    assert list(result.pods.columns) == ["order", "name", "creation_time", "num_gpu", "gpu_milli", "placed", "node",
                                         "gpus", "arrived_gpus", "allocated_gpus"]
    assert result.pods["allocated_gpus"].is_monotonic_increasing
    assert result.pods["arrived_gpus"].is_monotonic_increasing
    assert (result.pods.loc[~result.pods.placed, "node"].isna()).all()
    assert len(result.nodes) == 60 and result.nodes["cpu_utilization"].between(0, 1).all()
    assert result.nodes["gpu_allocated"].sum() == pytest.approx(result.pods["allocated_gpus"].iloc[-1])
    summary = result.summary.iloc[0]
    assert summary["capacity_gpus"] == nodes["gpus"].sum()
    assert summary["unallocated_fraction"] == pytest.approx(summary["unallocated_gpus"] / summary["capacity_gpus"])
    curve = result.allocation_curve(np.array([0, 10, 50]))
    assert curve["allocated_gpus"].is_monotonic_increasing and curve["arrived_percent"].tolist()[0] == 0
    stopped = replay(pods, nodes, WorstFit(), stop_at_first_reject=True)
    first = stopped.summary["first_reject_order"].item()
    if first is not None:
        assert len(stopped.pods) == first + 1 and not stopped.pods["placed"].iloc[-1]


def test_inflate_pods_reaches_the_target_without_passing_it():
    pods = load_openb_pods()
    inflated = inflate_pods(pods, 6212, 1.3, seed=3)
    asked = (inflated.num_gpu * inflated.gpu_milli).sum() / 1000
    assert 1.29 * 6212 < asked <= 1.3 * 6212
    assert sorted(inflated["name"].iloc[:len(pods)]) == sorted(pods["name"])
    assert inflated["name"].is_unique
    with pytest.raises(ConfigError, match="ratio"):
        inflate_pods(pods, 6212, 0)


# --- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("row", "message"), [
    (("p", 1000, 1, 1, 0), "pod 'p': gpu_milli must be 1..1000 .* got 0"),
    (("p", 1000, 1, 1, 1001), "pod 'p': gpu_milli must be 1..1000 .* got 1001"),
    (("p", 1000, 1, 0, 500), "pod 'p': gpu_milli must be 0 for a pod with num_gpu 0, got 500"),
    (("p", 1000, 1, 2, 500), "pod 'p': gpu_milli must be 1000 for a pod of several GPUs"),
    (("p", -1, 1, 1, 500), "pod 'p': cpu_milli must be an integer >= 0, got -1"),
    (("p", 1000, 1, 1.5, 500), "pod 'p': num_gpu must be an integer >= 0, got 1.5"),
])
def test_a_bad_request_names_pod_field_and_value(row, message):
    with pytest.raises(PodRequestError, match=message):
        replay(pods_table([("ok", 1, 1, 1, 100), row]), nodes_table([("a", 8000, 8000, 1, "T4")]), BestFit())


def test_a_pod_asking_for_a_missing_gpu_model_is_named():
    pods = pods_table([("ok", 1, 1, 1, 100), ("picky", 1, 1, 1, 500, ("H100", "A100"))])
    with pytest.raises(PodRequestError, match=r"pod 'picky': gpu_spec 'A100\|H100' names no GPU model of the cluster"
                                              r" \(models: T4\)"):
        replay(pods, nodes_table([("a", 8000, 8000, 1, "T4")]), BestFit())
    assert isinstance(PodRequestError("x"), ConfigError)


def test_gpu_spec_restricts_placement():
    nodes = nodes_table([("a", 8000, 8000, 1, "T4"), ("b", 8000, 8000, 1, "V100")])
    result = replay(pods_table([("p", 1, 1, 1, 500, ("V100",))]), nodes, BestFit())
    assert result.pods["node"].tolist() == ["b"]


def test_a_placer_that_overfills_a_gpu_gets_a_policy_error():
    class Greedy:
        name = "greedy"

        def place(self, cluster, pods, i, feasible):
            return 0, (0,)

    pods = pods_table([("p", 1, 1, 1, 700), ("q", 1, 1, 1, 700)])
    with pytest.raises(PolicyError, match="sharing placer 'greedy': pod 'q' on node 'a': GPU 0 has 300"):
        replay(pods, nodes_table([("a", 8000, 8000, 2, "T4")]), Greedy())


def test_a_placer_answering_nonsense_gets_a_policy_error():
    class Confused:
        name = "confused"

        def place(self, cluster, pods, i, feasible):
            return None

    with pytest.raises(PolicyError, match="sharing placer 'confused': pod 'p': expected \\(node, gpu_ids\\), got None"):
        replay(pods_table([("p", 1, 1, 1, 700)]), nodes_table([("a", 8000, 8000, 2, "T4")]), Confused())
    with pytest.raises(PolicyError, match="placed on node 5, not one of the 1 nodes"):
        replay(pods_table([("p", 1, 1, 1, 700)]), nodes_table([("a", 8000, 8000, 2, "T4")]),
               type("Far", (), {"name": "far", "place": lambda self, c, p, i, f: (5, (0,))})())


def test_unknown_placer_and_fgd_without_a_mix():
    with pytest.raises(UnknownNameError, match="best-fit"):
        make_placer("bestfit")
    with pytest.raises(ConfigError, match="pod mix"):
        make_placer("fgd")
