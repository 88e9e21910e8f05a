"""``load_gavel_colocations`` and ``colocation_slowdown``: the co-located throughputs of Gavel's throughputs file,
checked against counts and a figure read from the file by hand, the file's symmetry, and bad input named."""

from __future__ import annotations

import collections
import json

import pytest

from workloads import WorkloadError, colocation_slowdown, load_gavel_colocations, load_gavel_throughputs

RESNET50_64 = ("ResNet-50 (batch size 64)", 1)
TRANSFORMER_32 = ("Transformer (batch size 32)", 1)


@pytest.fixture(scope="module")
def table():
    return load_gavel_colocations()


def test_pairs_per_device(table):
    # 83 (job type, gang) keys per device; each paired with every key of its gang size, itself included:
    # 26 job types at gang 1 (26 * 26 = 676 ordered pairs) and 19 at gangs 2, 4 and 8 (19 * 19 = 361 each)
    assert sorted(table) == ["k80", "p100", "v100"]
    for device in table:
        pairs = table[device]
        assert len(pairs) == 1_759
        assert len({frozenset(pair) for pair in pairs}) == 921
        assert sum(a == b for a, b in pairs) == 83
        assert all(a[1] == b[1] for a, b in pairs)
        assert collections.Counter(a[1] for a, _ in pairs) == {1: 676, 2: 361, 4: 361, 8: 361}
    not_packed = {device: sum(value == (0.0, 0.0) for value in table[device].values()) for device in table}
    assert not_packed == {"k80": 1_170, "p100": 1_103, "v100": 1_123}


def test_the_file_is_symmetric(table):
    # the entry of (a, b) is the entry of (b, a) reversed, exactly, on every device type
    for device in table:
        for (a, b), (rate_a, rate_b) in table[device].items():
            assert table[device][(b, a)] == (rate_b, rate_a)


def test_a_pair_read_from_the_file_by_hand(table):
    # simulation_throughputs.json, "v100", key "('ResNet-50 (batch size 64)', 1)": "null" 4.394774823323071 and
    # "('Transformer (batch size 32)', 1)": [2.48752036332518, 2.0519338792685047]; the Transformer alone:
    # 10.620893339463915
    assert table["v100"][(RESNET50_64, TRANSFORMER_32)] == (2.48752036332518, 2.0519338792685047)
    assert table.alone["v100"][RESNET50_64] == 4.394774823323071
    assert colocation_slowdown(table, "v100", RESNET50_64, TRANSFORMER_32) == pytest.approx(
        (2.48752036332518 / 4.394774823323071, 2.0519338792685047 / 10.620893339463915), rel=1e-15)
    assert colocation_slowdown(table, "v100", TRANSFORMER_32, RESNET50_64) == pytest.approx((0.19319786, 0.56601771))
    assert table.alone == load_gavel_throughputs()


def test_pairs_gavel_did_not_pack_keep_nothing(table):
    # "('ResNet-50 (batch size 64)', 1)" with "('ResNet-50 (batch size 128)', 1)" is [0, 0] on the V100
    assert colocation_slowdown(table, "v100", RESNET50_64, ("ResNet-50 (batch size 128)", 1)) == (0.0, 0.0)


def test_slowdown_errors_name_what_is_missing(table):
    with pytest.raises(WorkloadError, match=r"gavel_simulation_throughputs.*v100.*same gang size"):
        colocation_slowdown(table, "v100", RESNET50_64, ("Transformer (batch size 32)", 2))
    with pytest.raises(WorkloadError, match=r"no co-locations for device type 'a100' \(has k80, p100, v100\)"):
        colocation_slowdown(table, "a100", RESNET50_64, TRANSFORMER_32)
    # ResNet-50 at batch size 128 on 2 GPUs does not fit a K80 (zero throughput alone)
    big = ("ResNet-50 (batch size 128)", 2)
    with pytest.raises(WorkloadError, match=r"k80: \('ResNet-50 \(batch size 128\)', 2\) does not run alone"):
        colocation_slowdown(table, "k80", big, ("ResNet-18 (batch size 16)", 2))


def _file(tmp_path, entry):
    key = "('LM (batch size 5)', 1)"
    good = {key: {"null": 2.0, key: [1.0, 1.0]}}
    raw = {"k80": good, "p100": good, "v100": {key: entry}}
    path = tmp_path / "throughputs.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(("entry", "message"), [
    ({"null": 2.0, "('LM (batch size 5)', 1)": [1.0]}, r"with \"\('LM \(batch size 5\)', 1\)\": expected \[this job's"),
    ({"null": 2.0, "('LM (batch size 5)', 1)": [1.0, -1.0]}, r"expected \[this job's, the other job's\] throughputs"),
    ({"null": 2.0, "LM 5": [1.0, 1.0]}, r"'LM 5' is not a \(job type, scale factor\) key"),
    ({"alone": 2.0}, r"is not a \(job type, scale factor\) key with a throughput >= 0 under 'null'"),
])
def test_bad_input_names_file_device_and_key(tmp_path, entry, message):
    path = _file(tmp_path, entry)
    with pytest.raises(WorkloadError, match=message) as caught:
        load_gavel_colocations(path)
    assert str(caught.value).startswith(f"{path}: v100: ") and "('LM (batch size 5)', 1)" in str(caught.value)


def test_a_plain_file_reads_and_names_itself(tmp_path):
    path = _file(tmp_path, {"null": 2.0, "('LM (batch size 5)', 1)": [1.5, 1.5]})
    table = load_gavel_colocations(path)
    pair = (("LM (batch size 5)", 1), ("LM (batch size 5)", 1))
    assert table["v100"] == {pair: (1.5, 1.5)} and table.source == str(path)
    assert colocation_slowdown(table, "v100", *pair) == (0.75, 0.75)
