"""Model catalog: LLMs by architecture, non-LLM models by fixed cost per request, and compression transforms.

Conventions (docs/REFERENCE.md, "Inference step time" and "Training step time"):

- FLOPs count a multiply-add as 2 FLOPs (FLOPs = 2 x MACs), so an LLM's forward pass costs ``2 * params``
  FLOPs per token plus attention ``2 * n_layers * context * d_model``; training costs ``6 * params`` per
  token (``8 * params`` with full activation recomputation).
- Bytes are bytes (SI prefixes elsewhere; the KV figures of REFERENCE.md are in KiB = 1024 bytes).
- ``params`` is the published total parameter count (embeddings and untied LM head included).

Compression (``compress``) changes the bytes a model stores and reads and records the format names.
Whether a device computes faster in a format, or supports 2:4 sparsity at all, is the simulator's
business: it reads ``weights_format``, ``weight_only_quantized`` and ``structured_sparsity`` here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from workloads._names import check_keys, unknown_name
from workloads.errors import WorkloadError

WEIGHT_FORMATS: Mapping[str, float] = MappingProxyType({
    "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
})
"""Bytes per stored weight for each weight format. ``int4`` is weight-only: activations stay 16-bit."""

KV_FORMATS: Mapping[str, float] = MappingProxyType({
    "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
})
"""Bytes per stored KV-cache element for each KV-cache format."""

WEIGHT_ONLY_FORMATS: frozenset[str] = frozenset({"int4"})
"""Weight formats dequantized to 16 bits before the matmul (compute runs at the 16-bit rate)."""

SPARSITIES: tuple[str, ...] = ("dense", "unstructured-50%", "2:4")
"""Pruning patterns. Both sparse patterns keep half of the weights."""

SPARSE_METADATA_BYTES_PER_PARAM = 1 / 8
"""Index overhead of a sparse weight, per dense parameter: a 1-bit mask for unstructured sparsity
(bitmask storage), and 2-bit indices of the 2 kept values in each group of 4 for 2:4."""

MLP_KINDS: tuple[str, ...] = ("swiglu", "gelu")
"""Feed-forward block: ``swiglu`` has 3 matrices (gate, up, down) of ``d_model x ffn_dim``, ``gelu`` has 2."""


def _check_positive_int(label: str, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WorkloadError(f"{label}: {key} must be a positive integer, got {value!r}")


def _check_positive(label: str, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise WorkloadError(f"{label}: {key} must be a positive finite number, got {value!r}")


def _check_compression(label: str, spec: LLMSpec | FixedCostModelSpec) -> None:
    _check_positive(label, "params", spec.params)
    _check_positive(label, "weight_bytes_per_param", spec.weight_bytes_per_param)
    if spec.weights_format not in WEIGHT_FORMATS:
        raise unknown_name("weight format", spec.weights_format, WEIGHT_FORMATS, where=label)
    if spec.sparsity not in SPARSITIES:
        raise unknown_name("sparsity", spec.sparsity, SPARSITIES, where=label)
    cost = spec.quality_cost
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))
                             or not math.isfinite(cost) or cost < 0):
        raise WorkloadError(f"{label}: quality_cost must be a finite number >= 0 or None, got {cost!r}")


def _stored_weight_bytes(params: float, bytes_per_param: float, sparsity: str) -> float:
    if sparsity == "dense":
        return params * bytes_per_param
    return params * (0.5 * bytes_per_param + SPARSE_METADATA_BYTES_PER_PARAM)


def _label(name: str, parts: list[str]) -> str:
    return f"{name} ({', '.join(parts)})" if parts else name


class _Formats:
    """What a model spec's storage formats imply, shared by LLM and fixed-cost specs."""

    sparsity: str
    weights_format: str

    @property
    def structured_sparsity(self) -> bool:
        """True under 2:4 sparsity, which halves matmul FLOPs on devices with sparse tensor cores."""
        return self.sparsity == "2:4"

    @property
    def matmul_flops_factor(self) -> float:
        """0.5 under 2:4 sparsity, else 1. The simulator applies it only where the device supports 2:4."""
        return 0.5 if self.structured_sparsity else 1.0

    @property
    def weight_only_quantized(self) -> bool:
        """True when weights are dequantized to 16 bits before the matmul (``int4``)."""
        return self.weights_format in WEIGHT_ONLY_FORMATS


