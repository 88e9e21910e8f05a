"""The two replica kinds of disaggregated serving (``sim.serving.disaggregation``): prefill-only and decode-only.

A ``PrefillReplica`` batches prefills as any continuous-batching replica does (chunked or whole, prefix cache
included) but decodes nothing: a request whose prompt is in its KV cache leaves the batch and is handed off
(``ReplicaListener.prefilled``), keeping its KV cache here until the transfer to a decode replica is done
(``release``). Its KV cache is what makes prefill back up when decode is short: a prefill replica full of KV caches
waiting to move admits no new prompt.

A ``DecodeReplica`` takes requests prefilled elsewhere. An ``offer`` first waits, in FIFO order, until the replica
has room for the request's prompt in its KV cache (plus the token its first decode writes); the room is then
reserved and the transfer starts (``start(now)``). When the KV cache has arrived (``admit``) the request joins the
batch at the next step boundary and decodes its ``output`` tokens there: its first token comes with its first
decode step. A decode replica can still prefill: a sequence it preempts for KV space is recomputed in place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from sim.serving.replica import BatchedRequest, BatchingReplica
from sim.serving.step_time import steps_bounded


class Clock(Protocol):
    """The engine's clock as a decode replica reads it (the kernel): ``now``, seconds."""

    now: float


