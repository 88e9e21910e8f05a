"""What fails and how often: per device type, the mean time between failures of one device and the mean time to
repair; whether a failure takes the device's whole node; a failure trace to replay; spot pools that take nodes
back after a notice; links of the network that fail (``sim.failures.links``). Times to failure and to repair are
exponential (memoryless: the rate of a pool is its devices in service times one device's rate) unless
``distribution`` or ``repair_distribution`` names another (``sim.failures.distributions``: Weibull, lognormal)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.failures import distributions
from sim.failures.distributions import EXPONENTIAL, LifeDistribution
from sim.platform.hardware import get_device

HOUR = 3600.0


def _positive(value: object, where: str, *, zero: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value >= 0 if zero else value > 0))
    if not ok:
        raise ConfigError(f"{where} must be a finite number {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _per_type(value: object, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map device types to hours, e.g. {{h100: 50000}}, got {value!r}")
    return {_device_name(device, where): _positive(hours, f"{where}.{device}") for device, hours in value.items()}


def _device_name(device: object, where: str) -> str:
    """The catalog's name of the device type a config key names; a ``ConfigError`` naming the key if unknown."""
    try:
        return get_device(str(device)).name
    except Exception as exc:  # an unknown device type: the catalog's own message, with the key
        raise ConfigError(f"{where}.{device}: {exc}") from None


LINK_CLASSES: tuple[str, ...] = ("nic", "leaf", "pod")
"""Classes of physical links that fail (``FailureModel.link_mtbf_hours``): a node's NIC cables, a leaf's spine
uplinks, a pod's core uplinks (``sim.failures.links``)."""


def _per_link_class(value: object, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map link classes ({', '.join(LINK_CLASSES)}) to hours, e.g. "
                          f"{{leaf: 5000}}, got {value!r}")
    out = {}
    for name, hours in value.items():
        if name not in LINK_CLASSES:
            raise ConfigError(f"{where}.{name}: unknown link class; known: {', '.join(LINK_CLASSES)}")
        out[str(name)] = _positive(hours, f"{where}.{name}")
    return out


FIRST_FAILURE: tuple[str, ...] = ("stationary", "new")
"""How a unit's first time to failure is drawn (``FailureModel.first_failure``)."""


@dataclass(frozen=True)
class SpotPool:
    """A spot (preemptible) pool: every ``mean_hours_between`` hours on average (exponential) the provider takes
    ``nodes`` of its nodes back, warning ``notice_s`` seconds ahead; they return after ``duration_hours`` on average
    (exponential). A job running on them when warned that saves in less than the notice loses no work."""

    pool: str
    mean_hours_between: float
    notice_s: float = 120.0
    duration_hours: float = 1.0
    nodes: int = 1

    def __post_init__(self) -> None:
        where = f"failures.spot[{self.pool!r}]"
        _positive(self.mean_hours_between, f"{where}.mean_hours_between")
        _positive(self.notice_s, f"{where}.notice_s", zero=True)
        _positive(self.duration_hours, f"{where}.duration_hours")
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ConfigError(f"{where}.nodes must be an integer >= 1, got {self.nodes!r}")


