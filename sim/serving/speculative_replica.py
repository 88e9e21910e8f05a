"""A continuous-batching replica that decodes speculatively (the model: ``sim.serving.speculative``).

It batches, prefills and evicts as ``BatchingReplica`` does; only its decode runs differ. A run is planned when it
starts: every sequence of the batch draws its accepted draft tokens for up to ``PLAN_ITERATIONS`` iterations
(draws that depend on the request and the iteration alone), and the run ends at the first iteration in which a
sequence finishes, or before an iteration whose lookahead would overflow the KV cache. Its iterations' ends are a
cumulative sum, so an arrival cuts the run at the next iteration boundary as it cuts a plain decode run, and a run
costs one engine event. ``coalesce=False`` plans one iteration per run: the step-by-step reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.serving.prefix_cache import PrefixCacheConfig
from sim.serving.replica import BatchingConfig, BatchingReplica, ReplicaListener
from sim.serving.speculative import (
    PLAN_ITERATIONS,
    SpeculativeStepCost,
    acceptance_uniforms,
    accepted_counts,
    request_seeds,
)


class _Plan:
    """The iterations of one speculative decode run, planned at its start (arrays over iterations, and over
    iterations x sequences of the batch)."""

    __slots__ = ("contexts", "ends", "held", "kept", "length", "seconds", "start", "totals")

    def __init__(self, start: float, length: int, seconds: np.ndarray, kept: np.ndarray, held: np.ndarray,
                 totals: np.ndarray, contexts: np.ndarray) -> None:
        self.start = start
        self.length = length  # iterations the run takes (an arrival may cut it shorter)
        self.seconds = seconds  # of each iteration
        self.ends = np.cumsum(seconds)  # of each iteration, from the run's start
        self.kept = kept  # tokens each sequence keeps from each iteration
        self.held = held  # KV tokens held during each iteration (its kept tokens written)
        self.totals = totals  # the batch's contexts summed, at the start of each iteration
        self.contexts = contexts  # each sequence's KV tokens at the start of each iteration


class SpeculativeReplica(BatchingReplica):
    """A ``BatchingReplica`` whose decode iterations draft ``k`` tokens per sequence and verify them in one step.

    ``key`` is the service's speculative stream (``acceptance_uniforms``). Besides the base replica's figures it
    counts ``draft_tokens`` proposed, ``draft_accepted``, ``draft_rejected``, ``draft_flops`` and ``rejected_flops``,
    and records the first three per request (``ReplicaListener.record``)."""

    __slots__ = ("_counts", "_plan", "acceptance", "draft_accepted", "draft_flops", "draft_tokens", "k", "key",
                 "rejected_flops", "spec_cost")

    def __init__(self, replica_id: int, cost: SpeculativeStepCost, kv_capacity_tokens: int, config: BatchingConfig,
                 listener: ReplicaListener, call_at: Callable[[float, Callable[[], None]], None], *,
                 acceptance: float, key: int, coalesce: bool = True,
                 prefix_cache: PrefixCacheConfig | None = None) -> None:
        super().__init__(replica_id, cost, kv_capacity_tokens, config, listener, call_at, coalesce=coalesce,
                         prefix_cache=prefix_cache)
        self.spec_cost = cost
        self.k = cost.k
        self.acceptance = acceptance
        self.key = key
        self.draft_tokens = 0
        self.draft_accepted = 0
        self.draft_flops = 0.0
        self.rejected_flops = 0.0
        self._counts: dict[int, list[int]] = {}  # request id -> [verify steps taken, draft tokens accepted]
        self._plan: _Plan | None = None

    @property
    def draft_rejected(self) -> int:
        """Draft tokens proposed and not kept (rejected by the target, or past the end of an output)."""
        return self.draft_tokens - self.draft_accepted

    def arrive(self, request_id: int, *args: Any, **kwargs: Any) -> None:
        if request_id not in self._counts:  # [verify steps, accepted draft tokens, its draws' seed (as int64)]
            seed = request_seeds(self.key, np.array([request_id])).view(np.int64)
            self._counts[request_id] = [0, 0, int(seed[0])]
        super().arrive(request_id, *args, **kwargs)

    def record_counts(self) -> None:
        """Record the draft counts of the requests still here (at the end of a run; finished ones are recorded as
        they finish)."""
        for request_id, counts in self._counts.items():
            self._record(request_id, counts)

    def _record(self, request_id: int, counts: list[int]) -> None:
        proposed = self.k * counts[0]
        record = self.listener.record
        record(request_id, "draft_tokens", proposed)
        record(request_id, "draft_accepted", counts[1])
        record(request_id, "draft_rejected", proposed - counts[1])

    def _count_step_flops(self, tokens: float, attended: float, sequences: float) -> None:
        draft = self.spec_cost.draft_flops(tokens, attended, sequences)
        self.flops += self.spec_cost.target_flops(tokens, attended, sequences) + draft
        self.draft_flops += draft

    def _retire_finished(self, now: float) -> None:
        for s in self.batch:
            if s.prefilled >= s.target and s.generated >= s.output:  # finished: record its counts, forget them
                self._record(s.request_id, self._counts.pop(s.request_id))
        super()._retire_finished(now)

    # ----------------------------------------------------------------- decode runs
    def _start_decode(self, now: float) -> None:
        k = self.k
        batch = self.batch
        # each sequence needs room for its lookahead, min(k + 1, tokens left); a lone sequence always has it
        evicted = False
        while len(batch) > 1 and self.kv_used + (k + 1) * len(batch) > self.kv_capacity and self.kv_used + sum(
                min(k + 1, s.output - s.generated) for s in batch) > self.kv_capacity:
            self._preempt_newest(now)
            batch, evicted = self.batch, True
        size = len(batch)
        counts = self._counts
        rows = np.array([(s.output - s.generated, s.ctx, *counts[s.request_id]) for s in batch], dtype=np.int64)
        left, ctx, first, seeds = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 4].view(np.uint64)
        # an eviction may free more than the lookahead needs, so that the evicted sequence fits again after one
        # iteration: then the run is that iteration (the next boundary admits it, as step by step)
        length = min(int(left.min()), PLAN_ITERATIONS) if self.coalesce and not evicted else 1
        uniforms = acceptance_uniforms(self.key, rows[:, 4], first, length, seeds=seeds)
        yielded = accepted_counts(uniforms, self.acceptance, k) + 1  # (iterations, sequences)
        got = yielded.cumsum(axis=0)  # tokens each sequence has got by the end of each iteration
        finishing = (got >= left).any(axis=1)
        if finishing.any():
            length = int(finishing.argmax()) + 1  # the run ends when its first sequence is done
            yielded, got = yielded[:length], got[:length]
        before = got - yielded
        kept = np.minimum(yielded, left - before)  # only a finishing sequence's last iteration is cut
        added = kept.sum(axis=1)
        held = self.kv_used + added.cumsum()  # KV tokens held once each iteration has written its kept tokens
        if self.kv_used + (k + 1) * size * (length + 1) > self.kv_capacity:  # the lookahead may not fit
            fits = held - added + np.minimum(k + 1, left - before).sum(axis=1) <= self.kv_capacity
            if not fits.all():
                length = max(1, int(fits.argmin()))  # stop before the first iteration whose lookahead overflows
                kept, before, held, added = kept[:length], before[:length], held[:length], added[:length]
        total = int(ctx.sum())
        contexts = (held - added - self.kv_used + total).astype(float)  # the batch's contexts at each start
        seconds = self.spec_cost.iteration_seconds(size, contexts)
        self._plan = _Plan(now, length, seconds, kept, held.astype(float), contexts, ctx + before[:length])
        self._busy = True
        self._run = (now, size, float(total), length)
        self._schedule_plan_end()

    def _schedule_plan_end(self) -> None:
        plan = self._plan
        assert plan is not None
        self._version += 1
        version = self._version
        length = plan.length
        end = plan.start + float(plan.ends[length - 1])

        def plan_end() -> None:
            if version == self._version:
                self._end_plan(plan, length, end)

        self.call_at(end, plan_end)

    def _cut_run(self, now: float) -> None:
        """End the current run at the first iteration boundary after ``now``."""
        plan = self._plan
        assert plan is not None
        done = int(np.searchsorted(plan.ends[:plan.length], now - plan.start, side="right"))
        if done + 1 >= plan.length:
            return  # the run ends at the next boundary anyway
        self._cut = True
        plan.length = done + 1
        self._schedule_plan_end()

    def _end_plan(self, plan: _Plan, n: int, end: float) -> None:
        self.busy_seconds += end - plan.start
        self.steps += n
        kept_tokens = plan.kept[:n]
        verify_flops, draft_flops = self.spec_cost.iteration_flops(len(self.batch), float(plan.totals[:n].sum()), n)
        self.flops += verify_flops + draft_flops
        self.draft_flops += draft_flops
        self.rejected_flops += self.spec_cost.wasted_verify_flops(plan.contexts[:n], kept_tokens)
        self.kv_token_seconds += float((plan.held[:n] * plan.seconds[:n]).sum())
        kept = kept_tokens.sum(axis=0).tolist()
        self.draft_tokens += self.k * n * len(kept)
        total = 0
        for s, got in zip(self.batch, kept, strict=True):
            s.ctx += got
            s.generated += got
            total += got
            counts = self._counts[s.request_id]
            counts[0] += n
            counts[1] += got - n  # each verify step yields one token of its own; the rest were drafted
        self.draft_accepted += total - n * len(kept)
        self.kv_used += total
        if self.prefix is not None:
            self.prefix.shrink(self.kv_capacity - self.kv_used)
        self._plan = None
        self._retire_finished(end)
        self._next_step(end)
