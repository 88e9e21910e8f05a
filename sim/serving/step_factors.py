"""The measured factors of the serving step-time model, per device, with their sources.

``StepCost`` (``sim.serving.step_time``) turns a step's work into seconds with these factors:

- ``linear_compute``: fraction of the dense peak FLOP/s that the weight GEMMs (QKV, output, MLP, LM head)
  reach when compute-bound (many tokens in the step);
- ``linear_bandwidth``: fraction of HBM bandwidth at which those GEMMs stream the weights when memory-bound
  (few tokens);
- ``elementwise_bandwidth``: fraction of HBM bandwidth of the per-token elementwise kernels (norms, rotary,
  activation, residual adds), whose bytes the model counts from the architecture;
- ``attention_compute``: fraction of the 16-bit peak that attention reaches on its FLOPs (prefill);
- ``attention_bandwidth``: fraction of HBM bandwidth at which attention reads the KV cache (decode);
- ``layer_overhead``: seconds per transformer layer per step, the floor of that layer's small kernels;
- ``step_overhead``: seconds per step outside the kernels (scheduling, sampling, launch);
- ``sequence_overhead``: seconds per sequence in the step (its metadata, sampling, detokenizing).

Where the H100 and A100 figures come from (REFERENCE.md, "Inference step time"):

- The four linear and elementwise factors and ``layer_overhead`` are a least-squares fit (relative error) to
  Vidur's per-operator kernel profiles of Llama-2-7B (microsoft/vidur, data/profiling/compute/{h100,a100}/
  meta-llama/Llama-2-7b-hf/mlp.csv at commit 7d47513: every operator except attention, TP 1, 2, 4 and 8,
  16 token counts from 1 to 4,096 each; 64 points per device). This is CALIBRATION: the tests check it
  against profiles that were not fitted (Llama-3-8B, Llama-2-70B and CodeLlama-34B in the same data set)
  and against DistServe's measured whole steps of OPT-13B and OPT-66B.
- ``attention_compute``, ``attention_bandwidth``, ``sequence_overhead`` and ``step_overhead`` come from
  DistServe's latency model of its own engine on one A100-80GB with OPT-13B (LLMServe/DistServe,
  simdistserve/estimators/profile_data/profiler-a100-80g.distserve.json at commit 82831f1, TP 1): the
  prefill coefficient of ``sum(len^2)`` gives attention's FLOP rate, the decode coefficient of
  ``sum(context)`` its KV-read rate, the decode coefficient of the batch size the per-sequence time, and
  its intercept, less the weight read and layer floors above, the per-step time. The tests check the
  other tensor-parallel degrees and OPT-66B of that file, and the vLLM-engine figures of REFERENCE.md.
  H100 takes the same fractions and times: no H100 whole-step measurement was at hand (an ASSUMPTION).

A100-40GB and H200 take the factors of the GPU they share (A100-80GB, H100), flagged as assumed. Every other
device gets the mean of the H100 and A100 fractions and the A100 times, applied to its own
datasheet peaks: an ASSUMPTION, flagged in ``assumed`` (and so in ``catalog_table()`` and in a run's
summary). Override any factor per service (``ContinuousBatching(factors={...})``, YAML
``step_model: {...}``) or fit all of them to a measured profile with ``gpusim calibrate``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sim.errors import ConfigError, did_you_mean

FRACTIONS: tuple[str, ...] = ("linear_compute", "linear_bandwidth", "elementwise_bandwidth", "attention_compute",
                              "attention_bandwidth")
"""Factors that are fractions of a datasheet peak, in (0, 1]."""

TIMES: tuple[str, ...] = ("layer_overhead", "step_overhead", "sequence_overhead")
"""Factors that are times in seconds, >= 0."""

FACTORS: tuple[str, ...] = FRACTIONS + TIMES


@dataclass(frozen=True)
class StepFactors:
    """The factors of the step-time model on one device type (see the module docstring for each).

    ``source`` says where the values come from; ``assumed`` names the factors that are assumptions rather
    than measurements on this device type.
    """

    linear_compute: float
    linear_bandwidth: float
    elementwise_bandwidth: float
    attention_compute: float
    attention_bandwidth: float
    layer_overhead: float
    step_overhead: float
    sequence_overhead: float
    source: str = ""
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in FRACTIONS:
            value = getattr(self, key)
            if not _is_number(value) or not 0 < value <= 1:
                raise ConfigError(f"step_model.{key} must be a fraction in (0, 1], got {value!r}")
        for key in TIMES:
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ConfigError(f"step_model.{key} must be seconds >= 0, got {value!r}")

    def replace(self, overrides: Mapping[str, Any], *, where: str = "step_model") -> StepFactors:
        """A copy with ``overrides`` (factor name -> value) applied; overridden factors leave ``assumed``."""
        for key in overrides:
            if key not in FACTORS:
                raise ConfigError(f"{where}: unknown factor {key!r}{did_you_mean(key, FACTORS)}; factors: "
                                  f"{', '.join(FACTORS)}")
        if not overrides:
            return self
        try:
            return dataclasses.replace(self, **dict(overrides), source=f"{self.source}; overridden: "
                                       f"{', '.join(overrides)}" if self.source else "overridden",
                                       assumed=tuple(a for a in self.assumed if a not in overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def as_dict(self) -> dict[str, float]:
        """The factors alone, by name (what a ``step_model:`` YAML mapping holds)."""
        return {key: float(getattr(self, key)) for key in FACTORS}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_VIDUR = "linear factors fitted to Vidur's Llama-2-7B kernel profiles (TP 1-8) on this device"
_DISTSERVE = "attention, per-sequence and per-step terms from DistServe's A100-80GB OPT-13B latency model"

# Fitted values (see the module docstring). Fit residuals on the 64 fitted points: median 2.5%, p90 6.7%
# (A100); median 2.7%, p90 7.9% (H100).
_A100 = dict(linear_compute=0.719, linear_bandwidth=0.819, elementwise_bandwidth=0.762, layer_overhead=38.0e-6)
_H100 = dict(linear_compute=0.769, linear_bandwidth=0.823, elementwise_bandwidth=0.536, layer_overhead=28.9e-6)
_SERVING = dict(attention_compute=0.184, attention_bandwidth=0.640, sequence_overhead=32.7e-6, step_overhead=3.04e-3)

MEASURED: Mapping[str, StepFactors] = MappingProxyType({
    "a100-sxm-80gb": StepFactors(**_A100, **_SERVING, source=f"{_VIDUR}; {_DISTSERVE}"),
    "h100-sxm": StepFactors(**_H100, **_SERVING, source=f"{_VIDUR}; {_DISTSERVE} (taken over from A100)",
                            assumed=tuple(_SERVING)),
})
"""Factors measured on a device type (keyed by catalog name)."""

SAME_CHIP: Mapping[str, StepFactors] = MappingProxyType({
    "a100-sxm-40gb": dataclasses.replace(MEASURED["a100-sxm-80gb"], assumed=FACTORS,
                                         source="ASSUMED: A100-80GB's factors (same GPU, 1.55 TB/s HBM2)"),
    "h200-sxm": dataclasses.replace(MEASURED["h100-sxm"], assumed=FACTORS,
                                    source="ASSUMED: H100's factors (same GPU, 4.8 TB/s HBM3e)"),
})
"""Devices that share a measured device's chip, with other memory: its factors, flagged as assumed."""

TRANSFERRED = StepFactors(
    **{key: round((_A100[key] + _H100[key]) / 2, 3) for key in ("linear_compute", "linear_bandwidth",
                                                                 "elementwise_bandwidth")},
    layer_overhead=_A100["layer_overhead"], **_SERVING,
    source="ASSUMED: the mean H100/A100 fractions of this device's own datasheet peaks, A100 overheads",
    assumed=FACTORS)
"""What a device with no measured factors gets (every factor flagged as assumed)."""


def default_step_factors(device: str) -> StepFactors:
    """The default factors of catalog device ``device`` (a canonical name such as ``"h100-sxm"``)."""
    return MEASURED.get(device) or SAME_CHIP.get(device) or TRANSFERRED
