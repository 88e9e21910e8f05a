"""Autoscalers: how many replicas a service should have. New replicas take a provisioning delay
(weights loaded at the service's stated bandwidth) before they accept requests; replicas scaled away
drain (finish what they hold) before they give their devices back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.serving.contracts import Autoscaler, ServiceView


def _clamp(view: ServiceView, n: int) -> int:
    return max(view.min_replicas, min(view.max_replicas, n))


@dataclass
class Static(Autoscaler):
    """Keep the replicas the service started with."""

    name = "static"
    interval: float = 3600.0

    def target(self, view: ServiceView) -> int:
        return view.current


@dataclass
class _Reactive(Autoscaler):
    """Reactive rule with cool-downs, as Kubernetes' HPA stabilizes: after any change, a scale-down waits
    ``cooldown`` seconds and a scale-up ``scale_up_cooldown`` seconds (0 by default: a burst is met at
    the next tick, while the count comes down only once the load has stayed low)."""

    interval: float = 30.0
    cooldown: float = 120.0
    scale_up_cooldown: float = 0.0
    _last_change: float = field(default=-math.inf, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.interval > 0 and self.cooldown >= 0 and self.scale_up_cooldown >= 0):
            raise ValueError(f"interval must be > 0, cooldown and scale_up_cooldown >= 0, got {self.interval}, "
                             f"{self.cooldown}, {self.scale_up_cooldown}")

    def target(self, view: ServiceView) -> int:
        wanted = _clamp(view, self.wanted(view))
        since = view.now - self._last_change
        if wanted == view.current or since < (self.scale_up_cooldown if wanted > view.current else self.cooldown):
            return view.current
        self._last_change = view.now
        return wanted

    def wanted(self, view: ServiceView) -> int:
        raise NotImplementedError


@dataclass
class TargetUtilization(_Reactive):
    """Size the service so its ready replicas are busy ``utilization`` of the time:
    ``ceil(ready x busy_fraction / utilization)``, measured over the last interval."""

    name = "target-utilization"
    utilization: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.utilization <= 1:
            raise ValueError(f"utilization must be in (0, 1], got {self.utilization}")

    def wanted(self, view: ServiceView) -> int:
        if view.ready == 0:
            return view.current if view.provisioning else 1
        return math.ceil(view.ready * view.busy_fraction / self.utilization - 1e-9)


@dataclass
class QueueLength(_Reactive):
    """Size the service so each replica holds about ``per_replica`` outstanding requests (waiting or in
    its batch): ``ceil(outstanding / per_replica)``."""

    name = "queue-length"
    per_replica: float = 16.0
    interval: float = 10.0
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.per_replica > 0:
            raise ValueError(f"per_replica must be positive, got {self.per_replica}")

    def wanted(self, view: ServiceView) -> int:
        return math.ceil(view.outstanding / self.per_replica)
