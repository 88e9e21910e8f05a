"""What a failed replica of a disaggregated service (``sim.serving.disaggregation``) does to its requests.

A request's KV cache lives in one place at a time: on the prefill replica that computed it until its transfer ends,
then on its decode replica (as in DistServe and Splitwise: no second copy is kept). A failure that takes the device
holding it takes the KV cache, and the request's prompt is prefilled again (a *re-prefill*): it goes back to the
prefill pool's router, or is rejected with the reason ``replica_failed`` when no prefill replica accepts requests.

- A failed **prefill** replica: requests waiting or mid-prefill on it are routed again to the prefill pool, as a
  colocated replica's are (``ServingSubsystem.route_again``). Requests it had prefilled lose their KV cache: one
  waiting for a decode replica leaves the hand-off queue, one waiting for KV room on a decode replica leaves that
  replica's queue, and one in transfer has its transfer cancelled (with the network model, its flow leaves its
  links: the transfers still sharing them speed up) and its decode replica's reservation freed. Each is prefilled
  again.
- A failed **decode** replica: requests decoding on it, whose KV cache arrived for its next step, or preempted there
  to be recomputed lose their KV cache and are prefilled again. They start over from their prompt, as a request
  retried by the serving front end does: their output tokens are generated again and their first token comes
  again (the requests table keeps the new one; TTFT then counts the failure). Transfers in flight to it are
  cancelled; the source prefill replica frees the KV cache it was sending (it had handed it to that transfer) and
  the request is prefilled again too. Requests routed to it but still waiting for KV room there keep their KV cache
  on their prefill replica (nothing was sent): they are routed to another decode replica, or wait in the hand-off
  queue until one is ready.

Counted: the requests-table columns ``kv_losses`` (times a request's KV cache was lost and its prompt prefilled
again) and ``kv_lost_tokens`` (tokens of KV cache lost: prompt, and output tokens already decoded), and the
failures summary's ``requests_reprefilled``. A prompt lost mid-prefill is routed again like a colocated replica's
request and is not counted there. The two pools' autoscalers replace lost replicas as a colocated service's does;
with failures on, a prefill pool stays up until its decode pool is done, so that a late decode failure's requests
can be prefilled again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.engine.kernel import Kernel
from sim.serving.handoff import Handoff
from sim.serving.pool_replicas import DecodeReplica, PrefillReplica
from sim.serving.service import ServiceRuntime

KV_LOSSES = "kv_losses"
KV_LOST_TOKENS = "kv_lost_tokens"
FAILURE_COLUMNS = (KV_LOSSES, KV_LOST_TOKENS)
"""The requests-table columns of a disaggregated service's requests in a run with failures (NaN for other services)."""


class Pools(Protocol):
    """What of the serving subsystem (``ServingSubsystem``) a pool failure uses."""

    kernel: Kernel
    services: list[ServiceRuntime]
    handoffs: dict[int, Handoff]
    partner: dict[int, int]

    def lose_replica(self, s: int, r: int) -> list[tuple[int, int, int, int, int]]: ...
    def route_again(self, s: int, lost: Sequence[tuple[int, int, int, int, int]], now: float) -> tuple[int, int]: ...
    def prefix_of(self, s: int, i: int) -> tuple[int, int]: ...


class PoolFailures:
    """Handles the loss of a replica of a disaggregated service's pool, as the module docstring says; counts the
    requests prefilled again (``reprefilled``)."""

    def __init__(self, serving: Pools) -> None:
        self.serving = serving
        self.reprefilled = 0
        for runtime in serving.services:
            if runtime.role == "prefill":
                for column in FAILURE_COLUMNS:
                    runtime.log.extra.setdefault(column, np.zeros(len(runtime.spec.requests)))

    def replica_lost(self, s: int, r: int) -> tuple[int, int]:
        """Replica ``r`` of pool runtime ``s`` failed: retire it and move its requests. Returns (requests routed again,
        to either pool, requests rejected)."""
        if self.serving.services[s].role == "prefill":
            return self._prefill_lost(s, r)
        return self._decode_lost(s, r)

    def _prefill_lost(self, p: int, r: int) -> tuple[int, int]:
        serving = self.serving
        now = serving.kernel.now
        decode = serving.services[serving.partner[p]]
        handoff = serving.handoffs[p]
        replica = serving.services[p].replicas[r]
        assert isinstance(replica, PrefillReplica)
        held = replica.take_held()
        rerouted, rejected = serving.route_again(p, serving.lose_replica(p, r), now)
        touched: set[int] = set()
        # first the requests not yet moving (freeing a decode replica's queue may start others' transfers), then the
        # transfers in flight, whose decode replicas free their reservations
        for moving in (False, True):
            for s in held:
                placed = handoff.placed.get(s.request_id)
                if (placed is not None and placed.moving) != moving:
                    continue
                handoff.give_up(s.request_id, now)
                if placed is not None:
                    target = decode.replicas[placed.target]
                    assert isinstance(target, DecodeReplica)
                    if moving:
                        target.unreserve(s.prompt, now)
                    else:
                        target.withdraw(s.request_id, now)
                    touched.add(placed.target)
        for t in sorted(touched):
            decode._check_drained(t)  # a draining decode replica may have nothing left
        moved, dropped = self._prefill_again(p, [(s.request_id, s.prompt, s.output, s.prompt) for s in held])
        return rerouted + moved, rejected + dropped

    def _decode_lost(self, d: int, r: int) -> tuple[int, int]:
        serving = self.serving
        now = serving.kernel.now
        p = serving.partner[d]
        prefill, handoff = serving.services[p], serving.handoffs[p]
        replica = serving.services[d].replicas[r]
        assert isinstance(replica, DecodeReplica)
        # tokens of KV cache each request holds now (within a coalesced decode run: the steps done so far)
        batch = replica.batch
        progress = (replica.kv_used_at(now) - replica.kv_used) // len(batch) if batch else 0
        tokens = {s.request_id: s.ctx + (progress if s.decoding else 0) for s in batch}
        tokens.update({s.request_id: 0 for s in replica.waiting})  # preempted: their KV cache was already freed
        lost = serving.lose_replica(d, r)
        again = [(i, prompt, output, tokens.get(i, prompt)) for i, prompt, output, _, _ in lost]  # else: arrived
        rerouted = 0
        for placed in [placed for placed in handoff.placed.values() if placed.target == r]:
            request_id, prompt, output, source, _ = placed.item
            if placed.moving:
                handoff.give_up(request_id, now)  # the transfer is cancelled
                held = prefill.replicas[source]
                assert isinstance(held, PrefillReplica)
                held.release(request_id, now)
                again.append((request_id, prompt, output, prompt))
            else:
                del handoff.placed[request_id]
                handoff.reroute(placed.item, now)
                rerouted += 1
        moved, rejected = self._prefill_again(p, again)
        return rerouted + moved, rejected

    def _prefill_again(self, p: int, requests: list[tuple[int, int, int, int]]) -> tuple[int, int]:
        """Send (request, prompt, output, KV tokens lost) back to prefill runtime ``p``, counting the loss."""
        serving = self.serving
        extra = serving.services[p].log.extra
        losses, lost_tokens = extra[KV_LOSSES], extra[KV_LOST_TOKENS]
        routed = []
        for request_id, prompt, output, tokens in requests:
            losses[request_id] += 1
            lost_tokens[request_id] += tokens
            routed.append((request_id, prompt, output, *serving.prefix_of(p, request_id)))
        self.reprefilled += len(routed)
        return serving.route_again(p, routed, serving.kernel.now)