@dataclass(frozen=True)
class LLMSpec(_Formats):
    """A decoder-only transformer, described by its published configuration.

    ``head_dim`` is given explicitly (it need not equal ``d_model / n_heads``); ``n_kv_heads < n_heads``
    is grouped-query attention. ``mlp``, ``tie_embeddings`` and ``qkv_bias`` describe the architecture
    well enough to recompute ``params``. The compression fields are set by :func:`compress`:
    ``weight_bytes_per_param`` and ``kv_bytes_per_element`` default to the formats' sizes but may be
    set directly (e.g. 0.53 for int4 with group-wise scales). ``quality_cost`` is an optional,
    user-given quality loss of this variant that results carry along; nothing here computes it.
    """

    name: str
    params: float
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    max_context: int
    mlp: str = "swiglu"
    tie_embeddings: bool = False
    qkv_bias: bool = False
    weight_bytes_per_param: float = 2.0
    kv_bytes_per_element: float = 2.0
    weights_format: str = "bf16"
    kv_format: str = "bf16"
    sparsity: str = "dense"
    quality_cost: float | None = None

    def __post_init__(self) -> None:
        label = f"model {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise WorkloadError(f"{label}: name must be a non-empty string")
        for key in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size",
                    "max_context"):
            _check_positive_int(label, key, getattr(self, key))
        if self.n_heads % self.n_kv_heads:
            raise WorkloadError(f"{label}: n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                                f"({self.n_kv_heads})")
        if self.mlp not in MLP_KINDS:
            raise unknown_name("mlp", self.mlp, MLP_KINDS, where=label)
        for key in ("tie_embeddings", "qkv_bias"):
            if not isinstance(getattr(self, key), bool):
                raise WorkloadError(f"{label}: {key} must be true or false, got {getattr(self, key)!r}")
        _check_compression(label, self)
        _check_positive(label, "kv_bytes_per_element", self.kv_bytes_per_element)
        if self.kv_format not in KV_FORMATS:
            raise unknown_name("KV-cache format", self.kv_format, KV_FORMATS, where=label)

    @property
    def weight_bytes(self) -> float:
        """Bytes of stored weights: ``params * weight_bytes_per_param`` when dense.

        Sparse variants are modelled as stored compressed: half the values plus
        ``SPARSE_METADATA_BYTES_PER_PARAM`` of indices per dense parameter, applied to all parameters
        (embeddings included, a slight overestimate of the saving).
        """
        return _stored_weight_bytes(self.params, self.weight_bytes_per_param, self.sparsity)

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token: ``2 * n_layers * n_kv_heads * head_dim * kv_bytes_per_element``."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_element

    def flops_per_token(self, context: float = 0) -> float:
        """Forward FLOPs of one token attending to ``context`` earlier tokens: ``2 * params`` plus
        ``2 * n_layers * context * d_model``. Dense count; see ``matmul_flops_factor`` for 2:4."""
        if isinstance(context, bool) or not isinstance(context, (int, float)) or not context >= 0:
            raise WorkloadError(f"model {self.name!r}: context must be a number >= 0, got {context!r}")
        return 2 * self.params + 2 * self.n_layers * context * self.d_model

    def prefill_flops(self, tokens: int, context: int = 0) -> float:
        """Forward FLOPs of ``tokens`` new tokens after ``context`` cached ones (token ``i`` attends to
        ``context + i`` earlier tokens): the closed-form sum of ``flops_per_token``."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise WorkloadError(f"model {self.name!r}: tokens must be an integer >= 0, got {tokens!r}")
        per_token = self.flops_per_token(context)
        return tokens * per_token + self.n_layers * self.d_model * tokens * (tokens - 1)

    @property
    def training_flops_per_token(self) -> float:
        """Training FLOPs per token, ``6 * params`` (forward + backward, no recomputation)."""
        return 6 * self.params

    def training_flops(self, tokens: float, *, full_recomputation: bool = False) -> float:
        """Training FLOPs over ``tokens`` tokens: ``6 * params`` per token, ``8 * params`` with full
        activation recomputation."""
        return (8 if full_recomputation else 6) * self.params * tokens

    @property
    def label(self) -> str:
        """``name`` plus any non-default formats, e.g. ``"llama-3.1-70b (weights int4, kv fp8, 2:4)"``."""
        parts = [f"weights {self.weights_format}"] if self.weights_format != "bf16" else []
        parts += [f"kv {self.kv_format}"] if self.kv_format != "bf16" else []
        parts += [self.sparsity] if self.sparsity != "dense" else []
        return _label(self.name, parts)


@dataclass(frozen=True)
class FixedCostModelSpec(_Formats):
    """A non-LLM model whose every request costs the same: ``flops_per_request`` (FLOPs = 2 x MACs, as
    for LLMs) and ``activation_bytes_per_request`` of activation traffic (each layer output written
    once and read once, at 16 bits). ``request`` says what one request is (an image, a sequence)."""

    name: str
    params: float
    flops_per_request: float
    activation_bytes_per_request: float
    request: str = ""
    weight_bytes_per_param: float = 2.0
    weights_format: str = "bf16"
    sparsity: str = "dense"
    quality_cost: float | None = None

    def __post_init__(self) -> None:
        label = f"model {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise WorkloadError(f"{label}: name must be a non-empty string")
        _check_positive(label, "flops_per_request", self.flops_per_request)
        _check_positive(label, "activation_bytes_per_request", self.activation_bytes_per_request)
        _check_compression(label, self)

    @property
    def weight_bytes(self) -> float:
        """Bytes of stored weights (sparse variants stored compressed, as for ``LLMSpec.weight_bytes``)."""
        return _stored_weight_bytes(self.params, self.weight_bytes_per_param, self.sparsity)

    def bytes_per_request(self, batch_size: int = 1) -> float:
        """HBM bytes per request in a batch of ``batch_size``: the weights, read once per batch, shared
        among its requests, plus the request's own activation traffic."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise WorkloadError(f"model {self.name!r}: batch_size must be a positive integer, got {batch_size!r}")
        return self.weight_bytes / batch_size + self.activation_bytes_per_request

    @property
    def label(self) -> str:
        """``name`` plus any non-default formats."""
        parts = [f"weights {self.weights_format}"] if self.weights_format != "bf16" else []
        parts += [self.sparsity] if self.sparsity != "dense" else []
        return _label(self.name, parts)


ModelSpec = LLMSpec | FixedCostModelSpec


def compress(spec: ModelSpec, *, weights: str | None = None, kv_cache: str | None = None,
             sparsity: str | None = None, where: str = "") -> ModelSpec:
    """A copy of ``spec`` with weights stored in format ``weights``, the KV cache in ``kv_cache`` and
    pruning pattern ``sparsity``; ``None`` keeps the current one. Bytes per weight and per KV element
    are set from ``WEIGHT_FORMATS`` and ``KV_FORMATS``. ``where`` prefixes error messages."""
    label = where or f"model {spec.name!r}"
    changes: dict[str, object] = {}
    if weights is not None:
        key = weights.lower() if isinstance(weights, str) else weights
        if key not in WEIGHT_FORMATS:
            raise unknown_name("weight format", weights, WEIGHT_FORMATS, where=label)
        changes.update(weights_format=key, weight_bytes_per_param=WEIGHT_FORMATS[key])
    if kv_cache is not None:
        if not isinstance(spec, LLMSpec):
            raise WorkloadError(f"{label}: model {spec.name!r} has no KV cache (not an LLM)")
        key = kv_cache.lower() if isinstance(kv_cache, str) else kv_cache
        if key not in KV_FORMATS:
            raise unknown_name("KV-cache format", kv_cache, KV_FORMATS, where=label)
        changes.update(kv_format=key, kv_bytes_per_element=KV_FORMATS[key])
    if sparsity is not None:
        if isinstance(sparsity, int) and sparsity == 124:
            raise WorkloadError(f"{label}: sparsity 124 is how YAML reads an unquoted 2:4; write '2:4' in quotes")
        key = sparsity.lower() if isinstance(sparsity, str) else sparsity
        if key not in SPARSITIES:
            raise unknown_name("sparsity", sparsity, SPARSITIES, where=label)
        changes["sparsity"] = key
    return dataclasses.replace(spec, **changes) if changes else spec


def _llama(name: str, params: float, n_layers: int, d_model: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
           vocab_size: int, max_context: int) -> LLMSpec:
    return LLMSpec(name=name, params=params, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                   n_kv_heads=n_kv_heads, head_dim=128, ffn_dim=ffn_dim, vocab_size=vocab_size,
                   max_context=max_context)


_CATALOG: tuple[ModelSpec, ...] = (
    # Published Hugging Face configs (config.json) and parameter counts.
    _llama("llama-3.1-8b", 8.03e9, 32, 4096, 32, 8, 14336, 128256, 131072),
    _llama("llama-3.1-70b", 70.6e9, 80, 8192, 64, 8, 28672, 128256, 131072),
    _llama("llama-2-7b", 6.74e9, 32, 4096, 32, 32, 11008, 32000, 4096),
    # Llama 3.2 (Hugging Face meta-llama/Llama-3.2-1B and -3B config.json): tied embeddings; the 1B has heads of 64.
    # Small models of the Llama 3 vocabulary: the usual draft models for speculative decoding of the 8B and 70B.
    LLMSpec(name="llama-3.2-1b", params=1.24e9, n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, head_dim=64,
            ffn_dim=8192, vocab_size=128256, max_context=131072, tie_embeddings=True),
    LLMSpec(name="llama-3.2-3b", params=3.21e9, n_layers=28, d_model=3072, n_heads=24, n_kv_heads=8, head_dim=128,
            ffn_dim=8192, vocab_size=128256, max_context=131072, tie_embeddings=True),
    LLMSpec(name="qwen2.5-14b", params=14.7e9, n_layers=48, d_model=5120, n_heads=40, n_kv_heads=8, head_dim=128,
            ffn_dim=13824, vocab_size=152064, max_context=131072, qkv_bias=True),
    # OPT (Zhang et al. 2022, Table 1; Hugging Face facebook/opt-13b and opt-66b config.json): ReLU MLP of two
    # matrices (the "gelu" kind here: same shapes and FLOPs), tied embeddings, biases, context 2048.
    LLMSpec(name="opt-13b", params=12.85e9, n_layers=40, d_model=5120, n_heads=40, n_kv_heads=40, head_dim=128,
            ffn_dim=20480, vocab_size=50272, max_context=2048, mlp="gelu", tie_embeddings=True, qkv_bias=True),
    LLMSpec(name="opt-66b", params=65.7e9, n_layers=64, d_model=9216, n_heads=72, n_kv_heads=72, head_dim=128,
            ffn_dim=36864, vocab_size=50272, max_context=2048, mlp="gelu", tie_embeddings=True, qkv_bias=True),
    # Brown et al. 2020, Table 2.1: 96 layers, d_model 12288, 96 heads of 128, context 2048; FFN 4 x d_model,
    # GPT-2 BPE vocabulary, tied embeddings.
    LLMSpec(name="gpt3-175b", params=175e9, n_layers=96, d_model=12288, n_heads=96, n_kv_heads=96, head_dim=128,
            ffn_dim=49152, vocab_size=50257, max_context=2048, mlp="gelu", tie_embeddings=True),
    # ResNet-50 on one 224x224 image: 4.1e9 multiply-adds = 8.2e9 FLOPs; 25.6e6 parameters. Activations:
    # the convolution outputs (BN and ReLU fused) sum to 10.8e6 elements, each written and read once at 2 bytes.
    FixedCostModelSpec(name="resnet-50", params=25.6e6, flops_per_request=8.2e9,
                       activation_bytes_per_request=2 * 2 * 10.8e6, request="one 224x224 image"),
    # BERT-large (24 layers, d_model 1024, FFN 4096, 340e6 parameters) on one 384-token sequence (SQuAD):
    # 2 * params * 384 plus attention 2 * 24 * 384 * 1024 per token, every token attending to all 384.
    # Activations: per token and layer Q, K, V, attention output, projection, FFN output (6 x 1024) and the
    # FFN intermediate (4096) = 10 x 1024 elements, written and read once at 2 bytes (fused attention).
    FixedCostModelSpec(name="bert-large", params=340e6,
                       flops_per_request=2 * 340e6 * 384 + 2 * 24 * 384 * 1024 * 384,
                       activation_bytes_per_request=2 * 2 * 24 * 384 * 10 * 1024, request="one 384-token sequence"),
)

MODELS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _CATALOG})
"""The model catalog by canonical name (bf16 weights and KV cache, dense)."""

