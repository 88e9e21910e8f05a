"""Roofline cost of one batching iteration, and closed-form sums over runs of identical decode steps.

A step computes ``T`` tokens whose attention covers ``A`` context tokens in all, reading the weights
once and ``K`` tokens of KV cache:

    time = max((flops_per_token * T + attention_flops * A) / (peak * mfu),
               (weight_bytes + kv_bytes_per_token * K) / (hbm_bandwidth * mbu))

In a run of decode steps with a fixed batch of ``B`` sequences whose contexts sum to ``C`` at the
first step, step ``k`` has ``T = B`` and ``A = K = C + k B``: both sides are linear in ``k``, so the
time of ``n`` steps is a sum of two arithmetic series split where the sides cross. That closed form
is what lets the engine advance a replica over many tokens with one event (DESIGN.md, coalescing).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from sim.errors import ConfigError
from sim.hardware import DeviceSpec
from workloads.models import LLMSpec


def math_precision(model: LLMSpec, device: DeviceSpec) -> str:
    """The format a replica's matmuls run in: the weights' format where the device accelerates it (fp8 on
    H100/H200/B200, int8 on A100, T4, L4, TPUs), else 16-bit. Weight-only formats (int4) dequantize to 16-bit
    math on every device. A format the device has no math for still shrinks the weights (memory and bytes
    read per step); the compute side then runs at the 16-bit peak, which this says once with a warning."""
    if model.weights_format not in ("fp8", "int8") or model.weight_only_quantized:
        return "bf16"
    if device.supports(model.weights_format):
        return model.weights_format
    warnings.warn(f"model {model.name!r}: {device.name} has no {model.weights_format} math; its "
                  f"{model.weights_format} weights are stored in 8 bits but computed at the 16-bit peak",
                  FormatFallbackWarning, stacklevel=3)
    return "bf16"


class FormatFallbackWarning(UserWarning):
    """A compressed format runs on a device that cannot compute in it (memory shrinks, math does not speed up)."""


@dataclass(frozen=True)
class StepCost:
    """Per-replica constants of the roofline (already multiplied by tensor-parallel degree and efficiency)."""

    compute: float  # achieved FLOP/s
    bandwidth: float  # achieved HBM bytes/s
    weight_bytes: float  # bytes read per step (weights of the replica's model)
    kv_bytes_per_token: float
    flops_per_token: float  # linear-layer FLOPs per computed token
    attention_flops: float  # FLOPs per (computed token x attended context token)

    @classmethod
    def for_replica(cls, model: LLMSpec, device: DeviceSpec, devices: int, *, mfu: float, mbu: float) -> StepCost:
        """The cost model of ``model`` on ``devices`` devices of type ``device`` (tensor parallel)."""
        if not (0 < mfu <= 1 and 0 < mbu <= 1):
            raise ConfigError(f"mfu and mbu must be in (0, 1], got mfu={mfu}, mbu={mbu}")
        precision = math_precision(model, device)
        flops = 2.0 * model.params
        if model.structured_sparsity and device.structured_sparsity:
            flops *= model.matmul_flops_factor  # 2:4 sparse tensor cores skip half the multiply-adds
        return cls(
            compute=device.peak(precision) * devices * mfu,
            bandwidth=device.memory_bandwidth * devices * mbu,
            weight_bytes=model.weight_bytes,
            kv_bytes_per_token=model.kv_bytes_per_token,
            flops_per_token=flops,
            attention_flops=2.0 * model.n_layers * model.d_model,
        )

    def step(self, tokens: float, attended: float, kv_read: float) -> float:
        """Seconds of one step computing ``tokens`` tokens over ``attended`` context, reading ``kv_read``."""
        return max((self.flops_per_token * tokens + self.attention_flops * attended) / self.compute,
                   (self.weight_bytes + self.kv_bytes_per_token * kv_read) / self.bandwidth)

    def flops(self, tokens: float, attended: float) -> float:
        """FLOPs of one step (for MFU accounting)."""
        return self.flops_per_token * tokens + self.attention_flops * attended

    def decode_run_flops(self, batch: int, context: float, steps: int) -> float:
        """FLOPs of ``steps`` decode steps (step k attends ``context + k batch`` tokens)."""
        return steps * self.flops_per_token * batch + self.attention_flops * (
            steps * context + batch * steps * (steps - 1) / 2)

    def decode_step(self, batch: int, context: float) -> float:
        """One decode step of ``batch`` sequences whose contexts sum to ``context``."""
        return self.step(batch, context, context)

    def decode_run(self, batch: int, context: float, steps: int) -> float:
        """Seconds of ``steps`` consecutive decode steps: step k has contexts summing to ``context + k batch``."""
        if steps <= 0:
            return 0.0
        # time of step k = max(a1 + b1 * x_k, a2 + b2 * x_k), x_k = context + k * batch
        a1, b1 = self.flops_per_token * batch / self.compute, self.attention_flops / self.compute
        a2, b2 = self.weight_bytes / self.bandwidth, self.kv_bytes_per_token / self.bandwidth
        split = _first_step_where_second_dominates(a1, b1, a2, b2, context, batch, steps)
        # steps [0, split) follow one side, [split, steps) the other
        first, second = ((a1, b1), (a2, b2)) if _dominates_first(a1, b1, a2, b2, context) else ((a2, b2), (a1, b1))
        return (_linear_sum(*first, context, batch, 0, split) + _linear_sum(*second, context, batch, split, steps))

    def decode_steps_within(self, batch: int, context: float, seconds: float, limit: int) -> int:
        """How many whole decode steps (at most ``limit``) complete within ``seconds``.

        Inside each side's region the elapsed time is quadratic in the step count, so the count comes
        from the quadratic formula; a final check against ``decode_run`` absorbs rounding."""
        if seconds <= 0 or limit <= 0:
            return 0
        a1, b1 = self.flops_per_token * batch / self.compute, self.attention_flops / self.compute
        a2, b2 = self.weight_bytes / self.bandwidth, self.kv_bytes_per_token / self.bandwidth
        split = _first_step_where_second_dominates(a1, b1, a2, b2, context, batch, limit)
        first, second = ((a1, b1), (a2, b2)) if _dominates_first(a1, b1, a2, b2, context) else ((a2, b2), (a1, b1))
        before_split = _linear_sum(*first, context, batch, 0, split)
        if seconds < before_split:
            n = min(split, _steps_fitting(*first, context, batch, 0, seconds))
        else:
            n = split + _steps_fitting(*second, context, batch, split, seconds - before_split)
        n = max(0, min(limit, n))
        while n > 0 and self.decode_run(batch, context, n) > seconds:
            n -= 1
        while n < limit and self.decode_run(batch, context, n + 1) <= seconds:
            n += 1
        return n


def _steps_fitting(alpha: float, beta: float, context: float, batch: int, a: int, seconds: float) -> int:
    """Largest m with sum over k in [a, a + m) of alpha + beta (context + k batch) <= seconds (about)."""
    quad = beta * batch / 2.0
    lin = alpha + beta * context + beta * batch * a - quad
    if quad <= 0:
        return int(seconds // lin) if lin > 0 else 1 << 62
    return int((-lin + math.sqrt(lin * lin + 4.0 * quad * seconds)) / (2.0 * quad))


def _dominates_first(a1: float, b1: float, a2: float, b2: float, x: float) -> bool:
    """Whether side 1 is the max at context ``x`` (ties go to side 1)."""
    return a1 + b1 * x >= a2 + b2 * x


def _first_step_where_second_dominates(a1: float, b1: float, a2: float, b2: float, context: float, batch: int,
                                       steps: int) -> int:
    """The first step index whose max is taken by the other side than step 0's (``steps`` if none)."""
    start_first = _dominates_first(a1, b1, a2, b2, context)
    slope = b1 - b2  # d(side1 - side2)/dx
    if slope == 0 or batch == 0:
        return steps
    crossing = (a2 - a1) / slope  # side1 - side2 changes sign at x = crossing
    if (start_first and slope > 0) or (not start_first and slope < 0):
        return steps  # the gap only grows in the starting side's favour
    # the other side takes over at the first k with context + k * batch past the crossing
    k = math.floor((crossing - context) / batch) + 1
    k = max(1, min(steps, k))
    while k > 1 and _dominates_first(a1, b1, a2, b2, context + (k - 1) * batch) != start_first:
        k -= 1  # guard against rounding in the division
    while k < steps and _dominates_first(a1, b1, a2, b2, context + k * batch) == start_first:
        k += 1
    return k


def _linear_sum(alpha: float, beta: float, context: float, batch: int, a: int, b: int) -> float:
    """Sum over k in [a, b) of alpha + beta * (context + k * batch)."""
    n = b - a
    if n <= 0:
        return 0.0
    return n * (alpha + beta * context) + beta * batch * (a + b - 1) * n / 2.0
