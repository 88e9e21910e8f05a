"""``sim.serving.calibrate`` and ``gpusim calibrate``: the factors of the step-time model fitted to a profile of
measured steps. The profiles are sampled from the model itself with known factors (different from the
defaults), so a correct fit recovers them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.errors import ConfigError
from sim.platform.hardware import DeviceSpec, get_device
from sim.serving.calibrate import VectorModel, calibrate
from sim.serving.profile import COLUMNS, read_profile, step_work
from sim.serving.step_factors import FACTORS, FRACTIONS, TIMES, StepFactors, default_step_factors
from sim.serving.step_time import StepCost
from workloads import LLMSpec, get_model

SETUPS = [("llama-3.1-8b", "h100"), ("opt-13b", "a100")]
PROMPTS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTEXTS = (128, 256, 512, 1024, 2048, 4096)  # per sequence


def _spec(model: str, device: str) -> tuple[LLMSpec, DeviceSpec]:
    spec = get_model(model)
    assert isinstance(spec, LLMSpec)
    return spec, get_device(device)


def _truth(device: DeviceSpec) -> StepFactors:
    """Known factors unlike the defaults: every fraction x 0.8, every time x 2."""
    base = default_step_factors(device.name)
    return base.replace({**{k: getattr(base, k) * 0.8 for k in FRACTIONS}, **{k: getattr(base, k) * 2 for k in TIMES}})


def _profile(model: LLMSpec, device: DeviceSpec, factors: StepFactors, *, prefill: bool = True,
             noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Steps timed by the model with ``factors``: prefills of 1-8 equal prompts of 32-4,096 tokens, decodes of
    1-256 sequences of 128-4,096 context tokens each; times x lognormal(0, ``noise``)."""
    cost = StepCost.for_replica(model, device, 1, factors)
    rows = []
    if prefill:
        for b in range(1, 9):
            for n in PROMPTS:
                rows.append(("prefill", b, b * n, b * n, cost.step(b * n, b * n * (n + 1) / 2, b * n, b) * 1e3))
    for batch in DECODE_BATCHES:
        for c in CONTEXTS:
            rows.append(("decode", batch, batch, batch * c, cost.decode_step(batch, batch * c) * 1e3))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if noise:
        frame["ms"] *= np.random.default_rng(seed).lognormal(0.0, noise, len(frame))
    return frame


def _predict_ms(model: LLMSpec, device: DeviceSpec, factors: StepFactors, profile: pd.DataFrame) -> np.ndarray:
    """Step times of ``profile``'s rows under ``factors``, from ``StepCost`` itself."""
    cost = StepCost.for_replica(model, device, 1, factors)
    work = step_work(profile)
    return np.array([cost.step(*args) for args in zip(*(w.tolist() for w in work), strict=True)]) * 1e3


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize(("model", "device", "devices"), [*((m, d, 1) for m, d in SETUPS), ("llama-3.1-8b", "h100", 4)])
def test_vector_model_equals_step_cost(model: str, device: str, devices: int) -> None:
    spec, dev = _spec(model, device)
    rng = np.random.default_rng(7)
    vector = VectorModel.build(spec, dev, devices)
    rows = _profile(spec, dev, default_step_factors(dev.name))
    work = step_work(rows)
    for _ in range(5):
        values = {k: float(rng.uniform(0.05, 1.0)) for k in FRACTIONS} | {k: float(rng.uniform(0, 5e-3)) for k in TIMES}
        cost = StepCost.for_replica(spec, dev, devices, StepFactors(**values))
        expected = np.array([cost.step(*args) for args in zip(*(w.tolist() for w in work), strict=True)])
        np.testing.assert_allclose(vector.seconds(values, *work), expected, rtol=1e-12)


