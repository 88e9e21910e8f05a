"""The hand-off of a disaggregated service's prefilled requests from its prefill pool to its decode pool
(``sim.serving.disaggregation``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import numpy as np

from sim.serving.contracts import Router
from sim.serving.disaggregation import KV_TRANSFER_BYTES, KV_TRANSFER_SECONDS, KV_TRANSFER_WAIT
from sim.serving.kv_transfer import KVTransfers
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
        self._arrival = prefill.spec.requests.arrival.tolist()  # floats: read once per hand-off
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
        request_id, prompt, output, _, _ = item
        view = RequestView(request_id, self._arrival[request_id], prompt, output)
        choice = route(self.router, view, self.decode.replicas, self.rng, self.decode.spec.name)
        if choice == -1:
            return False
        placed = self.placed[request_id] = Placed(self, item, choice)
        self.decode.replicas[choice].offer(request_id, prompt, now, placed.transfer)  # type: ignore[union-attr]
        return True

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
    """A prefilled request routed to a decode replica, carried through the rest of its hand-off: its ``item``
    (request, prompt, output, prefill replica, time prefilled), its decode replica ``target``, whether its transfer is
    ``moving``, since when (``started``) and that transfer's network ``flow`` (None: a timer, or not started).
    ``transfer`` is what the decode replica calls once it has reserved room; ``arrived`` what the transfer calls at its
    end."""

    __slots__ = ("flow", "handoff", "item", "moving", "started", "target")

    def __init__(self, handoff: Handoff, item: tuple[int, int, int, int, float], target: int) -> None:
        self.handoff = handoff
        self.item = item
        self.target = target
        self.moving = False
        self.started = 0.0
        self.flow: Hashable | None = None

    def transfer(self, start: float) -> None:
        """Room is reserved on the decode replica: move the KV cache from the prefill replica."""
        handoff = self.handoff
        request_id, prompt, _, source, since = self.item
        nbytes = prompt * handoff.kv_bytes_per_token
        handoff._bytes[request_id] = nbytes
        handoff._wait[request_id] = start - since
        self.moving = True
        self.started = start
        self.flow = handoff.transfers.start(handoff.prefill.devices[source], handoff.decode.devices[self.target],
                                            nbytes, start, self.arrived)

    def arrived(self, end: float) -> None:
        """The KV cache is on the decode replica: free it on the prefill replica; the request joins the decode batch."""
        handoff = self.handoff
        request_id, prompt, output, source, _ = self.item
        placed = handoff.placed
        if placed.get(request_id) is not self:
            return  # given up: a failure took its source or its target (sim.serving.pool_failures)
        del placed[request_id]
        handoff._seconds[request_id] = end - self.started
        handoff.prefill.replicas[source].release(request_id, end)  # type: ignore[union-attr]
        handoff.decode.replicas[self.target].admit(request_id, prompt, output, end)  # type: ignore[union-attr]
