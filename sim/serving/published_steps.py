"""Published step-time measurements the serving step model is checked against, with their sources.

``published_steps()`` gives them as one tidy table; ``predicted_ms`` gives the step model's time for each row.
The tests (``tests/test_step_time.py``) and notebook 06 read them from here. Each row says whether the default
factors (``sim.serving.step_factors``) were fitted to it: a fitted figure shows the fit, the others are checks.

Sources (figures copied from the files named, at the commits named; nothing else of these projects is kept):

- **Vidur kernel profiles** (microsoft/vidur at 7d47513, ``data/profiling/compute/{device}/{model}/mlp.csv``):
  the median time of every operator of the transformer layers except attention (the GEMMs, norms, rotary,
  activation, residual adds), summed over the operators and times the layers, by tokens in the step. Llama-2-7B
  TP1 is the REFERENCE.md figure set (fitted); the other models were not fitted.
- **DistServe's engine** (LLMServe/DistServe at 82831f1, ``simdistserve/estimators/profile_data/
  profiler-a100-80g.distserve.json``): fitted latency models of whole steps of its own engine on A100-80GB, ms:
  prefill ``a + b sum(len) + c sum(len^2)``, decode ``a + b sum(context) + c batch`` (the ``decoding_smallbs``
  coefficients, batch < 95). The rows here evaluate them at decode batches 1-64 (context 1,200 each) and
  prefills of one 1,024- or 2,048-token prompt. The defaults took four numbers from OPT-13B TP1 (its decode
  intercept, context and batch slopes, its ``sum(len^2)`` coefficient), so those rows are marked fitted; TP 2
  and 4 and OPT-66B are not.
- **vLLM as of 2023** (REFERENCE.md, from the same repository's ``profiler-a100-80g.vllm.json``): whole steps
  of OPT-13B TP1. Not fitted, and not expected to match the defaults: that engine paid more per step than
  today's kernels (its prefill intercept is 22 ms). A profile of it is what ``gpusim calibrate`` is for.
- **End-to-end 70B figures**, batch-1 first-token (prefill) and per-token (decode) latencies, none fitted:
  TensorRT-LLM 0.9.0 performance overview ("Low Latency" table, Llama-2-70B); LMDeploy 0.1.0a1
  ``docs/en/benchmark/a100_fp16.md`` (TurboMind, Llama-2-70B fp16 on 4 x A100, p50); NVIDIA NIM 1.8.0 benchmarks
  (Llama-3.3-70B fp8 on 2 x H100, concurrency 1, 500 tokens in, 2,000 out: inter-token latency).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pandas as pd

from sim.platform.hardware import get_device
from sim.serving.step_factors import StepFactors, default_step_factors
from sim.serving.step_time import StepCost, layer_gemm_params
from workloads.models import LLMSpec, compress, get_model

LLAMA2_70B = LLMSpec(name="llama-2-70b", params=69e9, n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8,
                     head_dim=128, ffn_dim=28672, vocab_size=32000, max_context=4096)
"""Llama-2-70B (not in the catalog; its shapes from the model card)."""
CODELLAMA_34B = LLMSpec(name="codellama-34b", params=33.7e9, n_layers=48, d_model=8192, n_heads=64, n_kv_heads=8,
                        head_dim=128, ffn_dim=22016, vocab_size=32000, max_context=16384)
"""CodeLlama-34B (not in the catalog)."""

MODELS: dict[str, LLMSpec] = {spec.name: spec for spec in (LLAMA2_70B, CODELLAMA_34B)}

DECODE_CONTEXT = 1200
"""Context tokens per sequence at which the DistServe and vLLM decode figures are given."""

# (device, model, tensor-parallel degree, tokens in the step, ms)
VIDUR_KERNELS: tuple[tuple[str, str, int, int, float], ...] = (
    ("h100", "llama-2-7b", 1, 1, 5.60), ("h100", "llama-2-7b", 1, 64, 5.86), ("h100", "llama-2-7b", 1, 256, 9.16),
    ("h100", "llama-2-7b", 1, 1024, 21.1), ("h100", "llama-2-7b", 1, 4096, 83.1),
    ("a100", "llama-2-7b", 1, 1, 9.28), ("a100", "llama-2-7b", 1, 64, 9.70), ("a100", "llama-2-7b", 1, 256, 17.8),
    ("a100", "llama-2-7b", 1, 1024, 68.0), ("a100", "llama-2-7b", 1, 4096, 262.0),
    # not fitted (Meta-Llama-3-8B has the shapes of Llama-3.1-8B)
    ("a100", "llama-3.1-8b", 1, 1, 9.70), ("a100", "llama-3.1-8b", 1, 256, 19.49),
    ("a100", "llama-3.1-8b", 1, 4096, 272.93),
    ("h100", "llama-2-70b", 4, 1, 14.32), ("h100", "llama-2-70b", 4, 1024, 62.08),
    ("a100", "codellama-34b", 2, 64, 24.02), ("a100", "codellama-34b", 2, 2048, 312.1),
)

DISTSERVE_ENGINE: dict[tuple[str, int], tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    ("opt-13b", 1): ((18.1025, 0.101912, 7.12226e-06), (19.9347, 0.000626936, 0.0385070)),
    ("opt-13b", 2): ((14.7430, 0.0685772, 2.4e-06), (13.2948, 0.000341100, 0.0629639)),
    ("opt-13b", 4): ((12.0623, 0.0380814, 5.0e-07), (10.2562, 0.000187900, 0.0326927)),
    ("opt-66b", 4): ((29.4416, 0.151352, 8.3e-06), (30.7603, 0.000451900, 0.0632842)),
}
"""DistServe's own engine on A100-80GB: (prefill (a, b, c), decode (a, b, c)) by (model, tensor-parallel degree)."""

