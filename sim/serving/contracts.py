"""What a router sees and decides: one replica index per arriving request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from sim.training.contracts import Policy


class ReplicaView(Protocol):
    """Read-only state of one serving replica at the moment of routing."""

    @property
    def replica_id(self) -> int: ...
    @property
    def num_queued(self) -> int:
        """Requests routed to the replica and not yet admitted to its batch."""
    @property
    def num_running(self) -> int:
        """Requests in the replica's batch (admitted, not finished)."""
    @property
    def outstanding(self) -> int:
        """``num_queued + num_running``."""
    @property
    def kv_free_bytes(self) -> float:
        """KV-cache bytes not held by running requests (infinite for fixed-service replicas)."""
    @property
    def kv_free_bytes_bounds(self) -> tuple[float, float]:
        """``(low, high)`` with ``low <= kv_free_bytes <= high``, read without working out how far a coalesced decode
        run has got (equal when nothing is running): a router comparing many replicas reads ``kv_free_bytes`` only
        for those whose ``high`` reaches the best ``low``."""
    @property
    def kv_capacity_bytes(self) -> float: ...
    @property
    def accepting(self) -> bool:
        """False while the replica is being provisioned or drained."""
    def cached_prefix_tokens(self, prefix_id: int) -> int:
        """Tokens of the shared prefix ``prefix_id`` in the replica's prefix cache (0 if none, or without prefix
        caching); a request with that prefix would read ``min(this, its prefix_tokens)`` of them."""


class RequestView(Protocol):
    @property
    def request_id(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def prefix_id(self) -> int:
        """The shared prefix its prompt starts with (a session, a system prompt; ``workloads.requests``); -1: none."""
    @property
    def prefix_tokens(self) -> int:
        """How many of its prompt's first tokens are that prefix's (0 without one)."""


class Router(Policy):
    """Chooses the replica (an index into ``replicas``) that serves a request; -1 when no replica is
    accepting (the engine then rejects the request and records why)."""

    kind: ClassVar[str] = "router"

    def route(self, request: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator) -> int:
        raise NotImplementedError


class ServiceView:
    """What an autoscaler sees of one service at a scaling tick."""

    __slots__ = ("arrivals", "busy_fraction", "max_replicas", "min_replicas", "name", "now", "num_queued",
                 "outstanding", "provisioning", "ready", "replicas")

    def __init__(self, *, name: str, now: float, replicas: Sequence[ReplicaView], ready: int, provisioning: int,
                 num_queued: int, outstanding: int, arrivals: int, busy_fraction: float, min_replicas: int,
                 max_replicas: int) -> None:
        self.name = name
        self.now = now
        self.replicas = replicas  #: every replica ever created, including draining and retired ones
        self.ready = ready  #: replicas accepting requests
        self.provisioning = provisioning  #: replicas loading weights
        self.num_queued = num_queued  #: requests waiting, not yet in a batch
        self.outstanding = outstanding  #: requests arrived and not finished
        self.arrivals = arrivals  #: requests that arrived since the previous tick
        self.busy_fraction = busy_fraction  #: busy time of ready replicas over the last interval, in [0, 1]
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    @property
    def current(self) -> int:
        """Replicas ready or on their way (what a target is compared with)."""
        return self.ready + self.provisioning


class Autoscaler(Policy):
    """Every ``interval`` seconds, the number of replicas a service should have (within its bounds)."""

    kind: ClassVar[str] = "autoscaler"
    interval: float = 30.0

    def target(self, view: ServiceView) -> int:
        raise NotImplementedError


class Colocation(Policy):
    """How inference replicas and training jobs share devices.

    ``inference_nodes`` sets nodes aside for inference at the start (training never sees them);
    ``headroom_slots`` keeps that many replica-sized sets of free devices per service idle for scale-ups;
    ``victims`` names running training jobs to preempt when a replica finds no free devices (the engine
    checks that preempting them frees enough devices on one node of ``pool``; a fractional job named takes the other
    fractional jobs on its device with it, as a replica needs whole devices); ``running`` comes lowest
    training priority first when the scheduler has an order (``Scheduler.priority``). The defaults: no
    partition and no preemption, i.e. replicas take free devices only.
    """

    kind: ClassVar[str] = "colocation"

    def inference_nodes(self, cluster: Any, pools: Sequence[int]) -> tuple[int, ...]:
        return ()

    def victims(self, pool: int, count: int, free: Any, running: Sequence[Any], cluster: Any,
                now: float) -> tuple[int, ...]:
        return ()

    def headroom_slots(self) -> int:
        """Replica-sized sets of free devices per service to keep out of training's reach (0: none)."""
        return 0