_ALIASES: Mapping[str, str] = MappingProxyType({
    **{alias: "llama-3.1-8b" for alias in (
        "llama3-8b", "llama-3-8b", "llama3.1-8b", "meta-llama-3.1-8b", "meta-llama-3-8b", "llama-3.1-8b-instruct")},
    **{alias: "llama-3.1-70b" for alias in (
        "llama3-70b", "llama-3-70b", "llama3.1-70b", "meta-llama-3.1-70b", "meta-llama-3-70b",
        "llama-3.1-70b-instruct")},
    **{alias: "llama-2-7b" for alias in ("llama2-7b", "llama-2-7b-hf", "llama-2-7b-chat")},
    **{alias: "llama-3.2-1b" for alias in ("llama3.2-1b", "llama-3.2-1b-instruct", "meta-llama-3.2-1b")},
    **{alias: "llama-3.2-3b" for alias in ("llama3.2-3b", "llama-3.2-3b-instruct", "meta-llama-3.2-3b")},
    **{alias: "qwen2.5-14b" for alias in ("qwen-14b", "qwen2.5-14b-instruct", "qwen-2.5-14b", "qwen25-14b")},
    **{alias: "opt-13b" for alias in ("opt13b", "facebook-opt-13b")},
    **{alias: "opt-66b" for alias in ("opt66b", "facebook-opt-66b")},
    **{alias: "gpt3-175b" for alias in ("gpt-3", "gpt3", "gpt-3-175b", "gpt-3.175b", "davinci")},
    **{alias: "resnet-50" for alias in ("resnet50", "resnet-50-v1.5")},
    **{alias: "bert-large" for alias in ("bert-large-uncased", "bert-large-cased", "bert")},
})