def test_prefill_rows_are_equal_prompts() -> None:
    frame = pd.DataFrame([("prefill", 4, 400, 400, 1.0), ("decode", 3, 3, 900, 1.0)], columns=list(COLUMNS))
    tokens, attended, kv_read, sequences = step_work(frame)
    assert tokens.tolist() == [400, 3] and sequences.tolist() == [4, 3]
    assert attended.tolist() == [4 * 100 * 101 / 2, 900] and kv_read.tolist() == [400, 900]


# ----------------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize(("model", "device"), SETUPS)
def test_recovers_known_factors(model: str, device: str, tmp_path: Path) -> None:
    spec, dev = _spec(model, device)
    truth = _truth(dev)
    path = _write(tmp_path / "profile.csv", _profile(spec, dev, truth))
    result = calibrate(path, model, device)
    # layer_overhead and step_overhead only appear as n_layers * layer_overhead + step_overhead: one of them is
    # never determined by a profile; the other carries their sum
    assert result.unidentified == ("layer_overhead",)
    assert result.factors.layer_overhead == result.base.layer_overhead
    for key in result.fitted:
        if key != "step_overhead":
            assert getattr(result.factors, key) == pytest.approx(getattr(truth, key), rel=0.02), key
    fixed = spec.n_layers * result.factors.layer_overhead + result.factors.step_overhead
    assert fixed == pytest.approx(spec.n_layers * truth.layer_overhead + truth.step_overhead, rel=0.02)
    assert result.max_error < 0.05 and result.median_error <= result.max_error
    assert result.factors.source == f"calibrated to {path} ({len(result.table)} rows)"
    assert set(result.factors.assumed).isdisjoint(result.fitted)
    predicted = _predict_ms(spec, dev, result.factors, result.table)
    np.testing.assert_allclose(predicted, result.table["predicted_ms"], rtol=1e-9)
    assert np.abs(predicted / result.table["ms"] - 1).max() < 0.05


@pytest.mark.parametrize(("model", "device"), SETUPS)
def test_recovers_every_factor_when_layer_overhead_is_known(model: str, device: str) -> None:
    spec, dev = _spec(model, device)
    truth = _truth(dev)
    base = default_step_factors(dev.name).replace({"layer_overhead": truth.layer_overhead})
    result = calibrate(_profile(spec, dev, truth), spec, dev, fit=[k for k in FACTORS if k != "layer_overhead"],
                       base=base)
    assert result.unidentified == ()
    for key in FACTORS:
        assert getattr(result.factors, key) == pytest.approx(getattr(truth, key), rel=0.02), key


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("model", "device"), SETUPS)
def test_noisy_profile_recovers_step_times(model: str, device: str, seed: int) -> None:
    spec, dev = _spec(model, device)
    truth = _truth(dev)
    clean = _profile(spec, dev, truth)
    result = calibrate(_profile(spec, dev, truth, noise=0.03, seed=seed), spec, dev)
    predicted = _predict_ms(spec, dev, result.factors, clean)
    assert np.abs(predicted / clean["ms"].to_numpy() - 1).max() < 0.05
    assert 0.01 < result.median_error < 0.05  # the 3% noise itself: the fit does not chase it
    assert all(math.isfinite(u) and u >= 0 for u in result.uncertainty.values())


@pytest.mark.parametrize(("model", "device"), SETUPS)
def test_decode_only_profile_leaves_attention_compute_at_the_base(model: str, device: str) -> None:
    spec, dev = _spec(model, device)
    truth = _truth(dev)
    profile = _profile(spec, dev, truth, prefill=False)
    result = calibrate(profile, spec, dev)
    assert "attention_compute" in result.unidentified and "attention_compute" not in result.fitted
    assert result.factors.attention_compute == result.base.attention_compute
    assert set(result.unidentified) | set(result.fitted) == set(FACTORS)
    for key in result.unidentified:
        assert getattr(result.factors, key) == getattr(result.base, key)
    assert result.factors.attention_bandwidth == pytest.approx(truth.attention_bandwidth, rel=0.02)
    assert result.max_error < 0.05
    assert "attention_compute" not in yaml.safe_load(result.to_yaml())["step_model"]


