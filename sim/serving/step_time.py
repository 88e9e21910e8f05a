"""Seconds of one batching iteration ("step") of an LLM replica, and closed-form sums over runs of decode steps.

A step computes ``T`` tokens of ``S`` sequences; their attention covers ``A`` (query, key) pairs and reads ``K``
tokens of KV cache. On a replica of ``k`` devices (tensor parallel), with the factors ``f`` of
``sim.serving.step_factors``, the step takes the sum of the terms real engines have:

    linear      = smooth_max(c, m),  c = (2 P_layers T + 2 P_head S) / (k peak f.linear_compute)
                                     m = weight bytes read / (k hbm f.linear_bandwidth)
    elementwise = T * activation bytes per token / (hbm f.elementwise_bandwidth)
    attention   = max(4 L d_attn A / (k peak16 f.attention_compute),
                      kv bytes per token * K / (k hbm f.attention_bandwidth))
    overheads   = L f.layer_overhead + f.step_overhead + S f.sequence_overhead
    tp_comm     = 2 L all-reduces of T d_model 16-bit activations over the replica's links (k > 1)

``smooth_max(c, m) = (c^p + m^p)^(1/p)`` with ``p = LINEAR_TRANSITION``: near the ridge point GEMMs reach
neither bound (measured: Llama-2-7B's non-attention kernels at 256 tokens take 1.6x the larger bound on
H100). ``P_layers`` are the GEMM weights of the transformer layers, ``P_head`` the LM head, computed only for
the step's sequences (logits of their last token); the input embedding is looked up, not read whole.
Attention FLOPs are 4 ``d_attn`` per pair and layer (QK^T and AV), counted over causal pairs.

In a run of decode steps with a fixed batch of ``B`` sequences whose contexts sum to ``C`` at the first
step, step ``j`` has ``T = S = B`` and ``A = K = C + j B``: every term but attention is constant and
attention is linear in ``j``, so the time of ``n`` steps is an arithmetic series. That closed form is what
lets the engine advance a replica over many tokens with one event (DESIGN.md, coalescing).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from math import sqrt

from sim.errors import ConfigError
from sim.platform.hardware import DeviceSpec
from sim.platform.network.collectives import GroupShape, collective_cost
from sim.serving.step_factors import StepFactors
from workloads.models import LLMSpec

LINEAR_TRANSITION = 2.0
"""Exponent ``p`` of the smooth maximum of the GEMMs' compute and weight-read times. CALIBRATION: fitted
free to Vidur's Llama-2-7B profiles it came out 1.98 (H100) and 2.14 (A100); fixed at 2."""

ACTIVATION_BYTES = 2
"""Bytes per activation element (16-bit activations, also under 8-bit weights)."""


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


def layer_gemm_params(model: LLMSpec) -> float:
    """Weights of the GEMMs of all transformer layers: Q, K, V, output and the MLP matrices."""
    attn = model.n_heads * model.head_dim
    kv = model.n_kv_heads * model.head_dim
    mlp = 3 if model.mlp == "swiglu" else 2
    return model.n_layers * (2 * model.d_model * attn + 2 * model.d_model * kv + mlp * model.d_model * model.ffn_dim)


def head_params(model: LLMSpec) -> float:
    """Weights of the LM head (``vocab x d_model``; the embedding matrix itself when tied)."""
    return model.vocab_size * model.d_model


def elementwise_elements(model: LLMSpec, devices: int) -> float:
    """Activation elements the elementwise kernels read and write per token on one of ``devices`` ranks: two
    norms (read + write ``d``), two residual adds (two reads, one write), rotary on the rank's Q and K (read +
    write), and the activation (SwiGLU reads 2 ``ffn/k`` and writes ``ffn/k``; GELU reads and writes ``ffn/k``)."""
    d = model.d_model
    qk = (model.n_heads + model.n_kv_heads) * model.head_dim
    act = 3 * model.ffn_dim if model.mlp == "swiglu" else 2 * model.ffn_dim
    return model.n_layers * (4 * d + 6 * d + (2 * qk + act) / devices)


@dataclass(frozen=True)
class StepTerms:
    """One step's time split into the model's terms (seconds)."""

    linear: float
    elementwise: float
    attention: float
    overhead: float
    tp_comm: float

    @property
    def total(self) -> float:
        return self.linear + self.elementwise + self.attention + self.overhead + self.tp_comm


