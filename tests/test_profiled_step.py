"""A service that times its steps from a measured profile table (sim.serving.profiled_step)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import run_config
from sim.platform.hardware import get_device
from sim.serving.profiled_step import ProfiledStepCost
from sim.serving.service import ContinuousBatching
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import StepCost
from workloads.models import get_model

A100, H100 = get_device("a100"), get_device("h100")
OPT13B = get_model("opt-13b")


def base_cost(device=A100, model=OPT13B, **overrides: float) -> StepCost:
    return StepCost.for_replica(model, device, 1, default_step_factors(device.name).replace(overrides))


def profile_of(truth: StepCost, batches=(1, 8, 32, 128), contexts=(256, 2048), prompts=(128, 512, 2048, 8192)
               ) -> pd.DataFrame:
    """Rows of a profile measured on a replica whose true step times are ``truth``'s."""
    rows = []
    for b in batches:
        for c in contexts:
            rows.append(("decode", b, b, b * c, truth.decode_step(b, b * c) * 1e3))
    for p in prompts:
        rows.append(("prefill", 1, p, p, truth.step(p, p * (p + 1) / 2, p, 1) * 1e3))
    return pd.DataFrame(rows, columns=["phase", "batch_size", "tokens", "context", "ms"])


# An engine unlike the defaults: half the GEMM efficiency, twice the step overhead, slower attention.
TRUTH = base_cost(linear_compute=0.4, linear_bandwidth=0.5, step_overhead=6e-3, attention_bandwidth=0.4)


def test_profiled_points_take_their_measured_times() -> None:
    profile = profile_of(TRUTH)
    cost = ProfiledStepCost.from_profile(base_cost(), profile)
    for row in profile.itertuples():
        if row.phase == "decode":
            got = cost.decode_step(row.batch_size, row.context)
        else:
            got = cost.step(row.tokens, row.tokens * (row.tokens + 1) / 2, row.tokens, 1)
        assert got * 1e3 == pytest.approx(row.ms, rel=1e-9)


@pytest.mark.parametrize(("batch", "context_each"), [(4, 1000), (16, 512), (64, 3000), (100, 256)])
def test_decode_between_profiled_points_follows_the_engine(batch: int, context_each: int) -> None:
    # The table knows 4 batch sizes; the engine's time at others is interpolated: within 3% of the truth, while
    # the factor model alone (the defaults) is off by far more.
    cost = ProfiledStepCost.from_profile(base_cost(), profile_of(TRUTH))
    truth = TRUTH.decode_step(batch, batch * context_each)
    assert cost.decode_step(batch, batch * context_each) == pytest.approx(truth, rel=0.03)
    assert abs(base_cost().decode_step(batch, batch * context_each) / truth - 1) > 0.15


@pytest.mark.parametrize(("prompts", "tokens_each", "tolerance"), [
    (1, 300, 0.05), (1, 1000, 0.05), (1, 4000, 0.05),
    (4, 700, 0.10),  # a shape the table lacks (it profiled single prompts): the ratio of 2,800-token prompts
])
def test_prefill_between_profiled_points_follows_the_engine(prompts: int, tokens_each: int, tolerance: float) -> None:
    cost = ProfiledStepCost.from_profile(base_cost(), profile_of(TRUTH))
    work = (prompts * tokens_each, prompts * tokens_each * (tokens_each + 1) / 2, prompts * tokens_each, prompts)
    assert cost.step(*work) == pytest.approx(TRUTH.step(*work), rel=tolerance)


def test_decode_runs_keep_their_closed_forms() -> None:
    cost = ProfiledStepCost.from_profile(base_cost(), profile_of(TRUTH))
    for batch in (3, 8, 50, 300):  # inside the table, at a profiled size, between, beyond
        context, steps = 700.0 * batch, 40
        by_step = sum(cost.decode_step(batch, context + j * batch) for j in range(steps))
        assert cost.decode_run(batch, context, steps) == pytest.approx(by_step, rel=1e-12)
        half = cost.decode_run(batch, context, 17)
        assert cost.decode_steps_within(batch, context, half, steps) == 17
        assert cost.decode_steps_within(batch, context, math.nextafter(half, 0), steps) == 16


