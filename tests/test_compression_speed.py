"""Compressed models on devices that can and cannot compute in their formats (step-time costs)."""

from __future__ import annotations

import pytest

from sim.platform.hardware import get_device
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import FormatFallbackWarning, StepCost
from workloads.models import compress, get_model

MODEL = get_model("llama-3.1-70b")
H100, A100, T4 = get_device("h100"), get_device("a100"), get_device("t4")


def cost(model, device, devices: int = 4) -> StepCost:
    factors = default_step_factors(device.name).replace({"linear_compute": 0.5, "linear_bandwidth": 0.8})
    return StepCost.for_replica(model, device, devices, factors)


def test_fp8_on_h100_speeds_the_compute_bound_part_and_halves_the_bytes() -> None:
    bf16, fp8 = cost(MODEL, H100), cost(compress(MODEL, weights="fp8"), H100)
    assert fp8.compute == pytest.approx(bf16.compute * H100.peak("fp8") / H100.peak("bf16"))
    assert fp8.compute == pytest.approx(2 * bf16.compute, rel=1e-3)  # H100 SXM: 1,979 vs 989 TFLOP/s dense
    assert fp8.weight_bytes == pytest.approx(bf16.weight_bytes / 2)
    assert fp8.bandwidth == bf16.bandwidth
    # the linear layers: a long prefill is compute-bound, faster by the fp8/bf16 peak ratio (about 2); a small
    # decode is bandwidth-bound, faster by the weight bytes it no longer reads (the bf16 KV cache is attention's)
    speedup = H100.peak("fp8") / H100.peak("bf16")
    assert fp8.terms(4096, 0, 0, 1).linear == pytest.approx(bf16.terms(4096, 0, 0, 1).linear / speedup, rel=1e-3)
    assert fp8.terms(8, 0, 0, 8).linear == pytest.approx(bf16.terms(8, 0, 0, 8).linear / 2, rel=1e-3)
    assert fp8.terms(8, 8192, 8192, 8).attention == bf16.terms(8, 8192, 8192, 8).attention


def test_fp8_on_a100_shrinks_memory_but_not_math_and_says_so() -> None:
    with pytest.warns(FormatFallbackWarning, match="a100.* has no fp8 math"):
        fp8 = cost(compress(MODEL, weights="fp8"), A100)
    bf16 = cost(MODEL, A100)
    assert fp8.compute == bf16.compute
    assert fp8.weight_bytes == pytest.approx(bf16.weight_bytes / 2)


def test_int8_runs_in_int8_where_the_device_has_it_and_int4_is_weight_only() -> None:
    assert cost(compress(MODEL, weights="int8"), A100).compute == pytest.approx(
        cost(MODEL, A100).compute * A100.peak("int8") / A100.peak("bf16"))
    int4 = cost(compress(MODEL, weights="int4"), H100)
    assert int4.compute == cost(MODEL, H100).compute  # dequantized to 16-bit math
    assert int4.weight_bytes < cost(MODEL, H100).weight_bytes / 3


def test_two_four_sparsity_halves_matmul_flops_only_with_sparse_tensor_cores() -> None:
    sparse = compress(MODEL, sparsity="2:4")
    assert cost(sparse, H100).flops_per_token == pytest.approx(cost(MODEL, H100).flops_per_token / 2)
    assert cost(sparse, H100).attention_flops == cost(MODEL, H100).attention_flops  # attention stays dense
    small = get_model("llama-3.1-8b")
    assert cost(compress(small, sparsity="2:4"), T4, 1).flops_per_token == cost(small, T4, 1).flops_per_token
    unstructured = compress(MODEL, sparsity="unstructured-50%")
    assert cost(unstructured, H100).flops_per_token == cost(MODEL, H100).flops_per_token  # only storage shrinks


def test_training_jobs_name_the_precision_they_train_in() -> None:
    from sim import Simulation
    from sim.platform.cluster import Cluster, PoolSpec
    from workloads import TrainingJob

    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])
    jobs = [TrainingJob(0, 0.0, 8, 1000.0, reference_device="a100"),
            TrainingJob(1, 0.0, 8, 1000.0, reference_device="a100", precision="fp8")]
    jct = Simulation(cluster, jobs, scheduler="fifo").run().jobs.set_index("job_id")["jct"]
    assert jct[0] == pytest.approx(1000.0 * A100.peak("bf16") / H100.peak("bf16"))
    # fp8 on H100 against the A100's fallback to bf16 math: the fp8 peak ratio
    assert jct[1] - jct[0] == pytest.approx(1000.0 * (A100.peak("fp8") / H100.peak("fp8")), rel=1e-9)
    with pytest.raises(Exception, match="precision must be one of"):
        TrainingJob(2, 0.0, 8, 1000.0, precision="int4")


def test_config_sets_the_training_precision_and_names_a_bad_one() -> None:
    from sim.errors import ConfigError
    from sim.experiments.config import load_config
    from sim.experiments.scenario import build_training_jobs

    config = load_config({"workload": {"training": {"jobs": 3, "precision": "fp8"}}})
    assert {job.precision for job in build_training_jobs(config.workload.training, 0).jobs} == {"fp8"}
    bad = load_config({"workload": {"training": {"jobs": 3, "precision": "int4"}}})
    with pytest.raises(ConfigError, match=r"workload\.training\.precision: .*precision must be one of"):
        build_training_jobs(bad.workload.training, 0)