@dataclass(frozen=True)
class StepCost:
    """Per-replica constants of the step-time model (tensor-parallel degree and factors folded in)."""

    compute: float  # achieved GEMM FLOP/s of the replica
    bandwidth: float  # achieved weight-read bytes/s of the replica
    weight_bytes: float  # weight bytes read per step (layers and LM head, the whole replica)
    kv_bytes_per_token: float
    flops_per_token: float  # GEMM FLOPs per computed token (the layers)
    head_flops: float  # LM-head FLOPs per sequence in the step
    attention_flops: float  # FLOPs per (query, key) pair
    elementwise_per_token: float  # seconds per token of the elementwise kernels
    attention_per_pair: float  # seconds per attended pair when attention is compute-bound
    kv_read_per_token: float  # seconds per KV token read when attention is bandwidth-bound
    fixed: float  # seconds per step: layer floors and step overhead
    per_sequence: float  # seconds per sequence in the step
    comm_latency: float = 0.0  # seconds of tensor-parallel all-reduce latency per step
    comm_per_token: float = 0.0  # seconds of tensor-parallel all-reduce transfer per token
    transition: float = LINEAR_TRANSITION

    @classmethod
    def for_replica(cls, model: LLMSpec, device: DeviceSpec, devices: int, factors: StepFactors, *,
                    tp_group: GroupShape | None = None) -> StepCost:
        """The cost model of ``model`` on ``devices`` devices of type ``device`` (tensor parallel). ``tp_group``
        is where the replica's ranks sit (default: one scale-up domain of ``device``)."""
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise ConfigError(f"devices per replica must be a positive integer, got {devices!r}")
        f = factors
        precision = math_precision(model, device)
        sparse = model.matmul_flops_factor if (model.structured_sparsity and device.structured_sparsity) else 1.0
        read = layer_gemm_params(model) + head_params(model)
        # the stored bytes per parameter (compression, sparsity metadata) apply to the weights read
        bytes_per_param = model.weight_bytes / model.params
        peak16 = device.peak("bf16")
        hbm = device.memory_bandwidth
        comm_latency = comm_per_token = 0.0
        if devices > 1:
            group = tp_group if tp_group is not None else GroupShape.on_device(device, devices)
            if group.ranks != devices:
                raise ConfigError(f"tensor-parallel group has {group.ranks} ranks, the replica {devices} devices")
            token_bytes = model.d_model * ACTIVATION_BYTES
            probe = collective_cost("all-reduce", group, 1e6)  # the transfer is linear in the size: read its slope
            comm_latency = 2 * model.n_layers * probe.latency
            comm_per_token = 2 * model.n_layers * probe.transfer * token_bytes / 1e6
        return cls(
            compute=device.peak(precision) * devices * f.linear_compute,
            bandwidth=hbm * devices * f.linear_bandwidth,
            weight_bytes=read * bytes_per_param,
            kv_bytes_per_token=model.kv_bytes_per_token,
            flops_per_token=2.0 * layer_gemm_params(model) * sparse,
            head_flops=2.0 * head_params(model) * sparse,
            attention_flops=4.0 * model.n_layers * model.n_heads * model.head_dim,
            elementwise_per_token=elementwise_elements(model, devices) * ACTIVATION_BYTES
            / (hbm * f.elementwise_bandwidth),
            attention_per_pair=4.0 * model.n_layers * model.n_heads * model.head_dim
            / (peak16 * devices * f.attention_compute),
            kv_read_per_token=model.kv_bytes_per_token / (hbm * devices * f.attention_bandwidth),
            fixed=model.n_layers * f.layer_overhead + f.step_overhead,
            per_sequence=f.sequence_overhead,
            comm_latency=comm_latency,
            comm_per_token=comm_per_token,
        )

    # ----------------------------------------------------------------- one step
    def terms(self, tokens: float, attended: float, kv_read: float, sequences: float) -> StepTerms:
        """The step's time by term: ``tokens`` computed tokens of ``sequences`` sequences, ``attended`` pairs,
        ``kv_read`` KV tokens read."""
        return StepTerms(
            linear=self._linear(tokens, sequences),
            elementwise=tokens * self.elementwise_per_token,
            attention=max(attended * self.attention_per_pair, kv_read * self.kv_read_per_token),
            overhead=self.fixed + sequences * self.per_sequence,
            tp_comm=(self.comm_latency + tokens * self.comm_per_token) if tokens > 0 else 0.0,
        )

    def step(self, tokens: float, attended: float, kv_read: float, sequences: float) -> float:
        """Seconds of one step (the sum of :meth:`terms`)."""
        linear = self._linear(tokens, sequences)
        attention = max(attended * self.attention_per_pair, kv_read * self.kv_read_per_token)
        comm = (self.comm_latency + tokens * self.comm_per_token) if tokens > 0 else 0.0
        return (linear + tokens * self.elementwise_per_token + attention + self.fixed + sequences * self.per_sequence
                + comm)

    def _linear(self, tokens: float, sequences: float) -> float:
        c = (self.flops_per_token * tokens + self.head_flops * sequences) / self.compute
        m = self.weight_bytes / self.bandwidth
        if self.transition == 2.0:
            return math.hypot(c, m)
        p = self.transition
        return (c ** p + m ** p) ** (1.0 / p)

    def flops(self, tokens: float, attended: float, sequences: float) -> float:
        """FLOPs of one step (for MFU accounting)."""
        return self.flops_per_token * tokens + self.head_flops * sequences + self.attention_flops * attended

    # ----------------------------------------------------------------- runs of decode steps
    def _decode_line(self, batch: int) -> tuple[float, float]:
        """(alpha, beta): a decode step of ``batch`` sequences with contexts summing to ``x`` takes
        ``alpha + beta * x``. Worked out once per batch size (every decode run and cut asks for it): kept in the
        instance's ``__dict__``, outside the dataclass fields, so equality, ``replace`` and ``asdict`` ignore it."""
        lines = self.__dict__.get("_lines")
        if lines is None:
            lines = {}
            object.__setattr__(self, "_lines", lines)  # frozen: the cache is not part of the value
        line = lines.get(batch)
        if line is None:
            line = lines[batch] = (self.step(batch, 0.0, 0.0, batch),
                                   max(self.attention_per_pair, self.kv_read_per_token))
        return line

    def decode_step(self, batch: int, context: float) -> float:
        """One decode step of ``batch`` sequences whose contexts sum to ``context``."""
        return self.step(batch, context, context, batch)

    def decode_run_flops(self, batch: int, context: float, steps: int) -> float:
        """FLOPs of ``steps`` decode steps (step j attends ``context + j batch`` pairs)."""
        return (steps * (self.flops_per_token + self.head_flops) * batch
                + self.attention_flops * (steps * context + batch * steps * (steps - 1) / 2))

    def decode_run(self, batch: int, context: float, steps: int) -> float:
        """Seconds of ``steps`` consecutive decode steps: step j has contexts summing to ``context + j batch``."""
        if steps <= 0:
            return 0.0
        alpha, beta = self._decode_line(batch)
        return steps * (alpha + beta * context) + beta * batch * steps * (steps - 1) / 2.0

    def decode_run_line(self, batch: int, context: float) -> tuple[float, float]:
        """(first step's seconds, growth per step) of a run of decode steps: ``k`` steps take
        ``k * first + growth * k * (k - 1) / 2`` (``decode_run``'s expression). A replica keeps it for its current
        run, so that asking how far the run has got costs no look-up (``steps_within``)."""
        alpha, beta = self._decode_line(batch)
        return alpha + beta * context, beta * batch

    def decode_steps_within(self, batch: int, context: float, seconds: float, limit: int) -> int:
        """How many whole decode steps (at most ``limit``) complete within ``seconds`` (``steps_within``)."""
        return steps_within(self.decode_run_line(batch, context), seconds, limit)