DISTSERVE_VLLM_OPT13B = (
    (22.052204789310185, 0.14050923870128956, 8.076584822611088e-06),  # prefill
    (23.475041008414784, 0.000592934466077393, 0.060726861260369455),  # decode, batch < 95
    (20.206356173691958, 0.0004907727036234946, 0.1200031385587413),  # decode, batch >= 95
)
"""DistServe's fit of the 2023 vLLM engine, OPT-13B TP1 on A100-80GB (the source of the REFERENCE.md figures)."""

VLLM_2023: dict[str, dict[int, float]] = {"prefill": {128: 40.2, 1024: 174.0, 4096: 733.0},
                                          "decode": {1: 24.2, 32: 48.2, 256: 202.0}}
"""REFERENCE.md: ms of one prefill of that many tokens; of one decode step of that batch (1,200 context each)."""

# (figure, model, weights, device, tensor-parallel degree, phase, batch, prompt or context per sequence, ms)
END_TO_END: tuple[tuple[str, str, str, str, int, str, int, int, float], ...] = (
    ("TensorRT-LLM 0.9.0", "llama-2-70b", "fp8", "h100", 8, "prefill", 1, 2048, 85.1),
    ("TensorRT-LLM 0.9.0", "llama-2-70b", "bf16", "a100", 8, "prefill", 1, 2048, 249.2),
    ("TensorRT-LLM 0.9.0", "llama-2-70b", "fp8", "h100", 4, "prefill", 1, 128, 19.6),
    ("TensorRT-LLM 0.9.0", "llama-2-70b", "bf16", "a100", 4, "prefill", 1, 128, 45.6),
    ("LMDeploy 0.1.0a1", "llama-2-70b", "bf16", "a100", 4, "decode", 1, 1000, 29.0),
    ("LMDeploy 0.1.0a1", "llama-2-70b", "bf16", "a100", 4, "decode", 64, 65, 37.0),
    ("LMDeploy 0.1.0a1", "llama-2-70b", "bf16", "a100", 4, "prefill", 1, 2048, 402.0),
    ("NVIDIA NIM 1.8.0", "llama-3.1-70b", "fp8", "h100", 2, "decode", 1, 1500, 18.91),
)


def distserve_prefill_ms(coef: tuple[float, float, float], prompt: int, prompts: int = 1) -> float:
    """A DistServe prefill model's ms for ``prompts`` prompts of ``prompt`` tokens each."""
    a, b, c = coef
    return a + b * prompts * prompt + c * prompts * prompt**2


def distserve_decode_ms(coef: tuple[float, float, float], batch: int, context_each: int) -> float:
    """A DistServe decode model's ms for a step of ``batch`` sequences of ``context_each`` context tokens."""
    a, b, c = coef
    return a + b * batch * context_each + c * batch


COLUMNS = ("figure", "source", "scope", "device", "model", "weights", "devices", "phase", "batch", "length", "ms",
           "fitted")


