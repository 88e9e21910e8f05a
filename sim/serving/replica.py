"""A serving replica with iteration-level (continuous) batching, vLLM-like, advanced in coalesced runs.

Each iteration ("step") either prefills admitted requests (all at once, or in chunks beside the running
decodes with ``chunked_prefill``) or decodes one token for every running sequence. A step's time comes
from the step-time model (``StepCost``). Steps that prefill are one engine event each; a run of pure decode
steps with an unchanged batch is one event: it ends when the first sequence finishes or the KV cache
fills, or earlier at the step boundary after an arrival (so the newcomer is admitted exactly when a
step-by-step simulation would admit it). ``coalesce=False`` makes every step an event, the reference
the coalesced timing is tested against.

KV cache, in tokens: a sequence holds its prompt (or, after a preemption, the tokens being recomputed)
plus one token per decode step. When a decode step would overflow the cache, the most recently admitted
sequence is preempted and later recomputed (its prompt and generated tokens prefilled again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sim.errors import ConfigError
from sim.serving.step_time import StepCost


@dataclass(frozen=True)
class BatchingConfig:
    """vLLM-like scheduler limits of one replica."""

    max_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = False

    def __post_init__(self) -> None:
        if self.max_seqs <= 0 or self.max_batched_tokens <= 0:
            raise ConfigError(f"max_seqs and max_batched_tokens must be positive, got {self}")


class BatchedRequest:
    """One request inside a replica."""

    __slots__ = ("ctx", "evictions", "generated", "output", "prefilled", "prompt", "request_id", "target")

    def __init__(self, request_id: int, prompt: int, output: int) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.output = output
        self.generated = 0  # tokens emitted so far
        self.target = prompt  # tokens to prefill before the next token (prompt, or prompt + generated on recompute)
        self.prefilled = 0  # of target, in the KV cache
        self.ctx = 0  # tokens in the KV cache
        self.evictions = 0

    @property
    def decoding(self) -> bool:
        return self.prefilled >= self.target


class ReplicaListener:
    """Where a replica reports token times. The serving engine records them per request."""

    def first_token(self, request_id: int, time: float) -> None: ...
    def finished(self, request_id: int, time: float) -> None: ...
    def admitted(self, request_id: int, time: float) -> None: ...
    def evicted(self, request_id: int, time: float) -> None:
        """Its KV cache was freed to make room; it waits to be recomputed (a KV eviction, vLLM's "preemption")."""

    def record(self, request_id: int, column: str, value: float) -> None:
        """Any other per-request figure a replica measures: ``value`` becomes the request's ``column`` in the
        requests table (NaN for requests it was not recorded for). Declare the column in sim/output/schema.py."""


class BatchingReplica:
    """State and step logic of one replica. ``call_at(time, fn)`` schedules ``fn()`` on the engine's clock."""

    def __init__(self, replica_id: int, cost: StepCost, kv_capacity_tokens: int, config: BatchingConfig,
                 listener: ReplicaListener, call_at: Callable[[float, Callable[[], None]], None],
                 *, coalesce: bool = True) -> None:
        if kv_capacity_tokens <= 0:
            raise ConfigError(f"replica {replica_id}: no room for a KV cache ({kv_capacity_tokens} tokens)")
        self.replica_id = replica_id
        self.cost = cost
        self.kv_capacity = kv_capacity_tokens
        self.config = config
        self.listener = listener
        self.call_at = call_at
        self.coalesce = coalesce
        self.waiting: deque[BatchedRequest] = deque()
        self.batch: list[BatchedRequest] = []  # admitted sequences (prefilling or decoding)
        self.kv_used = 0
        self.outstanding = 0  # waiting + in the batch; an attribute because routers read it per request
        self.outstanding_seconds = 0.0  # integral of ``outstanding`` over time (Little's law: L = this / T)
        self._waiting_tokens = 0  # prefill tokens of the waiting queue
        self._counted_at = 0.0
        self.accepting = True
        self.state = "new"  # new, provisioning, ready, draining, retired
        self.busy_seconds = 0.0
        self.flops = 0.0  # FLOPs computed, for MFU
        self.kv_token_seconds = 0.0  # integral of KV-cache tokens held over time, for KV utilization
        self.steps = 0
        self._version = 0
        self._busy = False
        self._run: tuple[float, int, float, int] | None = None  # decode run: (start, batch, context, steps)
        self._cut = False
        self._finish_step: Callable[[float], None] | None = None

    # ----------------------------------------------------------------- what routers see
    @property
    def num_queued(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.batch)


    @property
    def kv_free_bytes(self) -> float:
        """KV-cache bytes neither held by the batch nor promised to waiting requests' prefills, so that a
        burst routed between two step boundaries does not all see the same free space."""
        return (self.kv_capacity - self.kv_used - self._waiting_tokens) * self.cost.kv_bytes_per_token

    @property
    def kv_capacity_bytes(self) -> float:
        return self.kv_capacity * self.cost.kv_bytes_per_token

    def _count(self, now: float, change: int) -> None:
        self.outstanding_seconds += self.outstanding * (now - self._counted_at)
        self._counted_at = now
        self.outstanding += change

    def fits(self, prompt: int, output: int) -> bool:
        """Whether a request can ever be served here (its whole context fits in the KV cache)."""
        return prompt + output <= self.kv_capacity

    # ----------------------------------------------------------------- driving
    def arrive(self, request_id: int, prompt: int, output: int, now: float) -> None:
        """A request routed here; it joins the waiting queue and is admitted at the next step boundary."""
        self.waiting.append(BatchedRequest(request_id, prompt, output))
        self._waiting_tokens += prompt
        self._count(now, +1)
        if not self._busy:
            self._next_step(now)
        elif self._run is not None and not self._cut and len(self.batch) < self.config.max_seqs:
            self._cut_run(now)

    def _cut_run(self, now: float) -> None:
        """End the current decode run at the first step boundary after ``now``."""
        start, batch, context, steps = self._run  # type: ignore[misc]
        done = self.cost.decode_steps_within(batch, context, now - start, steps)
        if done + 1 >= steps:
            return  # the run ends at the next boundary anyway
        self._cut = True
        self._schedule_run_end(start, batch, context, done + 1)

    def _next_step(self, now: float) -> None:
        """Compose and start the next step (or run of decode steps); idle if there is nothing to do."""
        self._busy = False
        self._run = None
        self._cut = False
        if not self.waiting and not self.batch:
            return
        prefill = self._plan_prefill()
        if prefill:
            self._start_prefill_step(prefill, now)
            return
        # No prefill this step: every running sequence decodes. (A sequence whose whole context fits in
        # the cache, as ``fits`` requires, leaves the batch non-empty after these evictions.)
        decoding = self.batch
        while self.kv_used + len(decoding) > self.kv_capacity:
            self._preempt_newest(now)
        batch = len(decoding)
        context = batch  # contexts after the first step's token is written
        steps = (self.kv_capacity - self.kv_used) // batch  # and at most until the first sequence is done
        for s in decoding:  # one loop for both: it runs at every step boundary over the whole batch
            context += s.ctx
            left = s.output - s.generated
            if left < steps:
                steps = left
        if not self.coalesce:
            steps = 1
        self._busy = True
        self._run = (now, batch, float(context), steps)
        self._schedule_run_end(now, batch, float(context), steps)

    def _schedule_run_end(self, start: float, batch: int, context: float, steps: int) -> None:
        self._version += 1
        version = self._version
        end = start + self.cost.decode_run(batch, context, steps)

        def run_end() -> None:
            if version == self._version:
                self._end_run(start, end, batch, context, steps)

        self.call_at(end, run_end)

    def _end_run(self, start: float, end: float, batch: int, context: float, steps: int) -> None:
        self.busy_seconds += end - start
        self.steps += steps
        self.flops += self.cost.decode_run_flops(batch, context, steps)
        # the cache grows by one token per sequence per step: its mean over the run, times the run's length
        self.kv_token_seconds += (self.kv_used + batch * (steps + 1) / 2) * (end - start)
        for s in self.batch:
            s.ctx += steps
            s.generated += steps
        self.kv_used += steps * batch
        self._retire_finished(end)
        self._next_step(end)

    # ----------------------------------------------------------------- prefill
    def _plan_prefill(self) -> list[tuple[BatchedRequest, int]]:
        """(sequence, tokens to prefill this step), admitting waiting sequences first come, first served."""
        cfg = self.config
        plan: list[tuple[BatchedRequest, int]] = []
        # the running decodes share a chunked step's token budget; a whole-prompt step has none beside it
        decoding = sum(1 for s in self.batch if s.decoding) if cfg.chunked_prefill else 0
        budget = cfg.max_batched_tokens - decoding
        if cfg.chunked_prefill:
            for s in self.batch:
                if not s.decoding and budget > 0:
                    chunk = min(s.target - s.prefilled, budget)
                    plan.append((s, chunk))
                    budget -= chunk
        free_kv = self.kv_capacity - self.kv_used
        if cfg.chunked_prefill:
            free_kv -= decoding  # the decodes of this step write one token each
        admitted = 0
        while self.waiting and budget > 0 and len(self.batch) + admitted < cfg.max_seqs:
            s = self.waiting[0]
            need = s.target + 1  # prefilled tokens plus the token its first decode writes
            if need > free_kv:
                break
            chunk = s.target if not cfg.chunked_prefill else min(s.target, budget)
            if not cfg.chunked_prefill and chunk > budget and plan:
                break  # a prompt larger than the budget goes alone in its own step
            self.waiting.popleft()
            self._waiting_tokens -= s.target
            admitted += 1
            plan.append((s, chunk))
            free_kv -= need
            budget -= chunk
        return plan

    def _start_prefill_step(self, plan: list[tuple[BatchedRequest, int]], now: float) -> None:
        cfg = self.config
        tokens = attended = kv_read = 0.0
        sequences = len(plan)
        for s, chunk in plan:
            if s not in self.batch:
                self.batch.append(s)
                self.kv_used += s.target - s.prefilled  # reserve the whole prefill at admission
                self.listener.admitted(s.request_id, now)
            p0 = s.prefilled
            tokens += chunk
            attended += chunk * p0 + chunk * (chunk + 1) / 2
            kv_read += p0 + chunk
        decoders: list[BatchedRequest] = []
        if cfg.chunked_prefill:
            decoders = [s for s in self.batch if s.decoding]
            tokens += len(decoders)
            sequences += len(decoders)
            context = sum(s.ctx + 1 for s in decoders)
            attended += context
            kv_read += context
        duration = self.cost.step(tokens, attended, kv_read, sequences)
        end = now + duration
        self._busy = True
        self._version += 1
        version = self._version

        def step_end() -> None:
            if version != self._version:
                return
            self.busy_seconds += duration
            self.steps += 1
            self.flops += self.cost.flops(tokens, attended, sequences)
            self.kv_token_seconds += self.kv_used * duration
            for s in decoders:
                s.ctx += 1
                s.generated += 1
            self.kv_used += len(decoders)
            for s, chunk in plan:
                s.prefilled += chunk
                s.ctx += chunk
                if s.prefilled >= s.target:  # s.decoding, inline
                    if s.generated == 0:
                        self.listener.first_token(s.request_id, end)
                    s.generated += 1
            self._retire_finished(end)
            self._next_step(end)

        self.call_at(end, step_end)

    # ----------------------------------------------------------------- bookkeeping
    def _retire_finished(self, now: float) -> None:
        still = []
        for s in self.batch:
            if s.prefilled >= s.target and s.generated >= s.output:  # s.decoding, inline: once per sequence per step
                self.kv_used -= s.ctx + (s.target - s.prefilled)
                self._count(now, -1)
                self.listener.finished(s.request_id, now)
            else:
                still.append(s)
        self.batch = still

    def _preempt_newest(self, now: float) -> None:
        """Free the KV cache of the most recently admitted sequence; it is recomputed later."""
        s = self.batch.pop()
        self.kv_used -= s.ctx + (s.target - s.prefilled)
        s.evictions += 1
        s.target = s.prompt + s.generated
        s.prefilled = 0
        s.ctx = 0
        self.waiting.appendleft(s)
        self._waiting_tokens += s.target
        self.listener.evicted(s.request_id, now)
