"""Model catalog: REFERENCE.md figures, published configs, compression transforms and name errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from workloads import MODELS, FixedCostModelSpec, LLMSpec, WorkloadError, compress, get_model
from workloads.models import KV_FORMATS, SPARSE_METADATA_BYTES_PER_PARAM, WEIGHT_FORMATS

KIB = 1024
LLMS = [name for name, spec in MODELS.items() if isinstance(spec, LLMSpec)]


def llm(name: str) -> LLMSpec:
    spec = get_model(name)
    assert isinstance(spec, LLMSpec)
    return spec


def test_catalog_holds_the_issue_models() -> None:
    assert set(LLMS) >= {"llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "qwen2.5-14b", "gpt3-175b"}
    assert isinstance(MODELS["resnet-50"], FixedCostModelSpec)
    assert isinstance(MODELS["bert-large"], FixedCostModelSpec)
    with pytest.raises(TypeError):
        MODELS["x"] = MODELS["llama-2-7b"]  # type: ignore[index]


@pytest.mark.parametrize(("name", "kib"), [("llama-3.1-8b", 128), ("llama-2-7b", 512), ("llama-3.1-70b", 320)])
def test_reference_kv_cache_bytes_per_token(name: str, kib: int) -> None:
    assert llm(name).kv_bytes_per_token == kib * KIB


def test_reference_kv_figures_come_from_the_stated_configs() -> None:
    small = llm("llama-3.1-8b")
    assert (small.n_layers, small.n_kv_heads, small.head_dim) == (32, 8, 128)
    assert llm("llama-2-7b").n_kv_heads == 32
    assert (llm("llama-3.1-70b").n_layers, llm("llama-3.1-70b").n_kv_heads) == (80, 8)


def test_llama_8b_bf16_weights_match_the_decode_bound() -> None:
    spec = llm("llama-3.1-8b")
    assert spec.weight_bytes == pytest.approx(16.06e9, rel=1e-3)
    # REFERENCE: a decode step of an 8B bf16 model on one H100 takes at least 16e9 / 3.35e12 ~ 4.8 ms.
    assert spec.weight_bytes / 3.35e12 == pytest.approx(4.8e-3, rel=0.01)


@pytest.mark.parametrize("name", LLMS)
def test_weight_formats_scale_stored_bytes(name: str) -> None:
    dense = llm(name)
    assert compress(dense, weights="int8").weight_bytes == dense.weight_bytes / 2
    assert compress(dense, weights="fp8").weight_bytes == dense.weight_bytes / 2
    assert compress(dense, weights="int4").weight_bytes == dense.weight_bytes / 4
    assert compress(dense, weights="fp16").weight_bytes == dense.weight_bytes
    assert compress(dense, kv_cache="fp8").kv_bytes_per_token == dense.kv_bytes_per_token / 2
    assert compress(dense, kv_cache="int4").kv_bytes_per_token == dense.kv_bytes_per_token / 4
    # Weights and KV cache are independent; FLOPs do not depend on formats.
    both = compress(dense, weights="int4", kv_cache="fp8")
    assert both.kv_bytes_per_token == dense.kv_bytes_per_token / 2
    assert both.flops_per_token(1000) == dense.flops_per_token(1000)


def test_compress_records_formats_and_returns_a_new_spec() -> None:
    dense = llm("llama-3.1-70b")
    small = compress(dense, weights="INT4", kv_cache="fp8", sparsity="2:4")
    assert (small.weights_format, small.kv_format, small.sparsity) == ("int4", "fp8", "2:4")
    assert (small.weight_bytes_per_param, small.kv_bytes_per_element) == (0.5, 1.0)
    assert small.weight_only_quantized and not dense.weight_only_quantized
    assert small.label == "llama-3.1-70b (weights int4, kv fp8, 2:4)"
    assert dense.label == "llama-3.1-70b"
    assert (dense.weights_format, dense.weight_bytes_per_param, dense.sparsity) == ("bf16", 2.0, "dense")
    assert compress(dense) == dense
    assert compress(small, weights="bf16", kv_cache="bf16", sparsity="dense") == dense
    with pytest.raises(dataclasses.FrozenInstanceError):
        dense.params = 1.0  # type: ignore[misc]


def test_sparsity_stores_half_the_values_plus_indices_and_only_2_4_cuts_matmul_flops() -> None:
    dense = llm("llama-3.1-8b")
    expected = dense.params * (1.0 + SPARSE_METADATA_BYTES_PER_PARAM)
    for pattern in ("unstructured-50%", "2:4"):
        assert compress(dense, sparsity=pattern).weight_bytes == pytest.approx(expected)
    assert compress(dense, sparsity="unstructured-50%").matmul_flops_factor == 1.0
    assert not compress(dense, sparsity="unstructured-50%").structured_sparsity
    assert compress(dense, sparsity="2:4").matmul_flops_factor == 0.5
    assert compress(dense, sparsity="2:4").structured_sparsity
    assert dense.matmul_flops_factor == 1.0
    # flops_per_token stays the dense count: whether 2:4 helps is the device's business.
    assert compress(dense, sparsity="2:4").flops_per_token(0) == dense.flops_per_token(0)


@pytest.mark.parametrize("name", LLMS)
def test_forward_flops_per_token(name: str) -> None:
    spec = llm(name)
    assert spec.flops_per_token() == 2 * spec.params
    assert spec.flops_per_token(0) == 2 * spec.params
    step = 2 * spec.n_layers * spec.d_model
    for context in (1, 1000, 8192):
        assert spec.flops_per_token(context) == pytest.approx(2 * spec.params + context * step, rel=1e-12)
    assert spec.flops_per_token(2001) - spec.flops_per_token(2000) == pytest.approx(step, rel=1e-6)
    with pytest.raises(WorkloadError, match="context"):
        spec.flops_per_token(-1)


@pytest.mark.parametrize(("tokens", "context"), [(0, 0), (1, 0), (7, 0), (100, 0), (50, 300)])
def test_prefill_flops_is_the_sum_over_tokens(tokens: int, context: int) -> None:
    spec = llm("llama-3.1-8b")
    expected = sum(spec.flops_per_token(context + i) for i in range(tokens))
    assert spec.prefill_flops(tokens, context) == pytest.approx(expected, rel=1e-12, abs=0)


def test_gpt3_training_flops() -> None:
    spec = llm("gpt3")
    assert spec.training_flops_per_token == 6 * 175e9
    total = spec.training_flops(300e9)
    assert total == pytest.approx(3.15e23, rel=1e-9)
    assert total == pytest.approx(3.14e23, rel=0.005)  # the published figure
    assert spec.training_flops(300e9, full_recomputation=True) == pytest.approx(8 * 175e9 * 300e9)


@pytest.mark.parametrize("name", LLMS)
def test_heads_times_head_dim_is_d_model(name: str) -> None:
    spec = llm(name)
    assert spec.n_heads * spec.head_dim == spec.d_model
    assert spec.n_heads % spec.n_kv_heads == 0


def _params_from_architecture(spec: LLMSpec) -> float:
    """Embeddings + per-layer attention and MLP + norms + LM head (if untied), from the layer figures."""
    d, kv = spec.d_model, spec.n_kv_heads * spec.head_dim
    q = spec.n_heads * spec.head_dim
    attention = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if spec.qkv_bias else 0)
    mlp = (3 if spec.mlp == "swiglu" else 2) * d * spec.ffn_dim
    norms = 2 * d
    embeddings = spec.vocab_size * d
    head = 0 if spec.tie_embeddings else spec.vocab_size * d
    return embeddings + spec.n_layers * (attention + mlp + norms) + d + head


@pytest.mark.parametrize("name", LLMS)
def test_published_param_count_matches_the_architecture(name: str) -> None:
    spec = llm(name)
    assert _params_from_architecture(spec) == pytest.approx(spec.params, rel=0.02)


def test_published_configs() -> None:
    rows = {name: (s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.ffn_dim, s.vocab_size, s.max_context)
            for name, s in MODELS.items() if isinstance(s, LLMSpec)}
    assert rows["llama-3.1-8b"] == (32, 4096, 32, 8, 14336, 128256, 131072)
    assert rows["llama-3.1-70b"] == (80, 8192, 64, 8, 28672, 128256, 131072)
    assert rows["llama-2-7b"] == (32, 4096, 32, 32, 11008, 32000, 4096)
    assert rows["qwen2.5-14b"] == (48, 5120, 40, 8, 13824, 152064, 131072)
    assert rows["gpt3-175b"] == (96, 12288, 96, 96, 49152, 50257, 2048)


def test_fixed_cost_models() -> None:
    resnet = get_model("ResNet50")
    assert isinstance(resnet, FixedCostModelSpec)
    assert resnet.flops_per_request == pytest.approx(2 * 4.1e9)  # FLOPs = 2 x MACs
    assert resnet.weight_bytes == pytest.approx(2 * 25.6e6)
    assert resnet.bytes_per_request(1) == pytest.approx(resnet.weight_bytes + resnet.activation_bytes_per_request)
    assert resnet.bytes_per_request(8) == pytest.approx(resnet.weight_bytes / 8 + resnet.activation_bytes_per_request)
    assert compress(resnet, weights="int8").weight_bytes == resnet.weight_bytes / 2
    bert = get_model("bert-large")
    assert isinstance(bert, FixedCostModelSpec)
    assert bert.weight_bytes == pytest.approx(680e6)
    # Same convention as LLMSpec.flops_per_token with context = the sequence length, times 384 tokens.
    assert bert.flops_per_request == pytest.approx(384 * (2 * 340e6 + 2 * 24 * 384 * 1024))
    with pytest.raises(WorkloadError, match="no KV cache"):
        compress(bert, kv_cache="fp8")
    with pytest.raises(WorkloadError, match="batch_size"):
        bert.bytes_per_request(0)


@pytest.mark.parametrize(("alias", "canonical"), [
    ("llama3-8b", "llama-3.1-8b"), ("Llama-3.1-8B", "llama-3.1-8b"), ("meta-llama/Llama-3.1-8B", "llama-3.1-8b"),
    ("llama3-70b", "llama-3.1-70b"), ("llama_2_7b", "llama-2-7b"), ("gpt3-175b", "gpt3-175b"),
    ("GPT-3", "gpt3-175b"), ("qwen-14b", "qwen2.5-14b"), ("Qwen/Qwen2.5-14B", "qwen2.5-14b"),
])
def test_aliases(alias: str, canonical: str) -> None:
    assert get_model(alias) is MODELS[canonical]
    assert get_model({"name": alias}) is MODELS[canonical]


def test_mapping_applies_compression_and_quality_cost() -> None:
    config = yaml.safe_load("model: {name: llama-3.1-70b, weights: int4, kv_cache: fp8, sparsity: '2:4', "
                            "quality_cost: 0.3}")
    spec = get_model(config["model"])
    assert isinstance(spec, LLMSpec)
    assert (spec.weights_format, spec.kv_format, spec.sparsity, spec.quality_cost) == ("int4", "fp8", "2:4", 0.3)
    assert spec.kv_bytes_per_token == 160 * KIB
    assert get_model(spec) is spec


def test_unquoted_yaml_2_4_gets_a_hint() -> None:
    config = yaml.safe_load("model: {name: llama-3.1-8b, sparsity: 2:4}")
    with pytest.raises(WorkloadError, match="quotes"):
        get_model(config["model"], where="inference.model")


def test_custom_llm_from_mapping() -> None:
    fields = {"name": "my-llm", "params": 1.1e9, "n_layers": 22, "d_model": 2048, "n_heads": 32, "n_kv_heads": 4,
              "head_dim": 64, "ffn_dim": 5632, "vocab_size": 32000, "max_context": 2048, "tie_embeddings": False}
    spec = get_model({**fields, "kv_cache": "fp8"})
    assert isinstance(spec, LLMSpec)
    assert spec.kv_bytes_per_token == 2 * 22 * 4 * 64 * 1.0
    assert _params_from_architecture(spec) == pytest.approx(1.1e9, rel=0.02)  # TinyLlama-1.1B
    missing = dict(fields)
    del missing["head_dim"]
    with pytest.raises(WorkloadError, match=r"^model: custom model 'my-llm' needs keys head_dim"):
        get_model(missing)
    with pytest.raises(WorkloadError, match=r"^model: model 'my-llm': n_layers must be a positive integer"):
        get_model({**fields, "n_layers": 0})
    with pytest.raises(WorkloadError, match="multiple of n_kv_heads"):
        get_model({**fields, "n_kv_heads": 5})
    with pytest.raises(WorkloadError, match="catalog model"):
        get_model({**fields, "name": "llama-2-7b"})
    custom = get_model({"name": "my-cnn", "params": 5e6, "flops_per_request": 1e9,
                        "activation_bytes_per_request": 1e7, "weights": "int8"})
    assert isinstance(custom, FixedCostModelSpec)
    assert custom.weight_bytes == 5e6


def test_unknown_names_name_the_closest_match() -> None:
    with pytest.raises(WorkloadError, match=r"^inference\.model: unknown model 'lama-3.1-8b'.*'llama-3.1-8b'\?\)$"):
        get_model("lama-3.1-8b", where="inference.model")
    with pytest.raises(WorkloadError, match=r"^model\.name: unknown model 'resnet-5'.*valid: .*bert-large.*"
                                            r"did you mean 'resnet-50'"):
        get_model({"name": "resnet-5"})
    with pytest.raises(WorkloadError, match=r"unknown key 'kv_cach' for catalog model.*did you mean 'kv_cache'"):
        get_model({"name": "llama3-8b", "kv_cach": "fp8"})
    with pytest.raises(WorkloadError, match="missing key 'name'"):
        get_model({"weights": "int4"})
    with pytest.raises(WorkloadError, match="expected a model name"):
        get_model(42)  # type: ignore[arg-type]


def test_bad_formats_list_valid_ones_and_the_closest_match() -> None:
    with pytest.raises(WorkloadError, match=r"^model: unknown weight format 'int3'; valid: bf16, fp16, fp8, int4, "
                                            r"int8 \(did you mean 'int"):
        get_model({"name": "llama-2-7b", "weights": "int3"})
    with pytest.raises(WorkloadError, match=r"unknown KV-cache format 'fp9'.*did you mean 'fp8'"):
        compress(llm("llama-2-7b"), kv_cache="fp9")
    with pytest.raises(WorkloadError, match=r"unknown sparsity '2:8'.*valid: 2:4, dense, unstructured-50%"):
        compress(llm("llama-2-7b"), sparsity="2:8")
    with pytest.raises(WorkloadError, match="quality_cost"):
        get_model({"name": "llama-2-7b", "quality_cost": -1})


def test_format_tables() -> None:
    assert dict(WEIGHT_FORMATS) == {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
    assert set(KV_FORMATS) >= {"bf16", "fp16", "fp8", "int8"}