def steps_within(line: tuple[float, float], seconds: float, limit: int) -> int:
    """How many whole steps (at most ``limit``) of a decode run with ``line`` (``StepCost.decode_run_line``) complete
    within ``seconds``."""
    return steps_bounded(line, seconds, limit)[0]


def steps_bounded(line: tuple[float, float], seconds: float, limit: int) -> tuple[int, float, float]:
    """``(n, since, until)``: how many whole steps ``n`` (at most ``limit``) of a decode run with ``line``
    (``StepCost.decode_run_line``) complete within ``seconds``, and the run's elapsed times between which that answer
    holds (``since`` is the end of step ``n``, -inf for none; ``until`` the end of step ``n + 1``, inf past the last).
    The quadratic formula, then a check against the run's time that absorbs rounding."""
    per_step, growth = line
    if seconds <= 0 or limit <= 0:
        return 0, -math.inf, (per_step if limit > 0 else math.inf)  # until the end of the first step
    # an estimate (the checks below make the answer exact): k steps take per_step k + growth k (k - 1) / 2
    if growth <= 0:
        n = int(seconds // per_step) if per_step > 0 else limit
    else:
        lin = per_step - growth / 2.0
        n = int((sqrt(lin * lin + 2.0 * growth * seconds) - lin) / growth)
    if n > limit:  # (not min/max: asked at every hand-off)
        n = limit
    elif n < 0:
        n = 0
    # the end of k steps is decode_run(batch, context, k), inlined: the same expression, so the same floats
    since = n * per_step + growth * n * (n - 1) / 2.0
    while n > 0 and since > seconds:
        n -= 1
        since = n * per_step + growth * n * (n - 1) / 2.0
    until = (n + 1) * per_step + growth * (n + 1) * n / 2.0 if n < limit else math.inf
    while until <= seconds:  # (false past the last step: until is inf there)
        n += 1
        since = until
        until = (n + 1) * per_step + growth * (n + 1) * n / 2.0 if n < limit else math.inf
    return n, (since if n else -math.inf), until