SUBSET = {"attention_bandwidth": 0.5, "sequence_overhead": 50e-6}


@pytest.mark.parametrize("fit", [("attention_bandwidth", "sequence_overhead"), ("attention_bandwidth",)])
def test_fit_a_subset_holds_the_others(fit: tuple[str, ...]) -> None:
    spec, dev = _spec("llama-3.1-8b", "h100")
    default = default_step_factors(dev.name)
    truth = default.replace({key: SUBSET[key] for key in fit})
    result = calibrate(_profile(spec, dev, truth), spec, dev, fit=fit)
    assert result.fitted == fit and result.unidentified == ()
    for key in FACTORS:
        if key in fit:
            assert getattr(result.factors, key) == pytest.approx(SUBSET[key], rel=0.02)
        else:
            assert getattr(result.factors, key) == getattr(default, key)
    assert set(yaml.safe_load(result.to_yaml())["step_model"]) == set(fit)
    with pytest.raises(ConfigError, match=r"unknown factor 'linear_compte'.*did you mean 'linear_compute'"):
        calibrate(_profile(spec, dev, truth), spec, dev, fit=("linear_compte",))


def test_misfit_is_reported_not_hidden() -> None:
    """Fitting two factors while the others are far off: the error says so, and a factor the residuals leave
    uncertain to more than half its base value is not determined."""
    spec, dev = _spec("llama-3.1-8b", "h100")
    result = calibrate(_profile(spec, dev, _truth(dev)), spec, dev, fit=tuple(SUBSET))
    assert result.max_error > 0.2
    assert result.fitted == ("attention_bandwidth",) and result.unidentified == ("sequence_overhead",)


# ----------------------------------------------------------------------------------------------- bad profiles
GOOD = "prefill,1,512,512,40.5\n"
HEADER = "phase,batch_size,tokens,context,ms\n"
LEAD = "# measured on one H100\n\n"  # lines 1-2: the header is line 3, the first row line 4