class PrefillReplica(BatchingReplica):
    """Prefills only; a prefilled request holds its KV cache here until ``release``."""

    __slots__ = ("held",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.held: dict[int, BatchedRequest] = {}  # prefilled, their KV cache still here, by request id

    def _prefilled(self, s: BatchedRequest, end: float) -> None:
        """Its prompt is computed: no token here (its first comes from the decode pool); its prefix is cached."""
        prefix = self.prefix
        if prefix is not None and s.prefix_id >= 0 and s.prefix_tokens > s.reading:
            self._publish(prefix, s, s.prefix_tokens)

    def _retire_finished(self, now: float) -> None:
        """Prefilled requests leave the batch and are handed off; their KV cache stays until ``release``."""
        handed = self.batch
        for s in handed:
            if s.prefilled < s.target:  # a chunked prefill not done yet stays
                self.batch = [s for s in handed if s.prefilled < s.target]
                handed = [s for s in handed if s.prefilled >= s.target]
                break
        else:
            self.batch = []
        for s in handed:
            self.held[s.request_id] = s
            self.listener.prefilled(s.request_id, s.prompt, s.output, now)

    def _start_decode(self, now: float) -> None:
        """Nothing to decode: the replica idles until a transfer frees KV cache for the waiting prompts."""

    def release(self, request_id: int, now: float) -> None:
        """The request's KV cache has reached its decode replica: free it here."""
        s = self.held.pop(request_id)
        self._release(s)
        if self.prefix is not None:
            self.prefix.shrink(self.kv_capacity - self.kv_used)
        self._count(now, -1)
        self.listener.released(request_id, now)
        if not self._busy and self.waiting:  # an idle prefill replica's batch is empty: only waiting prompts start
            self._next_step(now)

    def take_held(self) -> list[BatchedRequest]:
        """The prefilled requests whose KV cache is here, in hand-off order, now let go without a release: the replica
        failed (``abort``) and their KV cache with it."""
        held = list(self.held.values())
        self.held.clear()
        return held


class DecodeReplica(BatchingReplica):
    """Decodes requests whose KV cache a prefill replica computed; see the module docstring."""

    __slots__ = ("_arrived", "_in_transfer", "_incoming_tokens", "_kv_bytes_per_token", "clock", "incoming",
                 "transfers_waited")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.incoming: deque[tuple[int, int, Callable[[float], None]]] = deque()  # (request, prompt, start)
        self._incoming_tokens = 0
        self._arrived: deque[BatchedRequest] = deque()
        self.transfers_waited = 0  # offers that had to wait for KV room
        self._in_transfer = 0  # offers with room reserved, their KV cache on the way
        self.clock: Clock | None = None  # the engine's clock (set by the service; else the last count's time)
        self._kv_bytes_per_token = self.cost.kv_bytes_per_token  # read by the router at every hand-off

    @property
    def num_queued(self) -> int:
        """Requests here but not in the batch: waiting for KV room, in transfer, arrived for the next step, or
        preempted for recompute."""
        return len(self.waiting) + len(self.incoming) + len(self._arrived) + self._in_transfer

    @property
    def kv_free_bytes(self) -> float:
        """KV-cache bytes neither held (as of now, within a coalesced run), reserved, nor promised to offers still
        waiting for room."""
        run = self._run
        used = self.kv_used
        if run is not None:  # kv_used_at, inline: the router asks each decode replica at every hand-off
            now = self._counted_at if self.clock is None else self.clock.now
            if run is self._done_run:  # (its line worked out at its start)
                elapsed = now - run[0]
                if not self._done_from <= elapsed < self._done_until:  # _steps_done's kept answer no longer holds
                    self._done, self._done_from, self._done_until = steps_bounded(self._line, elapsed, run[3])
                used += run[1] * self._done
            else:
                used += run[1] * self._steps_done(now)
        return (self.kv_capacity - used - self._waiting_tokens - self._incoming_tokens) * self._kv_bytes_per_token

    @property
    def kv_free_bytes_bounds(self) -> tuple[float, float]:
        """Bounds on ``kv_free_bytes`` without solving for a decode run's progress: at least the steps of the last
        answer kept (the run only moves on) and at most the run's planned steps are done."""
        free = self.kv_capacity - self.kv_used - self._waiting_tokens - self._incoming_tokens
        run = self._run
        if run is None:
            free *= self._kv_bytes_per_token
            return free, free
        high = free - run[1] * self._done if run is self._done_run else free  # (a run only moves on)
        return (free - run[1] * run[3]) * self._kv_bytes_per_token, high * self._kv_bytes_per_token

    def offer(self, request_id: int, prompt: int, now: float, start: Callable[[float], None]) -> None:
        """A prefilled request routed here: ``start(time)`` once its KV cache has room here (now, or later)."""
        self._count(now, +1)
        if not self.incoming:  # room now (at the run's planned end, or else as of now), no offer ahead: no queue
            room = self.kv_capacity - self.kv_used - self._waiting_tokens - prompt - 1  # with no decode run's tokens
            run = self._run
            if room >= (0 if run is None else run[1] * run[3]) or room >= self.kv_used_at(now) - self.kv_used:
                self._take(prompt, now, start)
                return
        self.incoming.append((request_id, prompt, start))
        self._incoming_tokens += prompt
        if not self._reserve(now):
            self.transfers_waited += 1

    def _reserve(self, now: float) -> bool:
        """Reserve room for waiting offers, first come first served; whether the queue emptied."""
        incoming = self.incoming
        used = self.kv_used_at(now)
        while incoming:
            _, prompt, start = incoming[0]
            if prompt + 1 > self.kv_capacity - used - self._waiting_tokens:
                return False
            incoming.popleft()
            self._incoming_tokens -= prompt
            used += prompt
            self._take(prompt, now, start)
        return True

    def _take(self, prompt: int, now: float, start: Callable[[float], None]) -> None:
        """Reserve ``prompt`` tokens of KV cache for an offer and ``start`` its transfer. A reservation during a decode
        run whose remaining steps no longer fit ends the run at its next step boundary, as a step-by-step simulation
        would then preempt."""
        self._in_transfer += 1
        self.kv_used += prompt
        run = self._run
        if run is not None and not self._cut and self.kv_used + run[1] * run[3] > self.kv_capacity:
            self._cut_run(now)
        start(now)

    def admit(self, request_id: int, prompt: int, output: int, now: float) -> None:
        """The request's KV cache (reserved at its ``start``) is here: it joins the batch at the next step boundary."""
        s = BatchedRequest(request_id, prompt, output)
        s.prefilled = s.ctx = prompt
        self._in_transfer -= 1
        self._arrived.append(s)
        if not self._busy:
            self._next_step(now)
        elif self._run is not None and not self._cut and len(self.batch) < self.config.max_seqs:
            self._cut_run(now)

    def _next_step(self, now: float) -> None:
        """At a step boundary: waiting offers reserve freed KV room, arrived KV caches join the batch, then the next
        step is composed as usual."""
        if self.incoming:
            self._reserve(now)
        arrived = self._arrived
        while arrived and len(self.batch) < self.config.max_seqs:
            s = arrived.popleft()
            self.batch.append(s)
            self.listener.admitted(s.request_id, now)
        BatchingReplica._next_step(self, now)  # (not super(): once per step)

    def withdraw(self, request_id: int, now: float) -> None:
        """The offer of ``request_id``, waiting here for KV room, is given up (its KV cache was lost with its prefill
        replica); offers behind it may fit now."""
        for k, (waiting, prompt, _) in enumerate(self.incoming):
            if waiting == request_id:
                del self.incoming[k]
                self._incoming_tokens -= prompt
                self._count(now, -1)
                break
        if self.incoming:
            self._reserve(now)

    def unreserve(self, prompt: int, now: float) -> None:
        """A reservation of ``prompt`` tokens whose transfer was given up (a failure) frees its room; waiting offers may
        take it."""
        self.kv_used -= prompt
        self._in_transfer -= 1
        self._count(now, -1)
        if self.incoming:
            self._reserve(now)

    def abort(self, now: float) -> list[tuple[int, int, int, int, int]]:
        """The replica is lost (``BatchingReplica.abort``): the KV caches that arrived for its next step are lost with
        the batch's (handed back after them); the offers waiting for room and the reservations of transfers in flight
        are forgotten here (the hand-off moves those requests elsewhere)."""
        lost = super().abort(now)
        lost += [(s.request_id, s.prompt, s.output, -1, 0) for s in self._arrived]
        self._arrived.clear()
        self.incoming.clear()
        self._incoming_tokens = self._in_transfer = 0
        return lost