_COMPRESSION_KEYS = ("weights", "kv_cache", "sparsity", "quality_cost")
_LLM_KEYS = ("params", "n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size",
             "max_context")
_LLM_OPTIONAL = ("mlp", "tie_embeddings", "qkv_bias")
_FIXED_KEYS = ("params", "flops_per_request", "activation_bytes_per_request")


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-").replace(" ", "-").rsplit("/", 1)[-1]
    if key in MODELS:
        return key
    return _ALIASES.get(key)


def _lookup(name: object, where: str) -> ModelSpec:
    canonical = _canonical(name) if isinstance(name, str) else None
    if canonical is None:
        raise unknown_name("model", name, MODELS, where=where)
    return MODELS[canonical]


def _custom(spec: Mapping[str, object], where: str) -> ModelSpec:
    name = spec["name"]
    context = f" for custom model {name!r}"
    if "flops_per_request" in spec:
        required, optional, cls = _FIXED_KEYS, ("request", "weights", "sparsity", "quality_cost"), FixedCostModelSpec
    else:
        required, optional, cls = _LLM_KEYS, (*_LLM_OPTIONAL, *_COMPRESSION_KEYS), LLMSpec
    check_keys(spec, ["name", *required, *optional], where=where, context=context)
    missing = [key for key in required if key not in spec]
    if missing:
        raise WorkloadError(f"{where}: custom model {name!r} needs keys {', '.join(missing)} "
                            f"(or use a catalog name: {', '.join(sorted(MODELS))})")
    fields = {key: value for key, value in spec.items() if key not in _COMPRESSION_KEYS}
    fields["quality_cost"] = spec.get("quality_cost")
    try:
        return cls(**fields)  # type: ignore[arg-type]
    except WorkloadError as exc:
        raise WorkloadError(f"{where}: {exc}") from None