@dataclass(frozen=True)
class FailureModel:
    """Failures of a run. ``mtbf_hours``: per device type, the mean hours between failures of one device (a type
    not named never fails at random). ``mttr_hours``: mean hours to repair (one number, or per device type).
    ``node_correlated``: a failure takes the whole node the device is in. ``trace``: a CSV of outages to replay
    (``sim.failures.trace``). ``spot``: spot pools. ``restart_s``: seconds a failed job spends restarting from its
    checkpoint (None: its restore time, ``TrainingJob.restore_s`` or ``sim.preemption.restore_s``).
    ``link_mtbf_hours``: per link class (``nic``, ``leaf``, ``pod``), the mean hours between failures of one physical
    link of the network; ``link_mttr_hours``: mean hours to repair one (``sim.failures.links``: they need the
    network model). ``distribution``: of the time to failure, one for every device type or per device type
    (``sim.failures.distributions``; exponential by default), scaled to the type's MTBF; ``repair_distribution``: of
    the time to repair, scaled to the MTTR. A non-exponential time to failure is drawn per unit (device, or node
    with ``node_correlated``, whose mean is then the MTBF over its devices) each time it enters service; at the
    start, ``first_failure`` says how: ``stationary`` (the default: the time left to a unit of a cluster that has
    been running a long time, so failures come at the long-run rate from the first instant) or ``new`` (every unit
    fresh at time 0: with a Weibull shape below 1, many more early failures)."""

    mtbf_hours: Mapping[str, float] = field(default_factory=dict)
    mttr_hours: float | Mapping[str, float] = 2.0
    node_correlated: bool = False
    trace: str | Path | None = None
    spot: tuple[SpotPool, ...] = ()
    restart_s: float | None = None
    link_mtbf_hours: Mapping[str, float] = field(default_factory=dict)
    link_mttr_hours: float = 2.0
    distribution: str | LifeDistribution | Mapping[str, Any] = EXPONENTIAL
    repair_distribution: str | LifeDistribution | Mapping[str, Any] = EXPONENTIAL
    first_failure: str = "stationary"

    def __post_init__(self) -> None:
        if self.first_failure not in FIRST_FAILURE:
            raise ConfigError(f"failures.first_failure must be one of {', '.join(FIRST_FAILURE)}, got "
                              f"{self.first_failure!r}")
        for name in ("distribution", "repair_distribution"):
            object.__setattr__(self, name, _distributions(getattr(self, name), f"failures.{name}"))
        object.__setattr__(self, "link_mtbf_hours", _per_link_class(self.link_mtbf_hours, "failures.link_mtbf_hours"))
        _positive(self.link_mttr_hours, "failures.link_mttr_hours")
        object.__setattr__(self, "mtbf_hours", _per_type(self.mtbf_hours, "failures.mtbf_hours"))
        if isinstance(self.mttr_hours, Mapping):
            object.__setattr__(self, "mttr_hours", _per_type(self.mttr_hours, "failures.mttr_hours"))
        else:
            _positive(self.mttr_hours, "failures.mttr_hours")
        if not isinstance(self.node_correlated, bool):
            raise ConfigError(f"failures.node_correlated must be true or false, got {self.node_correlated!r}")
        spots = tuple(s if isinstance(s, SpotPool) else _spot(s, i) for i, s in enumerate(self.spot))
        object.__setattr__(self, "spot", spots)
        if self.restart_s is not None:
            _positive(self.restart_s, "failures.restart_s", zero=True)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> FailureModel:
        """From the config's ``failures`` mapping (unknown keys are errors naming them)."""
        known = {"mtbf_hours", "mttr_hours", "node_correlated", "trace", "spot", "restart_s", "link_mtbf_hours",
                 "link_mttr_hours", "distribution", "repair_distribution", "first_failure"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"failures: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if k == "spot" else v) for k, v in data.items() if v is not None})

    def mtbf_seconds(self, device: str) -> float:
        """Mean seconds between failures of one device of this type (``inf``: it does not fail at random)."""
        hours = self.mtbf_hours.get(get_device(device).name)  # type: ignore[union-attr]
        return math.inf if hours is None else hours * HOUR

    def mttr_seconds(self, device: str) -> float:
        """Mean seconds to repair a device of this type."""
        if isinstance(self.mttr_hours, Mapping):
            name = get_device(device).name
            if name not in self.mttr_hours:
                raise ConfigError(f"failures.mttr_hours gives no repair time for device type {name!r}")
            return self.mttr_hours[name] * HOUR
        return float(self.mttr_hours) * HOUR

    def failure_distribution(self, device: str) -> LifeDistribution:
        """The distribution of a device type's time to failure (exponential unless ``distribution`` says)."""
        return _of_type(self.distribution, device)  # type: ignore[arg-type]

    def repair_time_distribution(self, device: str) -> LifeDistribution:
        """The distribution of a device type's time to repair (exponential unless ``repair_distribution`` says)."""
        return _of_type(self.repair_distribution, device)  # type: ignore[arg-type]


def _distributions(value: object, where: str) -> LifeDistribution | dict[str, LifeDistribution]:
    """One distribution, or per device type (by the catalog's name)."""
    if distributions.is_single(value):
        return distributions.parse(value, where)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a distribution (exponential, {{kind: weibull, shape: 0.7}}, "
                          f"{{kind: lognormal, sigma: 1}}) or map device types to one, got {value!r}")
    return {_device_name(device, where): distributions.parse(spec, f"{where}.{device}")
            for device, spec in value.items()}


def _of_type(value: LifeDistribution | dict[str, LifeDistribution], device: str) -> LifeDistribution:
    if isinstance(value, LifeDistribution):
        return value
    return value.get(get_device(device).name, EXPONENTIAL)


def _spot(data: object, index: int) -> SpotPool:
    if not isinstance(data, Mapping) or "pool" not in data:
        raise ConfigError(f"failures.spot[{index}] must be a mapping with a pool, e.g. {{pool: h100, "
                          f"mean_hours_between: 6, notice_s: 120}}, got {data!r}")
    known = {"pool", "mean_hours_between", "notice_s", "duration_hours", "nodes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"failures.spot[{index}]: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    if "mean_hours_between" not in data:
        raise ConfigError(f"failures.spot[{index}] needs mean_hours_between (hours between reclaims)")
    return SpotPool(**data)
