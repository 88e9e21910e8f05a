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

With prefix caching (``prefix_cache``, ``sim.serving.prefix_cache``), a request admitted to the batch reads the
cached part of its prefix instead of prefilling it (it prefills the rest, attending to the cached tokens), and the
cache keeps what requests computed in the space the batch leaves free: ``kv_used`` counts the tokens running
requests hold, pinned cached tokens included; evictable cached tokens are not counted and go when the batch needs
their space.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sim.errors import ConfigError
from sim.serving.prefix_cache import PrefixCache, PrefixCacheConfig
from sim.serving.step_time import StepCost, steps_bounded

CACHED_TOKENS = "cached_tokens"
"""The requests-table column a prefix-caching replica records: prompt tokens read from its prefix cache."""


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

    __slots__ = ("cached", "ctx", "evictions", "generated", "output", "prefilled", "prefix_id", "prefix_tokens",
                 "prompt", "reading", "request_id", "target")

    def __init__(self, request_id: int, prompt: int, output: int, prefix_id: int = -1, prefix_tokens: int = 0) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.output = output
        self.generated = 0  # tokens emitted so far
        self.target = prompt  # tokens to prefill before the next token (prompt, or prompt + generated on recompute)
        self.prefilled = 0  # of target, in the KV cache
        self.ctx = 0  # tokens in the KV cache (its own, and those it reads from the prefix cache)
        self.evictions = 0
        self.prefix_id = prefix_id  # its shared prefix (-1: none) and that prefix's length in its prompt
        self.prefix_tokens = prefix_tokens
        self.reading = 0  # of ctx, tokens it reads from (and pins in) the prefix cache's entry of prefix_id
        self.cached = 0  # prompt tokens read from the prefix cache, over all its admissions

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

    def prefilled(self, request_id: int, prompt: int, output: int, time: float) -> None:
        """A prefill-only replica computed the request's prompt; its KV cache waits to move to a decode replica."""

    def released(self, request_id: int, time: float) -> None:
        """A prefill-only replica freed the request's KV cache: it has reached its decode replica."""

    def record(self, request_id: int, column: str, value: float) -> None:
        """Any other per-request figure a replica measures: ``value`` becomes the request's ``column`` in the
        requests table (NaN for requests it was not recorded for). Declare the column in sim/output/schema.py."""


