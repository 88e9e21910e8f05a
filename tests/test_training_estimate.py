"""Training compute estimate: FLOPs against the published GPT-3 figure, and what a run takes on a cluster."""

from __future__ import annotations

import pytest

from sim.errors import ConfigError
from sim.platform.cluster import preset
from sim.training.estimate import estimate_training, training_flops


def test_gpt3_training_flops_match_the_published_figure() -> None:
    # Brown et al. 2020 (Table D.1): 3.14e23 FLOPs for GPT-3 175B on 300B tokens
    assert training_flops("gpt3-175b", 300e9) == pytest.approx(3.14e23, rel=0.01)


def test_a_run_takes_its_steps_times_the_step_time_and_pays_for_its_device_hours() -> None:
    cluster = preset("dgx-a100", nodes=16)  # 128 A100s
    e = estimate_training("gpt3-175b", 300e9, cluster, tensor=8, pipeline=8, global_batch=1536, sequence=2048,
                          recomputation="selective", sequence_parallel=True)
    assert e.devices == 128 and e.steps == pytest.approx(300e9 / (1536 * 2048))
    assert e.seconds == pytest.approx(e.steps * e.step.total)
    a100 = cluster.device_specs[0]
    assert e.energy_kwh == pytest.approx(128 * a100.tdp_watts * e.seconds / 3.6e6)
    assert e.cost_usd == pytest.approx(128 * a100.price_per_hour * e.seconds / 3600)
    # the run's MFU is the model's 6 * params FLOPs over the devices' peak time
    assert e.mfu == pytest.approx(e.flops / (128 * a100.peak("bf16") * e.seconds), rel=1e-9)
    # twice the devices (data parallel): at most half the time, at least as many device-hours
    bigger = estimate_training("gpt3-175b", 300e9, preset("dgx-a100", nodes=32), tensor=8, pipeline=8,
                               global_batch=1536, sequence=2048, recomputation="selective", sequence_parallel=True)
    assert bigger.seconds < e.seconds and bigger.device_hours >= e.device_hours * 0.999


def test_bad_estimates_are_named() -> None:
    cluster = preset("dgx-a100", nodes=2)
    with pytest.raises(ConfigError, match="tokens must be a positive number"):
        training_flops("gpt3-175b", 0)
    with pytest.raises(ConfigError, match=r"devices must be a whole number in 1\.\.16"):
        estimate_training("llama-3.1-8b", 1e9, cluster, devices=64)
    with pytest.raises(ConfigError, match="does not divide the device count"):
        estimate_training("llama-3.1-8b", 1e9, cluster, tensor=3)
