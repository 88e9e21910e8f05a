"""The hand-off of a disaggregated service's prefilled requests from its prefill pool to its decode pool
(``sim.serving.disaggregation``)."""

from __future__ import annotations

from collections import deque

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
        replica.offer(request_id, prompt, now,
                      lambda start: self._transfer(request_id, prompt, output, source, choice, since, start))
        return True

    def _transfer(self, request_id: int, prompt: int, output: int, source: int, target: int, since: float,
                  start: float) -> None:
        """Room is reserved on decode replica ``target``: move the KV cache from prefill replica ``source``."""
        nbytes = prompt * self.kv_bytes_per_token
        self._bytes[request_id] = nbytes
        self._wait[request_id] = start - since

        def arrived(end: float) -> None:
            self._seconds[request_id] = end - start
            held: PrefillReplica = self.prefill.replicas[source]  # type: ignore[assignment]
            held.release(request_id, end)
            self.decode.replicas[target].admit(request_id, prompt, output, end)  # type: ignore[union-attr]

        self.transfers.start(self.prefill.devices[source], self.decode.devices[target], nbytes, start, arrived)
