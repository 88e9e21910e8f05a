"""Asking a router policy for a replica, and checking its answer, for every routing decision of the serving subsystem
(arrivals, and the hand-off of prefilled requests to a decode pool)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.engine.kernel import ask
from sim.errors import PolicyError
from sim.serving.contracts import ReplicaView, Router


class RequestView:
    """What a router sees of the request it routes."""

    __slots__ = ("arrival", "output_tokens", "prefix_id", "prefix_tokens", "prompt_tokens", "request_id")

    def __init__(self, request_id: int, arrival: float, prompt_tokens: int, output_tokens: int, prefix_id: int = -1,
                 prefix_tokens: int = 0) -> None:
        self.request_id = request_id
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefix_id = prefix_id
        self.prefix_tokens = prefix_tokens


def route(router: Router, view: RequestView, replicas: Sequence[ReplicaView], rng: np.random.Generator,
          service: str) -> int:
    """The index of the accepting replica ``router`` picks for the request, or -1 when no replica accepts; a
    ``PolicyError`` naming the router, request and ``service`` for any other answer."""
    choice = ask(router, router.route, (view, replicas, rng), "routing request {0.request_id}")
    if type(choice) is int and 0 <= choice < len(replicas) and replicas[choice].accepting:
        return choice  # the usual answer, checked at once
    i = view.request_id
    if choice == -1:
        accepting = [k for k, replica in enumerate(replicas) if replica.accepting]
        if accepting:
            raise PolicyError(f"router {router.name!r} rejected request {i} of service {service!r} "
                              f"(-1) although replicas {accepting[:5]} accept requests: -1 means no replica is "
                              "accepting")
        return -1
    if isinstance(choice, bool) or not isinstance(choice, (int, np.integer)) or not 0 <= choice < len(replicas):
        raise PolicyError(f"router {router.name!r} chose {choice!r} for request {i}: not a replica index "
                          f"of service {service!r} (0..{len(replicas) - 1})")
    if not replicas[choice].accepting:
        raise PolicyError(f"router {router.name!r} chose replica {int(choice)} of service {service!r} "
                          f"for request {i}, which is not accepting requests (draining, retired or not ready)")
    return int(choice)
