"""Disaggregated prefill and decode (DistServe, Splitwise): a service whose prompts and tokens run on two pools.

A service with ``prefill`` and ``decode`` pools (``ServicePool``) runs two sets of replicas, each with its own device
type, replica size, batching limits, replica range and autoscaler. A request is routed on arrival to a prefill
replica (by the run's router, or the pool's own ``router``), which computes its prompt's KV cache
(``sim.serving.pool_replicas.PrefillReplica``). It is then routed to a decode replica (``decode.router``, by default
``kv-aware``: the most free KV cache), waits there until that replica has room for its KV cache (a decode pool
short of KV cache makes the transfer wait; nothing is dropped), and its KV cache (prompt tokens x the model's KV
bytes per token, in its KV format) moves over the interconnect (``sim.serving.kv_transfer``: NVLink inside a node,
NICs and switches across nodes, sharing links under the network model's contention). The prefill replica holds the
KV cache until the transfer ends. The decode replica then decodes the request's output tokens; its first decode
step gives the first token, so TTFT = queueing + prefill + waiting for decode room + transfer + one decode step.

Reported per request (requests table): ``prefill_replica``, ``kv_transfer_bytes``, ``kv_transfer_wait`` (seconds
from the end of prefill until the transfer starts) and ``kv_transfer_seconds``; ``replica`` is the decode replica.
The replicas table carries each replica's ``role`` (``prefill``, ``decode``; empty for colocated services).

This module holds the pools' description (``ServicePool``); ``sim.serving.pool_replicas`` the two replica kinds,
``sim.serving.handoff`` the move from one pool to the other, ``sim.serving.kv_transfer`` the transfers and
``sim.serving.pool_failures`` what a failed replica of either pool does to its requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.serving.replica import BatchingConfig

ROLES = ("prefill", "decode")
"""The pools of a disaggregated service."""

PREFILL_REPLICA = "prefill_replica"
KV_TRANSFER_BYTES = "kv_transfer_bytes"
KV_TRANSFER_WAIT = "kv_transfer_wait"
KV_TRANSFER_SECONDS = "kv_transfer_seconds"
REQUEST_COLUMNS = (PREFILL_REPLICA, KV_TRANSFER_BYTES, KV_TRANSFER_WAIT, KV_TRANSFER_SECONDS)
"""The requests-table columns of a disaggregated service (NaN for the requests of other services)."""


@dataclass(frozen=True)
class ServicePool:
    """One pool of a disaggregated service: ``replicas`` at the start, each on ``devices_per_replica`` devices of
    ``device`` (None: the service's) in one node; the autoscaler keeps it within ``[min_replicas, max_replicas]``
    (None: as many as the devices allow). ``max_seqs``, ``max_batched_tokens`` and ``chunked_prefill`` override the
    service's batching limits for this pool (None: the service's). ``router`` (a registered router name or mapping)
    routes to this pool's replicas; None: the run's router for prefill, ``kv-aware`` for decode."""

    replicas: int = 1
    devices_per_replica: int = 1
    device: str | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    max_seqs: int | None = None
    max_batched_tokens: int | None = None
    chunked_prefill: bool | None = None
    router: str | Mapping[str, Any] | None = None

    @classmethod
    def of(cls, value: ServicePool | Mapping[str, Any], where: str) -> ServicePool:
        """A pool from a ``ServicePool`` or a mapping of its fields; errors name ``where`` and the key."""
        if isinstance(value, ServicePool):
            pool = value
        elif isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            unknown = [key for key in value if key not in known]
            if unknown:
                raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")
            pool = cls(**value)
        else:
            raise ConfigError(f"{where}: expected a mapping {{replicas, devices_per_replica, device, ...}}, "
                              f"got {value!r}")
        pool.check(where)
        return pool

    def check(self, where: str) -> None:
        """A ``ConfigError`` naming ``where`` and the field for a value out of range."""
        for key in ("replicas", "devices_per_replica", "min_replicas"):
            value = getattr(self, key)
            low = 0 if key == "min_replicas" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
        top = self.replicas if self.max_replicas is None else self.max_replicas
        if not self.min_replicas <= self.replicas <= top:
            raise ConfigError(f"{where}: need min_replicas ({self.min_replicas}) <= replicas ({self.replicas}) <= "
                              f"max_replicas ({self.max_replicas})")
        for key in ("max_seqs", "max_batched_tokens"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigError(f"{where}.device: expected a device type name, got {self.device!r}")

    def batching(self, base: BatchingConfig) -> BatchingConfig:
        """The service's batching limits with this pool's overrides."""
        return BatchingConfig(self.max_seqs if self.max_seqs is not None else base.max_seqs,
                              self.max_batched_tokens if self.max_batched_tokens is not None
                              else base.max_batched_tokens,
                              self.chunked_prefill if self.chunked_prefill is not None else base.chunked_prefill)