def published_steps() -> pd.DataFrame:
    """Every figure of the module docstring, one row each.

    ``scope``: ``layers`` (every operator of the transformer layers but attention; ``length`` is the tokens in
    the step) or ``step`` (a whole step: ``length`` is the prompt of each sequence for a prefill, the context of
    each sequence for a decode). ``fitted``: whether the default factors were fitted to the figure.
    """
    rows: list[tuple[object, ...]] = []
    for device, model, tp, tokens, ms in VIDUR_KERNELS:
        rows.append(("Vidur kernels", "microsoft/vidur@7d47513 mlp.csv", "layers", device, model, "bf16", tp,
                     "prefill", 1, tokens, ms, model == "llama-2-7b"))
    for (model, tp), (prefill, decode) in DISTSERVE_ENGINE.items():
        fitted = (model, tp) == ("opt-13b", 1)
        for batch in (1, 8, 32, 64):
            rows.append(("DistServe engine", "LLMServe/DistServe@82831f1 distserve.json", "step", "a100", model,
                         "bf16", tp, "decode", batch, DECODE_CONTEXT,
                         distserve_decode_ms(decode, batch, DECODE_CONTEXT), fitted))
        for prompt in (1024, 2048):
            rows.append(("DistServe engine", "LLMServe/DistServe@82831f1 distserve.json", "step", "a100", model,
                         "bf16", tp, "prefill", 1, prompt, distserve_prefill_ms(prefill, prompt), fitted))
    for prompt, ms in VLLM_2023["prefill"].items():
        rows.append(("vLLM 2023", "REFERENCE.md", "step", "a100", "opt-13b", "bf16", 1, "prefill", 1, prompt, ms,
                     False))
    for batch, ms in VLLM_2023["decode"].items():
        rows.append(("vLLM 2023", "REFERENCE.md", "step", "a100", "opt-13b", "bf16", 1, "decode", batch,
                     DECODE_CONTEXT, ms, False))
    for figure, model, weights, device, tp, phase, batch, length, ms in END_TO_END:
        rows.append((figure, figure, "step", device, model, weights, tp, phase, batch, length, ms, False))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def model_spec(name: str, weights: str = "bf16") -> LLMSpec:
    """The model a row names (the catalog's, or this module's), its weights stored in ``weights``."""
    spec = MODELS[name] if name in MODELS else get_model(name)
    assert isinstance(spec, LLMSpec)
    return spec if weights == "bf16" else compress(spec, weights=weights)  # type: ignore[return-value]


def layers_only(cost: StepCost, model: LLMSpec, factors: StepFactors) -> StepCost:
    """``cost`` restricted to what Vidur's layer profiles time: the layers' GEMMs, elementwise kernels and layer
    floors; no LM head, attention, step or per-sequence overhead, or all-reduce."""
    return dataclasses.replace(cost, weight_bytes=layer_gemm_params(model) * model.weight_bytes / model.params,
                               head_flops=0.0, fixed=model.n_layers * factors.layer_overhead, per_sequence=0.0,
                               comm_latency=0.0, comm_per_token=0.0, attention_per_pair=0.0,
                               kv_read_per_token=0.0)


def step_ms(cost: StepCost, phase: str, batch: int, length: int) -> float:
    """ms of a step of ``batch`` prompts of ``length`` tokens (prefill) or of ``batch`` sequences of ``length``
    context tokens each (decode)."""
    if phase == "prefill":
        tokens = batch * length
        return cost.step(tokens, batch * length * (length + 1) / 2, tokens, batch) * 1e3
    return cost.decode_step(batch, batch * length) * 1e3


def predicted_ms(table: pd.DataFrame, factors: Callable[[str], StepFactors] | StepFactors | None = None
                 ) -> pd.Series:
    """The step model's ms for each row of ``table`` (``published_steps()``), with ``factors`` (a function of the
    device name, one ``StepFactors`` for every row, or None: each device's defaults)."""
    out = []
    for row in table.itertuples(index=False):
        device = get_device(row.device)
        if factors is None:
            f = default_step_factors(device.name)
        elif isinstance(factors, StepFactors):
            f = factors
        else:
            f = factors(device.name)
        spec = model_spec(row.model, row.weights)
        cost = StepCost.for_replica(spec, device, int(row.devices), f)
        if row.scope == "layers":
            cost = layers_only(cost, spec, f)
        out.append(step_ms(cost, row.phase, int(row.batch), int(row.length)))
    return pd.Series(out, index=table.index, name="predicted_ms")
