"""What a router sees and decides: one replica index per arriving request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import numpy as np

from sim.contracts import Policy


class ReplicaView(Protocol):
    """Read-only state of one serving replica at the moment of routing."""

    @property
    def replica_id(self) -> int: ...
    @property
    def queued(self) -> int:
        """Requests routed to the replica and not yet admitted to its batch."""
    @property
    def running(self) -> int:
        """Requests in the replica's batch (admitted, not finished)."""
    @property
    def outstanding(self) -> int:
        """``queued + running``."""
    @property
    def kv_free_bytes(self) -> float:
        """KV-cache bytes not held by running requests (infinite for fixed-service replicas)."""
    @property
    def kv_capacity_bytes(self) -> float: ...
    @property
    def accepting(self) -> bool:
        """False while the replica is being provisioned or drained."""


class RequestView(Protocol):
    @property
    def request_id(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


class Router(Policy):
    """Chooses the replica (an index into ``replicas``) that serves a request; -1 when no replica is
    accepting (the engine then rejects the request and records why)."""

    kind: ClassVar[str] = "router"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        raise NotImplementedError
