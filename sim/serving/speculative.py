"""Speculative decoding, an option of continuous batching (``ContinuousBatching(speculative=...)``).

**Model** (Leviathan, Kalman and Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023).
Each decode iteration of a replica's batch, a draft model proposes ``k`` tokens per sequence, one draft decode
step after another, and the target model verifies them in one step over the ``k + 1`` positions of every
sequence. Each draft token is accepted with probability ``a``, independently (the paper's simplifying
assumption of an i.i.d. acceptance rate); the first rejection ends the run of accepted tokens, and the target adds
one token of its own (the correction at the first rejection, or a bonus token after ``k`` acceptances). The
accepted count ``n`` of one sequence in one iteration is a truncated geometric variable, ``P(n = j) = a^j (1 - a)``
for ``j < k`` and ``P(n = k) = a^k``, and the tokens it yields, ``n + 1``, have the expectation of the paper's
equation (1):

    E = (1 - a^(k+1)) / (1 - a)

**Drawn, not fluid.** Every sequence draws its accepted count in every iteration, so tokens per iteration, and
TPOT, vary as they do in a real engine. Draw ``j`` of request ``i`` of a service is a function of the service's
named random stream (``speculative:SERVICE``, one 64-bit key) and ``(i, j)`` alone: the ``j``-th output of a
SplitMix64 generator seeded from the key and the request id (``acceptance_uniforms``). So the draws do not depend on
how the engine cuts decode runs (a coalesced run equals the step-by-step reference), on which replica serves the
request or on what else it batches with: compared routers and batching limits see the same acceptance outcomes.

**Costs**, all from the step-time model (``sim.serving.step_time``) of the replica's devices:

- draft: a catalog model (``draft="llama-3.2-1b"``) runs its own decode steps on the same devices with the same
  tensor-parallel degree and factors; a number (``draft=0.1``) is a draft whose every step costs that fraction
  of the target's step at the same work (time and FLOPs; an assumption that fits heads-like drafts);
- verify: one target step of ``B (k + 1)`` tokens for a batch of ``B``, each position with its LM head and
  sample (``sequences = B (k + 1)`` in the step model), each attending its own sequence's context:
  ``attended = sum_s sum_{q=1..k+1} (ctx_s + q)`` pairs, ``kv_read = sum_s (ctx_s + k + 1)`` (the KV cache is read
  once per sequence for all its positions);
- prefill (and chunked steps): the draft ingests every token the target does, to keep its own KV cache, so a
  prefill step costs the target's step plus the draft's step of the same work (``SpeculativeStepCost.step``);
- memory: a catalog draft's weights and its KV cache per token come out of the replica's HBM (a cost-fraction
  draft takes none, an assumption);
- KV cache: an iteration needs room for ``min(k + 1, tokens left)`` tokens per sequence (the lookahead slots);
  only the tokens it yields stay.

Decodes that ride in a chunked-prefill step beside prompt chunks advance one token each (no speculation in mixed
steps). A request's last iteration may yield more tokens than it has left: the surplus is discarded.

**Counted, not hidden.** Per request (requests table) and per replica (replicas table): ``draft_tokens`` proposed
(``k`` per verify step), ``draft_accepted`` (those that became output tokens) and ``draft_rejected`` (the rest:
rejected by the target, or past the end of the output); per replica also ``draft_flops`` (all the draft's work,
prefill included) and ``rejected_flops`` (the verify step's work on positions whose tokens were thrown away:
their layers, LM head and attention). Each verify step yields one token of its own plus the accepted draft tokens,
so a request's output is its prefill's token (one per prefill, recomputes included), plus its verify steps, plus
its accepted draft tokens, plus its one-token decodes in mixed chunked-prefill steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.serving.step_time import StepCost
from workloads.errors import WorkloadError
from workloads.models import LLMSpec, get_model

PLAN_ITERATIONS = 64
"""The most decode iterations one coalesced run plans (and draws) ahead; a longer run continues in another."""

REQUEST_COLUMNS: tuple[str, ...] = ("draft_tokens", "draft_accepted", "draft_rejected")
"""Per-request counts a speculative replica records (declared in ``sim.output.schema``)."""

REPLICA_COLUMNS: tuple[str, ...] = (*REQUEST_COLUMNS, "draft_flops", "rejected_flops")
"""Per-replica figures of a speculative replica (declared in ``sim.output.schema``)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SpeculativeDecoding:
    """Speculative decoding of a continuous-batching service (module docstring for the model).

    ``draft``: a catalog model name, a model mapping (``{name: llama-3.2-1b, weights: fp8}``) or an ``LLMSpec``,
    which runs its own steps on the replica's devices and takes HBM; or a number in (0, 1), a draft whose every step
    costs that fraction of the target's. ``k``: draft tokens proposed per sequence per iteration (an integer >= 1).
    ``acceptance``: the probability that the target accepts a draft token, in [0, 1). The draft must be smaller
    than the target (checked by ``ServiceSpec``) and share its vocabulary (not checked)."""

    draft: str | Mapping[str, Any] | LLMSpec | float
    k: int
    acceptance: float
    draft_model: LLMSpec | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ConfigError(f"speculative.k: the draft length must be an integer >= 1, got {self.k!r}")
        if not _is_number(self.acceptance) or not 0 <= self.acceptance < 1:
            raise ConfigError(f"speculative.acceptance: the acceptance rate must be a number in [0, 1), got "
                              f"{self.acceptance!r}")
        draft = self.draft
        model: LLMSpec | None = None
        if isinstance(draft, bool):
            raise ConfigError(f"speculative.draft: a catalog model or a cost fraction in (0, 1), got {draft!r}")
        if isinstance(draft, (int, float)):
            if not _is_number(draft) or not 0 < draft < 1:
                raise ConfigError(f"speculative.draft: a cost fraction of the target's step must be in (0, 1), got "
                                  f"{draft!r}")
        else:
            if not isinstance(draft, (str, Mapping, LLMSpec)):
                raise ConfigError(f"speculative.draft: a catalog model or a cost fraction in (0, 1), got {draft!r}")
            try:
                spec = get_model(draft, where="speculative.draft")
            except WorkloadError as exc:
                raise ConfigError(str(exc)) from None
            if not isinstance(spec, LLMSpec):
                raise ConfigError(f"speculative.draft: {spec.name} is not a language model")
            model = spec
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "acceptance", float(self.acceptance))
        object.__setattr__(self, "draft_model", model)

    @classmethod
    def from_mapping(cls, value: SpeculativeDecoding | Mapping[str, Any]) -> SpeculativeDecoding:
        """``value`` as is, or the option a mapping ``{draft, k, acceptance}`` gives (keys checked)."""
        if isinstance(value, SpeculativeDecoding):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"speculative: expected a mapping {{draft, k, acceptance}}, got {value!r}")
        keys = ("draft", "k", "acceptance")
        unknown = [key for key in value if key not in keys]
        if unknown:
            raise ConfigError(f"speculative.{unknown[0]}: unknown key; valid: {', '.join(keys)}")
        missing = [key for key in keys if key not in value]
        if missing:
            raise ConfigError(f"speculative.{missing[0]}: missing; give draft (a catalog model or a cost fraction "
                              "in (0, 1)), k (draft tokens per step) and acceptance (in [0, 1))")
        return cls(value["draft"], value["k"], value["acceptance"])

    @property
    def fraction(self) -> float | None:
        """The draft's cost as a fraction of the target's step, or None for a model draft."""
        return None if self.draft_model is not None else float(self.draft)  # type: ignore[arg-type]

    @property
    def expected_tokens(self) -> float:
        """Tokens one iteration yields per sequence on average: ``(1 - a^(k+1)) / (1 - a)`` (Leviathan et al.
        2023, eq. 1)."""
        return expected_tokens(self.acceptance, self.k)

    def check_target(self, target: LLMSpec, where: str) -> None:
        """A model draft must be smaller than the ``target`` it drafts for; ``where`` names the service."""
        draft = self.draft_model
        if draft is not None and draft.params >= target.params:
            raise ConfigError(f"{where}: speculative.draft {draft.name} ({draft.params / 1e9:.3g}B parameters) is not "
                              f"smaller than the target {target.name} ({target.params / 1e9:.3g}B)")

    def describe(self) -> dict[str, Any]:
        """The option as a plain mapping (for the run record), with its expected tokens per iteration."""
        draft = self.draft_model.label if self.draft_model is not None else self.fraction
        return {"draft": draft, "k": self.k, "acceptance": self.acceptance, "expected_tokens": self.expected_tokens}


