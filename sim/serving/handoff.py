"""The hand-off of a disaggregated service's prefilled requests from its prefill pool to its decode pool
(``sim.serving.disaggregation``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from functools import partial

import numpy as np

from sim.serving.contracts import Router
from sim.serving.disaggregation import KV_TRANSFER_BYTES, KV_TRANSFER_SECONDS, KV_TRANSFER_WAIT
from sim.serving.kv_transfer import KVTransfers
from sim.serving.pool_replicas import DecodeReplica, PrefillReplica
from sim.serving.routing import RequestView, route
from sim.serving.service import ServiceRuntime


class Handoff:
    """Moves one disaggregated service's prefilled requests to its decode pool: routes each to a decode replica,
    waits for room there, transfers its KV cache, and hands it over. A prefilled request finding no decode replica
    accepting waits (in order) until one is ready."""

    def __init__(self, prefill: ServiceRuntime, decode: ServiceRuntime, router: Router, rng: np.random.Generator,
                 transfers: KVTransfers) -> None:
        self.prefill = prefill
        self.decode = decode
        self.router = router
        self.rng = rng
        self.transfers = transfers
        self.log = prefill.log
        extra = self.log.extra  # the columns (made by the pools' runtimes), written directly: once per request each
        self._bytes, self._wait, self._seconds = (extra[c] for c in (KV_TRANSFER_BYTES, KV_TRANSFER_WAIT,
                                                                     KV_TRANSFER_SECONDS))
        self.kv_bytes_per_token = decode.cost.kv_bytes_per_token if decode.cost is not None else 0.0
        self.pending: deque[tuple[int, int, int, int, float]] = deque()  # no decode replica accepting yet
        self.placed: dict[int, Placed] = {}  # routed to a decode replica, its KV cache not there yet
        self._arrival = prefill.spec.requests.arrival
        decode.on_ready.append(self.retry)

    def prefilled(self, replica_id: int, request_id: int, prompt: int, output: int, now: float) -> None:
        """Prefill replica ``replica_id`` computed the request's prompt: route it to a decode replica."""
        item = (request_id, prompt, output, replica_id, now)
        if self.pending or not self._route(item, now):
            self.pending.append(item)

    def retry(self, now: float) -> None:
        """A decode replica became ready: route the requests waiting for one, in order."""
        while self.pending and self._route(self.pending[0], now):
            self.pending.popleft()

    def _route(self, item: tuple[int, int, int, int, float], now: float) -> bool:
        request_id, prompt, output, source, since = item
        view = RequestView(request_id, float(self._arrival[request_id]), prompt, output)
        choice = route(self.router, view, self.decode.replicas, self.rng, self.decode.spec.name)
        if choice == -1:
            return False
        replica: DecodeReplica = self.decode.replicas[choice]  # type: ignore[assignment]
        self.placed[request_id] = Placed(item, choice)
        start = partial(self._transfer, request_id, prompt, output, source, choice, since)
        replica.offer(request_id, prompt, now, start)
        return True

    def _transfer(self, request_id: int, prompt: int, output: int, source: int, target: int, since: float,
                  start: float) -> None:
        """Room is reserved on decode replica ``target``: move the KV cache from prefill replica ``source``."""
        nbytes = prompt * self.kv_bytes_per_token
        self._bytes[request_id] = nbytes
        self._wait[request_id] = start - since

        placed = self.placed[request_id]
        placed.moving = True

        def arrived(end: float) -> None:
            if self.placed.get(request_id) is not placed:
                return  # given up: a failure took its source or its target (sim.serving.pool_failures)
            del self.placed[request_id]
            self._seconds[request_id] = end - start
            held: PrefillReplica = self.prefill.replicas[source]  # type: ignore[assignment]
            held.release(request_id, end)
            self.decode.replicas[target].admit(request_id, prompt, output, end)  # type: ignore[union-attr]

        placed.flow = self.transfers.start(self.prefill.devices[source], self.decode.devices[target], nbytes, start,
                                           arrived)

    def reroute(self, item: tuple[int, int, int, int, float], now: float) -> None:
        """Route a prefilled request again (``item`` as ``pending`` holds it): its decode replica was lost before its
        transfer began."""
        if self.pending or not self._route(item, now):
            self.pending.append(item)

    def give_up(self, request_id: int, now: float) -> Placed | None:
        """Forget a prefilled request whose KV cache a failure took (or whose target failed mid-transfer): out of
        ``pending``, or its transfer in flight cancelled. Returns where it had been routed (None: it was pending); the
        caller frees what its decode replica reserved or queued for it."""
        placed = self.placed.pop(request_id, None)
        if placed is None:
            for k, item in enumerate(self.pending):
                if item[0] == request_id:
                    del self.pending[k]
                    break
        elif placed.moving:
            self.transfers.cancel(placed.flow, now)
        return placed


class Placed:
    """Where a prefilled request was routed: its hand-off ``item`` (request, prompt, output, prefill replica, time
    prefilled), its decode replica ``target``, whether its transfer is ``moving`` and that transfer's network ``flow``
    (None: a timer, or not started)."""

    __slots__ = ("flow", "item", "moving", "target")

    def __init__(self, item: tuple[int, int, int, int, float], target: int) -> None:
        self.item = item
        self.target = target
        self.moving = False
        self.flow: Hashable | None = None