def test_beyond_the_table_the_model_is_scaled_to_meet_its_edge() -> None:
    cost = ProfiledStepCost.from_profile(base_cost(), profile_of(TRUTH, batches=(8, 32)))
    for edge, outside in ((8, 7), (32, 33)):
        inside = cost.decode_step(edge, edge * 1000)
        beyond = cost.decode_step(outside, outside * 1000)
        assert beyond == pytest.approx(inside, rel=0.05)  # continuous: one sequence more or less moves it little
    # far beyond, the factor model's shape: the ratio to the base model stays the edge's
    base = base_cost()
    ratio_edge = cost._decode_line(32)[0] / base._decode_line(32)[0]
    assert cost._decode_line(256)[0] / base._decode_line(256)[0] == pytest.approx(ratio_edge, rel=1e-12)
    # prefill beyond the longest profiled prompt: the model times the last ratio
    long = (16384, 16384 * 16385 / 2, 16384, 1)
    last = (8192, 8192 * 8193 / 2, 8192, 1)
    assert cost.step(*long) / base.step(*long) == pytest.approx(cost.step(*last) / base.step(*last), rel=1e-12)


def test_one_context_per_batch_takes_the_models_context_slope() -> None:
    base = base_cost()
    cost = ProfiledStepCost.from_profile(base, profile_of(TRUTH, contexts=(1000,)))
    a, b = cost._decode_line(8)
    assert b == pytest.approx(max(base.attention_per_pair, base.kv_read_per_token), rel=1e-12)
    assert (a + b * 8000) == pytest.approx(TRUTH.decode_step(8, 8000), rel=1e-12)


def test_a_phase_missing_from_the_profile_keeps_the_factor_model() -> None:
    base = base_cost()
    decode_only = profile_of(TRUTH)
    decode_only = decode_only[decode_only["phase"] == "decode"]
    cost = ProfiledStepCost.from_profile(base, decode_only)
    work = (1024, 1024 * 1025 / 2, 1024, 1)
    assert cost.step(*work) == base.step(*work)
    prefill_only = profile_of(TRUTH)
    prefill_only = prefill_only[prefill_only["phase"] == "prefill"]
    cost = ProfiledStepCost.from_profile(base, prefill_only)
    assert cost.decode_step(16, 16000) == pytest.approx(base.decode_step(16, 16000), rel=1e-12)


def test_noisy_decode_times_fall_back_to_sane_lines() -> None:
    rows = pd.DataFrame([("decode", 8, 8, 800, 30.0), ("decode", 8, 8, 8000, 29.0),  # falls with the context
                         ("decode", 16, 16, 1600, 20.0), ("decode", 16, 16, 16000, 300.0)],  # crosses zero
                        columns=["phase", "batch_size", "tokens", "context", "ms"])
    cost = ProfiledStepCost.from_profile(base_cost(), rows)
    assert cost._decode_line(8) == (pytest.approx(0.0295), 0.0)
    a, b = cost._decode_line(16)
    assert a == 0.0 and b > 0
    assert all(cost.decode_step(12, c) > 0 for c in (0, 100, 10_000))


# ----------------------------------------------------------------------------- a measured engine (DistServe)
# DistServe's fitted latency model of its own engine, OPT-13B on one A100 (the coefficients tests/test_step_time.py
# cites): a table sampled from it at a few points must reproduce it at points not sampled, whatever the factors.
PREFILL = (18.1025, 0.101912, 7.12226e-06)
DECODE = (19.9347, 0.000626936, 0.0385070)


def distserve_decode_ms(batch: int, context: float) -> float:
    return DECODE[0] + DECODE[1] * context + DECODE[2] * batch


def distserve_prefill_ms(prompt: int) -> float:
    return PREFILL[0] + PREFILL[1] * prompt + PREFILL[2] * prompt**2


def distserve_profile() -> pd.DataFrame:
    rows = [("decode", b, b, b * c, distserve_decode_ms(b, b * c)) for b in (1, 16, 64) for c in (256, 1536)]
    rows += [("prefill", 1, p, p, distserve_prefill_ms(p)) for p in (128, 512, 1024, 2048, 4096)]
    return pd.DataFrame(rows, columns=["phase", "batch_size", "tokens", "context", "ms"])