def expected_tokens(acceptance: float, k: int) -> float:
    """``(1 - a^(k+1)) / (1 - a)``: the expected tokens per sequence of one iteration (Leviathan et al. 2023, eq. 1)."""
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


# ------------------------------------------------------------------------------------------ acceptance draws
_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea and Flood 2014), element-wise on uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def request_seeds(key: int, request_ids: np.ndarray) -> np.ndarray:
    """The SplitMix64 state (uint64) from which each request's acceptance draws start."""
    ids = np.asarray(request_ids, dtype=np.uint64)
    return _splitmix(np.full(ids.shape, key, dtype=np.uint64) ^ _splitmix(ids + np.uint64(1)))


def acceptance_uniforms(key: int, request_ids: np.ndarray, first: np.ndarray, count: int, *,
                        seeds: np.ndarray | None = None) -> np.ndarray:
    """Uniforms in (0, 1], shape ``(count, len(request_ids))``: entry ``(i, s)`` is draw ``first[s] + i`` of request
    ``request_ids[s]``, the ``first[s] + i + 1``-th output of a SplitMix64 generator seeded from ``key`` and the
    request id (``seeds``: ``request_seeds(key, request_ids)``, if at hand). A draw depends on ``(key, request,
    index)`` alone."""
    if seeds is None:
        seeds = request_seeds(key, request_ids)
    index = np.asarray(first, dtype=np.uint64) + np.arange(1, count + 1, dtype=np.uint64)[:, None]
    x = _splitmix(seeds + index * _GAMMA)  # uint64 arrays wrap around silently, as SplitMix64 wants
    return ((x >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53


def accepted_counts(uniforms: np.ndarray, acceptance: float, k: int) -> np.ndarray:
    """Draft tokens accepted, by inversion of the truncated geometric law: ``n = #{j in 1..k : u <= a^j}``, so that
    ``P(n >= j) = P(u <= a^j) = a^j`` for ``j <= k``."""
    if acceptance <= 0:
        return np.zeros(uniforms.shape, dtype=np.int64)
    ascending = acceptance ** np.arange(k, 0, -1, dtype=float)  # a^k, ..., a^1
    return k - np.searchsorted(ascending, uniforms, side="left")


# ------------------------------------------------------------------------------------------ costs
@dataclass(frozen=True)
class SpeculativeStepCost(StepCost):
    """The step cost of a speculative replica: its fields are the target's (``target``), except the KV bytes per
    token, which count the draft's cache too. ``step`` and ``flops`` cost a prefill (or chunked) step on both models;
    ``iterations`` costs decode iterations (draft steps and the verify step). Build with ``build``."""

    target: StepCost | None = None
    draft: StepCost | None = None  # the draft model's own step cost on the same devices; None: ``fraction``
    fraction: float = 0.0
    k: int = 1

    @classmethod
    def build(cls, target: StepCost, draft: StepCost | None, option: SpeculativeDecoding) -> SpeculativeStepCost:
        """The cost of ``target`` decoding speculatively with ``draft`` (None for a cost-fraction draft)."""
        values = {f.name: getattr(target, f.name) for f in fields(StepCost)}
        if draft is not None:
            values["kv_bytes_per_token"] = target.kv_bytes_per_token + draft.kv_bytes_per_token
        return cls(**values, target=target, draft=draft, fraction=option.fraction or 0.0, k=option.k)

    def _parts(self) -> tuple[StepCost, StepCost | None]:
        assert self.target is not None, "build with SpeculativeStepCost.build"
        return self.target, self.draft

    def step(self, tokens: float, attended: float, kv_read: float, sequences: float) -> float:
        """Seconds of a step of this work on the target plus the draft ingesting the same tokens."""
        target, draft = self._parts()
        seconds = target.step(tokens, attended, kv_read, sequences)
        if draft is None:
            return seconds * (1.0 + self.fraction)
        return seconds + draft.step(tokens, attended, kv_read, sequences)

    def flops(self, tokens: float, attended: float, sequences: float) -> float:
        """FLOPs of a step of this work on both models."""
        return self.target_flops(tokens, attended, sequences) + self.draft_flops(tokens, attended, sequences)

    def target_flops(self, tokens: float, attended: float, sequences: float) -> float:
        return self._parts()[0].flops(tokens, attended, sequences)

    def draft_flops(self, tokens: float, attended: float, sequences: float) -> float:
        """The draft's FLOPs of a step of this work (prefill, chunked steps)."""
        target, draft = self._parts()
        if draft is None:
            return self.fraction * target.flops(tokens, attended, sequences)
        return draft.flops(tokens, attended, sequences)

    def verify_work(self, batch: int, contexts: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, int]:
        """(tokens, attended pairs, KV tokens read, sequences) of verify steps of ``batch`` sequences whose contexts
        (KV tokens before the step) sum to each of ``contexts``."""
        k1 = self.k + 1
        attended = k1 * contexts + batch * k1 * (k1 + 1) / 2.0
        return batch * k1, attended, contexts + batch * k1, batch * k1

    def iteration_seconds(self, batch: int, contexts: np.ndarray) -> np.ndarray:
        """Seconds of decode iterations (``k`` draft steps, then the verify step) of ``batch`` sequences whose
        contexts sum to each of ``contexts`` at the iteration's start."""
        target, draft = self._parts()
        tokens, attended, kv_read, sequences = self.verify_work(batch, contexts)
        if type(target) is StepCost:  # the verify time is linear but for attention's max: vectorized
            verify = target.step(tokens, 0.0, 0.0, sequences) + np.maximum(attended * target.attention_per_pair,
                                                                           kv_read * target.kv_read_per_token)
        else:  # a profiled target: its own step function, one iteration at a time
            verify = np.array([target.step(tokens, float(a), float(r), sequences)
                               for a, r in zip(attended, kv_read, strict=True)])
        # draft step j (0-based) of the k: each sequence's context is ctx + j + 1 once it has written its token
        if draft is None:
            return verify + self.fraction * target.decode_run(batch, contexts + batch, self.k)
        return verify + draft.decode_run(batch, contexts + batch, self.k)

    def iteration_flops(self, batch: int, contexts: float, iterations: int) -> tuple[float, float]:
        """(target FLOPs, draft FLOPs) of ``iterations`` decode iterations of ``batch`` sequences whose contexts at
        the iterations' starts sum to ``contexts`` in all (FLOPs are linear in the context)."""
        target, draft = self._parts()
        tokens, attended, _, sequences = self.verify_work(batch, np.asarray(contexts))
        verify = iterations * target.flops(tokens, 0.0, sequences) + target.attention_flops * float(
            attended + (iterations - 1) * batch * (self.k + 1) * (self.k + 2) / 2.0)
        mean = contexts / iterations + batch
        if draft is None:
            return verify, iterations * self.fraction * target.decode_run_flops(batch, mean, self.k)
        return verify, iterations * draft.decode_run_flops(batch, mean, self.k)

    def wasted_verify_flops(self, contexts: np.ndarray, kept: np.ndarray) -> float:
        """Verify FLOPs spent on positions whose tokens were thrown away, summed over entries: a sequence with
        ``contexts`` KV tokens that kept ``kept`` of its ``k + 1`` positions wasted ``k + 1 - kept`` positions
        (layers, LM head) and their attention pairs ``sum_{q=kept+1..k+1} (ctx + q)``."""
        target = self._parts()[0]
        k1 = self.k + 1
        wasted = k1 - kept
        pairs = float((wasted * contexts).sum()) + (kept.size * k1 * (k1 + 1) - float((kept * (kept + 1)).sum())) / 2
        return (target.flops_per_token + target.head_flops) * float(wasted.sum()) + target.attention_flops * pairs
