"""Hardware what-ifs: equal count, price and power clusters, and one workload compared across them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sim import Cluster, ConfigError, PoolSpec, preset
from sim.experiments.config import load_config
from sim.experiments.scenario import build_cluster
from sim.experiments.whatif import (
    compare_hardware,
    config_for_cluster,
    equivalent_clusters,
    hardware_table,
    run_on_clusters,
)
from sim.platform.hardware import get_device
from sim.platform.network.specs import Fabric, default_network

H100, A100, H200 = get_device("h100"), get_device("a100"), get_device("h200")
V5E, V5P = get_device("tpu-v5e"), get_device("tpu-v5p")
REFERENCE = preset("dgx-h100", nodes=4)  # 4 nodes x 8 H100 = 32 devices


def nodes(clusters: dict[str, Cluster]) -> dict[str, tuple[int, int]]:
    """(nodes, devices per node) of each one-pool cluster."""
    return {k: (c.pools[0].nodes, c.pools[0].devices_per_node) for k, c in clusters.items()}


def training(jobs: int, interarrival: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"jobs": jobs, "interarrival": interarrival, "duration": {"dist": "lognormal", "median": 3600, "sigma": 1},
            "gpus": {"dist": "choice", "values": [1, 2, 4, 8, 16], "weights": [0.4, 0.2, 0.2, 0.1, 0.1]}, **extra}


def config(workload: dict[str, Any], seed: int = 3) -> dict[str, Any]:
    return {"seed": seed, "workload": workload, "sim": {"progress": False}}


# ---------------------------------------------------------------------------------------------- arithmetic


def test_equal_count_price_and_power_by_hand() -> None:
    devices = ["a100", "h200", "tpu-v5e", "tpu-v5p"]
    count = equivalent_clusters(REFERENCE, devices, basis="count")
    assert nodes(count) == {"a100": (4, 8), "h200": (4, 8), "tpu-v5e": (4, 8), "tpu-v5p": (8, 4)}

    price = equivalent_clusters(REFERENCE, devices, basis="price")
    budget = 32 * H100.price_per_hour
    assert nodes(price) == {
        "a100": (math.floor(budget / A100.price_per_hour / 8), 8),
        "h200": (math.floor(budget / H200.price_per_hour / 8), 8),
        "tpu-v5e": (math.floor(budget / V5E.price_per_hour / 8), 8),
        "tpu-v5p": (math.floor(budget / V5P.price_per_hour / 4), 4),
    }
    watts = 32 * H100.tdp_watts
    power = equivalent_clusters(REFERENCE, devices, basis="power")
    assert nodes(power) == {
        "a100": (math.floor(watts / A100.tdp_watts / 8), 8),
        "h200": (math.floor(watts / H200.tdp_watts / 8), 8),
        "tpu-v5e": (math.floor(watts / V5E.tdp_watts / 8), 8),
        "tpu-v5p": (math.floor(watts / V5P.tdp_watts / 4), 4),
    }
    # the catalog as of writing: $4.50 H100 vs $3.00 A100 and $5.00 H200; 700 W vs 400 W
    assert price["a100"].pools[0].nodes == 6 and price["h200"].pools[0].nodes == 3
    assert power["a100"].pools[0].nodes == 7
    assert price["a100"].name == "a100 x 6 nodes (equal price, 1.00x)"
    assert price["h200"].name == f"h200 x 3 nodes (equal price, {3 * 8 * H200.price_per_hour / budget:.2f}x)"
    assert price["a100"].pools[0].device == "a100-sxm-80gb"


def test_a_device_count_pair_is_a_reference_and_mixed_clusters_add_up() -> None:
    assert nodes(equivalent_clusters(("h100", 32), ["a100"], basis="price")) == {"a100": (6, 8)}
    mixed = Cluster([PoolSpec("h100", 2, 8), PoolSpec("a100", 2, 8)])
    budget = 16 * H100.price_per_hour + 16 * A100.price_per_hour
    got = equivalent_clusters(mixed, ["h200", "a100"], basis="price")
    assert nodes(got) == {"h200": (math.floor(budget / H200.price_per_hour / 8), 8),
                          "a100": (math.floor(budget / A100.price_per_hour / 8), 8)}
    assert nodes(equivalent_clusters(mixed, ["h200"], basis="count")) == {"h200": (4, 8)}


def test_rounding_is_down_to_whole_nodes_at_least_one() -> None:
    assert nodes(equivalent_clusters(("a100", 47), ["a100"], basis="count")) == {"a100": (5, 8)}  # 5.875 -> 5
    assert nodes(equivalent_clusters(("a100", 48), ["a100"], basis="count")) == {"a100": (6, 8)}
    one = equivalent_clusters(("h100", 1), ["a100", "tpu-v5p"], basis="count")
    assert nodes(one) == {"a100": (1, 8), "tpu-v5p": (1, 4)}  # below one node: one node, and the name says so
    assert one["a100"].name == "a100 x 1 nodes (equal count, 8.00x)"
    assert nodes(equivalent_clusters(REFERENCE, ["a100"], basis="price", devices_per_node=4)) == {"a100": (12, 4)}
    # 45 x $0.70 / $4.50 is 7 exactly, 6.999... in floats: the tolerance keeps the seventh node
    assert 45 * get_device("l4").price_per_hour / H100.price_per_hour < 7
    assert nodes(equivalent_clusters(("l4", 45), ["h100"], basis="price", devices_per_node=1)) == {"h100": (7, 1)}


def test_a_reference_fabric_is_kept() -> None:
    fabric = Fabric(kind="fat-tree", oversubscription=2.0)
    reference = Cluster(REFERENCE.pools, name="oversubscribed", network=default_network(REFERENCE, fabric=fabric))
    got = equivalent_clusters(reference, ["a100", "tpu-v5e"], basis="count")
    assert all(c.network is not None and c.network.fabric == fabric for c in got.values())
    assert got["tpu-v5e"].network.pools[0].scale_up == "tpu-torus"
    assert all(c.network is None for c in equivalent_clusters(REFERENCE, ["a100"], basis="count").values())


@pytest.mark.parametrize(("call", "match"), [
    (lambda: equivalent_clusters(REFERENCE, ["a100", "h1000"], basis="count"), r"devices\[1\].*'h1000'"),
    (lambda: equivalent_clusters(REFERENCE, ["a100"], basis="cost"), r"basis 'cost'.*valid: count, price, power"),
    (lambda: equivalent_clusters(REFERENCE, "a100", basis="count"), r"devices must be a non-empty list"),
    (lambda: equivalent_clusters(REFERENCE, [], basis="count"), r"devices must be a non-empty list"),
    (lambda: equivalent_clusters(REFERENCE, ["a100", "a100-sxm-80gb"], basis="count"),
     r"devices\[1\] 'a100-sxm-80gb'.*already given as devices\[0\]"),
    (lambda: equivalent_clusters(("h1000", 8), ["a100"], basis="count"), r"reference\[0\].*'h1000'"),
    (lambda: equivalent_clusters(("h100", 0), ["a100"], basis="count"), r"reference\[1\]"),
    (lambda: equivalent_clusters("h100", ["a100"], basis="count"), r"reference must be a Cluster"),
    (lambda: equivalent_clusters(REFERENCE, ["a100"], basis="count", devices_per_node=0), r"devices_per_node"),
    (lambda: compare_hardware(config({"training": training(5, {"dist": "exponential", "mean": 60})}), {}),
     r"clusters must be a non-empty mapping"),
    (lambda: compare_hardware(config({"training": training(5, {"dist": "exponential", "mean": 60})}),
                              {"big": "dgx-h100"}), r"clusters\['big'\] must be a Cluster"),
])
def test_bad_input_names_the_element(call: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- comparison


def test_config_for_cluster_round_trips_the_cluster_and_moves_the_pins() -> None:
    fabric = Fabric(kind="fat-tree", oversubscription=2.0)
    base = Cluster([PoolSpec("tpu-v5p", 4, 4, nodes_per_rack=2)], name="v5p")
    cluster = Cluster(base.pools, name="v5p", network=default_network(base, fabric=fabric))
    cfg = load_config(config({"training": training(5, {"dist": "exponential", "mean": 60},
                                                   reference_device="a100", allowed_devices=["h100", "tpu-v5p"]),
                              "inference": {"services": [{"name": "a", "device": "h100", "requests": 5},
                                                         {"name": "b", "device": None, "requests": 5}]}}))
    moved = config_for_cluster(cfg, cluster)
    rebuilt = build_cluster(moved.cluster)
    assert rebuilt.pools == cluster.pools and rebuilt.network == cluster.network
    assert moved.workload.training.allowed_devices == ("tpu-v5p",)
    assert moved.workload.training.reference_device == "a100"
    assert [s.device for s in moved.workload.inference.services] == ["tpu-v5p", None]
    a100 = config_for_cluster(cfg, Cluster([PoolSpec("a100", 1, 8)]))
    assert a100.workload.training.allowed_devices is None  # no pinned type left: any device of the cluster
    mixed = config_for_cluster(cfg, Cluster([PoolSpec("a100", 1, 8), PoolSpec("h200", 1, 8)]))
    assert mixed.workload.inference.services[0].device is None  # several types: the first pool with room
    assert build_cluster(a100.cluster).network is None


def test_same_workload_on_every_cluster_one_row_each() -> None:
    clusters = equivalent_clusters(REFERENCE, ["a100", "h100", "h200"], basis="price")
    cfg = config({"training": training(60, {"dist": "exponential", "mean": 120}, reference_device="a100",
                                       allowed_devices=["h100"]),
                  "inference": {"services": [{"name": "chat", "device": "h100", "replicas": 1, "requests": 300,
                                              "arrivals": {"process": "poisson", "rate": 1.0},
                                              "slo": {"ttft": 0.5, "tpot": 0.05}}]}})
    results = run_on_clusters(cfg, clusters)
    assert list(results) == ["a100", "h100", "h200"]
    columns = ["job_id", "arrival", "gpus", "duration"]
    first = results["a100"].jobs[columns].sort_values("job_id").reset_index(drop=True)
    for label, run in results.items():
        jobs = run.jobs.sort_values("job_id").reset_index(drop=True)
        assert jobs[columns].equals(first), label  # common random numbers: the same jobs
        assert (jobs["status"] == "finished").all(), label  # pinned to h100, yet ran on each cluster's type
        assert set(jobs["device_type"]) == {clusters[label].pools[0].device}
        assert run.requests[["arrival", "prompt_tokens", "output_tokens"]].equals(
            results["a100"].requests[["arrival", "prompt_tokens", "output_tokens"]]), label
        assert set(run.replicas["device_type"]) == {clusters[label].pools[0].device}
        assert run.summary()["run"]["cluster"] == clusters[label].name
        assert run.config["cluster"]["pools"][0]["device"] == clusters[label].pools[0].device

    table = hardware_table(results, clusters)
    assert list(table["cluster"]) == ["a100", "h100", "h200"] and len(table) == 3
    assert list(table["name"]) == [c.name for c in clusters.values()]
    assert list(table["nodes"]) == [6, 4, 3] and list(table["devices"]) == [48, 32, 24]
    assert table["usd_per_hour"].tolist() == pytest.approx([48 * A100.price_per_hour, 32 * H100.price_per_hour,
                                                            24 * H200.price_per_hour])
    assert table["tdp_w"].tolist() == pytest.approx([48 * 400, 32 * 700, 24 * 700])
    assert (table["jobs"] == 60).all() and (table["requests"] == 300).all()
    for row, run in zip(table.itertuples(), results.values(), strict=True):
        summary = run.summary()
        assert row.jct_mean == summary["jobs"]["jct"]["mean"]
        assert row.slo_attainment == summary["requests"]["slo_attainment"]
        assert row.ttft_p99 == summary["requests"]["ttft"]["p99"]
        if "energy" in summary:  # accounting, where the summary has it
            assert row.energy_kwh == summary["energy"]["kwh"] and row.cost_usd == summary["cost"]["usd"]
    again = compare_hardware(cfg, clusters)
    assert again.equals(table)  # same seed, same figures


def test_training_only_has_no_inference_columns() -> None:
    clusters = equivalent_clusters(("h100", 8), ["h100"], basis="count")
    table = compare_hardware(config({"training": training(5, {"dist": "exponential", "mean": 60},
                                                          reference_device="h100")}), clusters)
    assert "jct_mean" in table and "slo_attainment" not in table
    overridden = compare_hardware(load_config(config({"training": training(5, {"dist": "exponential", "mean": 60},
                                                                           reference_device="h100")})),
                                  clusters, overrides=["workload.training.jobs=7"])
    assert overridden["jobs"].tolist() == [7]


def test_faster_hardware_finishes_compute_bound_jobs_sooner() -> None:
    clusters = equivalent_clusters(("a100", 32), ["a100", "h100"], basis="count")
    busy = compare_hardware(config({"training": training(300, {"dist": "exponential", "mean": 60},
                                                         reference_device="a100")}), clusters)
    a100, h100 = busy.set_index("cluster").loc[["a100", "h100"], "jct_mean"]
    assert h100 < a100
    # alone on the cluster, a job's JCT is its A100 run time scaled by the bf16 peaks (989 vs 312 TFLOP/s)
    idle = run_on_clusters(config({"training": training(20, {"dist": "deterministic", "value": 1e6},
                                                         reference_device="a100")}), clusters)
    for label, spec in (("a100", A100), ("h100", H100)):
        jobs = idle[label].jobs
        assert (jobs["queueing_delay"] == 0).all()
        assert jobs["jct"].tolist() == pytest.approx((jobs["duration"] * A100.peak() / spec.peak()).tolist(),
                                                     rel=1e-9)


def test_trace_jobs_warn_that_their_run_times_ignore_the_device() -> None:
    clusters = equivalent_clusters(("h100", 8), ["a100", "h100"], basis="count")
    cfg = config({"training": training(3, {"dist": "exponential", "mean": 60})})
    with pytest.warns(UserWarning, match="no reference_device"):
        table = compare_hardware(cfg, clusters)
    assert table["jct_mean"].iloc[0] == table["jct_mean"].iloc[1]  # the same run times on A100 and H100


def test_a_cluster_the_workload_cannot_use_is_named() -> None:
    clusters = equivalent_clusters(("h100", 8), ["h100", "tpu-v5e"], basis="count")
    cfg = config({"inference": {"services": [{"name": "chat", "model": "llama-3.1-8b", "device": "h100",
                                              "requests": 10}]}})
    with pytest.raises(ConfigError, match=r"cluster 'tpu-v5e' \(tpu-v5e x 1 nodes.*does not fit in a replica of "
                                          r"1 x tpu-v5e"):
        compare_hardware(cfg, clusters)