def get_model(spec: str | Mapping[str, object] | ModelSpec, *, where: str = "model") -> ModelSpec:
    """The model a config names.

    ``spec`` is a catalog name or alias (case-insensitive; ``"llama3-8b"``, ``"meta-llama/Llama-3.1-8B"``),
    a mapping ``{name, weights?, kv_cache?, sparsity?, quality_cost?}`` naming a catalog model and its
    compression, a mapping describing a custom LLM (``name`` and every key of ``LLMSpec`` up to
    ``max_context``) or a custom fixed-cost model (``name, params, flops_per_request,
    activation_bytes_per_request``), or a spec, returned as is. ``where`` is the config key path used
    in error messages.
    """
    if isinstance(spec, (LLMSpec, FixedCostModelSpec)):
        return spec
    if isinstance(spec, str):
        return _lookup(spec, where)
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{where}: expected a model name or a mapping with a 'name' key, got {spec!r}")
    if "name" not in spec:
        raise WorkloadError(f"{where}: missing key 'name'; catalog models: {', '.join(sorted(MODELS))}")
    name = spec["name"]
    custom = any(key in spec for key in (*_LLM_KEYS, *_FIXED_KEYS))
    if custom:
        if isinstance(name, str) and _canonical(name) is not None:
            raise WorkloadError(f"{where}: {name!r} is a catalog model; give only the keys name, "
                                f"{', '.join(_COMPRESSION_KEYS)}, or pick another name for a custom model")
        if not isinstance(name, str) or not name:
            raise WorkloadError(f"{where}.name: must be a non-empty string, got {name!r}")
        base = _custom(spec, where)
    else:
        base = _lookup(name, f"{where}.name")
        check_keys(spec, ["name", *_COMPRESSION_KEYS], where=where, context=f" for catalog model {base.name!r}")
        if "quality_cost" in spec:
            try:
                base = dataclasses.replace(base, quality_cost=spec["quality_cost"])  # type: ignore[arg-type]
            except WorkloadError as exc:
                raise WorkloadError(f"{where}: {exc}") from None
    return compress(base, weights=spec.get("weights"), kv_cache=spec.get("kv_cache"),  # type: ignore[arg-type]
                    sparsity=spec.get("sparsity"), where=where)