@pytest.mark.parametrize(("content", "fragments"), [
    pytest.param(LEAD + "phase,batch_size,tokens,context\nprefill,1,512,512\n", ["line 3", "'ms'", "missing column"],
                 id="missing column"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,4,2048,nan\n", ["line 5", "field 'ms'", "finite"], id="NaN ms"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,4,2048,-3\n", ["line 5", "field 'ms'", ">= 0"], id="negative ms"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,4,2048,0\n", ["line 5", "field 'ms'", "> 0"], id="zero ms"),
    pytest.param(LEAD + HEADER + GOOD + "decoding,4,4,2048,12\n", ["line 5", "field 'phase'", "did you mean 'decode'"],
                 id="unknown phase"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,four,2048,12\n", ["line 5", "field 'tokens'", "'four'"],
                 id="text in a numeric column"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,,2048,12\n", ["line 5", "field 'tokens'", "missing value"],
                 id="empty field"),
    pytest.param(LEAD + HEADER + GOOD + "prefill,4,2,2,12\n", ["line 5", "field 'tokens'", "at least one"],
                 id="tokens below batch"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,8,2048,12\n", ["line 5", "field 'tokens'", "equal batch_size"],
                 id="decode tokens not batch"),
    pytest.param(LEAD + HEADER + GOOD + "decode,2.5,2.5,2048,12\n", ["line 5", "field 'batch_size'", "whole"],
                 id="fractional batch"),
    pytest.param(LEAD + HEADER + GOOD + "prefill,1,512,100,12\n", ["line 5", "field 'context'", "= tokens"],
                 id="prefill context not tokens"),
    pytest.param(LEAD + HEADER + GOOD + "decode,4,4,2048\n", ["line 5", "4 fields"], id="short row"),
    pytest.param(LEAD + HEADER + GOOD * 3, ["3 profile rows", "fitting 8 factors needs at least 8"], id="too few rows"),
    pytest.param(LEAD + "\n# nothing\n", ["empty profile"], id="no header"),
    pytest.param((LEAD + HEADER + GOOD).encode() + b"decode,4,4,2048,1\xb5s\n", ["line 5", "UTF-8", "0xb5"],
                 id="non-UTF-8"),
])
def test_bad_profile_names_file_line_and_field(content: str | bytes, fragments: list[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_profile(path, min_rows=8, purpose="fitting 8 factors")
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_profile_format_details(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("\ufeff# comment\n Phase , batch_size,tokens,context,ms,gpu\n\nPREFILL,2,1024,1024,80.5,h100\r\n"
                    "# another comment\ndecode,8,8,8192,15,h100\n", encoding="utf-8")
    frame = read_profile(path, min_rows=2)
    assert frame["line"].tolist() == [4, 6]
    assert frame["phase"].tolist() == ["prefill", "decode"]
    assert frame["batch_size"].tolist() == [2, 8] and frame["ms"].tolist() == [80.5, 15.0]
    assert list(frame.columns) == ["line", *COLUMNS]
    with pytest.raises(ConfigError, match="cannot read"):
        read_profile(tmp_path / "missing.csv")


def test_dataframe_profile_errors_name_the_row() -> None:
    spec, dev = _spec("llama-3.1-8b", "h100")
    frame = _profile(spec, dev, _truth(dev))
    frame.loc[3, "ms"] = float("nan")
    with pytest.raises(ConfigError, match=r"profile, row 4, field 'ms'"):
        calibrate(frame, spec, dev)
    with pytest.raises(ConfigError, match="missing column"):
        calibrate(frame.drop(columns="context"), spec, dev)


# ----------------------------------------------------------------------------------------------- the command
def test_cli_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, dev = _spec("llama-3.1-8b", "h100")
    profile = _profile(spec, dev, _truth(dev)).iloc[::3]
    path = _write(tmp_path / "profile.csv", profile)
    out = tmp_path / "step_model.yaml"
    assert main(["calibrate", str(path), "--model", "llama-3.1-8b", "--device", "h100", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for key in FACTORS:
        assert key in printed
    assert "max" in printed and "median" in printed and "%" in printed
    assert sum(line.split()[1:2] in (["prefill"], ["decode"]) for line in printed.splitlines()) == len(profile)
    loaded = yaml.safe_load(out.read_text())
    assert list(loaded) == ["step_model"]
    expected = calibrate(path, spec, dev)
    assert set(loaded["step_model"]) == set(expected.fitted) and expected.fitted
    assert all(isinstance(v, float) for v in loaded["step_model"].values())
    factors = default_step_factors(dev.name).replace(loaded["step_model"])  # what a service's step_model does
    predicted = _predict_ms(spec, dev, factors, profile)
    assert np.abs(predicted / profile["ms"].to_numpy() - 1).max() < 0.05

    subset = _write(tmp_path / "subset.csv", _profile(spec, dev, default_step_factors(dev.name).replace(SUBSET)))
    assert main(["calibrate", str(subset), "--model", "llama-3.1-8b", "--device", "h100", "--fit",
                 "attention_bandwidth,sequence_overhead"]) == 0
    printed = capsys.readouterr().out
    assert "step_model:" in printed
    fragment = yaml.safe_load(printed[printed.index("step_model:"):])
    assert fragment["step_model"] == pytest.approx(SUBSET, rel=0.02)


def test_cli_bad_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + GOOD + "decode,4,4,2048,oops\n")
    assert main(["calibrate", str(path), "--model", "llama-3.1-8b", "--device", "h100"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 3" in err and "'ms'" in err and len(err.strip().splitlines()) == 1
    assert main(["calibrate", str(path), "--model", "llama-3.1-8b", "--device", "h900"]) == 2
    assert "h900" in capsys.readouterr().err