@pytest.mark.parametrize(("factors", "prefill_tolerance"), [
    ({}, 0.05),
    # factors far off (alone they time these prefills 66-130% too slow): the table's points pin the times, and
    # between points 4x apart the interpolated ratio is within 8%
    ({"linear_compute": 0.3, "step_overhead": 0.0}, 0.08),
])
def test_a_table_of_a_measured_engine_reproduces_it_between_its_points(factors: dict[str, float],
                                                                       prefill_tolerance: float) -> None:
    cost = ProfiledStepCost.from_profile(base_cost(**factors), distserve_profile())
    for batch, context_each in ((4, 900), (32, 512), (48, 1200)):
        measured = distserve_decode_ms(batch, batch * context_each)
        assert cost.decode_step(batch, batch * context_each) * 1e3 == pytest.approx(measured, rel=0.02)
    for prompt in (256, 768, 1536, 3072):
        predicted = cost.step(prompt, prompt * (prompt + 1) / 2, prompt, 1) * 1e3
        assert predicted == pytest.approx(distserve_prefill_ms(prompt), rel=prefill_tolerance)


# ----------------------------------------------------------------------------- in a service and a config
def write_profile(path: Path, frame: pd.DataFrame) -> Path:
    path.write_text("# OPT-13B, 1x A100\n" + frame.to_csv(index=False), encoding="utf-8")
    return path


def test_a_service_with_a_profile_runs_on_it(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "opt13b.csv", profile_of(TRUTH))
    mode = ContinuousBatching(profile=profile)
    cost = mode.step_cost(OPT13B, A100, 1)
    assert isinstance(cost, ProfiledStepCost) and cost.source == str(profile)
    assert cost.decode_step(8, 8 * 2048) == pytest.approx(TRUTH.decode_step(8, 8 * 2048), rel=1e-9)
    assert not isinstance(ContinuousBatching().step_cost(OPT13B, A100, 1), ProfiledStepCost)


def _config(profile: object, **step_model: float) -> dict:
    return {"cluster": {"preset": None, "pools": [{"device": "a100", "nodes": 1, "devices_per_node": 8}]},
            "workload": {"inference": {"services": [{
                "name": "chat", "model": "opt-13b", "device": "a100", "requests": 300,
                "arrivals": {"process": "poisson", "rate": 4.0},
                "prompt_tokens": {"dist": "deterministic", "value": 512},
                "output_tokens": {"dist": "deterministic", "value": 64},
                "step_model": {"profile": str(profile) if isinstance(profile, Path) else profile,
                               **step_model}}]}}}


def test_yaml_step_model_profile_changes_the_latencies_and_says_so(tmp_path: Path) -> None:
    slow = write_profile(tmp_path / "slow.csv", profile_of(TRUTH))
    fast = write_profile(tmp_path / "fast.csv", profile_of(base_cost()))
    slow_run, fast_run = run_config(load_config(_config(slow))), run_config(load_config(_config(fast)))
    assert slow_run.run["step_factors"]["chat"]["profile"] == str(slow)
    # the engine of TRUTH is slower at every step: its time per output token is longer
    assert slow_run.requests["tpot"].mean() > 1.2 * fast_run.requests["tpot"].mean()
    assert slow_run.summary()["requests"]["completed"] == 300 == fast_run.summary()["requests"]["completed"]


def test_bad_profile_in_a_config_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("phase,batch_size,tokens,context,ms\ndecode,8,8,8000,12\ndecode,8,8,9000,-3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.csv, line 3, field 'ms'"):
        run_config(load_config(_config(path)))
    with pytest.raises(ConfigError, match=r"step_model\.profile: expected the path"):
        run_config(load_config(_config(3)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read"):
        run_config(load_config(_config(tmp_path / "missing.csv")))
    with pytest.raises(ConfigError, match="linear_compute"):
        run_config(load_config(_config(path.with_name("x.csv"), linear_compute=2.0)))
