"""The device catalog against docs/REFERENCE.md's device table and the catalog's own contracts."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest

from sim.errors import UnknownNameError
from sim.platform.hardware import (
    DEVICES,
    PRECISIONS,
    DeviceSpec,
    catalog_table,
    get_device,
    with_overrides,
)

GiB = 2**30

# REFERENCE.md "Device specifications": device, (format, bf16/fp16 figure), (format, int8/fp8 figure) or None,
# memory bytes, HBM bytes/s, scale-up kind, scale-up bytes/s (None: "PCIe" without a figure), TDP W (None: "-").
REFERENCE_TABLE = [
    ("k80", ("fp32", 4.4e12), None, 12e9, 0.24e12, "pcie", None, 150),
    ("p100-sxm2", ("fp16", 21.2e12), None, 16e9, 0.73e12, "nvlink1", 160e9, 300),
    ("v100-sxm2", ("fp16", 125e12), None, 16e9, 0.90e12, "nvlink2", 300e9, 300),
    ("v100-sxm2-32gb", ("fp16", 125e12), None, 32e9, 0.90e12, "nvlink2", 300e9, 300),
    ("t4", ("fp16", 65e12), ("int8", 130e12), 16e9, 0.32e12, "pcie", None, 70),
    ("a100-sxm-80gb", ("bf16", 312e12), ("int8", 624e12), 80e9, 2.04e12, "nvlink3", 600e9, 400),
    ("h100-sxm", ("bf16", 989e12), ("fp8", 1979e12), 80e9, 3.35e12, "nvlink4", 900e9, 700),
    ("h200-sxm", ("bf16", 989e12), ("fp8", 1979e12), 141e9, 4.8e12, "nvlink4", 900e9, 700),
    ("tpu-v4", ("bf16", 275e12), ("int8", 275e12), 32 * GiB, 1.2e12, "ici-3d-torus", None, None),
    ("tpu-v5e", ("bf16", 197e12), ("int8", 393e12), 16e9, 0.82e12, "ici-2d-torus", None, None),
    ("tpu-v5p", ("bf16", 459e12), ("int8", 918e12), 95 * GiB, 2.77e12, "ici-3d-torus", None, None),
]


@pytest.mark.parametrize(("name", "high", "low", "memory", "bandwidth", "scale_up", "link", "tdp"), REFERENCE_TABLE)
def test_reference_table_figures_exactly(name, high, low, memory, bandwidth, scale_up, link, tdp):
    spec = DEVICES[name]
    assert spec.peak_flops[high[0]] == high[1]
    if "bf16" in spec.peak_flops and "fp16" in spec.peak_flops:  # the table's "bf16/fp16" is one figure
        assert spec.peak_flops["bf16"] == spec.peak_flops["fp16"]
    if low is not None:
        assert spec.peak_flops[low[0]] == low[1]
    assert spec.memory_bytes == memory
    assert spec.memory_bandwidth == bandwidth
    assert spec.scale_up == scale_up
    if link is not None:
        assert spec.scale_up_bandwidth == link
    if tdp is not None:
        assert spec.tdp_watts == tdp
        assert "tdp_watts" not in spec.assumptions
    else:
        assert "tdp_watts" in spec.assumptions


def test_training_peak_is_the_tables_first_column():
    for name, high, *_ in REFERENCE_TABLE:
        assert DEVICES[name].training_peak == high[1], name


def test_no_bf16_on_pre_ampere_gpus():
    for name in ("k80", "p40", "p100-sxm2", "v100-sxm2", "t4"):
        assert not DEVICES[name].supports("bf16"), name


def test_ridge_points_quoted_in_reference():
    # REFERENCE.md "Inference step time": H100 SXM ~295 FLOP/byte, A100 80 GB ~153.
    assert round(get_device("h100-sxm").ridge_point()) == 295
    assert round(get_device("a100-sxm-80gb").ridge_point()) == 153
    h100 = get_device("h100-sxm")
    assert h100.ridge_point() == h100.peak("bf16") / h100.memory_bandwidth


def test_decode_bound_of_8b_model_on_h100():
    # REFERENCE.md: an 8B bf16 decode step on one H100 takes at least 16e9 / 3.35e12 ~ 4.8 ms.
    assert round(16e9 / get_device("h100").memory_bandwidth * 1e3, 1) == 4.8


def test_bf16_fallbacks():
    assert get_device("k80").peak("bf16") == 4.4e12
    assert get_device("k80").training_peak == 4.4e12
    assert get_device("p40").peak("bf16") == 11.8e12  # no fast fp16: straight to fp32
    assert get_device("p100").peak("bf16") == 21.2e12
    assert get_device("v100").peak("bf16") == 125e12
    assert get_device("t4").peak("bf16") == 65e12


def test_other_fallbacks_and_case():
    assert get_device("a100").peak("fp8") == 312e12  # no fp8 on Ampere: runs at its 16-bit rate
    assert get_device("v100").peak("int8") == 125e12
    assert get_device("p40").peak("int8") == 47e12
    assert get_device("tpu-v4").peak("fp16") == 275e12
    assert get_device("h100").peak("FP8") == 1979e12
    assert get_device("h100").peak() == 989e12


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(ValueError, match="fp4") as info:
        get_device("h100").peak("fp4")
    for precision in PRECISIONS:
        assert precision in str(info.value)


def test_precision_without_figure_or_fallback_is_an_error():
    with pytest.raises(ValueError, match="fp32"):
        get_device("tpu-v5p").peak("fp32")


def test_unknown_device_names_valid_ones_and_closest():
    with pytest.raises(UnknownNameError) as info:
        get_device("H10")
    message = str(info.value)
    assert "did you mean 'h100-sxm'" in message
    for name in DEVICES:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_unknown_device_without_close_match():
    with pytest.raises(ValueError, match="valid: ") as info:
        get_device("abacus")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("h100", "h100-sxm"), ("a100", "a100-sxm-80gb"), ("v100", "v100-sxm2"), ("p100", "p100-sxm2"),
        ("h200", "h200-sxm"), ("v4", "tpu-v4"), ("v5e", "tpu-v5e"), ("v5p", "tpu-v5p"),
        ("H100-SXM", "h100-sxm"), ("  A100_SXM_80GB ", "a100-sxm-80gb"), ("TPU-V5E", "tpu-v5e"), ("K80", "k80"),
    ],
)
def test_aliases_and_case_resolve(alias, name):
    assert get_device(alias) is DEVICES[name]


def test_every_entry_names_its_assumptions():
    fields = {f.name for f in dataclasses.fields(DeviceSpec)}
    for name, spec in DEVICES.items():
        assert spec.name == name
        assert spec.assumptions, name
        assert {"price_per_hour", "idle_watts"} <= set(spec.assumptions), name
        assert set(spec.assumptions) <= fields, name
        assert spec.notes, name
        if spec.vendor == "google":
            assert "tdp_watts" in spec.assumptions, name


def test_every_entry_is_physical():
    for name, spec in DEVICES.items():
        assert 0 < spec.idle_watts < spec.tdp_watts, name
        assert spec.price_per_hour > 0, name
        assert spec.memory_bytes > 0 and spec.memory_bandwidth > 0 and spec.scale_up_bandwidth > 0, name
        assert set(spec.peak_flops) <= set(PRECISIONS), name
        assert spec.training_peak > 0, name
        assert spec.vendor in ("nvidia", "google"), name


def test_philly_device_assumption_is_named():
    assert get_device("p40").memory_bytes == 24e9
    assert get_device("k80").memory_bytes == 12e9
    assert "philly" in get_device("p40").notes.lower()
    assert "philly" in get_device("k80").notes.lower()


def test_overrides_remove_field_from_assumptions():
    h100 = get_device("h100")
    cheap = with_overrides(h100, price_per_hour=2.1)
    assert cheap.price_per_hour == 2.1
    assert "price_per_hour" not in cheap.assumptions
    assert "idle_watts" in cheap.assumptions
    assert h100.price_per_hour != 2.1 and "price_per_hour" in h100.assumptions
    assert cheap.peak_flops == h100.peak_flops
    both = with_overrides(h100, idle_watts=70, price_per_hour=3.0)
    assert both.assumptions == ()
    kept = with_overrides(h100, price_per_hour=2.1, assumptions=("price_per_hour",))
    assert kept.assumptions == ("price_per_hour",)


def test_overrides_validate():
    with pytest.raises(UnknownNameError, match="did you mean 'price_per_hour'"):
        with_overrides(get_device("h100"), price_per_houre=2.0)
    with pytest.raises(ValueError, match="idle_watts"):
        with_overrides(get_device("t4"), idle_watts=100)
    with pytest.raises(ValueError, match="peak_flops"):
        with_overrides(get_device("t4"), peak_flops={"fp4": 1e15})


def test_specs_and_catalog_are_read_only():
    h100 = get_device("h100")
    with pytest.raises(TypeError):
        h100.peak_flops["bf16"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h100.tdp_watts = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEVICES["mine"] = h100  # type: ignore[index]


def test_specs_pickle_and_hash():
    for spec in DEVICES.values():
        copy = pickle.loads(pickle.dumps(spec))
        assert copy == spec and hash(copy) == hash(spec)
        assert copy.peak("bf16") == spec.peak("bf16")
    assert len({*DEVICES.values()}) == len(DEVICES)


def test_catalog_table():
    table = catalog_table()
    assert list(table["name"]) == list(DEVICES)
    row = table.set_index("name").loc["h100-sxm"]
    assert row["training_tflops"] == 989
    assert row["fp8_tflops"] == 1979
    assert row["memory_gb"] == 80
    assert row["memory_tb_s"] == 3.35
    assert row["tdp_w"] == 700
    assert "price_per_hour" in row["assumed"]
    k80 = table.set_index("name").loc["k80"]
    assert k80["training_tflops"] == pytest.approx(4.4)
    assert math.isnan(k80["bf16_tflops"])
    assert list(catalog_table(["h100", get_device("t4")])["name"]) == ["h100-sxm", "t4"]