class BatchingReplica:
    """State and step logic of one replica. ``call_at(time, fn)`` schedules ``fn()`` on the engine's clock."""

    __slots__ = ("_busy", "_counted_at", "_cut", "_done", "_done_from", "_done_run", "_done_until", "_finish_step",
                 "_line", "_run", "_version", "_waiting_tokens", "accepting", "batch", "busy_seconds", "call_at",
                 "coalesce", "config", "cost", "flops", "kv_capacity", "kv_token_seconds", "kv_used", "listener",
                 "outstanding", "outstanding_seconds", "prefix", "replica_id", "state", "steps", "waiting")

    def __init__(self, replica_id: int, cost: StepCost, kv_capacity_tokens: int, config: BatchingConfig,
                 listener: ReplicaListener, call_at: Callable[[float, Callable[[], None]], None],
                 *, coalesce: bool = True, prefix_cache: PrefixCacheConfig | None = None) -> None:
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
        self._done_run: tuple[float, int, float, int] | None = None  # _steps_done's last question: the run, ...
        self._line: tuple[float, float] = (0.0, 0.0)  # ... its ``StepCost.decode_run_line``, its last answer: ...
        self._done = 0  # ... its steps done ...
        self._done_from = self._done_until = 0.0  # ... for any time since the run's start in [from, until)
        self.prefix: PrefixCache | None = None if prefix_cache is None else PrefixCache(prefix_cache)

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
    def kv_free_bytes_bounds(self) -> tuple[float, float]:
        """``(kv_free_bytes, kv_free_bytes)``: exact (it does not count a decode run's progress)."""
        free = self.kv_free_bytes
        return free, free

    @property
    def kv_capacity_bytes(self) -> float:
        return self.kv_capacity * self.cost.kv_bytes_per_token

    def kv_used_at(self, now: float) -> int:
        """``kv_used`` as a step-by-step simulation would have it at ``now``: during a coalesced decode run, with the
        tokens its steps completed so far (``kv_used`` itself catches up when the run ends)."""
        run = self._run
        if run is None:
            return self.kv_used
        if run is self._done_run and self._done_from <= now - run[0] < self._done_until:
            return self.kv_used + run[1] * self._done  # _steps_done's kept answer, without the call
        return self.kv_used + run[1] * self._steps_done(now)

    def _steps_done(self, now: float) -> int:
        """Steps of the current decode run complete at ``now``. Routers, reservations and cuts ask often within one
        step: the answer is kept with the times between which it holds (``steps_within``'s, so the same floats)."""
        run = self._run
        assert run is not None
        elapsed = now - run[0]
        if run is not self._done_run:  # the run's first question: its line, once
            self._done_run = run
            self._line = self.cost.decode_run_line(run[1], run[2])
        elif self._done_from <= elapsed < self._done_until:
            return self._done
        n, self._done_from, self._done_until = steps_bounded(self._line, elapsed, run[3])
        self._done = n
        return n

    def cached_prefix_tokens(self, prefix_id: int) -> int:
        """Tokens of prefix ``prefix_id`` in this replica's prefix cache (0 without prefix caching)."""
        return 0 if self.prefix is None else self.prefix.tokens(prefix_id)

    def _count(self, now: float, change: int) -> None:
        self.outstanding_seconds += self.outstanding * (now - self._counted_at)
        self._counted_at = now
        self.outstanding += change

    def fits(self, prompt: int, output: int) -> bool:
        """Whether a request can ever be served here (its whole context fits in the KV cache)."""
        return prompt + output <= self.kv_capacity

    # ----------------------------------------------------------------- driving
    def abort(self, now: float) -> list[tuple[int, int, int, int, int]]:
        """The replica is lost (its devices failed): its pending step or run is dropped (its end is ignored, by
        version), and its requests, admitted or waiting, are handed back as (request_id, prompt, output, prefix_id,
        prefix_tokens), admitted first, to be routed again; what they had computed here is lost."""
        self._version += 1
        self._busy, self._run, self._cut, self._finish_step = False, None, False, None
        lost = [(s.request_id, s.prompt, s.output, s.prefix_id, s.prefix_tokens) for s in (*self.batch, *self.waiting)]
        self.batch, self.kv_used, self._waiting_tokens = [], 0, 0
        self.waiting.clear()
        self._count(now, -self.outstanding)
        self.accepting = False
        return lost

    def arrive(self, request_id: int, prompt: int, output: int, now: float, prefix_id: int = -1,
               prefix_tokens: int = 0) -> None:
        """A request routed here; it joins the waiting queue and is admitted at the next step boundary."""
        self.waiting.append(BatchedRequest(request_id, prompt, output, prefix_id, prefix_tokens))
        self._waiting_tokens += prompt
        self._count(now, +1)
        if not self._busy:
            self._next_step(now)
        elif self._run is not None and not self._cut and len(self.batch) < self.config.max_seqs:
            self._cut_run(now)

    def _cut_run(self, now: float) -> None:
        """End the current decode run at the first step boundary after ``now``."""
        run = self._run
        assert run is not None
        done = self._steps_done(now)
        if done + 1 >= run[3]:
            return  # the run ends at the next boundary anyway
        self._cut = True
        self._schedule_run_end(run, done + 1)

    def _next_step(self, now: float) -> None:
        """Compose and start the next step (or run of decode steps); idle if there is nothing to do."""
        self._busy = False
        self._run = None
        self._cut = False
        if not self.waiting and not self.batch:
            return
        if self.config.chunked_prefill:  # the running decodes write a token each beside any prefill: room for them
            while self.batch and self.kv_used + sum(1 for s in self.batch if s.decoding) > self.kv_capacity:
                self._preempt_newest(now)
        prefill = self._plan_prefill()
        if prefill:
            self._start_prefill_step(prefill, now)
            return
        self._start_decode(now)

    def _start_decode(self, now: float) -> None:
        """Start a run of decode steps of the whole batch (a subclass may decode otherwise: speculatively)."""
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
        run = self._run = self._done_run = (now, batch, float(context), steps)
        # the run's line, once, and _steps_done's answer until its first step ends
        line = self._line = self.cost.decode_run_line(batch, float(context))
        self._done, self._done_from, self._done_until = steps_bounded(line, 0.0, steps)
        self._schedule_run_end(run, steps)

    def _schedule_run_end(self, run: tuple[float, int, float, int], steps: int) -> None:
        """Schedule the end of the current decode ``run`` after its first ``steps`` steps (its line is ``_line``)."""
        self._version += 1
        version = self._version
        start, batch, context, _ = run
        per_step, growth = self._line
        end = start + (steps * per_step + growth * steps * (steps - 1) / 2.0)  # decode_run's expression: its floats

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
        first = start + self._line[0]  # the end of the run's first step (decode_run(batch, context, 1))
        for s in self.batch:
            if not s.generated:  # its KV cache came from elsewhere (disaggregated serving): this run's first step
                self.listener.first_token(s.request_id, first)
            s.ctx += steps
            s.generated += steps
        self.kv_used += steps * batch
        if self.prefix is not None:
            self.prefix.shrink(self.kv_capacity - self.kv_used)
        run = self._run
        assert run is not None
        if steps == run[3]:  # (a run cut short ends before its first sequence is done: none leaves)
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
        prefix = self.prefix
        while self.waiting and budget > 0 and len(self.batch) + admitted < cfg.max_seqs:
            s = self.waiting[0]
            hit = pinned = 0  # prefix tokens it reads from the cache, and how many of those it newly pins
            if prefix is not None and s.prefix_id >= 0:
                hit, pinned = prefix.match(s.prefix_id, s.prefix_tokens, s.target)
            need = s.target - hit + 1 + pinned  # prefilled tokens plus the token its first decode writes
            if need > free_kv:
                break
            chunk = s.target - hit if not cfg.chunked_prefill else min(s.target - hit, budget)
            if not cfg.chunked_prefill and chunk > budget and plan:
                break  # a prompt larger than the budget goes alone in its own step
            self.waiting.popleft()
            self._waiting_tokens -= s.target
            admitted += 1
            if prefix is not None:
                self._read_prefix(prefix, s, hit)
            plan.append((s, chunk))
            free_kv -= need
            budget -= chunk
        return plan

    def _read_prefix(self, prefix: PrefixCache, s: BatchedRequest, hit: int) -> None:
        """An admitted request reads its ``hit`` cached tokens of its prefix (pinning them) instead of prefilling
        them; the tokens it read so far are recorded (0 for a request without a prefix)."""
        if s.prefix_tokens > 0:
            prefix.lookups += 1
        if hit:
            prefix.hits += 1
            prefix.saved += hit
            self.kv_used += prefix.pin(s.prefix_id, hit)
            s.reading = s.prefilled = s.ctx = hit
            s.cached += hit
        self.listener.record(s.request_id, CACHED_TOKENS, s.cached)

    def _publish(self, prefix: PrefixCache, s: BatchedRequest, tokens: int) -> None:
        """The first ``tokens`` tokens ``s`` computed of its prefix's sequence go into the prefix cache (if longer
        than what it holds): they become cached tokens it reads, no longer its own."""
        reading, held = prefix.publish(s.prefix_id, s.reading, tokens)
        if reading != s.reading:
            self.kv_used += held - (reading - s.reading)
            s.reading = reading

    def _release(self, s: BatchedRequest) -> None:
        """Free the KV cache ``s`` holds: its own tokens, and its pin on the cached prefix it reads."""
        self.kv_used -= s.ctx - s.reading + (s.target - s.prefilled)
        if s.reading:
            assert self.prefix is not None
            self.kv_used += self.prefix.unpin(s.prefix_id, s.reading)
            s.reading = 0

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
        prefix = self.prefix
        if prefix is not None:  # the admitted requests' reservations take the space of evictable cached tokens
            prefix.shrink(self.kv_capacity - self.kv_used)
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
            self._count_step_flops(tokens, attended, sequences)
            self.kv_token_seconds += self.kv_used * duration
            for s in decoders:
                if not s.generated:  # its KV cache came from elsewhere (disaggregated serving)
                    self.listener.first_token(s.request_id, end)
                s.ctx += 1
                s.generated += 1
            self.kv_used += len(decoders)
            if prefix is not None:
                prefix.shrink(self.kv_capacity - self.kv_used)
            for s, chunk in plan:
                s.prefilled += chunk
                s.ctx += chunk
                if s.prefilled >= s.target:  # s.decoding, inline
                    self._prefilled(s, end)
            self._retire_finished(end)
            self._next_step(end)

        self.call_at(end, step_end)

    def _prefilled(self, s: BatchedRequest, end: float) -> None:
        """``s`` finished its prefill in the step that ends at ``end``: that step computed its next token (its first,
        unless it is being recomputed), and its prefix, now computed, goes into the prefix cache for others."""
        if s.generated == 0:
            self.listener.first_token(s.request_id, end)
        s.generated += 1
        prefix = self.prefix
        if prefix is not None and s.prefix_id >= 0 and s.prefix_tokens > s.reading:
            self._publish(prefix, s, s.prefix_tokens)

    # ----------------------------------------------------------------- bookkeeping
    def _count_step_flops(self, tokens: float, attended: float, sequences: float) -> None:
        """Count the FLOPs of a prefill (or chunked) step of this work."""
        self.flops += self.cost.flops(tokens, attended, sequences)

    def _retire_finished(self, now: float) -> None:
        still = []
        for s in self.batch:
            if s.prefilled >= s.target and s.generated >= s.output:  # s.decoding, inline: once per sequence per step
                if self.prefix is not None and s.prefix_id >= 0:
                    self._publish(self.prefix, s, s.ctx)  # its whole context continues its prefix's sequence
                self._release(s)
                self._count(now, -1)
                self.listener.finished(s.request_id, now)
            else:
                still.append(s)
        self.batch = still

    def _preempt_newest(self, now: float) -> None:
        """Free the KV cache of the most recently admitted sequence; it is recomputed later."""
        s = self.batch.pop()
        self._release(s)
        s.evictions += 1
        s.target = s.prompt + s.generated
        s.prefilled = 0
        s.ctx = 0
        self.waiting.appendleft(s)
        self._waiting_tokens += s.target
        self.listener.evicted(s.request_id, now)
