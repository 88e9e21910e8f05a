"""Routers: which serving replica an arriving request goes to.

Every router chooses only among replicas whose ``accepting`` is True and returns an index into
``replicas``; it returns ``NO_REPLICA`` (-1) when no replica accepts, and the engine then rejects the
request with a reason. Ties are broken deterministically (lowest index) unless stated otherwise, so
only ``random`` and ``power-of-two`` draw from ``rng``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sim.serving.contracts import ReplicaView, RequestView, Router

NO_REPLICA = -1
"""What ``route`` returns when no replica is accepting requests."""


def _accepting(replicas: Sequence[ReplicaView]) -> list[int]:
    """Indices of the replicas that accept requests, in order."""
    return [i for i, r in enumerate(replicas) if r.accepting]


@dataclass
class RoundRobin(Router):
    """Each request to the next accepting replica in list order, wrapping around; non-accepting replicas
    are skipped. The position is kept per policy instance (one instance per simulation)."""

    name = "round-robin"
    _next: int = field(default=0, init=False, repr=False)

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        n = len(replicas)
        for step in range(n):
            i = (self._next + step) % n
            if replicas[i].accepting:
                self._next = (i + 1) % n
                return i
        return NO_REPLICA


@dataclass
class RandomRouter(Router):
    """A replica chosen uniformly among the accepting ones (from ``rng``)."""

    name = "random"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        candidates = _accepting(replicas)
        if not candidates:
            return NO_REPLICA
        return candidates[int(rng.integers(len(candidates)))]


@dataclass
class LeastOutstanding(Router):
    """The accepting replica with the fewest outstanding (queued + running) requests; ties to the lowest
    index."""

    name = "least-outstanding"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        best, fewest = NO_REPLICA, 0
        for i, replica in enumerate(replicas):  # one pass: this runs once per request
            if replica.accepting and (best == NO_REPLICA or replica.outstanding < fewest):
                best, fewest = i, replica.outstanding
        return best


@dataclass
class JoinShortestQueue(Router):
    """The accepting replica with the fewest queued requests (waiting, not yet in the batch); ties by
    fewest outstanding, then lowest index."""

    name = "join-shortest-queue"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        return min(_accepting(replicas), key=lambda i: (replicas[i].num_queued, replicas[i].outstanding, i),
                   default=NO_REPLICA)


@dataclass
class PowerOfTwo(Router):
    """Power of ``d`` choices: sample ``d`` distinct accepting replicas uniformly (from ``rng``) and take
    the one with the fewest outstanding requests, ties to the first sampled. With ``d`` at least the
    number of accepting replicas all of them are compared in index order without drawing from ``rng``,
    which is exactly ``least-outstanding``; ``d = 1`` is ``random``."""

    name = "power-of-two"
    d: int = 2

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"d must be at least 1, got {self.d}")

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        candidates = _accepting(replicas)
        if not candidates:
            return NO_REPLICA
        if self.d < len(candidates):
            candidates = [candidates[int(k)] for k in rng.choice(len(candidates), size=self.d, replace=False)]
        # min returns the first of equal keys: the first sampled.
        return min(candidates, key=lambda i: replicas[i].outstanding)


@dataclass
class KvAware(Router):
    """The accepting replica with the most free KV-cache bytes; ties by fewest outstanding, then lowest
    index (replicas without a KV model report infinite free bytes and so tie with each other)."""

    name = "kv-aware"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        # Bounds first (cheap): the replica with the best lower bound wins outright when no other replica's upper
        # bound reaches it; else exact free bytes decide among those whose upper bound does (the others hold less
        # than that replica does, so they can neither win nor tie).
        floor, lead, bounds = -math.inf, NO_REPLICA, []
        for i, replica in enumerate(replicas):
            if replica.accepting:
                low, high = replica.kv_free_bytes_bounds
                bounds.append((i, low, high))
                if low > floor:
                    floor, lead = low, i
        for i, _, high in bounds:
            if high >= floor and i != lead:
                break  # contested: exact figures decide
        else:
            return lead  # (NO_REPLICA when none is accepting)
        best, most, fewest = NO_REPLICA, 0.0, 0
        for i, low, high in bounds:
            if high >= floor:
                replica = replicas[i]
                free = low if low == high else replica.kv_free_bytes
                if best == NO_REPLICA or free > most or (free == most and replica.outstanding < fewest):
                    best, most, fewest = i, free, replica.outstanding
        return best


@dataclass
class PrefixAware(Router):
    """Cache-aware routing (SGLang's router, on the replicas' prefix caches): among the accepting replicas with at
    most ``max_imbalance`` more outstanding requests than the least loaded accepting one, the replica holding the
    most of the request's prefix (``ReplicaView.cached_prefix_tokens``, up to the request's ``prefix_tokens``);
    ties by fewest outstanding, then lowest index. A request without a prefix, or whose prefix no such replica
    holds, goes to the least-outstanding replica; a replica holding the prefix but loaded beyond the threshold is
    passed over for the least loaded (the session's history is prefilled again there)."""

    name = "prefix-aware"
    max_imbalance: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.max_imbalance, bool) or not isinstance(self.max_imbalance, int) or self.max_imbalance < 0:
            raise ValueError(f"max_imbalance must be a non-negative integer, got {self.max_imbalance!r}")

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        loads = [r.outstanding if r.accepting else -1 for r in replicas]
        accepting = [load for load in loads if load >= 0]
        if not accepting:
            return NO_REPLICA
        limit = min(accepting) + self.max_imbalance
        prefix_id, wanted = request.prefix_id, request.prefix_tokens
        best, key = NO_REPLICA, (0, 0)
        for i, load in enumerate(loads):
            if 0 <= load <= limit:
                match = min(replicas[i].cached_prefix_tokens(prefix_id), wanted) if prefix_id >= 0 else 0
                if best == NO_REPLICA or (match, -load) > key:  # the first of equal keys: the lowest index
                    best, key = i, (match, -load)
        return best
