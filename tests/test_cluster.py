"""Clusters: presets, the hierarchy graph, free-device bookkeeping and errors on bad pool specs."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from sim import Cluster, PoolSpec, preset
from sim.errors import ConfigError, UnknownNameError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_cluster
from sim.platform.cluster import PRESETS
from sim.platform.free_devices import FreeDevices
from sim.platform.hardware import DEVICES

PHILLY_CLASSES = {"k80": (321, 2), "p40": (231, 8)}  # device: (machines, GPUs per machine)


def pool_shape(cluster: Cluster) -> dict[str, tuple[int, int]]:
    return {p.device: (p.nodes, p.devices_per_node) for p in cluster.pools}


# ----------------------------------------------------------------------------- presets


def test_philly_preset() -> None:
    cluster = preset("philly")
    assert cluster.name == "philly"
    assert cluster.num_nodes == 552
    assert cluster.num_devices == 2490
    assert pool_shape(cluster) == PHILLY_CLASSES
    assert cluster.pool_devices == [321 * 2, 231 * 8]
    assert Counter(cluster.device_specs[cluster.pool_of_device(d)].name for d in range(cluster.num_devices)) == {
        "k80": 642, "p40": 1848}


@pytest.mark.parametrize("scale", [0.25, 0.5, 0.1])
def test_philly_scaled_keeps_that_fraction_of_each_class(scale: float) -> None:
    cluster = preset("philly", scale=scale)
    shape = pool_shape(cluster)
    assert set(shape) == set(PHILLY_CLASSES)
    for device, (machines, gpus) in PHILLY_CLASSES.items():
        nodes, per_node = shape[device]
        assert per_node == gpus
        assert abs(nodes - machines * scale) <= 0.5, (device, nodes)
    assert cluster.num_devices == sum(n * g for n, g in shape.values())


def test_philly_quarter_exact_counts() -> None:
    cluster = preset("philly", scale=0.25)
    assert pool_shape(cluster) == {"k80": (80, 2), "p40": (58, 8)}
    assert cluster.num_nodes == 138 and cluster.num_devices == 624
    assert cluster.name != "philly"


def test_philly_tiny_scale_keeps_one_machine_per_class() -> None:
    assert pool_shape(preset("philly", scale=0.001)) == {"k80": (1, 2), "p40": (1, 8)}
    assert pool_shape(preset("philly", scale=1)) == PHILLY_CLASSES


@pytest.mark.parametrize("scale", [0, -0.5, 1.5, math.nan, "half"])
def test_philly_bad_scale(scale: object) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.scale"):
        preset("philly", scale=scale)  # type: ignore[arg-type]


def test_dgx_presets() -> None:
    h100 = preset("dgx-h100", nodes=16)
    assert (h100.num_nodes, h100.num_devices) == (16, 128)
    assert [p.device for p in h100.pools] == ["h100-sxm"]
    assert h100.node_size == [8] * 16
    assert {h100.device_specs[h100.pool_of_device(d)].name for d in range(128)} == {"h100-sxm"}
    assert preset("dgx-h100").num_devices == 32  # default: 4 nodes
    a100 = preset("dgx-a100")
    assert (a100.num_nodes, a100.num_devices) == (4, 32)
    assert a100.pools[0].device.startswith("a100")


def test_preset_errors() -> None:
    with pytest.raises(UnknownNameError) as info:
        preset("dgx-h200")
    for name in PRESETS:
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="scale"):
        preset("philly", nodes=4)
    with pytest.raises(ConfigError, match="nodes"):
        preset("dgx-h100", scale=0.5)
    with pytest.raises(ConfigError, match="nodes"):
        preset("dgx-h100", nodes=0)


# ----------------------------------------------------------------------------- numbering and graph


def mixed() -> Cluster:
    return Cluster([PoolSpec("h100", nodes=5, devices_per_node=8, nodes_per_rack=2),
                    PoolSpec("a100", nodes=3, devices_per_node=4, nodes_per_rack=4),
                    PoolSpec("k80", nodes=2, devices_per_node=2, name="old")])


def test_numbering_pool_by_pool() -> None:
    c = mixed()
    assert [p.name for p in c.pools] == ["h100-sxm", "a100-sxm-80gb", "old"]
    assert c.num_nodes == 10 and c.num_devices == 40 + 12 + 4
    assert c.node_pool == [0] * 5 + [1] * 3 + [2] * 2
    assert [list(r) for r in c.pool_nodes] == [list(range(5)), list(range(5, 8)), [8, 9]]
    assert c.node_rack == [0, 0, 1, 1, 2, 3, 3, 3, 4, 4]
    assert c.num_racks == 5
    for n in range(c.num_nodes):
        devices = list(c.devices_of_node(n))
        assert len(devices) == c.node_size[n]
        assert all(c.device_node[d] == n for d in devices)
    assert sum(c.node_size) == c.num_devices == len(c.device_node)
    assert c.device_node == sorted(c.device_node)


@pytest.mark.parametrize("make", [mixed, lambda: preset("dgx-h100", nodes=16), lambda: preset("philly")],
                         ids=["mixed", "dgx-h100", "philly"])
def test_racks_number_from_zero_and_hold_machines_of_one_pool(make: Callable[[], Cluster]) -> None:
    c = make()
    assert sorted(set(c.node_rack)) == list(range(c.num_racks))
    for r in range(c.num_racks):
        assert len({c.node_pool[n] for n in range(c.num_nodes) if c.node_rack[n] == r}) == 1


def test_philly_graph_rack_count() -> None:
    c = preset("philly")
    assert c.num_racks == math.ceil(321 / 32) + math.ceil(231 / 32)


# ----------------------------------------------------------------------------- FreeDevices


def test_free_devices_start_all_free() -> None:
    c = mixed()
    free = FreeDevices(c)
    assert free.total == c.num_devices
    assert free.pool_free == [40, 12, 4]
    assert all(free.is_free(d) for d in range(c.num_devices))
    assert free.free_on(5) == tuple(c.devices_of_node(5))
    assert list(free.nodes_with(1, at_least=4)) == [5, 6, 7]


def test_take_and_give() -> None:
    c = mixed()
    free = FreeDevices(c)
    free.take([0, 3, 8])
    assert not free.is_free(0) and not free.is_free(3) and not free.is_free(8)
    assert free.is_free(1) and free.is_free(9)
    assert free.total == c.num_devices - 3
    assert free.pool_free == [37, 12, 4]
    assert free.free_on(0) == (1, 2, 4, 5, 6, 7)
    assert list(free.nodes_with(0, at_least=8)) == [2, 3, 4]
    assert list(free.nodes_with(0, at_least=7)) == [1, 2, 3, 4]
    assert free.lowest_node_with(0, exactly=6) == 0
    assert free.lowest_node_with(0, exactly=5) == -1
    free.give([3, 0])
    assert free.free_on(0) == (0, 1, 2, 3, 4, 5, 6, 7)
    free.give([8])
    assert free.total == c.num_devices and free.pool_free == [40, 12, 4]


def test_taking_a_busy_device_raises_and_giving_a_free_one_raises() -> None:
    free = FreeDevices(mixed())
    free.take([10])
    with pytest.raises(ValueError, match="10"):
        free.take([10])
    with pytest.raises(ValueError, match="11"):
        free.give([11])
    assert not free.is_free(10) and free.is_free(11)


def test_copy_is_independent() -> None:
    c = mixed()
    original = FreeDevices(c)
    original.take([0])
    trial = original.copy()
    assert [trial.is_free(d) for d in range(c.num_devices)] == [original.is_free(d) for d in range(c.num_devices)]
    trial.take([1, 40])
    assert original.is_free(1) and original.is_free(40)
    assert original.total == c.num_devices - 1 and trial.total == c.num_devices - 3
    original.take([2])
    assert trial.is_free(2)
    trial.give([0])  # busy in the original, freed only in the trial
    assert not original.is_free(0) and trial.is_free(0)
    assert original.pool_free == [38, 12, 4] and trial.pool_free == [39, 11, 4]
    assert original.free_on(0) == (1, 3, 4, 5, 6, 7)
    assert trial.free_on(0) == (0, 2, 3, 4, 5, 6, 7)


# ----------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"nodes": 0}, r"nodes must be a positive integer, got 0"),
    ({"nodes": -2}, r"nodes must be a positive integer"),
    ({"nodes": 2.5}, r"nodes must be a positive integer"),
    ({"nodes": True}, r"nodes must be a positive integer"),
    ({"devices_per_node": 65}, r"devices_per_node 65 .*64"),
    ({"devices_per_node": 0}, r"devices_per_node must be a positive integer"),
    ({"nodes_per_rack": 0}, r"nodes_per_rack must be a positive integer"),
])
def test_bad_pool_spec(kwargs: dict[str, object], pattern: str) -> None:
    spec = {"device": "h100", "nodes": 2, "devices_per_node": 8, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        PoolSpec(**spec)  # type: ignore[arg-type]


def test_sixty_four_devices_per_node_is_allowed() -> None:
    c = Cluster([PoolSpec("tpu-v4", nodes=2, devices_per_node=64)])
    assert c.num_devices == 128
    free = FreeDevices(c)
    free.take(range(64, 128))
    assert list(free.nodes_with(0, at_least=64)) == [0]


def test_unknown_device_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        Cluster([PoolSpec("h1000", nodes=1, devices_per_node=8)])
    message = str(info.value)
    assert "h1000" in message
    for name in DEVICES:
        assert name in message
    assert "did you mean" in message


def test_cluster_level_errors() -> None:
    with pytest.raises(ConfigError, match="at least one pool"):
        Cluster([])
    with pytest.raises(ConfigError, match="unique"):
        Cluster([PoolSpec("h100", 1, 8, name="x"), PoolSpec("a100", 1, 8, name="x")])
    # two unnamed pools of one device type get distinct names
    c = Cluster([PoolSpec("h100", 1, 8), PoolSpec("h100", 2, 4)])
    assert len({p.name for p in c.pools}) == 2


def test_bad_pools_from_config_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"nodes must be a positive integer, got 0"):
        build_cluster(load_config({"cluster": {"preset": None, "pools": [{"device": "h100", "nodes": 0}]}}).cluster)
    with pytest.raises(ConfigError, match=r"64"):
        build_cluster(load_config({"cluster": {"preset": None,
                                               "pools": [{"device": "h100", "devices_per_node": 65}]}}).cluster)
    with pytest.raises(UnknownNameError, match=r"valid: .*h100-sxm"):
        build_cluster(load_config({"cluster": {"preset": None, "pools": [{"device": "h1000"}]}}).cluster)
    with pytest.raises(ConfigError, match=r"preset or pools|preset: null"):
        build_cluster(load_config({"cluster": {"preset": "dgx-h100", "pools": [{"device": "h100"}]}}).cluster)


def test_exact_counts_follow_every_take_and_give() -> None:
    # lowest_node_with trusts ``exact`` to skip pools with no node of that free count: it must equal the
    # histogram of the free counts after any sequence of takes and gives, in copies and scratch copies too
    c = mixed()
    rng = np.random.default_rng(0)
    free = FreeDevices(c)

    def histogram(state: FreeDevices) -> list[list[int]]:
        out = [[0] * (pool.devices_per_node + 1) for pool in c.pools]
        for node in range(c.num_nodes):
            out[c.node_pool[node]][state.count[node]] += 1
        return out

    for _ in range(300):
        device = int(rng.integers(c.num_devices))
        (free.give if not free.is_free(device) else free.take)([device])
        assert free.exact == histogram(free)
        for k in range(9):
            expected = next((n for n in c.pool_nodes[0] if free.count[n] == k), -1)
            assert free.lowest_node_with(0, k) == expected
    for state in (free.copy(), free.scratch()):
        device = next(d for d in range(c.num_devices) if state.is_free(d))
        state.take([device])
        assert state.exact == histogram(state) and free.exact == histogram(free)


def test_a_gang_taken_or_given_at_once_changes_what_its_devices_one_by_one_would() -> None:
    # take and give change a gang's devices node by node (one mask, count and histogram change per node): the state
    # after a gang, devices in any order over several nodes, must be the state after its devices one at a time; a
    # gang with a busy (or already free) device raises and leaves the devices before it changed, as one by one would
    c = mixed()
    rng = np.random.default_rng(1)
    batched, single = FreeDevices(c), FreeDevices(c)

    def state(free: FreeDevices) -> tuple[object, ...]:
        return list(free.mask), bytes(free.count), free.exact, free.pool_free

    for _ in range(400):
        pool = int(rng.integers(len(c.pools)))
        nodes = c.pool_nodes[pool]
        first = c.node_first_device[nodes.start]
        devices = [int(d) for d in rng.choice(np.arange(first, first + c.pool_devices[pool]),
                                              size=int(rng.integers(1, min(12, c.pool_devices[pool]) + 1)),
                                              replace=False)]
        taking = bool(rng.integers(2))
        if rng.random() < 0.3:  # a duplicate device: the second time it is busy (taking) or already free (giving)
            devices.insert(int(rng.integers(1, len(devices) + 1)), devices[0])
        reference: Exception | None = None
        for d in devices:
            try:
                (single.take if taking else single.give)([d])
            except ValueError as exc:
                reference = exc
                break
        if reference is None:
            (batched.take if taking else batched.give)(devices)
        else:
            with pytest.raises(ValueError, match=str(reference)):
                (batched.take if taking else batched.give)(devices)
        assert state(batched) == state(single)


def test_a_scratch_copy_is_independent_but_refuses_use_after_its_source_changed() -> None:
    c = mixed()
    original = FreeDevices(c)
    original.take([0])
    scratch = original.scratch()
    scratch.take([1, 40])
    assert original.is_free(1) and original.is_free(40) and not scratch.is_free(1)
    assert scratch.free_on(0) == (2, 3, 4, 5, 6, 7) and original.free_on(0) == (1, 2, 3, 4, 5, 6, 7)
    assert list(scratch.mask)[:2] == [scratch.mask[0], 0b11111111] and scratch.mask[0] == 0b11111100
    nested = scratch.scratch()  # a scratch of a scratch sees the first one's changes, and changes only itself
    nested.give([1])
    assert nested.is_free(1) and not scratch.is_free(1)
    original.take([2])  # the source changed: the scratch copies are stale
    with pytest.raises(RuntimeError, match="scratch copy"):
        scratch.take([3])
    with pytest.raises(RuntimeError, match="scratch copy"):
        nested.give([40])
    full = scratch.copy()  # a full copy of a scratch one is a plain, independent state
    assert isinstance(full.mask, list) and full.free_on(0) == (2, 3, 4, 5, 6, 7)
